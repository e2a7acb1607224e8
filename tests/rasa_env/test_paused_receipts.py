"""While a person has the conversation, the customer's messages get blue ticks but no "typing…"."""

from __future__ import annotations

import dataclasses
import json
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

from connectors.asyncpg_kept import KeptAsyncpg
from connectors.inbox_calls import IN_THREAD, ON_EVENTS, ON_LOOP
from connectors.inbox_channel import _sql_tracker_engine, is_paused
from connectors.sqlite_kept import KeptSqlite
from connectors.whatsapp.channel import WhatsAppInput
from connectors.whatsapp.to_rasa import to_inbox_item
from connectors.whatsapp.updates import parse_webhook
from tests.postgres import temporary_database
from tests.rasa_env.conftest import POSTGRES_ADMIN_URL

from .test_whatsapp_webhook import settings

DATA = Path(__file__).parent / "data"


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
    assert await is_paused(agent, "a") is False
    await save(store, "a", ConversationPaused())
    assert await is_paused(agent, "a") is True
    await save(store, "a", ConversationResumed())
    assert await is_paused(agent, "a") is False
    assert await is_paused(agent, "nobody") is False
    # Rasa's SQLite engine has no pool; the check on every message reads through a kept connection.
    reader = _sql_tracker_engine(agent)
    assert isinstance(reader, KeptSqlite)
    for _ in range(10):
        assert await is_paused(agent, "a") is False
    assert len(reader._opened) == 1


@pytest.mark.parametrize("calls", [ON_EVENTS, ON_LOOP, IN_THREAD])
async def test_paused_is_read_from_a_postgresql_tracker_store(calls: str) -> None:
    """The production topology: the question goes through asyncpg by default (no blocked loop)."""
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_paused") as url:
        parsed = make_url(url)
        store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parsed.host, port=parsed.port,
                                db=parsed.database, username=parsed.username)
        agent = Agent(AwaitableTrackerStore(FailSafeTrackerStore(store)))
        await save(store, "a", UserUttered("hi"))
        assert await is_paused(agent, "a", calls) is False
        await save(store, "a", ConversationPaused())
        assert await is_paused(agent, "a", calls) is True
        assert await is_paused(agent, "nobody", calls) is False
        reader = _sql_tracker_engine(agent, calls)
        assert reader.dialect.driver == ("asyncpg" if calls == ON_EVENTS else "psycopg2")
        if calls == ON_EVENTS:  # on one kept asyncpg connection, asked 3 times (connectors/asyncpg_kept.py)
            assert isinstance(reader, KeptAsyncpg) and len(reader._idle) == 1
            await reader.close()
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


async def test_a_tracker_store_in_its_own_schema_is_asked_through_rasas_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """POSTGRESQL_SCHEMA: Rasa's tables are in a schema only its engine's connections put on their
    search_path; a connection of ours would not find `events` there (or find another one)."""
    engine = sqlalchemy.create_engine("postgresql://u@127.0.0.1:1/rasa", future=True)
    agent = Agent(type("Store", (), {"engine": engine})())
    monkeypatch.setenv("POSTGRESQL_SCHEMA", "rasa")
    assert _sql_tracker_engine(agent, ON_EVENTS) is engine
    monkeypatch.delenv("POSTGRESQL_SCHEMA")
    assert isinstance(_sql_tracker_engine(agent, ON_EVENTS), KeptAsyncpg)


async def test_paused_from_other_stores_and_no_store() -> None:
    store = InMemoryTrackerStore(Domain.empty())
    await save(store, "b", ConversationPaused())
    assert await is_paused(Agent(store), "b") is True
    assert await is_paused(None, "b") is False


class Receipts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def helper_spec(self) -> None:
        return None  # no helper process builds it: the receipts are made here, where the test sees them

    async def mark_read_and_typing(self, business_id: str, message_id: str, reply_to: str,
                                   typing: bool = True) -> None:
        self.calls.append((message_id, typing))


