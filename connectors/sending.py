"""Sending with a retry policy, shared by the Cloud API and Evolution API clients.

A client says how to POST one message and how to judge an error; the loop (retry only what
can succeed later, exponential backoff with full jitter, a cap on attempts) lives here once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectors.whatsapp.errors import GraphError, Verdict, backoff_seconds

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
MAX_MEDIA_BYTES = 16 * 1024 * 1024  # WhatsApp's own limit for audio/video; images are 5 MB


class MediaTooLarge(Exception):
    """A customer's media file over the size the agent route passes on."""


@dataclass(frozen=True)
class SendResult:
    message_id: str | None
    error: GraphError | None = None
    verdict: Verdict | None = None  # set when it failed for good
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.message_id is not None


class RetryingSender:
    """Subclasses implement `post` (one request; GraphError on failure), `message_id_of` and `decide`."""

    def __init__(self, max_attempts: int = MAX_ATTEMPTS,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._rand = rand

    async def post(self, business_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def start_post(self, business_id: str, payload: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        """`post`, begun now where the client can write its request at once (else when awaited)."""
        return self.post(business_id, payload)

    def message_id_of(self, body: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def tagged(self, payload: dict[str, Any], key: str) -> dict[str, Any]:
        """The payload carrying our key where the platform repeats it on its statuses (if it does)."""
        return payload

    def decide(self, error: GraphError, server_errors: int) -> Verdict:
        raise NotImplementedError

    async def send(self, business_id: str, payload: dict[str, Any],
                   first: Awaitable[dict[str, Any]] | None = None) -> SendResult:
        """Send one message, retrying only what the error policy calls retryable; `first`: the first attempt,
        already begun (`start_post`)."""
        server_errors = 0
        last: GraphError | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                body = await (first if attempt == 1 and first is not None else self.post(business_id, payload))
            except GraphError as error:
                last = error
                decision = self.decide(error, server_errors)
                if error.http_status >= 500 or error.http_status == 0:
                    server_errors += 1
                if decision is not Verdict.RETRY or attempt == self._max_attempts:
                    final = decision if decision is not Verdict.RETRY else Verdict.FAIL
                    return SendResult(None, error, final, attempt)
                delay = backoff_seconds(attempt, self._rand())
                logger.info("send error %s, retry %d in %.2fs", error.code or error.http_status, attempt, delay)
                await self._sleep(delay)
                continue
            return SendResult(self.message_id_of(body) or "", None, None, attempt)
        return SendResult(None, last, Verdict.FAIL, self._max_attempts)

    def helper_spec(self) -> tuple[str, str, tuple[Any, ...]] | None:
        """(module, class, arguments) that build this same client in the inbox helper process, which then
        sends for it (connectors/inbox_helper.py); None: it sends from here (a client with test hooks)."""
        return None

    def _built_plain(self) -> bool:
        """No test hooks (sleep, randomness, attempts): the helper process's copy would behave the same."""
        return self._sleep is asyncio.sleep and self._rand is random.random and self._max_attempts == MAX_ATTEMPTS

    async def mark_read_and_typing(self, business_id: str, message_id: str, reply_to: str,
                                   typing: bool = True) -> None:
        """Read receipt (+ typing indicator while the bot works); best effort."""

    async def download_media(self, business_id: str, media_id: str,
                             max_bytes: int = MAX_MEDIA_BYTES) -> tuple[bytes, str]:
        """(content, mime type) of a customer's media; GraphError or MediaTooLarge."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""
