"""The Cloud API: send messages, mark read + typing, download media; retry by error code.

The per-message calls (/messages: sends and read receipts) go on kept HTTP/1.1 connections of our own
(connectors/http_kept.py: about a sixth of aiohttp's CPU per request); a media download, rare, large and
redirected, on an aiohttp session."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from connectors.http_kept import HttpError, HttpResponse, KeptHttp, proxy_from_environment
from connectors.sending import MAX_ATTEMPTS, MAX_MEDIA_BYTES, MediaTooLarge, RetryingSender, SendResult
from connectors.whatsapp.errors import GraphError, Verdict, verdict

__all__ = ["DEFAULT_API_VERSION", "DEFAULT_GRAPH_URL", "GraphClient", "SendResult"]

logger = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v23.0"
REQUEST_TIMEOUT_SECONDS = 15.0


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
        self._token = access_token
        self._base = base_url.rstrip("/")
        self._version = api_version.strip("/")
        self._session: aiohttp.ClientSession | None = None
        try:  # through HTTPS_PROXY (HTTP_PROXY for an http stand-in) unless NO_PROXY names the host
            self._http = KeptHttp(self._base, {"Authorization": f"Bearer {access_token}"}, REQUEST_TIMEOUT_SECONDS,
                                  proxy=proxy_from_environment(self._base))
        except ValueError as error:  # (never the token itself in the message)
            raise ValueError(f"WHATSAPP_GRAPH_API_URL / WHATSAPP_ACCESS_TOKEN / HTTPS_PROXY: {error}") from None

    def helper_spec(self) -> tuple[str, str, tuple[Any, ...]] | None:
        if type(self) is not GraphClient or not self._built_plain():
            return None
        return __name__, "GraphClient", (self._token, self._base, self._version)

    def _path(self, phone_number_id: str) -> str:
        # Ids come from webhooks: quoted, so none can reach another path (or end the request line).
        return f"/{quote(self._version, safe='')}/{quote(phone_number_id, safe='')}/messages"

    async def _client(self) -> aiohttp.ClientSession:
        # For media only. Created on first use, inside the running loop (never at import or construction).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS), trust_env=True,  # the same proxy
                headers={"Authorization": f"Bearer {self._token}"},
            )
        return self._session

    async def close(self) -> None:
        await self._http.close()
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def post(self, phone_number_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One POST to /messages; GraphError for anything but a 2xx JSON answer."""
        return await self.start_post(phone_number_id, payload)

    def start_post(self, phone_number_id: str, payload: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        """`post`, its request written before this returns when a kept connection is free."""
        request = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return _graph_answer(self._http.start("POST", self._path(phone_number_id), request))

    async def download_media(self, business_id: str, media_id: str,
                             max_bytes: int = MAX_MEDIA_BYTES) -> tuple[bytes, str]:
        """GET /{media_id} → {url, mime_type, file_size}; GET url with the same token (it expires in 5 min)."""
        session = await self._client()
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

    def tagged(self, payload: dict[str, Any], key: str) -> dict[str, Any]:
        """Meta repeats `biz_opaque_callback_data` on the message's status webhooks: proof of a send that
        a crash cut off before its answer was recorded."""
        return {**payload, "biz_opaque_callback_data": key} if payload.get("type") else payload

    def message_id_of(self, body: dict[str, Any]) -> str | None:
        messages = body.get("messages")
        message_id = messages[0].get("id") if isinstance(messages, list) and messages else None
        return str(message_id) if message_id else None

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


async def _graph_answer(answer: Awaitable[HttpResponse]) -> dict[str, Any]:
    """The answer's JSON object; GraphError for anything but a 2xx JSON object (or for no answer)."""
    try:
        response = await answer
    except HttpError as error:
        raise GraphError(0, None, f"network error: {error}") from error
    try:
        body = json.loads(response.body)
    except ValueError:  # (UnicodeDecodeError too)
        body = None
    if response.status >= 400 or not isinstance(body, dict):
        raise GraphError.from_response(response.status, body)
    return body
