"""The Cloud API over one aiohttp session: send messages, mark read + typing, retry by error code."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from connectors.whatsapp.errors import GraphError, Verdict, backoff_seconds, verdict

logger = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v23.0"
REQUEST_TIMEOUT_SECONDS = 15.0
MAX_ATTEMPTS = 6


@dataclass(frozen=True)
class SendResult:
    message_id: str | None
    error: GraphError | None = None
    verdict: Verdict | None = None  # set when it failed for good
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.message_id is not None


class GraphClient:
    def __init__(
        self,
        access_token: str,
        base_url: str = DEFAULT_GRAPH_URL,
        api_version: str = DEFAULT_API_VERSION,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._token = access_token
        self._base = base_url.rstrip("/")
        self._version = api_version.strip("/")
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._rand = rand
        self._session: aiohttp.ClientSession | None = None

    def _url(self, phone_number_id: str) -> str:
        return f"{self._base}/{self._version}/{phone_number_id}/messages"

    async def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop (never at import or construction).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
                headers={"Authorization": f"Bearer {self._token}"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def post(self, phone_number_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One POST to /messages; GraphError for anything but a 2xx JSON answer."""
        session = await self._client()
        try:
            async with session.post(self._url(phone_number_id), json=payload) as response:
                try:
                    body = await response.json(content_type=None)
                except (aiohttp.ContentTypeError, ValueError):
                    body = None
                if response.status >= 400 or not isinstance(body, dict):
                    raise GraphError.from_response(response.status, body)
                return body
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise GraphError(0, None, f"network error: {type(error).__name__}") from error

    async def send(self, phone_number_id: str, payload: dict[str, Any]) -> SendResult:
        """Send one message, retrying only what the error policy calls retryable."""
        server_errors = 0
        last: GraphError | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                body = await self.post(phone_number_id, payload)
            except GraphError as error:
                last = error
                decision = verdict(error, server_errors)
                if error.http_status >= 500 or error.http_status == 0:
                    server_errors += 1
                if decision is not Verdict.RETRY or attempt == self._max_attempts:
                    final = decision if decision is not Verdict.RETRY else Verdict.FAIL
                    return SendResult(None, error, final, attempt)
                delay = backoff_seconds(attempt, self._rand())
                logger.info("Graph error %s, retry %d in %.2fs", error.code or error.http_status, attempt, delay)
                await self._sleep(delay)
                continue
            messages = body.get("messages")
            message_id = messages[0].get("id") if isinstance(messages, list) and messages else None
            return SendResult(str(message_id) if message_id else "", None, None, attempt)
        return SendResult(None, last, Verdict.FAIL, self._max_attempts)

    async def mark_read_and_typing(self, phone_number_id: str, message_id: str) -> None:
        """Blue ticks + typing indicator for the customer; best effort, never retried."""
        payload = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id,
                   "typing_indicator": {"type": "text"}}
        try:
            await self.post(phone_number_id, payload)
        except GraphError as error:
            logger.info("could not mark %s read: %s", message_id, error)