async def test_receipt_without_typing_while_paused(tmp_path: Path) -> None:
    channel = WhatsAppInput(settings(tmp_path))
    receipts = Receipts()
    channel.client = receipts  # type: ignore[assignment]
    store = InMemoryTrackerStore(Domain.empty())
    channel._agent = Agent(store)
    (message,) = parse_webhook(json.loads((DATA / "text_message.json").read_text())).messages
    item = to_inbox_item(message)
    row: Any = type("Row", (), {"business_id": item.business_id, "message_id": item.message_id,
                                "reply_to": item.reply_to, "conversation_id": item.conversation_id,
                                "paused": None})()  # the claim did not answer: the receipt asks
    await channel._receipt(row)
    await save(store, item.conversation_id, ConversationPaused())
    await channel._receipt(row)
    assert receipts.calls == [(item.message_id, True), (item.message_id, False)]


async def test_the_claim_answers_the_receipts_question_when_the_tracker_store_shares_the_database(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Production topology (inbox and tracker store in one PostgreSQL database): the claim's one statement
    also says whether a person has the conversation, and the receipt asks nothing more."""
    from connectors.inbox import Inbox, create_inbox_engine
    from connectors.inbox_channel import tracker_store_shares
    from tests.rasa_env.conftest import watch_statements
    from tests.rasa_env.inbox_support import item

    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_paused_claim") as url:
        parsed = make_url(url)
        store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parsed.host, port=parsed.port,
                                db=parsed.database, username=parsed.username)
        agent = Agent(AwaitableTrackerStore(FailSafeTrackerStore(store)))  # wrapped as Rasa wraps it
        inbox = Inbox(create_inbox_engine(url.replace("postgresql://", "postgresql+psycopg2://")), calls=ON_EVENTS)
        try:
            assert tracker_store_shares(agent, inbox.engine)  # another driver, same database
            monkeypatch.setenv("POSTGRESQL_SCHEMA", "rasa")  # Rasa's tables in a schema only its engine sees
            assert not tracker_store_shares(agent, inbox.engine)
            monkeypatch.delenv("POSTGRESQL_SCHEMA")
            inbox.pauses_in_this_database = tracker_store_shares(agent, inbox.engine)
            inbox.add([item("m1", "c1", 1), item("m2", "c1", 2), item("n1", "c2", 1)])
            await save(store, "c1", UserUttered("hi"), ConversationPaused())
            first = await inbox.call(inbox.claim_next, "c1", "whatsapp")  # on asyncpg, as the worker runs it
            assert first is not None and first.message_id == "m1" and first.paused is True
            await save(store, "c1", ConversationResumed())
            second = await inbox.call(inbox.advance, first, None, [first.id])
            assert second is not None and second.message_id == "m2" and second.paused is False
            statements: list[str] = []
            watch_statements(inbox, statements.append)
            other = inbox.claim_next("c2", "whatsapp")  # psycopg2 (threads, tools): the same statement
            assert other is not None and other.paused is False  # no events at all: the bot answers
            assert len(statements) == 1 and "last_pause" in statements[0]

            channel = WhatsAppInput(settings(tmp_path))
            receipts = Receipts()
            channel.client = receipts  # type: ignore[assignment]
            channel._agent = Agent(InMemoryTrackerStore(Domain.empty()))  # would say "not paused": not asked
            await channel._receipt(dataclasses.replace(first, paused=True))
            assert receipts.calls == [("m1", False)]
        finally:
            await inbox.close()
            store.engine.dispose()


def test_the_receipts_question_stays_with_the_receipt_elsewhere(tmp_path: Path) -> None:
    """SQLite, or the tracker store in another database: the claim does not ask (rows say None)."""
    from connectors.inbox import Inbox, create_inbox_engine
    from connectors.inbox_channel import tracker_store_shares
    from tests.rasa_env.inbox_support import item

    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "tracker.db"))
    inbox = Inbox(create_inbox_engine(f"sqlite:///{tmp_path / 'tracker.db'}"))
    assert tracker_store_shares(Agent(store), inbox.engine)
    inbox.pauses_in_this_database = True  # SQLite claims in a transaction: nothing to fold into
    assert not inbox.pauses_in_this_database
    inbox.add([item("m1", "c1", 1)])
    row = inbox.claim_next("c1", "whatsapp")
    assert row is not None and row.paused is None
    elsewhere = sqlalchemy.create_engine("postgresql://postgres@127.0.0.1:5432/another", future=True)
    assert not tracker_store_shares(Agent(store), elsewhere)
    assert not tracker_store_shares(Agent(InMemoryTrackerStore(Domain.empty())), elsewhere)
    assert not tracker_store_shares(None, elsewhere)
    inbox.dispose()
    store.engine.dispose()
