"""Rasa input channel `evolution`: Baileys numbers through Evolution API, on the Cloud channel's core.

credentials.yml:
    connectors.evolution.channel.EvolutionInput:
      # every key is optional; unset keys come from EVOLUTION_API_URL, EVOLUTION_API_KEY,
      # EVOLUTION_INSTANCE, EVOLUTION_WEBHOOK_SECRET (and the WHATSAPP_* inbox/worker variables)

Route: /webhooks/evolution/webhook (POST, header X-Evolution-Secret). Same inbox, dedup,
worker, rendering and failure recording as the Cloud API channel; options go out as numbered
text (Baileys buttons are unreliable) and "1"/"2"… map back to their payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.evolution.api import EvolutionClient
from connectors.evolution.webhook import CHANNEL, SECRET_HEADER, receive_evolution
from connectors.inbox import InboxRow
from connectors.inbox_channel import InboxChannel
from connectors.settings import EvolutionSettings
from connectors.whatsapp.output import WhatsAppOutput

logger = logging.getLogger(__name__)


class EvolutionOutput(WhatsAppOutput):
    numbered_options = True

    @classmethod
    def name(cls) -> str:
        return CHANNEL


class EvolutionInput(InboxChannel):
    channel_name = CHANNEL

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

    def get_output_channel(self) -> OutputChannel:
        return EvolutionOutput(self.client, self.inbox, self.settings.instance, reply_to="", conversation_id="")

    def output_for(self, row: InboxRow) -> WhatsAppOutput:
        return EvolutionOutput(self.client, self.inbox, row.business_id, row.reply_to, row.conversation_id,
                               turn_id=row.message_id, rerun=row.attempts > 1)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint(f"{CHANNEL}_webhook", __name__)
        self.add_worker(bp, on_new_message)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            status, body, new = await receive_evolution(
                request.body or b"", request.headers.get(SECRET_HEADER), self.settings.webhook_secret, self.inbox)
            self.notify_worker(new)
            return response.json(body, status=status)

        return bp
