"""While a person has the conversation, the customer's messages get blue ticks but no "typing…"."""

from __future__ import annotations

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


async def test_paused_from_other_stores_and_no_store() -> None:
    store = InMemoryTrackerStore(Domain.empty())
    await save(store, "b", ConversationPaused())
    assert await is_paused(Agent(store), "b") is True
    assert await is_paused(None, "b") is False


class Receipts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

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
                                "reply_to": item.reply_to, "conversation_id": item.conversation_id})()
    await channel._receipt(row)
    await save(store, item.conversation_id, ConversationPaused())
    await channel._receipt(row)
    assert receipts.calls == [(item.message_id, True), (item.message_id, False)]
