"""What both WhatsApp input channels share inside Rasa: the worker and the sender, one Rasa turn per
stored message, and the webhook routes for `rasa run` started by hand (`make run` serves them from
connectors/receiver.py, outside Rasa's event loop).

The Cloud API channel (connectors/whatsapp/channel.py) and the Evolution channel
(connectors/evolution/channel.py) add their client, their routes and how they render options.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, OutputChannel, UserMessage
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy import text

from connectors.agent_api import add_agent_routes
from connectors.claims import Claims, ClaimsUnavailable
from connectors.process_tuning import check_action_results_with_compiled_schema, freeze_loaded_model
from connectors.queue import InboxRow, Queue, Reply
from connectors.queue_schema import Database
from connectors.receiver import Received, store_received
from connectors.sender import RetryingSender, Sender
from connectors.tracker_indexes import create_tracker_indexes
from connectors.turns import TurnResult, Worker
from connectors.whatsapp.render import render_response
from connectors.whatsapp.to_rasa import apply_menu

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]
LAST_PAUSE_OR_RESUME = text("SELECT type_name FROM events WHERE sender_id = :sender"
                            " AND type_name IN ('pause', 'resume') ORDER BY id DESC LIMIT 1")


class QueueSettings(Protocol):
    inbox_db_url: str
    stale_after_seconds: float
    concurrency: int
    run_worker: bool
    poll_interval_seconds: float


class ReplyCollector(CollectingOutputChannel):
    """Collects a turn's responses as Rasa gives them; they are rendered and queued after the turn."""

    def __init__(self, channel_name: str) -> None:
        super().__init__()
        self.channel_name = channel_name
        self.responses: list[dict[str, Any]] = []

    def name(self) -> str:  # type: ignore[override]  # the channel's responses variations apply
        return self.channel_name

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        self.responses.append(message)


async def replies_of_handled_turn(agent: Any, row: InboxRow) -> list[dict[str, Any]] | None:
    """What Rasa said in its turn on this message (a crash came after Rasa saved the turn and before the
    replies were written), as the output channel got them; None: Rasa has not stored the message. An
    agent's message (`metadata.agent`) is never the turn's."""
    if agent is None or getattr(agent, "tracker_store", None) is None:
        return None
    tracker = await agent.tracker_store.retrieve_full_tracker(row.conversation_id)
    if tracker is None:
        return None
    replies: list[dict[str, Any]] | None = None
    for event in tracker.events:
        if isinstance(event, UserUttered):
            if replies is not None:
                break  # the next message's turn
            if event.message_id == row.message_id:
                replies = []
        elif replies is not None:
            if isinstance(event, ActionExecuted) and event.action_name == ACTION_LISTEN_NAME:
                break
            if isinstance(event, BotUttered) and not (event.metadata or {}).get("agent"):
                replies.append(event.message())
    return replies


