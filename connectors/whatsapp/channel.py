"""Rasa input channel `whatsapp` (Meta's Cloud API): the worker answers stored messages, the sender sends.

credentials.yml:
    connectors.whatsapp.channel.WhatsAppInput:
      # every key is optional; unset keys come from the environment variables of `WhatsAppSettings`
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.channel import QueueChannel
from connectors.receiver import receive_cloud, verify_subscription
from connectors.settings import WhatsAppSettings
from connectors.whatsapp.graph_api import GraphClient
from connectors.whatsapp.render import template_message

__all__ = ["WhatsAppInput"]

logger = logging.getLogger(__name__)
CHANNEL = "whatsapp"


class WhatsAppInput(QueueChannel):
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

    def template_for(self, reply_to: str) -> dict[str, Any] | None:
        return template_message(reply_to, *self.settings.template) if self.settings.template else None

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint(f"{CHANNEL}_webhook", __name__)
        settings = self.settings
        self.add_worker(bp, on_new_message)

        @bp.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            status, text = verify_subscription(request.args, settings.verify_token)
            return response.text(text, status=status)

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            return await self.accept(receive_cloud(request.body or b"", request.headers.get("X-Hub-Signature-256"),
                                                   settings.app_secret, int(time.time())))

        return bp
