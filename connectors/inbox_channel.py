"""What every inbox-backed Rasa channel shares: the worker's life cycle and one turn per stored message.

The Cloud API channel (connectors/whatsapp/) and the Evolution channel (connectors/evolution/)
subclass it and add their own webhook routes, parsing and client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from sanic import Blueprint
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from connectors.agent_api import add_agent_routes
from connectors.asyncpg_kept import KeptAsyncpg
from connectors.inbox import Inbox, InboxRow, create_inbox_engine
from connectors.inbox_calls import (
    ON_EVENTS,
    call_blocking,
    connect_timeout,
    create_asyncpg_engine,
    on_this_loop,
    where_calls_run,
)
from connectors.inbox_helper import InboxHelperGone
from connectors.inbox_statements import LAST_PAUSE_OR_RESUME
from connectors.inbox_tables import is_sqlite_file
from connectors.process_tuning import check_action_results_with_compiled_schema, freeze_loaded_model
from connectors.send_chains import SendChains
from connectors.sending import RetryingSender
from connectors.sqlite_kept import KeptSqlite
from connectors.tracker_indexes import create_tracker_indexes
from connectors.whatsapp.output import WhatsAppOutput
from connectors.whatsapp.to_rasa import apply_menu
from connectors.worker import Answered, InboxWorker

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


async def replies_of_handled_turn(agent: Any, row: InboxRow) -> list[dict[str, Any]] | None:
    """What Rasa said in its turn on this message, as it gave each to the output channel (a bot event's
    `message()`, as Rasa's processor sends it); None: Rasa has not stored the message (a crash before the
    turn was saved: it runs again). Not None: a crash after the turn, before the row was marked done.
    The turn ends at its `action_listen`; an agent's message (the console's, `metadata.agent`) is never
    the turn's, even in a paused conversation whose turns run no action."""
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


def _rasa_sql_engine(agent: Any) -> Any:
    """The engine of Rasa's SQL tracker store (Rasa wraps the store in others), else None."""
    store = getattr(agent, "tracker_store", None)
    for _ in range(5):
        if store is None or getattr(store, "engine", None) is not None:
            break
        store = getattr(store, "_tracker_store", None) or getattr(store, "tracker_store", None)
    return getattr(store, "engine", None) if store is not None else None


def _in_own_schema() -> bool:
    """Rasa's PostgreSQL tracker store puts its tables in the schema POSTGRESQL_SCHEMA names (a search_path
    only its own engine's connections set): our connections would not find its `events` table."""
    return bool(os.environ.get("POSTGRESQL_SCHEMA"))


def tracker_store_shares(agent: Any, engine: Engine) -> bool:
    """Rasa's SQL tracker store is in the database `engine` opens (whatever the drivers), in the default schema."""
    tracker_engine = _rasa_sql_engine(agent)
    if tracker_engine is None or _in_own_schema():
        return False

    def database(url: Any) -> tuple[Any, ...]:
        return url.get_backend_name(), url.host or "localhost", url.port or 5432, url.database, url.username

    return database(engine.url) == database(tracker_engine.url)


def _sql_tracker_engine(agent: Any, calls: str = ON_EVENTS) -> Any:
    """An engine on the database of Rasa's SQL tracker store, else None."""
    engine = _rasa_sql_engine(agent)
    if engine is None:
        return None
    if isinstance(engine.pool, NullPool):  # Rasa's SQLite file: a connection per use, none kept
        url = engine.url.render_as_string(hide_password=False)
        return _kept_reader(url) if is_sqlite_file(url) else engine
    if where_calls_run(engine, calls) == ON_EVENTS and not _in_own_schema():
        reader = _asyncpg_reader(engine.url.render_as_string(hide_password=False), id(asyncio.get_running_loop()))
        return reader or engine
    return engine


@functools.lru_cache(maxsize=4)
def _kept_reader(url: str) -> KeptSqlite:
    """A SQLite file (Rasa's default tracker store): the receipt's question on a kept sqlite3 connection."""
    return KeptSqlite(create_engine(url, future=True), on_connect=lambda _connection, _record: None)


@functools.lru_cache(maxsize=4)
def _asyncpg_reader(url: str, _loop_id: int) -> KeptAsyncpg | None:
    """WHATSAPP_INBOX_CALLS=async: the receipt's question on kept asyncpg connections too (they belong to
    one event loop: a new loop, as in tests, gets a reader of its own). None: asyncpg cannot take the
    tracker store's URL; Rasa's own engine answers then (said once)."""
    try:
        return KeptAsyncpg(create_asyncpg_engine(url), connect_timeout(url))
    except ValueError as error:
        logger.warning("read receipts ask the tracker store through Rasa's own engine: %s", error)
        return None


_LAST_PAUSE_OR_RESUME = text(LAST_PAUSE_OR_RESUME.format(sender=":sender"))


def _paused_in_sql(engine: Any, conversation_id: str) -> bool:
    with engine.connect() as conn:
        last = conn.execute(_LAST_PAUSE_OR_RESUME, {"sender": conversation_id}).scalar()
    return last == "pause"


async def is_paused(agent: Any, conversation_id: str, calls: str = ON_EVENTS) -> bool:
    """Handed to a person (the bot stays silent): one indexed query on a SQL tracker store."""
    if agent is None or getattr(agent, "tracker_store", None) is None:
        return False
    try:
        engine = _sql_tracker_engine(agent, calls)
        if engine is not None:
            return await call_blocking(where_calls_run(engine, calls), _paused_in_sql, engine, conversation_id)
        tracker = await agent.tracker_store.retrieve(conversation_id)
        return bool(tracker is not None and tracker.is_paused())
    except Exception:  # only decides whether "typing…" shows; never fails a turn
        logger.debug("could not tell whether %s is paused", conversation_id, exc_info=True)
        return False


