"""The Cloud API over one aiohttp session: send messages, mark read + typing, download media.

One `aiohttp.ClientSession` per client with a kept-alive `TCPConnector`; `trust_env=True`, so
`HTTPS_PROXY`/`HTTP_PROXY` and `NO_PROXY` apply as curl reads them; every request has a timeout.
Errors become `GraphError`s, judged by the policy of connectors/whatsapp/errors.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlparse

import aiohttp

from connectors.sender import MAX_ATTEMPTS, MAX_MEDIA_BYTES, MediaTooLarge, RetryingSender, SendResult
from connectors.whatsapp.errors import GraphError, Verdict, verdict

__all__ = ["DEFAULT_API_VERSION", "DEFAULT_GRAPH_URL", "GraphClient", "SendResult"]

logger = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v23.0"
REQUEST_TIMEOUT_SECONDS = 15.0
MAX_CONNECTIONS = 32
MAX_ANSWER_BYTES = 1024 * 1024


class GraphClient(RetryingSender):
    def __init__(
        self,
        access_token: str,
        base_url: str = DEFAULT_GRAPH_URL,
        api_version: str = DEFAULT_API_VERSION,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(max_attempts, sleep, rand)
        if urlparse(base_url).scheme not in ("http", "https"):
            raise ValueError(f"WHATSAPP_GRAPH_API_URL must be an http(s) URL, not {base_url!r}")
        if any(char in access_token for char in "\r\n\0"):  # (never the token itself in the message)
            raise ValueError("WHATSAPP_ACCESS_TOKEN contains a line break: it would split the Authorization header")
        self._token = access_token
        self._base = base_url.rstrip("/")
        self._version = api_version.strip("/")
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop (never at import or construction).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=15),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS), trust_env=True,
                headers={"Authorization": f"Bearer {self._token}"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def _messages_url(self, phone_number_id: str) -> str:
        # Ids come from webhooks: quoted, so none can reach another path.
        return f"{self._base}/{quote(self._version, safe='')}/{quote(phone_number_id, safe='')}/messages"

    async def post(self, phone_number_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One POST to /messages; GraphError for anything but a 2xx JSON object."""
        try:
            async with self._client().post(self._messages_url(phone_number_id), json=payload) as response:
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise GraphError(0, None, f"network error: {type(error).__name__}") from error
        try:
            body = json.loads(raw) if len(raw) <= MAX_ANSWER_BYTES else None
        except ValueError:  # (UnicodeDecodeError too)
            body = None
        if status >= 400 or not isinstance(body, dict):
            raise GraphError.from_response(status, body)
        return body

    async def download_media(self, business_id: str, media_id: str,
                             max_bytes: int = MAX_MEDIA_BYTES) -> tuple[bytes, str]:
        """GET /{media_id} → {url, mime_type, file_size}; GET url with the same token (it expires in 5 min)."""
        session = self._client()
        try:
            async with session.get(f"{self._base}/{self._version}/{quote(media_id, safe='')}") as response:
                try:
                    body = await response.json(content_type=None)
                except (aiohttp.ContentTypeError, ValueError):
                    body = None
                if response.status >= 400 or not isinstance(body, dict) or not isinstance(body.get("url"), str):
                    raise GraphError.from_response(response.status, body)
            size = body.get("file_size")
            if isinstance(size, int) and size > max_bytes:
                raise MediaTooLarge(f"{size} bytes")
            async with session.get(body["url"]) as response:
                if response.status >= 400:
                    raise GraphError(response.status, None, "media download refused")
                content = await response.content.read(max_bytes + 1)
                mime = str(body.get("mime_type") or response.content_type or "application/octet-stream")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise GraphError(0, None, f"network error: {type(error).__name__}") from error
        if len(content) > max_bytes:
            raise MediaTooLarge(f"over {max_bytes} bytes")
        return content, mime

    def message_id_of(self, body: dict[str, Any]) -> str | None:
        messages = body.get("messages")
        message_id = messages[0].get("id") if isinstance(messages, list) and messages else None
        return str(message_id) if message_id else None

    def tagged(self, payload: dict[str, Any], key: str) -> dict[str, Any]:
        """Meta repeats `biz_opaque_callback_data` on the message's status webhooks: proof of a send that
        a crash cut off before its answer was recorded."""
        return {**payload, "biz_opaque_callback_data": key} if payload.get("type") else payload

    def decide(self, error: GraphError, server_errors: int) -> Verdict:
        return verdict(error, server_errors)

    async def mark_read_and_typing(self, phone_number_id: str, message_id: str, reply_to: str = "",
                                   typing: bool = True) -> None:
        """Blue ticks (+ typing indicator) for the customer; best effort, never retried."""
        payload: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
        if typing:
            payload["typing_indicator"] = {"type": "text"}
        try:
            await self.post(phone_number_id, payload)
        except GraphError as error:
            logger.info("could not mark %s read: %s", message_id, error)
