"""Which conversations does a person have (the bot stays silent)? Asked for each batch of read
receipts: "typing…" or not.

One indexed query on the SQL tracker store's `events` table for a whole batch, on Rasa's own
tracker store inside Rasa (`paused_among`) or on the tracker store's database by URL in
connectors.ingest (`paused_in_database`). Never fails the caller: unknown means "not paused".
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.pool import NullPool, QueuePool

from connectors.inbox_calls import ON_EVENTS, call_blocking, create_asyncpg_engine, where_calls_run
from connectors.receipts import PausedAmong

logger = logging.getLogger(__name__)

# Of each sender, the latest pause or resume (Rasa indexes events.sender_id).
_PAUSED_AMONG = text(
    "SELECT sender_id FROM events WHERE type_name = 'pause' AND id IN (SELECT MAX(id) FROM events "
    "WHERE sender_id IN :senders AND type_name IN ('pause', 'resume') GROUP BY sender_id)"
).bindparams(bindparam("senders", expanding=True))


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


def _paused_in_sql(engine: Any, conversation_ids: list[str]) -> set[str]:
    if not conversation_ids:
        return set()
    with engine.connect() as conn:
        return set(conn.execute(_PAUSED_AMONG, {"senders": conversation_ids}).scalars())


async def _ask(engine: Any, conversation_ids: list[str], calls: str) -> set[str]:
    return await call_blocking(where_calls_run(engine, calls), _paused_in_sql, engine, conversation_ids)


async def paused_among(agent: Any, conversation_ids: list[str], calls: str = ON_EVENTS) -> set[str]:
    """Inside Rasa: through the agent's tracker store (any kind; SQL ones by one indexed query)."""
    if agent is None or getattr(agent, "tracker_store", None) is None:
        return set()
    try:
        engine = _sql_tracker_engine(agent, calls)
        if engine is not None:
            return await _ask(engine, conversation_ids, calls)
        paused = set()
        for conversation_id in conversation_ids:
            tracker = await agent.tracker_store.retrieve(conversation_id)
            if tracker is not None and tracker.is_paused():
                paused.add(conversation_id)
        return paused
    except Exception:  # only decides whether "typing…" shows; never fails a receipt
        logger.debug("could not tell which of %d conversations are paused", len(conversation_ids), exc_info=True)
        return set()


def paused_in_database(url: str | None, calls: str = ON_EVENTS) -> PausedAmong:
    """Outside Rasa (connectors.ingest): the tracker store's database by URL; None: never paused."""

    async def paused(conversation_ids: list[str]) -> set[str]:
        if url is None:
            return set()
        try:
            return await _ask(reader_for_url(url, calls), conversation_ids, calls)
        except Exception:  # no events table yet (Rasa not started), database away…: typing shows
            logger.debug("could not tell which conversations are paused", exc_info=True)
            return set()

    return paused
