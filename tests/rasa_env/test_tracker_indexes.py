"""connectors/tracker_indexes.py: indexes on Rasa's `events` so the look-ups every message makes ("is a person
handling this conversation?", Rasa's own retrieval of the session) do not read all of the conversation's
events, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url

from connectors import tracker_indexes
from connectors.channel import LAST_PAUSE_OR_RESUME as LOOK_UP
from connectors.tracker_indexes import INDEXES, create_tracker_indexes
from tests.postgres import temporary_database

from .conftest import POSTGRES_ADMIN_URL

PAUSE_INDEX = "ix_events_pause_resume"
# Rasa 3.6's own look-up (SQLTrackerStore._event_query's subquery)
SESSION_START = text("SELECT max(timestamp) FROM events WHERE sender_id = :sender AND type_name = 'session_started'")


@pytest.fixture(autouse=True)
def fresh_process() -> Iterator[None]:
    """Each test as a new process: the index is looked for again."""
    tracker_indexes._made.clear()
    yield
    tracker_indexes._made.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def tracker_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLTrackerStore]:
    """Rasa's own SQL tracker store (its `events` table, as Rasa creates it)."""
    if request.param == "sqlite":
        yield SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "rasa.db"))
        return
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_tracker_indexes") as url:
        parts = make_url(url)
        store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parts.host, port=parts.port,
                                db=parts.database, username=parts.username, password=parts.password)
        yield store
        store.engine.dispose()


@pytest.fixture
def tracker_engine(tracker_store: SQLTrackerStore) -> Engine:
    return tracker_store.engine


def fill(engine: Engine, senders: int = 50, events_each: int = 200) -> None:
    """Conversations with many events, one of them handed to a person and back, one with a person now."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO events (sender_id, type_name, data) VALUES (:s, :t, '{}')"),
                     [{"s": f"c{n % senders}", "t": "user"} for n in range(senders * events_each)])
        conn.execute(text("INSERT INTO events (sender_id, type_name, data) VALUES (:s, :t, '{}')"),
                     [{"s": "c1", "t": "pause"}, {"s": "c1", "t": "resume"}, {"s": "c2", "t": "pause"}])
        conn.execute(text("ANALYZE"))


def plan(engine: Engine, sender: str, look_up: Any = LOOK_UP) -> str:
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        return " ".join(str(row[-1]) for row in conn.execute(text(explain + str(look_up)), {"sender": sender}))


def test_the_look_up_uses_the_index_and_answers_as_before(tracker_engine: Engine) -> None:
    fill(tracker_engine)
    assert PAUSE_INDEX not in plan(tracker_engine, "c2")  # Rasa's own index: every event of the conversation
    assert create_tracker_indexes(tracker_engine) is True
    assert set(INDEXES) <= {index["name"] for index in inspect(tracker_engine).get_indexes("events")}
    assert PAUSE_INDEX in plan(tracker_engine, "c2")
    with tracker_engine.connect() as conn:
        answers = [conn.execute(LOOK_UP, {"sender": sender}).scalar() for sender in ("c1", "c2", "c3", "nobody")]
    assert answers == ["resume", "pause", None, None]
    assert create_tracker_indexes(tracker_engine) is True  # again: nothing to do


def test_without_rasas_table_nothing_is_made(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    assert create_tracker_indexes(engine) is False
    assert inspect(engine).get_table_names() == []


def test_an_index_an_interrupted_build_left_invalid_is_built_again(caplog: pytest.LogCaptureFixture) -> None:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_tracker_indexes") as url:
        parts = make_url(url)
        store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parts.host, port=parts.port,
                                db=parts.database, username=parts.username, password=parts.password)
        engine = store.engine
        fill(engine, senders=5, events_each=20)
        assert create_tracker_indexes(engine) is True
        with engine.begin() as conn:  # as CREATE INDEX CONCURRENTLY leaves it when cut off
            conn.execute(text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(:name)"),
                         {"name": PAUSE_INDEX})
        tracker_indexes._made.clear()  # a restart
        with caplog.at_level(logging.WARNING):
            assert create_tracker_indexes(engine) is True
        assert "left invalid by an interrupted build" in caplog.text
        with engine.connect() as conn:
            valid = conn.execute(text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
                                 {"name": PAUSE_INDEX}).scalar()
        assert valid is True
        engine.dispose()


def test_a_failure_is_logged_not_raised(tracker_engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    with tracker_engine.begin() as conn:  # a table of that name the index cannot be made on
        conn.execute(text("DROP TABLE events"))
        conn.execute(text("CREATE TABLE events (id integer)"))
    with caplog.at_level(logging.WARNING):
        assert create_tracker_indexes(tracker_engine) is False
    assert "could not create index ix_events_" in caplog.text


async def test_rasas_retrieval_finds_the_last_session_through_the_index_and_returns_the_same_tracker(
        tracker_store: SQLTrackerStore) -> None:
    from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    fill(tracker_store.engine)

    def session(at: float) -> list[Any]:
        return [ActionExecuted("action_session_start", timestamp=at), SessionStarted(timestamp=at)]

    await tracker_store.save(DialogueStateTracker.from_events("long", [
        *session(1_000.0), UserUttered("first session", timestamp=1_001.0),
        *[UserUttered(f"message {n}", timestamp=1_002.0 + n) for n in range(30)],
        *session(2_000.0), UserUttered("second session", timestamp=2_001.0)]))
    before = [event.as_dict() for event in (await tracker_store.retrieve("long")).events]
    assert "ix_events_session_started" not in plan(tracker_store.engine, "c2", SESSION_START)
    assert create_tracker_indexes(tracker_store.engine) is True
    assert "ix_events_session_started" in plan(tracker_store.engine, "c2", SESSION_START)
    after = [event.as_dict() for event in (await tracker_store.retrieve("long")).events]
    assert after == before
    assert [event.get("text") for event in after if event["event"] == "user"] == ["second session"]
