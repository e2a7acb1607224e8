"""The queue's tables, their states, and its engine: what the receiver, the worker, the sender and the
console agree on. The statements that use them are in connectors/queue.py and connectors/sender.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

# wa_inbox.state; "revoked": deleted by the customer before it was answered; "edited": answered as its edit
PENDING, DONE, STALE, SKIPPED, FAILED = "pending", "done", "stale", "skipped", "failed"
REVOKED, EDITED = "revoked", "edited"
# wa_outbound.state
QUEUED, SENDING, SENT, FAILED_SEND = "queued", "sending", "sent", "failed"
TO_SEND = (QUEUED, SENDING)
DELIVERED = ("sent", "delivered", "read", "played")  # statuses that prove a send went out

metadata = MetaData()

inbox = Table(
    "wa_inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(256), nullable=False, unique=True),  # wamid / Evolution key.id
    Column("channel", String(32), nullable=False),
    Column("conversation_id", String(128), nullable=False),
    Column("reply_to", String(128), nullable=False),
    Column("business_id", String(64), nullable=False),  # phone_number_id / Evolution instance
    Column("sent_at", Integer, nullable=False),  # the platform's timestamp (s)
    Column("received_at", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),  # turns begun on it (> 0: maybe handled)
    Column("message", Text, nullable=False),  # JSON: text + metadata for Rasa
    Column("updated_at", Float, nullable=False),
    Index("ix_wa_inbox_state_conversation", "state", "conversation_id", "id"),
)

outbox = Table(
    "wa_outbound",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(32), nullable=False),
    Column("conversation_id", String(128), nullable=False, index=True),
    Column("business_id", String(64), nullable=False),
    Column("message_id", String(256), index=True),  # the platform's id, once it accepted the send
    Column("turn_key", String(300), index=True),  # "<inbound message id>#<n>"; agent replies: "agent"
    Column("state", String(16), nullable=False),  # queued | sending | sent | failed
    Column("error_code", Integer),
    Column("error", Text),
    Column("payload", Text, nullable=False),  # the rendered platform message (JSON)
    Column("created_at", Float, nullable=False),
    # Added after the first release: nullable, so create_tables can add them to an existing table.
    Column("template", Text),  # what goes instead when refused outside the 24-hour window (131047)
    Column("attempts", Integer),
    Column("updated_at", Float),
)
Index("ix_wa_outbound_state_conversation", outbox.c.state, outbox.c.conversation_id, outbox.c.id)

statuses = Table(
    "wa_statuses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(256), nullable=False, index=True),  # our outbound message's id
    Column("status", String(16), nullable=False),
    Column("sent_at", Integer, nullable=False),
    Column("recipient_id", String(128)),
    Column("business_id", String(64), nullable=False),
    Column("errors", Text),
    Column("callback", String(512), index=True),  # biz_opaque_callback_data: our outbox row's key
)

# A customer's new number or BSUID → the conversation they wrote from before (a system message linked them).
aliases = Table(
    "wa_aliases",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("alias", String(128), primary_key=True),
    Column("conversation_id", String(128), nullable=False),
    Column("linked_by", String(256), nullable=False),  # the system message's id
    Column("linked_at", Float, nullable=False),
)

menus = Table(
    "wa_menus",
    metadata,
    Column("conversation_id", String(128), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("menu", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)


def callback_key(row_id: int) -> str:
    """The key a Cloud API send carries (biz_opaque_callback_data) and its statuses repeat."""
    return f"vb-out-{row_id}"


def _driver_url(url: str) -> str:
    """A tracker-store style URL on the driver the queue uses for its database."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"the channels' queue needs SQLite or PostgreSQL, not {backend!r}")


T = TypeVar("T")


class Database:
    """The queue's database, and the one way statements run on it: a function of a SQLAlchemy Connection,
    run as one transaction (`write`) or one read (`read`), awaited, never blocking the event loop.

    - PostgreSQL: SQLAlchemy's async engine on asyncpg (`AsyncConnection.run_sync`).
    - SQLite: SQLAlchemy's pool on the stdlib driver, each transaction whole in a thread of our own, so the
      file's write lock is held for the statements only, never while an event loop is busy elsewhere (Rasa's
      is, with inference, for tens of ms at a time; another process's webhook ACK would wait that long). A
      write transaction begins IMMEDIATE (it takes the write lock first, so it never fails to upgrade from a
      read), and this process's writers queue on a lock of ours instead of SQLite's sleeping retries. Every
      commit is synced to disk before it returns (synchronous=FULL): the receiver's precedes an ACK that Meta
      never repeats, so it must survive a power loss too. Another process's write lock is waited for up to 30 s.
    """

    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        self.async_engine: AsyncEngine | None = None
        self._sync: Engine | None = None
        if self.dialect == "postgresql":
            self.async_engine = create_async_engine(_driver_url(url), pool_size=pool_size,
                                                    max_overflow=pool_size, pool_pre_ping=True)
            return
        self._sync = create_engine(_driver_url(url), future=True, poolclass=QueuePool,
                                   pool_size=pool_size, max_overflow=0,
                                   connect_args={"timeout": 30, "check_same_thread": False})
        self._threads = ThreadPoolExecutor(pool_size, thread_name_prefix="queue-sqlite")
        self._writing = threading.Lock()
        event.listen(self._sync, "connect", _sqlite_connection)
        event.listen(self._sync, "begin", _sqlite_begin)

    @property
    def database(self) -> str:
        """The SQLite file ("" on a server or in memory)."""
        name = self.url.database or ""
        return "" if self.dialect != "sqlite" or name == ":memory:" else name

    async def write(self, work: Callable[..., T], *args: Any) -> T:
        if self.async_engine is not None:
            async with self.async_engine.begin() as conn:
                return await conn.run_sync(work, *args)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._sqlite_write, work, args)

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        if self.async_engine is not None:
            async with self.async_engine.connect() as conn:
                return await conn.run_sync(work, *args)
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._sqlite_read, work, args)

    def _sqlite_write(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self._sync is not None
        with self._writing, self._sync.begin() as conn:
            return work(conn, *args)

    def _sqlite_read(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self._sync is not None
        with self._sync.connect().execution_options(queue_read=True) as conn:
            return work(conn, *args)

    async def dispose(self) -> None:
        if self.async_engine is not None:
            await self.async_engine.dispose()
        if self._sync is not None:  # its threads stay: a disposed engine may be used again, as SQLAlchemy's may
            self._sync.dispose()


def _sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions begin where _sqlite_begin says, not in the driver
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the console) never block a writer
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("queue_read") else "BEGIN IMMEDIATE")


def add_missing_columns(conn: Any) -> None:
    """Tables made by an earlier release get the nullable columns added since, and the new indexes."""
    found = inspect(conn)
    for table in metadata.sorted_tables:
        have = {column["name"] for column in found.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
        for index in table.indexes:
            index.create(conn, checkfirst=True)


def insert_ignoring(dialect: str, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING in the database's own dialect."""
    return (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)).on_conflict_do_nothing()
