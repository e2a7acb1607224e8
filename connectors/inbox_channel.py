"""What every inbox-backed Rasa channel shares: the worker's life cycle and one turn per stored message.

The Cloud API channel (connectors/whatsapp/) and the Evolution channel (connectors/evolution/)
subclass it and add their own webhook routes, parsing and client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint

from connectors.agent_api import add_agent_routes
from connectors.inbox import Inbox, InboxItem, InboxRow, create_inbox_engine
from connectors.paused import paused_among
from connectors.process_tuning import freeze_loaded_model
from connectors.receipts import Receipts
from connectors.sending import RetryingSender
from connectors.whatsapp.output import WhatsAppOutput
from connectors.whatsapp.to_rasa import apply_menu
from connectors.worker import InboxWorker

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


class WorkerSettings(Protocol):
    inbox_db_url: str
    stale_after_seconds: float
    concurrency: int
    run_worker: bool
    poll_interval_seconds: float
    lease_seconds: float
    inbox_calls: str


async def already_handled(agent: Any, row: InboxRow) -> bool:
    """Did Rasa already store this message (crash after the turn, before the row was marked done)?"""
    if agent is None or getattr(agent, "tracker_store", None) is None:
        return False
    tracker = await agent.tracker_store.retrieve_full_tracker(row.conversation_id)
    if tracker is None:
        return False
    return any(getattr(event, "message_id", None) == row.message_id for event in tracker.events)


class InboxChannel(InputChannel):
    channel_name = ""
    # The platform marks a conversation's earlier messages read with a later one (the Cloud API does).
    coalesce_receipts = False

    @classmethod
    def name(cls) -> str:
        return cls.channel_name

    def __init__(self, settings: WorkerSettings, client: RetryingSender) -> None:
        self.settings = settings
        self.client = client
        self._inbox: Inbox | None = None
        self.worker: InboxWorker | None = None
        self._agent: Any = None
        # Rows this route stores get their receipt here; rows connectors.ingest stores, there.
        self.receipts = Receipts(client, self._paused_among, settings.stale_after_seconds,
                                 coalesce=self.coalesce_receipts)

    @property
    def inbox(self) -> Inbox:
        # Opened on first use (server start), not at import or construction.
        if self._inbox is None:
            self._inbox = Inbox(create_inbox_engine(self.settings.inbox_db_url),
                                lease_seconds=self.settings.lease_seconds,
                                calls=self.settings.inbox_calls)
        return self._inbox

    def output_for(self, row: InboxRow) -> WhatsAppOutput:
        raise NotImplementedError

    def agent_output_for(self, row: InboxRow) -> WhatsAppOutput:
        """A human agent's reply: same sender and records, no turn key (it answers no stored message)."""
        output = self.output_for(row)
        output.turn_id = None  # no turn key: earlier sends are never looked up
        return output

    async def handle_row(self, row: InboxRow, on_new_message: OnNewMessage) -> dict[str, str] | None:
        """Hand one stored message to Rasa; returns the options the reply offered (saved by the worker)."""
        if row.attempts > 1 and await already_handled(self._agent, row):
            logger.info("inbox message %s was handled before a restart; not answering twice", row.message_id)
            return None
        text = apply_menu(row.message["text"], row.menu)
        output = self.output_for(row)
        await on_new_message(
            UserMessage(text, output, row.conversation_id, input_channel=self.name(), message_id=row.message_id,
                        metadata=row.message.get("metadata"))
        )
        return output.menu

    async def _paused_among(self, conversation_ids: list[str]) -> set[str]:
        return await paused_among(self._agent, conversation_ids, self.settings.inbox_calls)

    def worker_off_reason(self) -> str | None:
        """Why this replica does not answer (None: it does)."""
        return None if self.settings.run_worker else "run_worker is off: webhooks are stored and ACKed only"

    def after_store(self, new_items: tuple[InboxItem, ...]) -> None:
        """Messages were just stored by this route: their drains start without a scan, their receipts go."""
        if self.worker is not None:
            for conversation_id in dict.fromkeys(item.conversation_id for item in new_items):
                self.worker.notify(conversation_id)
        self.receipts.after_store(new_items)

    def add_worker(self, bp: Blueprint, on_new_message: OnNewMessage) -> None:
        """Start the worker with the server, stop it (and the client) with the server; the agent route."""
        settings = self.settings
        add_agent_routes(bp, self)

        @bp.listener("after_server_start")
        async def start_worker(app: Any, _loop: Any) -> None:
            self._agent = getattr(app.ctx, "agent", None)
            freeze_loaded_model(self._agent)  # Rasa loaded its model before the server started
            reason = self.worker_off_reason()
            if reason:
                logger.info("%s worker not started: %s", self.name(), reason)
                return

            async def handler(row: InboxRow) -> dict[str, str] | None:
                return await self.handle_row(row, on_new_message)

            self.worker = InboxWorker(self.inbox, handler, concurrency=settings.concurrency,
                                      stale_after=settings.stale_after_seconds,
                                      poll_interval=settings.poll_interval_seconds, channel=self.name())
            setattr(app.ctx, f"{self.name()}_worker_task", asyncio.create_task(self.worker.run()))

        @bp.listener("before_server_stop")
        async def stop_worker(app: Any, _loop: Any) -> None:
            if self.worker is not None:
                await self.worker.stop()
            await self.receipts.idle()
            await self.client.close()
