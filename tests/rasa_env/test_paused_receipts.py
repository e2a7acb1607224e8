"""While a person has the conversation, the customer's messages get blue ticks but no "typing…": the channel
asks Rasa's SQL tracker store (SQLite or PostgreSQL) on an async engine of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rasa.core.tracker_store import AwaitableTrackerStore, FailSafeTrackerStore, SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ConversationPaused, ConversationResumed, UserUttered
from sqlalchemy.engine import make_url

from connectors.channel import _rasa_sql_engine
from connectors.queue import InboxRow
from connectors.queue_schema import Database
from connectors.whatsapp.channel import WhatsAppInput
from tests.postgres import temporary_database
from tests.rasa_env.conftest import POSTGRES_ADMIN_URL

from .test_whatsapp_webhook import settings


class Agent:
    def __init__(self, store: Any) -> None:
        self.tracker_store = store


async def save(store: Any, sender: str, *events: Any) -> None:
    tracker = await store.get_or_create_tracker(sender)
    for event in events:
        tracker.update(event)
    await store.save(tracker)


class Receipts:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    async def mark_read_and_typing(self, business_id: str, message_id: str, reply_to: str,
                                   typing: bool = True) -> None:
        self.calls.append((message_id, typing))

    async def close(self) -> None:
        pass


def row(conversation_id: str) -> InboxRow:
    return InboxRow(message_id="wamid.IN1", channel="whatsapp", conversation_id=conversation_id,
                    reply_to=conversation_id, business_id="PNID", sent_at=0, message={"text": "hi"})


async def receipts_follow_the_pause(store: SQLTrackerStore, channel: WhatsAppInput) -> list[tuple[str, bool]]:
    wrapped = AwaitableTrackerStore(FailSafeTrackerStore(store))  # as Rasa wraps it
    engine = _rasa_sql_engine(Agent(wrapped))
    assert engine is not None
    channel._tracker = Database(engine.url.render_as_string(hide_password=False), 2)
    receipts = Receipts()
    channel.client = receipts  # type: ignore[assignment]
    await save(store, "a", UserUttered("hi"))
    await channel._receipt(row("a"))
    await save(store, "a", ConversationPaused())
    await channel._receipt(row("a"))
    await save(store, "a", ConversationResumed())
    await channel._receipt(row("a"))
    await channel._receipt(row("nobody"))
    await channel._tracker.dispose()
    return receipts.calls


async def test_no_typing_while_paused_on_a_sqlite_tracker_store(tmp_path: Path) -> None:
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "tracker.db"))
    calls = await receipts_follow_the_pause(store, WhatsAppInput(settings(tmp_path)))
    assert [typing for _, typing in calls] == [True, False, True, True]


async def test_no_typing_while_paused_on_a_postgresql_tracker_store(tmp_path: Path) -> None:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_tracker") as url:
        parts = make_url(url)
        store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parts.host, port=parts.port,
                                db=parts.database, username=parts.username, password=parts.password)
        calls = await receipts_follow_the_pause(store, WhatsAppInput(settings(tmp_path)))
        store.engine.dispose()
    assert [typing for _, typing in calls] == [True, False, True, True]


async def test_without_a_sql_tracker_store_typing_always_shows(tmp_path: Path) -> None:
    channel = WhatsAppInput(settings(tmp_path))
    receipts = Receipts()
    channel.client = receipts  # type: ignore[assignment]
    await channel._receipt(row("a"))
    assert receipts.calls == [("wamid.IN1", True)]
