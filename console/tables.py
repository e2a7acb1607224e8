"""The console's own tables (SQLAlchemy Core; SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

# Conversation states in the queue.
BOT, WAITING, ASSIGNED, CLOSED = "bot", "waiting", "assigned", "closed"
ROLES = ("agent", "admin")

agents = Table(
    "console_agents", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", Float, nullable=False),
)

sessions = Table(
    "console_sessions", metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie value
    Column("agent_id", Integer, ForeignKey("console_agents.id"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)

login_attempts = Table(
    "console_login_attempts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False),  # "email:<email>" / "ip:<address>"
    Column("at", Float, nullable=False),
    Index("ix_console_login_attempts_key_at", "key", "at"),
)

# One row per conversation, projected from the tracker store's events (console/projector.py).
conversations = Table(
    "console_conversations", metadata,
    Column("sender_id", String(255), primary_key=True),
    Column("channel", String(32)),
    Column("business_number", String(64)),  # the number (or Evolution instance) the customer wrote to
    Column("customer_name", String(200)),
    Column("customer_number", String(64)),
    Column("status", String(16), nullable=False),
    Column("reason", String(300)),
    Column("summary", Text),
    Column("language", String(8)),  # the `language` slot: en, es, pt, de
    Column("waiting_since", Float),
    Column("assigned_to", Integer, ForeignKey("console_agents.id")),
    Column("last_message", Text),
    Column("last_customer_at", Float),  # WhatsApp's 24 h window runs from here
    Column("last_event_at", Float),
    Column("last_event_id", Integer, nullable=False, default=0),
    Column("csat", Integer),
    Column("closed_at", Float),
    Column("closed_by", Integer),
    Column("updated_at", Float, nullable=False),
    Index("ix_console_conversations_status_waiting", "status", "waiting_since"),
    Index("ix_console_conversations_assigned", "assigned_to", "status"),
    Index("ix_console_conversations_updated", "updated_at"),
)

notes = Table(
    "console_notes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender_id", String(255), nullable=False, index=True),
    Column("agent_id", Integer, ForeignKey("console_agents.id"), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

canned_responses = Table(
    "console_canned_responses", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("shortcut", String(40), nullable=False, unique=True),
    Column("title", String(100), nullable=False),
    Column("text", Text, nullable=False),  # placeholders: {customer_name} {agent_name} {order_number}
    Column("updated_at", Float, nullable=False),
)

audit_log = Table(
    "console_audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("agent_id", Integer),  # None: the system (e.g. the first admin from the environment)
    Column("action", String(40), nullable=False),
    Column("sender_id", String(255), index=True),
    Column("detail", Text, nullable=False),  # JSON
)

projector_state = Table(
    "console_projector_state", metadata,
    Column("name", String(40), primary_key=True),
    Column("value", Integer, nullable=False),
)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # Every transaction takes the write lock up front: a read-then-write transaction (the projector,
    # a claim) waits for the other instead of failing half-way with a stale snapshot.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10)


def create_tables(engine: Engine) -> None:
    """Create missing tables, and add columns a newer version defines to tables an older one made
    (nullable columns only, so existing rows stay valid)."""
    metadata.create_all(engine)
    existing = inspect(engine)
    for table in metadata.sorted_tables:
        have = {column["name"] for column in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
