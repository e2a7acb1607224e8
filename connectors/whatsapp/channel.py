"""Rasa input channel `whatsapp` (Meta's Cloud API): verify, store, ACK; the worker answers later.

credentials.yml:
    connectors.whatsapp.channel.WhatsAppInput:
      # every key is optional; unset keys come from the environment variables of `WhatsAppSettings`
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.inbox import InboxRow
from connectors.inbox_channel import InboxChannel
from connectors.settings import WhatsAppSettings
from connectors.whatsapp.graph_api import GraphClient
from connectors.whatsapp.output import CHANNEL, WhatsAppOutput
from connectors.whatsapp.webhook import receive_webhook, verify_subscription

__all__ = ["WhatsAppInput"]

logger = logging.getLogger(__name__)


class WhatsAppInput(InboxChannel):
    channel_name = CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> InputChannel:
        settings = WhatsAppSettings.load(credentials or {})
        if not settings.app_secret:
            logger.warning("WHATSAPP_APP_SECRET is not set: every webhook POST will be refused with 403")
        if not settings.access_token:
            logger.warning("WHATSAPP_ACCESS_TOKEN is not set: replies cannot be sent")
        return cls(settings)

    def __init__(self, settings: WhatsAppSettings) -> None:
        super().__init__(settings, GraphClient(settings.access_token, settings.graph_api_url, settings.api_version))
        self.settings: WhatsAppSettings = settings

    def get_output_channel(self) -> OutputChannel:
        """For reminders and trigger_intent: replies go from the default business number."""
        return WhatsAppOutput(self.client, self.inbox, self.settings.phone_number_id, reply_to="",
                              conversation_id="", template=self.settings.template)

    def output_for(self, row: InboxRow) -> WhatsAppOutput:
        return WhatsAppOutput(self.client, self.inbox, row.business_id, row.reply_to, row.conversation_id,
                              turn_id=row.message_id, rerun=row.attempts > 1, template=self.settings.template)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint(f"{CHANNEL}_webhook", __name__)
        settings = self.settings
        self.add_worker(bp, on_new_message)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            status, text = verify_subscription(request.args, settings.verify_token)
            return response.text(text, status=status)

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            status, body, new = await receive_webhook(
                request.body or b"", request.headers.get("X-Hub-Signature-256"), settings.app_secret, self.inbox
            )
            self.notify_worker(new)
            return response.json(body, status=status)

        return bp
