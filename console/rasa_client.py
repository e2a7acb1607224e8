"""The console's calls into Rasa: the channels' agent routes, and Rasa's HTTP API for other channels.

WhatsApp conversations (Cloud API and Evolution) are answered through
`/webhooks/<channel>/agent/<send|handback|close>`, so the channel's own client, rendering, retries
and send records are used. Conversations of other channels (REST, shell) cannot receive an agent's
message; hand-back and close append `resume` through Rasa's API (`/conversations/<id>/tracker/events`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

AGENT_CHANNELS = frozenset({"whatsapp", "evolution"})
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


@dataclass(frozen=True)
class RasaAnswer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        return str(self.body.get("error") or self.body.get("message") or f"Rasa answered {self.status}")


class RasaClient:
    def __init__(self, base_url: str, rasa_token: str, channel_token: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.rasa_token = rasa_token
        self.channel_token = channel_token
        self._client = httpx.AsyncClient(timeout=TIMEOUT, transport=transport)

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, url: str, body: Any, headers: dict[str, str] | None = None,
                    params: dict[str, str] | None = None) -> RasaAnswer:
        try:
            answer = await self._client.post(url, json=body, headers=headers or {}, params=params)
        except httpx.HTTPError as error:
            return RasaAnswer(503, {"error": f"Rasa is not reachable: {error.__class__.__name__}"})
        try:
            data = answer.json()
        except ValueError:
            data = {"error": answer.text[:300]}
        return RasaAnswer(answer.status_code, data if isinstance(data, dict) else {"result": data})

    async def channel_call(self, channel: str, action: str, body: dict[str, Any]) -> RasaAnswer:
        """POST /webhooks/<channel>/agent/<action> with the channels' bearer token."""
        if channel not in AGENT_CHANNELS:
            return RasaAnswer(409, {"error": f"the {channel or 'unknown'} channel cannot send an agent's message"})
        return await self._post(f"{self.base_url}/webhooks/{channel}/agent/{action}", body,
                                headers={"Authorization": f"Bearer {self.channel_token}"})

    async def append_events(self, sender_id: str, events: list[dict[str, Any]]) -> RasaAnswer:
        """Rasa's own API, for conversations of channels without an agent route."""
        return await self._post(f"{self.base_url}/conversations/{quote(sender_id, safe='')}/tracker/events",
                                events, params={"token": self.rasa_token} if self.rasa_token else None)

    async def channel_media(self, channel: str, conversation_id: str, media_id: str) -> tuple[int, bytes, str]:
        """(status, content, content type) of a customer's media file, fetched by the channel."""
        if channel not in AGENT_CHANNELS:
            return 404, b"", ""
        try:
            answer = await self._client.get(f"{self.base_url}/webhooks/{channel}/agent/media",
                                            params={"conversation_id": conversation_id, "media_id": media_id},
                                            headers={"Authorization": f"Bearer {self.channel_token}"})
        except httpx.HTTPError:
            return 503, b"", ""
        return answer.status_code, answer.content, answer.headers.get("content-type", "")