class QueueChannel(InputChannel):
    channel_name = ""
    numbered_options = False  # options as numbered text, never interactive messages

    @classmethod
    def name(cls) -> str:
        return cls.channel_name

    def __init__(self, settings: QueueSettings, client: RetryingSender) -> None:
        self.settings = settings
        self.client = client
        self._queue: Queue | None = None
        self._claims: Claims | None = None
        self.worker: Worker | None = None
        self.sender: Sender | None = None
        self._agent: Any = None
        self._on_new_message: OnNewMessage | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._tracker: Database | None = None  # Rasa's SQL tracker store, read-only

    @property
    def queue(self) -> Queue:
        # Opened on first use (server start), not at import or construction.
        if self._queue is None:
            self._queue = Queue(Database(self.settings.inbox_db_url,
                                                    pool_size=min(32, self.settings.concurrency + 4)))
        return self._queue

    def template_for(self, reply_to: str) -> dict[str, Any] | None:
        """What goes instead of a reply refused outside the 24-hour window (Cloud API)."""
        return None

    def render(self, reply_to: str, responses: list[dict[str, Any]]) -> tuple[list[Reply], dict[str, str]]:
        """Rasa responses → outbox replies, and the options the last of them offered."""
        replies: list[Reply] = []
        menu: dict[str, str] = {}
        template = self.template_for(reply_to)
        for message in responses:
            rendered = render_response(reply_to, message, self.numbered_options)
            if rendered.menu:
                menu = dict(rendered.menu)
            replies.extend(Reply(payload, template) for payload in rendered.payloads)
        return replies, menu

    async def run_turn(self, row: InboxRow) -> TurnResult:
        """One stored message through Rasa; its replies come back rendered, to be written with its 'done'."""
        if row.attempts > 1:
            handled = await replies_of_handled_turn(self._agent, row)
            if handled is not None:
                logger.info("message %s was handled before a restart; its replies are written, not made again",
                            row.message_id)
                return TurnResult(*self.render(row.reply_to, handled))
        self._in_background(self._receipt(row))
        collector = ReplyCollector(self.name())
        assert self._on_new_message is not None
        text = apply_menu(row.message["text"], row.menu)
        await self._on_new_message(UserMessage(text, collector, row.conversation_id, input_channel=self.name(),
                                               message_id=row.message_id, metadata=row.message.get("metadata")))
        return TurnResult(*self.render(row.reply_to, collector.responses))

    async def _receipt(self, row: InboxRow) -> None:
        """Blue ticks always; "typing…" only when the bot will answer (not while a person has it)."""
        paused = await self._paused(row.conversation_id)
        await self.client.mark_read_and_typing(row.business_id, row.message_id, row.reply_to, typing=not paused)

    async def _paused(self, conversation_id: str) -> bool:
        """Whether a person has the conversation: its last pause or resume in Rasa's SQL tracker store, read on
        an async engine of ours (Rasa's own store is synchronous). False when that cannot be told."""
        if self._tracker is None:
            return False
        try:
            last = await self._tracker.read(
                lambda conn: conn.execute(LAST_PAUSE_OR_RESUME, {"sender": conversation_id}).scalar())
        except Exception:  # only decides whether "typing…" shows; never fails a turn
            logger.debug("could not tell whether %s is paused", conversation_id, exc_info=True)
            return False
        return last == "pause"

    def _in_background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def queue_outside_a_turn(self, conversation_id: str, responses: list[dict[str, Any]],
                                   turn_key: str = "agent") -> list[int]:
        """Replies made outside a turn (an agent's, a reminder's) into the outbox, behind the bot's; [] when
        the conversation never wrote on this channel."""
        row = await self.queue.last_message_of(self.name(), conversation_id)
        if row is None:
            return []
        replies, menu = self.render(row.reply_to, responses)
        ids = await self.queue.queue_replies(self.name(), conversation_id, row.business_id, replies, turn_key)
        if menu:  # a numbered list (Evolution) is answered with "1", "2"…: map them back like the bot's
            await self.queue.save_menu(self.name(), conversation_id, menu)
        if self.sender is not None:
            self.sender.notify(conversation_id)
        return ids

    def get_output_channel(self) -> OutputChannel:
        """For reminders and trigger_intent: replies go into the outbox of the conversation's channel."""
        return OutboxOutput(self)

    def worker_off_reason(self) -> str | None:
        """Why this replica does not answer (None: it does)."""
        return None if self.settings.run_worker else "run_worker is off: webhooks are stored and ACKed only"

    async def accept(self, received: Received) -> HTTPResponse:
        """A webhook received through Rasa's own route: stored, then the worker starts on it at once."""
        received = await store_received(self.queue, received)
        if received.status == 200 and self.worker is not None:
            for conversation_id in dict.fromkeys(item.conversation_id for item in received.items):
                self.worker.notify(conversation_id)
        return response.json(received.body, status=received.status)

    def add_worker(self, bp: Blueprint, on_new_message: OnNewMessage) -> None:
        """The health and agent routes; the worker and the sender start and stop with the server."""
        self._on_new_message = on_new_message
        add_agent_routes(bp, self)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bp.listener("before_server_start")
        async def tables(_app: Any, _loop: Any) -> None:
            await self.queue.create_tables()  # before the first webhook is served

        @bp.listener("after_server_start")
        async def start(app: Any, _loop: Any) -> None:
            self._agent = getattr(app.ctx, "agent", None)
            freeze_loaded_model(self._agent)  # Rasa loaded its model before the server started
            check_action_results_with_compiled_schema()  # every channel's turns, REST's too
            tracker_engine = _rasa_sql_engine(self._agent)
            if tracker_engine is not None:  # in a thread: the worker answers meanwhile, its look-ups slower
                self._in_background(asyncio.to_thread(create_tracker_indexes, tracker_engine))
                try:
                    self._tracker = Database(tracker_engine.url.render_as_string(hide_password=False), 2)
                except ValueError:  # neither SQLite nor PostgreSQL: "typing…" always shows
                    self._tracker = None
            reason = self.worker_off_reason()
            if reason is None:
                reason = await self._start_worker_and_sender()
            if reason:
                logger.info("%s: worker and sender not started: %s", self.name(), reason)

        @bp.listener("before_server_stop")
        async def stop(_app: Any, _loop: Any) -> None:
            for part in (self.worker, self.sender):
                if part is not None:
                    await part.stop()
            if self._claims is not None:
                await self._claims.close()
            await self.client.close()
            await self.queue.close()
            if self._tracker is not None:
                await self._tracker.dispose()

    async def _start_worker_and_sender(self) -> str | None:
        claims = Claims(self.queue.db)
        try:
            claims.take_database(f"{self.name()}-channel")
        except ClaimsUnavailable as error:
            return str(error)
        self._claims = claims
        settings = self.settings
        self.sender = Sender(self.queue, claims, self.name(), self.client, concurrency=settings.concurrency)
        self.worker = Worker(self.queue, claims, self.name(), self.run_turn, concurrency=settings.concurrency,
                             stale_after=settings.stale_after_seconds, poll_interval=settings.poll_interval_seconds,
                             on_replies=self.sender.notify, clock=time.time)
        self._in_background(self.sender.run())
        self._in_background(self.worker.run())
        return None


def _rasa_sql_engine(agent: Any) -> Any:
    """The engine of Rasa's SQL tracker store (Rasa wraps the store in others), else None."""
    store = getattr(agent, "tracker_store", None)
    for _ in range(5):
        if store is None or getattr(store, "engine", None) is not None:
            break
        store = getattr(store, "_tracker_store", None) or getattr(store, "tracker_store", None)
    return getattr(store, "engine", None) if store is not None else None


class OutboxOutput(OutputChannel):
    """Rasa's output channel outside a worker's turn (reminders, trigger_intent): into the outbox."""

    def __init__(self, channel: QueueChannel) -> None:
        self.channel = channel

    def name(self) -> str:  # type: ignore[override]
        return self.channel.name()

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        if not await self.channel.queue_outside_a_turn(recipient_id, [message], turn_key="rasa"):
            logger.warning("%s: no conversation %s to send to", self.name(), recipient_id)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"text": text})