class InboxChannel(InputChannel):
    channel_name = ""

    @classmethod
    def name(cls) -> str:
        return cls.channel_name

    def __init__(self, settings: WorkerSettings, client: RetryingSender) -> None:
        self.settings = settings
        self.client = client
        self._inbox: Inbox | None = None
        self.worker: InboxWorker | None = None
        self._agent: Any = None
        self._receipts: set[asyncio.Task[None]] = set()
        self.tracker_indexes: asyncio.Future[bool] | None = None  # the tracker store's indexes being made
        self.send_chains = SendChains()

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
        output.send_chains = self.send_chains  # after the bot's sends still going out, in order
        return output

    async def handle_row(self, row: InboxRow, on_new_message: OnNewMessage) -> Answered | None:
        """Hand one stored message to Rasa; returns once Rasa handled it, with the options the reply
        offered (saved by the worker) and its sends, which go on in the conversation's send chain."""
        replies = await replies_of_handled_turn(self._agent, row) if row.attempts > 1 else None
        if replies is not None:
            logger.info("inbox message %s was handled before a restart; not answering twice", row.message_id)
            await self.output_for(row).resend_unfinished(replies)  # a send its turn queued may not have gone out
            return None
        text = apply_menu(row.message["text"], row.menu)
        # Read receipt + typing while Rasa works; the turn does not wait for it. Handed to the inbox helper
        # process when the claim already answered the pause question, else sent from here.
        if row.paused is None or not self.inbox.receipt_in_helper(self.client, row.business_id, row.message_id,
                                                                  row.reply_to, typing=not row.paused):
            receipt = asyncio.create_task(self._receipt(row))
            self._receipts.add(receipt)
            receipt.add_done_callback(self._receipts.discard)
        output = self.output_for(row)
        output.send_chains = self.send_chains
        try:
            await on_new_message(
                UserMessage(text, output, row.conversation_id, input_channel=self.name(),
                            message_id=row.message_id, metadata=row.message.get("metadata"))
            )
        except Exception:
            # The message is tried again: what this turn queued must have ended first, or the retry
            # would take a send still on its way for one a restart cut off.
            with contextlib.suppress(Exception):
                await output.sends_finished()
            raise
        return Answered(output.menu, output.sends_finished())

    async def _receipt(self, row: InboxRow) -> None:
        """Blue ticks always; "typing…" only when the bot will answer (not while a person has it)."""
        paused = row.paused  # answered by the claim when the tracker store shares the inbox's database
        if paused is None:
            paused = await is_paused(self._agent, row.conversation_id, on_this_loop(self.settings.inbox_calls))
        typing = not paused
        if not self.inbox.receipt_in_helper(self.client, row.business_id, row.message_id, row.reply_to, typing):
            await self.client.mark_read_and_typing(row.business_id, row.message_id, row.reply_to, typing=typing)

    def use_agent(self, agent: Any) -> None:
        """Rasa's agent: its tracker store tells whether a person has a conversation (the receipt's question)."""
        self._agent = agent
        self.inbox.pauses_in_this_database = tracker_store_shares(agent, self.inbox.engine)
        tracker_engine = _rasa_sql_engine(agent)
        if tracker_engine is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # (tools outside a server)
            create_tracker_indexes(tracker_engine)
            return
        # In the background: the worker answers meanwhile, only its look-ups are slower until the indexes exist.
        self.tracker_indexes = asyncio.ensure_future(asyncio.to_thread(create_tracker_indexes, tracker_engine))

    def worker_off_reason(self) -> str | None:
        """Why this replica does not answer (None: it does)."""
        return None if self.settings.run_worker else "run_worker is off: webhooks are stored and ACKed only"

    def notify_worker(self, conversations: tuple[str, ...]) -> None:
        """Messages of these conversations were just stored here: their drains start without a scan."""
        if self.worker is not None:
            for conversation_id in conversations:
                self.worker.notify(conversation_id)

    def add_worker(self, bp: Blueprint, on_new_message: OnNewMessage) -> None:
        """Start the worker with the server, stop it (and the client) with the server; the agent route."""
        settings = self.settings
        add_agent_routes(bp, self)

        @bp.listener("after_server_start")
        async def start_worker(app: Any, _loop: Any) -> None:
            self.use_agent(getattr(app.ctx, "agent", None))
            freeze_loaded_model(self._agent)  # Rasa loaded its model before the server started
            check_action_results_with_compiled_schema()  # every channel's turns, REST's too
            reason = self.worker_off_reason()
            if reason:
                logger.info("%s worker not started: %s", self.name(), reason)
                return

            try:  # before the first message, whose receipt and first reply would otherwise go from here
                await self.inbox.start_helper()
            except InboxHelperGone as error:  # the first call that needs it tries again
                logger.warning("%s: the inbox helper process did not start: %s", self.name(), error)

            async def handler(row: InboxRow) -> Answered | None:
                return await self.handle_row(row, on_new_message)

            self.worker = InboxWorker(self.inbox, handler, concurrency=settings.concurrency,
                                      stale_after=settings.stale_after_seconds,
                                      poll_interval=settings.poll_interval_seconds, channel=self.name())
            setattr(app.ctx, f"{self.name()}_worker_task", asyncio.create_task(self.worker.run()))

        @bp.listener("before_server_stop")
        async def stop_worker(app: Any, _loop: Any) -> None:
            if self.worker is not None:
                await self.worker.stop()
            await self.client.close()
