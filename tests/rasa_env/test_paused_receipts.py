"""While a person has the conversation, the customer's messages get blue ticks but no "typing…"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from rasa.core.tracker_store import (
    AwaitableTrackerStore,
    FailSafeTrackerStore,
    InMemoryTrackerStore,
    SQLTrackerStore,
)
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ConversationPaused, ConversationResumed, UserUttered
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.util import greenlet_spawn

from connectors.inbox_calls import IN_THREAD, ON_EVENTS, ON_LOOP
from connectors.paused import _sql_tracker_engine, paused_among, paused_in_database
from tests.postgres import temporary_database
from tests.rasa_env.conftest import POSTGRES_ADMIN_URL


class Agent:
    def __init__(self, store: Any) -> None:
        self.tracker_store = store


async def save(store: Any, sender: str, *events: Any) -> None:
    tracker = await store.get_or_create_tracker(sender)
    for event in events:
        tracker.update(event)
    await store.save(tracker)


async def test_paused_is_read_from_the_sql_tracker_store(tmp_path: Path) -> None:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "tracker.db"))
    agent = Agent(AwaitableTrackerStore(FailSafeTrackerStore(store)))  # wrapped as Rasa wraps it
    await save(store, "a", UserUttered("hi"))
    assert await paused_among(agent, ["a"]) == set()
    await save(store, "a", ConversationPaused())
    assert await paused_among(agent, ["a"]) == {"a"}
    await save(store, "a", ConversationResumed())
    assert await paused_among(agent, ["a"]) == set()
    assert await paused_among(agent, ["nobody"]) == set()
    # Rasa's SQLite engine has no pool; the check on every message reads through kept connections.
    reader = _sql_tracker_engine(agent)
    assert reader is not store.engine and not isinstance(reader.pool, NullPool)
    opened: list[object] = []
    sqlalchemy.event.listen(reader, "connect", lambda connection, _record: opened.append(connection))
    for _ in range(10):
        assert await paused_among(agent, ["a"]) == set()
    assert len(opened) <= 1


@pytest.mark.parametrize("calls", [ON_EVENTS, ON_LOOP, IN_THREAD])
async def test_paused_is_read_from_a_postgresql_tracker_store(calls: str) -> None:
    """The production topology: the question goes through asyncpg by default (no blocked loop)."""
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_paused") as url:
        parsed = make_url(url)
        store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parsed.host, port=parsed.port,
                                db=parsed.database, username=parsed.username)
        agent = Agent(AwaitableTrackerStore(FailSafeTrackerStore(store)))
        await save(store, "a", UserUttered("hi"))
        assert await paused_among(agent, ["a"], calls) == set()
        await save(store, "a", ConversationPaused())
        assert await paused_among(agent, ["a"], calls) == {"a"}
        assert await paused_among(agent, ["nobody"], calls) == set()
        reader = _sql_tracker_engine(agent, calls)
        assert reader.dialect.driver == ("asyncpg" if calls == ON_EVENTS else "psycopg2")
        if calls == ON_EVENTS:
            await greenlet_spawn(reader.dispose)
        store.engine.dispose()


async def test_a_tracker_store_url_asyncpg_cannot_take_falls_back_to_rasas_engine(
        caplog: pytest.LogCaptureFixture) -> None:
    engine = sqlalchemy.create_engine("postgresql://u@127.0.0.1:1/rasa?keepalives=1", future=True)
    agent = Agent(type("Store", (), {"engine": engine})())
    assert _sql_tracker_engine(agent, ON_EVENTS) is engine
    assert _sql_tracker_engine(agent, ON_EVENTS) is engine
    assert [r.message for r in caplog.records].count(
        "read receipts ask the tracker store through Rasa's own engine: asyncpg does not take the database URL "
        "option(s) keepalives: drop them or set WHATSAPP_INBOX_CALLS=loop") == 1  # said once


async def test_paused_from_other_stores_and_no_store() -> None:
    store = InMemoryTrackerStore(Domain.empty())
    await save(store, "b", ConversationPaused())
    assert await paused_among(Agent(store), ["b"]) == {"b"}
    assert await paused_among(None, ["b"]) == set()


async def test_paused_asked_by_url_as_connectors_ingest_does(tmp_path: Path) -> None:
    """No agent outside Rasa: the tracker store's database by URL; anything unknown is "not paused"."""
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "tracker.db"))
    paused = paused_in_database(f"sqlite:///{tmp_path / 'tracker.db'}")
    await save(store, "a", UserUttered("hi"))
    await save(store, "b", ConversationPaused(), ConversationResumed())
    assert await paused(["a", "b"]) == set()
    await save(store, "a", ConversationPaused())
    await save(store, "c", ConversationPaused(), ConversationResumed(), ConversationPaused())
    assert await paused(["a", "b", "c", "nobody"]) == {"a", "c"}
    assert await paused([]) == set()
    # Rasa not started yet (no events table), no SQL tracker store, a database that is away: typing shows.
    assert await paused_in_database(f"sqlite:///{tmp_path / 'empty.db'}")(["a"]) == set()
    assert await paused_in_database(None)(["a"]) == set()
    assert await paused_in_database("postgresql://nobody@127.0.0.1:1/none")(["a"]) == set()


async def test_paused_asked_by_url_on_postgresql() -> None:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_paused_url") as url:
        parsed = make_url(url)
        store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parsed.host, port=parsed.port,
                                db=parsed.database, username=parsed.username)
        await save(store, "a", ConversationPaused())
        for calls in (ON_EVENTS, ON_LOOP, IN_THREAD):
            assert await paused_in_database(url, calls)(["a", "b"]) == {"a"}
        from connectors.paused import reader_for_url

        await greenlet_spawn(reader_for_url(url, ON_EVENTS).dispose)
        store.engine.dispose()
