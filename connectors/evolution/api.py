"""Evolution API v2 over one aiohttp session: send (with the shared retry policy), presence, instances."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

import aiohttp

from connectors.sender import MAX_MEDIA_BYTES, MediaTooLarge, RetryingSender
from connectors.whatsapp.errors import MAX_SERVER_ERROR_RETRIES, GraphError, Verdict
from connectors.whatsapp.updates import json_object

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 20.0
MEDIA_TYPES = {"image": "image", "video": "video", "audio": "audio", "document": "document", "sticker": "image"}


class UnsupportedOnEvolution(GraphError):
    """A Cloud API message type Baileys cannot send (templates, location requests, …)."""


def evolution_request(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A rendered (Cloud-shaped) message → (Evolution endpoint, JSON body). Pure.

    Options are rendered as numbered text for this channel, so text and media are what arrives;
    an interactive message that slips through is sent as its text.
    """
    number = str(payload.get("to") or "")
    kind = payload.get("type")
    if kind == "text":
        return "message/sendText", {"number": number, "text": str(json_object(payload.get("text")).get("body") or "")}
    if kind in MEDIA_TYPES:
        media = json_object(payload.get(kind))
        body: dict[str, Any] = {"number": number, "mediatype": MEDIA_TYPES[str(kind)], "media": media.get("link")}
        if media.get("caption"):
            body["caption"] = media["caption"]
        if media.get("filename"):
            body["fileName"] = media["filename"]
        return "message/sendMedia", body
    if kind == "interactive":
        text = json_object(json_object(payload.get("interactive")).get("body")).get("text")
        return "message/sendText", {"number": number, "text": str(text or "")}
    raise UnsupportedOnEvolution(400, None, f"message type {kind!r} cannot be sent through Evolution API")



def error_from_response(status: int, body: Any) -> GraphError:
    answer = json_object(body)
    messages = json_object(answer.get("response")).get("message")
    text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else str(answer.get("error") or "")
    return GraphError(status, None, text[:500] or f"HTTP {status}")


class EvolutionClient(RetryingSender):
    def __init__(self, api_url: str, api_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = api_url.rstrip("/")
        self._key = api_key
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env: HTTP(S)_PROXY and NO_PROXY as the Cloud API client reads them
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=15),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS), headers={"apikey": self._key},
                trust_env=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request; GraphError (the shared error type) for anything but a 2xx JSON object."""
        session = await self._client()
        try:
            async with session.request(method, f"{self._base}/{path}", json=body) as response:
                try:
                    data = await response.json(content_type=None)
                except (aiohttp.ContentTypeError, ValueError):
                    data = None
                if response.status >= 400:
                    raise error_from_response(response.status, data)
                return data if isinstance(data, dict) else {"items": data}
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise GraphError(0, None, f"network error: {type(error).__name__}") from error

    async def post(self, business_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        path, body = evolution_request(payload)
        return await self.call("POST", f"{path}/{business_id}", body)

    def message_id_of(self, body: dict[str, Any]) -> str | None:
        key_id = json_object(body.get("key")).get("id")
        return str(key_id) if key_id else None

    def decide(self, error: GraphError, server_errors: int) -> Verdict:
        if isinstance(error, UnsupportedOnEvolution):
            return Verdict.FAIL
        if error.http_status == 429:
            return Verdict.RETRY
        if error.http_status >= 500 or error.http_status == 0:
            return Verdict.RETRY if server_errors < MAX_SERVER_ERROR_RETRIES else Verdict.FAIL
        return Verdict.FAIL  # 400 (not on WhatsApp, bad number), 401/403 (key), 404 (instance)

    async def mark_read_and_typing(self, business_id: str, message_id: str, reply_to: str,
                                   typing: bool = True) -> None:
        """Blue ticks, then "typing…" while Rasa works; best effort, never retried."""
        key_id = message_id.split(":", 1)[1] if ":" in message_id else message_id
        try:
            await self.call("POST", f"chat/markMessageAsRead/{business_id}",
                            {"readMessages": [{"remoteJid": reply_to, "fromMe": False, "id": key_id}]})
            if typing:
                await self.call("POST", f"chat/sendPresence/{business_id}",
                                {"number": reply_to, "presence": "composing", "delay": 1200})
        except GraphError as error:
            logger.info("could not mark %s read / show typing: %s", message_id, error)

    async def download_media(self, business_id: str, media_id: str,
                             max_bytes: int = MAX_MEDIA_BYTES) -> tuple[bytes, str]:
        """POST /chat/getBase64FromMediaMessage/{instance} with the message key → base64 + mimetype."""
        key_id = media_id.split(":", 1)[1] if ":" in media_id else media_id
        body = await self.call("POST", f"chat/getBase64FromMediaMessage/{business_id}",
                               {"message": {"key": {"id": key_id}}, "convertToMp4": False})
        encoded = body.get("base64")
        if not isinstance(encoded, str) or not encoded:
            raise GraphError(502, None, "Evolution answered without base64 content")
        if len(encoded) > (max_bytes * 4) // 3 + 4:
            raise MediaTooLarge(f"over {max_bytes} bytes")
        try:
            content = base64.b64decode(encoded.split(",", 1)[-1], validate=True)
        except (binascii.Error, ValueError) as error:
            raise GraphError(502, None, "Evolution answered with invalid base64") from error
        return content, str(body.get("mimetype") or "application/octet-stream")

    # --- instances (make evolution-setup) ------------------------------------------
    async def create_instance(self, name: str) -> dict[str, Any]:
        return await self.call("POST", "instance/create",
                               {"instanceName": name, "integration": "WHATSAPP-BAILEYS", "qrcode": True})

    async def connection_state(self, name: str) -> str | None:
        state = json_object((await self.call("GET", f"instance/connectionState/{name}")).get("instance")).get("state")
        return str(state) if state else None

    async def connect(self, name: str) -> dict[str, Any]:
        """{"code": QR text, "base64": "data:image/png;base64,…", "pairingCode": …}"""
        return await self.call("GET", f"instance/connect/{name}")

    async def set_webhook(self, name: str, url: str, secret: str) -> dict[str, Any]:
        return await self.call("POST", f"webhook/set/{name}", {"webhook": {
            "enabled": True, "url": url, "headers": {"X-Evolution-Secret": secret}, "byEvents": False,
            "base64": False, "events": ["MESSAGES_UPSERT", "MESSAGES_UPDATE"]}})
