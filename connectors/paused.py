"""Is a conversation with a person (the bot stays silent)? Asked by each read receipt: "typing…" or not.

One indexed query on the SQL tracker store's `events` table, on Rasa's own tracker store inside
Rasa (`is_paused`) or on the tracker store's database by URL in connectors.ingest
(`paused_in_database`). Never fails the caller: unknown means "not paused" (typing shows).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool, QueuePool

from connectors.inbox_calls import ON_EVENTS, call_blocking, create_asyncpg_engine, where_calls_run
from connectors.receipts import PausedCheck

logger = logging.getLogger(__name__)

_LAST_PAUSE_OR_RESUME = text("SELECT type_name FROM events WHERE sender_id = :sender AND type_name IN "
                             "('pause', 'resume') ORDER BY id DESC LIMIT 1")


@functools.lru_cache(maxsize=4)
def _pooled_reader(url: str) -> Any:
    """Rasa's SQLite tracker engine opens a connection per use (no pool in SQLAlchemy 1.4); the read
    receipt asks on every customer message, so it reads through kept connections of its own."""
    return create_engine(url, future=True, poolclass=QueuePool, connect_args={"check_same_thread": False})


@functools.lru_cache(maxsize=4)
def _asyncpg_reader(url: str, _loop_id: int) -> Any:
    """WHATSAPP_INBOX_CALLS=async: the question through asyncpg too (its connections belong to one
    event loop: a new loop, as in tests, gets a reader of its own). None: asyncpg cannot take the
    URL; a psycopg2 engine answers then (said once)."""
    try:
        return create_asyncpg_engine(url)
    except ValueError as error:
        logger.warning("read receipts ask the tracker store through Rasa's own engine: %s", error)
        return None


@functools.lru_cache(maxsize=4)
def _plain_reader(url: str) -> Any:
    return create_engine(url, future=True)


def reader_for_url(url: str, calls: str = ON_EVENTS) -> Any:
    """An engine that asks the tracker store's database at `url` the way WHATSAPP_INBOX_CALLS says."""
    if url.startswith("sqlite"):
        return _pooled_reader(url)
    if calls == ON_EVENTS:
        reader = _asyncpg_reader(url, id(asyncio.get_running_loop()))
        if reader is not None:
            return reader
    return _plain_reader(url)


def _sql_tracker_engine(agent: Any, calls: str = ON_EVENTS) -> Any:
    """An engine on the database of Rasa's SQL tracker store (Rasa wraps the store), else None."""
    store = getattr(agent, "tracker_store", None)
    for _ in range(5):
        if store is None or getattr(store, "engine", None) is not None:
            break
        store = getattr(store, "_tracker_store", None) or getattr(store, "tracker_store", None)
    engine = getattr(store, "engine", None) if store is not None else None
    if engine is None:
        return None
    if isinstance(engine.pool, NullPool):
        return _pooled_reader(engine.url.render_as_string(hide_password=False))
    if where_calls_run(engine, calls) == ON_EVENTS:
        reader = _asyncpg_reader(engine.url.render_as_string(hide_password=False), id(asyncio.get_running_loop()))
        return reader or engine
    return engine


def _paused_in_sql(engine: Any, conversation_id: str) -> bool:
    with engine.connect() as conn:
        last = conn.execute(_LAST_PAUSE_OR_RESUME, {"sender": conversation_id}).scalar()
    return last == "pause"


async def _ask(engine: Any, conversation_id: str, calls: str) -> bool:
    return await call_blocking(where_calls_run(engine, calls), _paused_in_sql, engine, conversation_id)


async def is_paused(agent: Any, conversation_id: str, calls: str = ON_EVENTS) -> bool:
    """Inside Rasa: through the agent's tracker store (any kind; SQL ones by one indexed query)."""
    if agent is None or getattr(agent, "tracker_store", None) is None:
        return False
    try:
        engine = _sql_tracker_engine(agent, calls)
        if engine is not None:
            return await _ask(engine, conversation_id, calls)
        tracker = await agent.tracker_store.retrieve(conversation_id)
        return bool(tracker is not None and tracker.is_paused())
    except Exception:  # only decides whether "typing…" shows; never fails a receipt
        logger.debug("could not tell whether %s is paused", conversation_id, exc_info=True)
        return False


def paused_in_database(url: str | None, calls: str = ON_EVENTS) -> PausedCheck:
    """Outside Rasa (connectors.ingest): the tracker store's database by URL; None: never paused."""

    async def paused(conversation_id: str) -> bool:
        if url is None:
            return False
        try:
            return await _ask(reader_for_url(url, calls), conversation_id, calls)
        except Exception:  # no events table yet (Rasa not started), database away…: typing shows
            logger.debug("could not tell whether %s is paused", conversation_id, exc_info=True)
            return False

    return paused
