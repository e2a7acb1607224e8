"""Tables, row types and the database engine of the WhatsApp channels' inbox (see connectors/inbox.py)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text, create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import QueuePool

from connectors.whatsapp.to_rasa import InboxItem

T = TypeVar("T")

SQLITE_SYNCHRONOUS = "NORMAL"  # every connection's, but for the webhook's commit (synced_commit)

PENDING, PROCESSING, DONE, STALE, SKIPPED = "pending", "processing", "done", "stale", "skipped"
SENDING, SENT, FAILED_SEND, INTERRUPTED = "sending", "sent", "failed", "interrupted"

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
    Column("attempts", Integer, nullable=False, default=0),
    Column("message", Text, nullable=False),  # JSON: text + metadata for Rasa
    Column("updated_at", Float, nullable=False),
    Index("ix_wa_inbox_state_conversation", "state", "conversation_id", "id"),
)

statuses = Table(
    "wa_statuses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(256), nullable=False, index=True),  # our outbound wamid
    Column("status", String(16), nullable=False),
    Column("sent_at", Integer, nullable=False),
    Column("recipient_id", String(128)),
    Column("business_id", String(64), nullable=False),
    Column("errors", Text),
    Column("callback", String(512)),
)

outbound = Table(
    "wa_outbound",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(32), nullable=False),
    Column("conversation_id", String(128), nullable=False, index=True),
    Column("business_id", String(64), nullable=False),
    Column("message_id", String(256), index=True),  # returned by the platform when accepted
    # "<inbound message id>#<n>": the n-th send of the reply to that message. A reply
    # re-run after a crash skips the sends already made.
    Column("turn_key", String(300), index=True),
    Column("state", String(16), nullable=False),  # sending | sent | failed | interrupted
    Column("error_code", Integer),
    Column("error", Text),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Which worker answers a conversation while several Rasa replicas drain one inbox (connectors/inbox_leases.py).
leases = Table(
    "wa_leases",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("conversation_id", String(128), primary_key=True),
    Column("owner", String(300), nullable=False, index=True),  # host|pid namespace|pid|nonce of the worker
    Column("expires_at", Float, nullable=False),  # epoch s; renewed every third of the lease while it runs
)

menus = Table(
    "wa_menus",
    metadata,
    Column("conversation_id", String(128), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("menu", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)


@dataclass(frozen=True)
class InboxRow(InboxItem):
    """A stored message claimed for handling."""

    id: int
    attempts: int
    menu: dict[str, str] = field(default_factory=dict)  # numbered options of the last reply: "1" → payload
    claimed_on: str | None = None  # the channel filter (and lease key) it was claimed with; None: any
    paused: bool | None = None  # with a person when claimed (Inbox.pauses_in_this_database); None: not asked


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (console) do not block the webhook
    # Durable at checkpoints; with WAL safe against a crash of the process. The webhook's commit is
    # synced on its own (`synced_commit`): what is ACKed must survive a power loss too.
    cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
    # A commit that crosses 1000 WAL pages would run the checkpoint (and its fsync, 100+ ms seen
    # here) on whoever committed: a webhook's ACK or the event loop. `Inbox.checkpoint` runs it in
    # the background instead (the worker and connectors.ingest, each once a second).
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


@contextmanager
def synced_commit(conn: Connection) -> Iterator[None]:
    """SQLite: the commits made inside are on disk before they return (synchronous=FULL: the WAL is
    synced at each commit), not only at the next checkpoint. For what is ACKed: Meta never delivers a
    webhook again once it got its 200, so a power loss or a host crash before the checkpoint must not
    take it (a crash of the process alone never could). A server's commits are durable already."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA synchronous=FULL")
    conn.commit()  # (PRAGMA opens no transaction in sqlite3; this ends SQLAlchemy's autobegun one)
    try:
        yield
    finally:
        try:
            conn.exec_driver_sql(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
            conn.commit()
        except Exception:
            # Never back to the pool still syncing every commit (or broken): closed, a new one replaces it.
            conn.invalidate()


# SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between tries: a webhook that meets
# Rasa's tracker-store commit on the same file would wait for the next step, not for the lock.
# So SQLite gives up after 1 ms and `Inbox.add` tries again every LOCK_RETRY_SECONDS.
SQLITE_BUSY_TIMEOUT_SECONDS = 0.001
LOCK_RETRY_SECONDS = 0.0005
LOCK_GIVE_UP_SECONDS = 30.0


def _is_locked(error: OperationalError) -> bool:
    return "locked" in str(error.orig).lower() or "busy" in str(error.orig).lower()


def retry_transient(fn: Callable[..., T]) -> Callable[..., T]:
    """A database call tried again when the failure was passing: while another connection holds
    SQLite's write lock (every 0.5 ms, up to 30 s), and once after a server dropped the connection.

    The second replaces pool_pre_ping, which paid a `SELECT 1` round trip on every checkout (three
    per WhatsApp turn on PostgreSQL, ~0.3 ms of the Rasa process's CPU each) to notice a restart of
    the database that happens once in months: the failed call's error invalidates the pool, and
    the retry runs on a new connection. A call cut off mid-transaction was rolled back by the server.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        deadline = time.monotonic() + LOCK_GIVE_UP_SECONDS
        reconnected = False
        while True:
            try:
                return fn(*args, **kwargs)
            except DBAPIError as error:
                if error.connection_invalidated and not reconnected:
                    reconnected = True
                    continue
                if not isinstance(error, OperationalError) or not _is_locked(error) \
                        or time.monotonic() > deadline:
                    raise
            time.sleep(LOCK_RETRY_SECONDS)

    return wrapper


CREATE_TRIES = 5


def create_tables(engine: Engine) -> None:
    """Create the tables that are missing, also when several processes start on a new database at once.

    Checking for a table and creating it are two steps: a replica or connectors.ingest that loses
    the race gets "already exists" (PostgreSQL: a unique violation on pg_type). By then the table
    exists, so the next try skips it.
    """
    for attempt in range(1, CREATE_TRIES + 1):
        try:
            metadata.create_all(engine)
            return
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == CREATE_TRIES:
                raise
            time.sleep(0.05 * attempt)


def is_sqlite_file(url: str) -> bool:
    return url.startswith("sqlite") and url.split("://", 1)[-1] not in ("", "/", "/:memory:")


# libpq waits as long as TCP does (minutes) for a server that does not answer; with the worker's
# statements on Rasa's event loop (WHATSAPP_INBOX_CALLS=loop) that would stall every conversation.
SERVER_CONNECT_TIMEOUT_SECONDS = 10


def server_connect_args(url: str | URL) -> dict[str, Any]:
    return {"connect_timeout": SERVER_CONNECT_TIMEOUT_SECONDS} if make_url(url).get_driver_name() == "psycopg2" \
        else {}


def create_inbox_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # SQLAlchemy 1.4 gives a SQLite file no pool: a new connection (and PRAGMA journal_mode=WAL)
        # per transaction and, when it was the last one open, a WAL checkpoint on close. Measured in
        # the Rasa process: ~20 ms of extra CPU per WhatsApp turn. Kept connections cost neither.
        pooling: dict[str, Any] = {"poolclass": QueuePool, "pool_size": 8, "max_overflow": 16} \
            if is_sqlite_file(url) else {}
        engine = create_engine(url, future=True, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
                                                               "check_same_thread": False}, **pooling)
        event.listen(engine, "connect", sqlite_pragmas)
        return engine
    # No pool_pre_ping: see retry_transient.
    return create_engine(url, future=True, connect_args=server_connect_args(url))


