"""Rasa input channel `evolution`: Baileys numbers through Evolution API, on the Cloud channel's core.

credentials.yml:
    connectors.evolution.channel.EvolutionInput:
      # every key is optional; unset keys come from EVOLUTION_API_URL, EVOLUTION_API_KEY,
      # EVOLUTION_INSTANCE, EVOLUTION_WEBHOOK_SECRET (and the WHATSAPP_* inbox/worker variables)

Route: /webhooks/evolution/webhook (POST, header X-Evolution-Secret; Evolution's webhook_by_events
appends the event name, which is served too). Same queue, dedup, worker, sender and failure records as
the Cloud API channel; options go out as numbered text (Baileys buttons are unreliable) and "1"/"2"… map
back to their payloads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.channel import QueueChannel
from connectors.evolution.api import EvolutionClient
from connectors.receiver import EVOLUTION_SECRET_HEADER, receive_evolution
from connectors.settings import EvolutionSettings

logger = logging.getLogger(__name__)
CHANNEL = "evolution"


class EvolutionInput(QueueChannel):
    channel_name = CHANNEL
    numbered_options = True

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> InputChannel:
        settings = EvolutionSettings.load(credentials or {})
        if not settings.webhook_secret:
            logger.warning("EVOLUTION_WEBHOOK_SECRET is not set: every webhook POST will be refused with 403")
        if not settings.api_key:
            logger.warning("EVOLUTION_API_KEY is not set: replies cannot be sent")
        return cls(settings)

    def __init__(self, settings: EvolutionSettings) -> None:
        super().__init__(settings, EvolutionClient(settings.api_url, settings.api_key))
        self.settings: EvolutionSettings = settings

    def worker_off_reason(self) -> str | None:
        if not self.settings.api_key:
            return "EVOLUTION_API_KEY is not set (the channel is not configured)"
        return super().worker_off_reason()

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint(f"{CHANNEL}_webhook", __name__)
        self.add_worker(bp, on_new_message)

        async def receive(request: Request, event: str = "") -> HTTPResponse:
            secret = request.headers.get(EVOLUTION_SECRET_HEADER)
            return await self.accept(receive_evolution(request.body or b"", secret, self.settings.webhook_secret,
                                                       int(time.time()), event))

        bp.add_route(receive, "/webhook", methods=["POST"], name="receive")
        bp.add_route(receive, "/webhook/<event>", methods=["POST"], name="receive_by_event")
        return bp
