"""Rasa input channel `whatsapp` (Meta's Cloud API): verify, store, ACK; the worker answers later.

credentials.yml:
    connectors.whatsapp.channel.WhatsAppInput:
      # every key is optional; unset keys come from the environment variables of `WhatsAppSettings`
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.inbox import Inbox, InboxRow, create_inbox_engine
from connectors.settings import WhatsAppSettings
from connectors.whatsapp.graph_api import GraphClient
from connectors.whatsapp.output import CHANNEL, WhatsAppOutput
from connectors.whatsapp.to_rasa import apply_menu
from connectors.whatsapp.webhook import receive_webhook, verify_subscription
from connectors.worker import InboxWorker

logger = logging.getLogger(__name__)


async def already_handled(agent: Any, row: InboxRow) -> bool:
    """Did Rasa already store this message (crash after the turn, before the row was marked done)?"""
    if agent is None or getattr(agent, "tracker_store", None) is None:
        return False
    tracker = await agent.tracker_store.retrieve_full_tracker(row.conversation_id)
    if tracker is None:
        return False
    return any(getattr(event, "message_id", None) == row.message_id for event in tracker.events)


class WhatsAppInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> InputChannel:
        settings = WhatsAppSettings.load(credentials or {})
        if not settings.app_secret:
            logger.warning("WHATSAPP_APP_SECRET is not set: every webhook POST will be refused with 403")
        if not settings.access_token:
            logger.warning("WHATSAPP_ACCESS_TOKEN is not set: replies cannot be sent")
        return cls(settings)

    def __init__(self, settings: WhatsAppSettings) -> None:
        self.settings = settings
        self.client = GraphClient(settings.access_token, settings.graph_api_url, settings.api_version)
        self._inbox: Inbox | None = None
        self.worker: InboxWorker | None = None
        self._agent: Any = None
        self._receipts: set[asyncio.Task[None]] = set()

    @property
    def inbox(self) -> Inbox:
        # Opened on first use (server start), not at import or construction.
        if self._inbox is None:
            self._inbox = Inbox(create_inbox_engine(self.settings.inbox_db_url))
        return self._inbox

    def get_output_channel(self) -> OutputChannel:
        """For reminders and trigger_intent: replies go from the default business number."""
        return WhatsAppOutput(self.client, self.inbox, self.settings.phone_number_id, reply_to="",
                              conversation_id="", template=self.settings.template)

    def output_for(self, row: InboxRow) -> WhatsAppOutput:
        return WhatsAppOutput(self.client, self.inbox, row.business_id, row.reply_to, row.conversation_id,
                              turn_id=row.message_id, rerun=row.attempts > 1, template=self.settings.template)

    async def handle_row(
        self, row: InboxRow, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> dict[str, str] | None:
        """Hand one stored message to Rasa; returns the options the reply offered (saved by the worker)."""
        if row.attempts > 1 and await already_handled(self._agent, row):
            logger.info("inbox message %s was handled before a restart; not answering twice", row.message_id)
            return None
        text = apply_menu(row.message["text"], row.menu)
        # Blue ticks + typing while Rasa works; the turn does not wait for it.
        receipt = asyncio.create_task(self.client.mark_read_and_typing(row.business_id, row.message_id))
        self._receipts.add(receipt)
        receipt.add_done_callback(self._receipts.discard)
        output = self.output_for(row)
        await on_new_message(
            UserMessage(text, output, row.conversation_id, input_channel=CHANNEL, message_id=row.message_id,
                        metadata=row.message.get("metadata"))
        )
        return output.menu

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint(f"{CHANNEL}_webhook", __name__)
        settings = self.settings

        @bp.listener("after_server_start")
        async def start_worker(app: Any, _loop: Any) -> None:
            self._agent = getattr(app.ctx, "agent", None)
            if not settings.run_worker:
                logger.info("WhatsApp worker off on this replica: webhooks are stored and ACKed only")
                return

            async def handler(row: InboxRow) -> dict[str, str] | None:
                return await self.handle_row(row, on_new_message)

            self.worker = InboxWorker(self.inbox, handler, concurrency=settings.concurrency,
                                      stale_after=settings.stale_after_seconds,
                                      poll_interval=settings.poll_interval_seconds)
            app.ctx.whatsapp_worker_task = asyncio.create_task(self.worker.run())

        @bp.listener("before_server_stop")
        async def stop_worker(app: Any, _loop: Any) -> None:
            if self.worker is not None:
                await self.worker.stop()
            await self.client.close()

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
            if new and self.worker is not None:
                self.worker.notify()
            return response.json(body, status=status)

        return bp
