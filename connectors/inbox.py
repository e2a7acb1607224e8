"""Durable inbox, delivery statuses, outbound failures and option menus of the WhatsApp channels.

SQLAlchemy Core (1.4 in the Rasa env, written 2.0-style), so the same code runs on
the tracker store's SQLite file and on PostgreSQL. The methods are synchronous; async code goes
through `Inbox.call`, which runs them inline on SQLite (microseconds, like Rasa's own SQLite tracker
store) and on a database server as WHATSAPP_INBOX_CALLS says: through asyncpg in a greenlet (the
default: each round trip awaits, other turns run meanwhile), inline, or in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, create_engine, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.util import greenlet_spawn

from connectors import inbox_statements as sql
from connectors.inbox_calls import (
    IN_PROCESS,
    IN_THREAD,
    ON_EVENTS,
    ON_LOOP,
    asyncpg_twin,
    asyncpg_url,
    call_blocking,
    where_calls_run,
)
from connectors.inbox_helper import InboxHelper
from connectors.inbox_inbound import InboundRecords
from connectors.inbox_leases import DEFAULT_LEASE_SECONDS, LeaseRecords, WorkerIdentity
from connectors.inbox_menus import MenuRecords, menu_changes
from connectors.inbox_outbound import OutboundRecords
from connectors.inbox_tables import (
    DONE,
    FAILED_SEND,
    INTERRUPTED,
    PENDING,
    PROCESSING,
    SENDING,
    SENT,
    SKIPPED,
    STALE,
    InboxItem,
    InboxRow,
    create_inbox_engine,
    create_tables,
    inbox,
    is_sqlite_file,
    retry_transient,
    server_connect_args,
    sqlite_pragmas,
)
from connectors.inbox_wakeups import InboxListener, OnListening, OnNewRow, notifies
from connectors.sqlite_kept import KeptSqlite

__all__ = ["DONE", "FAILED_SEND", "INTERRUPTED", "IN_PROCESS", "IN_THREAD", "ON_EVENTS", "ON_LOOP", "PENDING",
           "PROCESSING", "SENDING", "SENT", "SKIPPED", "STALE", "Inbox", "InboxItem", "InboxRow", "create_inbox_engine"]


T = TypeVar("T")
logger = logging.getLogger(__name__)
CHECKPOINT_EVERY_SECONDS = 1.0


class Inbox(InboundRecords, OutboundRecords, LeaseRecords, MenuRecords):
    """The tables, as one worker (or ingest process) sees them: `identity` owns the leases it takes."""

    def __init__(self, engine: Engine, identity: WorkerIdentity | None = None,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, calls: str = IN_THREAD) -> None:
        self.engine = engine
        self.identity = identity or WorkerIdentity.of_this_process()
        self.owner = self.identity.owner
        self.lease_seconds = lease_seconds
        self._acquire_lease = sql.ACQUIRE_LEASE.get(engine.dialect.name)
        create_tables(engine)
        # SQLite is a library in this process: a statement takes ~0.1 ms, less than the hop to a
        # thread and back, and every hop makes the event loop hand Rasa's GIL over and wait for it.
        self.local = engine.dialect.name == "sqlite"
        # A SQLite file: the statements of every message on kept sqlite3 connections (connectors/sqlite_kept.py).
        self._kept = KeptSqlite(engine, sqlite_pragmas) \
            if self.local and is_sqlite_file(engine.url.render_as_string()) else None
        # A server's statements on the event loop too (as Rasa's own SQL tracker store runs its own):
        # in a thread, each of a turn's ~10 statements hands Rasa's GIL over and back; through psycopg2
        # the loop stands still for each round trip, through asyncpg it runs other turns meanwhile.
        self.runs = where_calls_run(engine, calls)
        self.notifies = notifies(engine)
        # Single statements on a server run in autocommit on a pool of their own: switching a pooled
        # connection to autocommit and back costs two driver calls (~0.1 ms each) per checkout.
        self._autocommit = engine if self.local else create_engine(
            engine.url, future=True, isolation_level="AUTOCOMMIT", connect_args=server_connect_args(engine.url))
        # ON_EVENTS: `call` runs the same methods on a copy of this inbox on asyncpg (inbox_calls.asyncpg_twin).
        # This one keeps psycopg2 for what runs outside the loop (threads, tools, the LISTEN connection).
        self._pauses_in_this_database = False
        self._on_events: Inbox | None = None
        # IN_PROCESS: `call` sends the same methods to a helper process, which runs them as ON_EVENTS does.
        # On a SQLite file the statements stay here (one costs less than the hop) and the helper makes the
        # sends (`record_and_send`, the read receipts), which cost Rasa's loop ~0.2 ms of CPU a request.
        self._helper: InboxHelper | None = None
        self._statements_in_helper = self.runs == IN_PROCESS
        if self.runs == ON_EVENTS:
            self._on_events = asyncpg_twin(self, engine.url)
        if self._statements_in_helper:
            asyncpg_url(engine.url, IN_PROCESS)  # a URL asyncpg cannot take is refused here, not in the child
        if self._statements_in_helper or (calls == IN_PROCESS and self._kept is not None):
            self._helper = InboxHelper(engine.url.render_as_string(hide_password=False), self.identity,
                                       lease_seconds)

    @property
    def pauses_in_this_database(self) -> bool:
        """Rasa's SQL tracker store shares this PostgreSQL database: a one-statement claim also answers
        whether the conversation is with a person (`InboxRow.paused`), the read receipt's question."""
        return self._pauses_in_this_database

    @pauses_in_this_database.setter
    def pauses_in_this_database(self, shared: bool) -> None:
        self._pauses_in_this_database = shared and self.engine.dialect.name == "postgresql"
        if self._on_events is not None:
            self._on_events.pauses_in_this_database = shared
        if self._helper is not None:
            self._helper.set("pauses_in_this_database", shared)

    def dispose(self) -> None:
        """Close the pooled psycopg2 connections (tests, shutdown); `close` closes the asyncpg ones too."""
        self.engine.dispose()
        if self._kept is not None:
            self._kept.close()
        if self._autocommit is not self.engine:
            self._autocommit.dispose()

    async def close(self) -> None:
        """Close every pooled connection; asyncpg's are closed on the event loop they were opened on."""
        if self._helper is not None:
            await self._helper.close()
        if self._on_events is not None:
            await greenlet_spawn(self._on_events.engine.dispose)
            await greenlet_spawn(self._on_events._autocommit.dispose)
            await self._on_events._kept.close()  # type: ignore[union-attr]  # its kept asyncpg connections
        self.dispose()

    def listener(self, on_new: OnNewRow, on_listening: OnListening) -> InboxListener | None:
        """A LISTEN connection that hears of rows other processes store (PostgreSQL), else None."""
        return InboxListener(self.engine, on_new, on_listening) if InboxListener.supported(self.engine) else None

    async def start_helper(self) -> None:
        """Start the helper process now (WHATSAPP_INBOX_CALLS=process), so the first message's receipt and reply
        go through it too; nothing without one. Raises InboxHelperGone when it cannot start."""
        if self._helper is not None:
            await self._helper.start()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one of the methods below from async code, where WHATSAPP_INBOX_CALLS says (inline on SQLite)."""
        if getattr(fn, "__self__", None) is self:
            if self._statements_in_helper:
                return await self._helper.call(fn.__name__, *args)  # type: ignore[no-any-return,union-attr]
            if self._on_events is not None:
                fn = fn.__func__.__get__(self._on_events)  # type: ignore[attr-defined]  # the same method, asyncpg's engines
        return await call_blocking(self.runs, fn, *args)

    def checkpoint(self) -> None:
        """Copy the SQLite write-ahead log into the database (our connections never do it on commit).

        PASSIVE: readers and writers go on meanwhile. Blocking: call it in a thread.
        """
        if self.local:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    async def checkpoint_forever(self, interval: float = CHECKPOINT_EVERY_SECONDS) -> None:
        if not self.local:
            return  # a database server checkpoints itself
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception:  # a busy or vanished file: the next round tries again
                logger.warning("inbox checkpoint failed; retrying in %ss", interval, exc_info=True)

    @retry_transient
    def count_left_unfinished(self, channel: str | None = None) -> int:
        """Messages a stopped worker was handling and nobody holds now: they are answered again first."""
        condition = and_(inbox.c.state == PROCESSING, ~self._leased_by_another(channel, time.time()))
        if channel:
            condition = and_(condition, inbox.c.channel == channel)
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(condition)).scalar() or 0)

    @retry_transient
    def mark_stale(self, older_than: int, channel: str | None = None) -> int:
        """Pending messages sent before `older_than` (epoch s) are not answered."""
        condition = and_(inbox.c.state == PENDING, inbox.c.sent_at < older_than)
        if channel:
            condition = and_(condition, inbox.c.channel == channel)
        with self.engine.begin() as conn:
            result = conn.execute(update(inbox).where(condition).values(state=STALE, updated_at=time.time()))
        return result.rowcount or 0

    @retry_transient
    def latest_id(self) -> int:
        """The newest row's id (0 when empty): a cheap "anything new?" for the worker's polls."""
        with self._reading() as conn:
            return int(conn.execute(sql.LATEST_ID).scalar() or 0)

    @retry_transient
    def conversations_since(self, after_id: int, channel: str | None = None) -> list[str]:
        """Conversations of the pending rows stored after row `after_id` (a range of the primary key)."""
        with self._reading() as conn:
            return list(conn.execute(sql.CONVERSATIONS_SINCE[bool(channel)],
                                     {"after_id": after_id, "on_channel": channel}).scalars())

    @retry_transient
    def pending_conversations(self, exclude: Iterable[str] = (), limit: int = 100,
                              channel: str | None = None) -> list[str]:
        """Conversations with messages to answer that no other live worker holds, oldest first.

        "processing" rows count too: where nobody holds the lease, their worker stopped.
        """
        excluded = list(exclude)
        query = select(inbox.c.conversation_id).where(
            and_(inbox.c.state.in_((PENDING, PROCESSING)), ~self._leased_by_another(channel, time.time())))
        if channel:
            query = query.where(inbox.c.channel == channel)
        if excluded:
            query = query.where(inbox.c.conversation_id.not_in(excluded))
        query = query.group_by(inbox.c.conversation_id).order_by(func.min(inbox.c.id)).limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    @retry_transient
    def claim_next(self, conversation_id: str, channel: str | None = None,
                   finished: Sequence[int] = ()) -> InboxRow | None:
        """Take the conversation's lease and its oldest unfinished message (marked processing, with the
        conversation's menu). None: another worker holds the conversation, or nothing is left (the
        lease is given back in the same transaction). `finished`: the drain's rows whose replies went
        out, marked done first (with it)."""
        lease = self._lease(conversation_id, channel)
        if self.engine.dialect.name == "postgresql":  # one round trip (inbox_statements)
            found = self._in_one_statement(sql.CLAIM_ON_POSTGRESQL, lease, channel, finished=list(finished))
            if found.id is not None:
                return self._found(found, None, channel)
            if not found.renewed:
                return None  # nothing left (the lease given back) or another worker holds the conversation
            # The row it saw was finished meanwhile and the lease is ours: look again, in a transaction.
            finished = ()
        with self._transaction() as conn:
            self._mark_done(conn, finished)
            if not self._take_lease(conn, lease):
                return None
            row = self._claim(conn, conversation_id, channel)
            if row is None:
                conn.execute(sql.DROP_LEASE, lease)
            return row

    @retry_transient
    def complete(self, row: InboxRow, state: str = DONE, menu: dict[str, str] | None = None,
                 claim_next: bool = True) -> InboxRow | None:
        """Finish a handled row, save the options its reply offered and claim the conversation's next row.

        One transaction per turn boundary: the worker runs this on every message.
        `menu=None` leaves the stored menu alone (the turn did not get to reply). The lease is renewed
        (its row locked) before the look for the next row and given back when there is none.
        """
        with self._transaction() as conn:
            conn.execute(sql.SET_STATE, {"row_id": row.id, "new_state": state, "now": time.time()})
            if menu_changes(row.menu, menu):
                self._save_menu(conn, row.channel, row.conversation_id, menu)  # type: ignore[arg-type]
            lease = self._lease(row.conversation_id, row.claimed_on)
            if not claim_next:
                conn.execute(sql.DROP_LEASE, lease)
                return None
            if not self._renewed(conn, row, lease):
                return None
            # The menu just saved is the stored one: no need to read it back.
            following = self._claim(conn, row.conversation_id, row.claimed_on, menu)
            if following is None:
                conn.execute(sql.DROP_LEASE, lease)
            return following

    @retry_transient
    def advance(self, row: InboxRow, menu: dict[str, str] | None, besides: Sequence[int],
                finished: Sequence[int] = ()) -> InboxRow | None:
        """Save the options of a handled row whose replies are still going out and claim the conversation's
        next row, besides those rows and the `finished` ones (their replies went out: marked done with it).
        The handled row stays "processing" until it is finished (a restart re-runs it: Rasa knows it, its
        sends still "sending" are settled); the lease is kept, never given back here."""
        saves_menu = menu_changes(row.menu, menu)
        if self.engine.dialect.name == "postgresql":  # one round trip (inbox_statements)
            lease = self._lease(row.conversation_id, row.claimed_on)
            saving = {"menu": json.dumps(menu) if menu else None, "menu_channel": row.channel} if saves_menu else {}
            found = self._in_one_statement(sql.ADVANCE_ON_POSTGRESQL, lease, row.claimed_on, (saves_menu,),
                                           besides=list(besides), finished=list(finished), **saving)
            if not found.renewed:
                self._lost_lease(row)
                return None
            return None if found.id is None else self._found(found, menu, row.claimed_on)
        with self._transaction() as conn:
            self._mark_done(conn, finished)
            if saves_menu:
                self._save_menu(conn, row.channel, row.conversation_id, menu)  # type: ignore[arg-type]
            if not self._renewed(conn, row, self._lease(row.conversation_id, row.claimed_on)):
                return None
            return self._claim(conn, row.conversation_id, row.claimed_on, menu, [*besides, *finished])

    def _in_one_statement(self, statement: dict[tuple[bool, ...], Any], lease: dict[str, Any], channel: str | None,
                          flags: tuple[bool, ...] = (), **more: Any) -> Any:
        """Run one of the PostgreSQL one-statement claims (its variant: channel filter, pause question, `flags`);
        its row: `renewed` (lease held), `stored_menu`, the row."""
        with self._one_statement() as conn:
            return conn.execute(statement[(bool(channel), self.pauses_in_this_database, *flags)],
                                {**lease, "on_channel": channel, "now": time.time(), **more}).first()

    def _found(self, found: Any, menu: dict[str, str] | None, channel: str | None) -> InboxRow:
        """The row a one-statement claim marked (its attempts counted there), with `menu` or the stored one."""
        return self._claimed(found, menu if menu is not None else json.loads(found.stored_menu or "{}"),
                             channel, found.attempts,
                             found.last_pause == "pause" if self.pauses_in_this_database else None)

    @classmethod
    def _renewed(cls, conn: Connection, row: InboxRow, lease: dict[str, Any]) -> bool:
        """Renew the lease of the row's conversation (locking it); False: it was lost."""
        if conn.execute(sql.RENEW_LEASE, lease).rowcount == 1:
            return True
        cls._lost_lease(row)
        return False

    @staticmethod
    def _lost_lease(row: InboxRow) -> None:
        # It expired (renewals could not reach the database) and another worker holds it now.
        logger.warning("lost the lease of a conversation while answering %s; its next message is "
                       "left to the worker that holds it", row.message_id)

    def _claim(self, conn: Connection, conversation_id: str, channel: str | None = None,
               menu: dict[str, str] | None = None, besides: Sequence[int] = ()) -> InboxRow | None:
        skipped = set(besides)
        rows = conn.execute(sql.NEXT_UNFINISHED[bool(channel)], {
            "conversation": conversation_id, "on_channel": channel, "few": len(skipped) + 1}).all()
        row = next((row for row in rows if row.id not in skipped), None)
        if row is None:
            return None
        conn.execute(sql.MARK_PROCESSING, {"row_id": row.id, "now": time.time()})
        if menu is None:
            stored = conn.execute(sql.MENU, {"conversation": conversation_id, "on_channel": row.channel}).scalar()
            menu = json.loads(stored) if stored else {}
        return self._claimed(row, menu, channel, row.attempts + 1)

    @staticmethod
    def _claimed(row: Any, menu: dict[str, str], channel: str | None, attempts: int,
                 paused: bool | None = None) -> InboxRow:
        """A claimed row as the worker gets it."""
        return InboxRow(
            id=row.id, message_id=row.message_id, channel=row.channel, conversation_id=row.conversation_id,
            reply_to=row.reply_to, business_id=row.business_id, sent_at=row.sent_at, attempts=attempts,
            message=json.loads(row.message), menu=dict(menu), claimed_on=channel, paused=paused,
        )

    @retry_transient
    def last_message_of(self, channel: str, conversation_id: str) -> InboxRow | None:
        """The customer's latest stored message on a channel: where an agent's reply goes (number, address)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(inbox).where(and_(inbox.c.channel == channel, inbox.c.conversation_id == conversation_id))
                .order_by(inbox.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return InboxRow(id=row.id, message_id=row.message_id, channel=row.channel,
                        conversation_id=row.conversation_id, reply_to=row.reply_to, business_id=row.business_id,
                        sent_at=row.sent_at, attempts=row.attempts, message=json.loads(row.message))

    @retry_transient
    def finish(self, row_id: int, state: str = DONE) -> None:
        """Set a row's state: one statement (on a server in autocommit, one round trip)."""
        with self._one_statement() as conn:
            conn.execute(sql.SET_STATE, {"row_id": row_id, "new_state": state, "now": time.time()})

    @retry_transient
    def finish_rows(self, row_ids: Sequence[int]) -> None:
        """Mark rows done whose replies went out (a drain's last ones, when it stops or ends early)."""
        if row_ids:
            with self._transaction() as conn:
                self._mark_done(conn, row_ids)

    @staticmethod
    def _mark_done(conn: Connection, row_ids: Sequence[int]) -> None:
        now = time.time()
        for row_id in row_ids:  # one, mostly: the row before the one just handled
            conn.execute(sql.SET_STATE, {"row_id": row_id, "new_state": DONE, "now": now})

    def release(self, row_id: int) -> None:
        """Give a claimed row back (the handler failed before Rasa took the message).

        The worker keeps the conversation's lease: it tries again later, and nobody jumps ahead."""
        self.finish(row_id, PENDING)

    @retry_transient
    def states(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(inbox.c.state, func.count()).group_by(inbox.c.state))
            return {state: count for state, count in rows}

