"""Read receipts go out from the process that stored the message, after the ACK, once per new message."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from rasa.core.channels.channel import UserMessage
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ConversationPaused

from connectors import receipts as receipts_module
from connectors.inbox import Inbox, InboxItem, create_inbox_engine
from connectors.ingest import ROUTE, create_app, receipts_for
from connectors.paused import paused_in_database
from connectors.receipts import Receipts, receipt_targets
from connectors.whatsapp.signature import sign
from connectors.whatsapp.webhook import new_items

from .conftest import GraphStandIn
from .test_whatsapp_webhook import SECRET, channel_app, settings  # noqa: F401 (fixture)

DATA = Path(__file__).parent / "data"
NOW = 1_000_000.0


def item(message_id: str, conversation: str = "c1", sent_at: float = NOW, **message: Any) -> InboxItem:
    return InboxItem(message_id, "whatsapp", conversation, "447700000001", "PNID-A", int(sent_at),
                     message or {"text": "hi"})


class Recorder:
    def __init__(self, fail: bool = False, wait: asyncio.Event | None = None) -> None:
        self.calls: list[tuple[str, str, str, bool]] = []
        self.fail = fail
        self.wait = wait

    async def mark_read_and_typing(self, business_id: str, message_id: str, reply_to: str,
                                   typing: bool = True) -> None:
        if self.wait is not None:
            await self.wait.wait()
        if self.fail:
            raise RuntimeError("network down")
        self.calls.append((business_id, message_id, reply_to, typing))

    async def close(self) -> None:
        pass


async def never_paused(_: list[str]) -> set[str]:
    return set()


def test_skipped_and_stale_messages_get_no_receipt() -> None:
    fresh, reaction, old = item("m1"), item("m2", skip="reaction"), item("m3", sent_at=NOW - 86401)
    assert receipt_targets([fresh, reaction, old], NOW, 86400) == [fresh]
    assert receipt_targets([], NOW, 86400) == []


def test_the_new_messages_of_a_webhook_are_the_first_of_each_stored_id() -> None:
    first, other, repeat = item("m1"), item("m2"), item("m1", text="the same id again")
    assert new_items(["m1", "m2"], [first, other, repeat]) == (first, other)
    assert new_items(["m2"], [first, other]) == (other,)  # m1 was a duplicate of an earlier webhook
    assert new_items([], [first]) == ()


async def test_receipts_with_typing_unless_a_person_has_the_conversation() -> None:
    client = Recorder()
    asked: list[list[str]] = []

    async def paused(conversation_ids: list[str]) -> set[str]:
        asked.append(conversation_ids)
        return {"with-agent"} & set(conversation_ids)

    receipts = Receipts(client, paused, 86400, clock=lambda: NOW)
    receipts.after_store((item("m1"), item("m2", conversation="with-agent"), item("m3")))
    await receipts.idle()
    assert client.calls == [("PNID-A", "m1", "447700000001", True), ("PNID-A", "m2", "447700000001", False),
                            ("PNID-A", "m3", "447700000001", True)]
    assert asked == [["c1", "with-agent"]]  # one question for the batch


async def test_the_cloud_api_gets_one_receipt_per_conversation_for_a_burst() -> None:
    """Marking a message read marks the conversation's earlier ones read (Meta's documented behaviour)."""
    for coalesce, expected in ((True, ["m3", "m2"]), (False, ["m1", "m2", "m3"])):
        client = Recorder()
        receipts = Receipts(client, never_paused, 86400, coalesce=coalesce, clock=lambda: NOW)
        receipts.after_store((item("m1"), item("m2", conversation="c2"), item("m3")))
        await receipts.idle()
        assert [call[1] for call in client.calls] == expected
    # A late delivery of an older message does not take the newer one's receipt.
    client = Recorder()
    receipts = Receipts(client, never_paused, 86400, coalesce=True, clock=lambda: NOW)
    receipts.after_store((item("new", sent_at=NOW),))
    receipts.after_store((item("older", sent_at=NOW - 5),))
    await receipts.idle()
    assert [call[1] for call in client.calls] == ["new"]


async def test_receipts_wait_while_webhooks_are_being_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    storing = [True]
    client = Recorder()
    receipts = Receipts(client, never_paused, 86400, busy=lambda: storing[0], clock=lambda: NOW)
    receipts.after_store((item("m1"),))
    await asyncio.sleep(0.05)
    assert client.calls == []  # the ACKs go first
    storing[0] = False
    await receipts.idle()
    assert len(client.calls) == 1
    # Never starved: after MAX_DEFER_SECONDS they go even while webhooks keep coming.
    monkeypatch.setattr(receipts_module, "MAX_DEFER_SECONDS", 0.05)
    storing[0] = True
    receipts.after_store((item("m2"),))
    await asyncio.wait_for(receipts.idle(), 5)
    assert len(client.calls) == 2


async def test_a_failing_receipt_is_logged_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    async def broken_paused(_: list[str]) -> set[str]:
        raise RuntimeError("tracker store away")

    failing = Recorder(fail=True)
    receipts = Receipts(failing, never_paused, 86400, clock=lambda: NOW)
    with caplog.at_level(logging.WARNING):
        receipts.after_store((item("m1"),))
        await receipts.idle()
    assert failing.calls == [] and "receipt for m1 failed" in caplog.text
    working = Recorder()
    receipts = Receipts(working, broken_paused, 86400, clock=lambda: NOW)
    receipts.after_store((item("m1"),))
    await receipts.idle()
    assert working.calls == [("PNID-A", "m1", "447700000001", True)]  # unknown: typing shows


async def test_a_flood_queues_a_bounded_number_of_receipts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receipts_module, "MAX_QUEUED", 3)
    client = Recorder()
    receipts = Receipts(client, never_paused, 86400, clock=lambda: NOW)
    receipts.after_store(tuple(item(f"m{n}", conversation=f"c{n}") for n in range(5)))
    assert receipts.dropped == 2
    await receipts.idle()
    assert [call[1] for call in client.calls] == ["m0", "m1", "m2"]
    receipts.after_store((item("m5"),))  # room again once they went out
    await receipts.idle()
    assert len(client.calls) == 4


async def test_the_rasa_route_sends_one_receipt_per_new_message_and_none_for_duplicates(
        channel_app: Any) -> None:  # noqa: F811
    app, channel, _ = channel_app
    client = Recorder()
    channel.receipts.client = client
    body = (DATA / "batch_two_entries.json").read_bytes()

    async def deliver(signature: str) -> int:
        _, answer = await app.asgi_client.post(ROUTE, content=body, headers={"X-Hub-Signature-256": signature})
        return answer.status

    for _ in range(3):  # Meta's repeats
        assert await deliver(sign(body, SECRET)) == 200
    assert await deliver(sign(body, "wrong")) == 403
    await channel.receipts.idle()
    rows = _rows(channel.inbox)
    assert len(rows) == 4
    latest = {(row["business_id"], row["conversation_id"]): row["message_id"] for row in rows}  # ids ascend
    # Two of the four are one customer's: the later one's receipt marks both read.
    assert sorted(call[1] for call in client.calls) == sorted(latest.values()) and len(latest) == 3


def _rows(inbox: Inbox) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from connectors.inbox_tables import inbox as table

    with inbox.engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(table).order_by(table.c.id)).mappings()]


async def test_the_turn_itself_sends_no_receipt(tmp_path: Path) -> None:
    """The receipt went when the message was stored; a turn (also a re-run after a crash) adds none."""
    from connectors.whatsapp.channel import WhatsAppInput

    channel = WhatsAppInput(settings(tmp_path))
    client = Recorder()
    channel.receipts.client = client
    channel.client = client  # type: ignore[assignment]
    body = json.loads((DATA / "text_message.json").read_text())
    from connectors.whatsapp.to_rasa import to_inbox_item
    from connectors.whatsapp.updates import parse_webhook

    channel.inbox.add([to_inbox_item(m) for m in parse_webhook(body).messages])
    row = channel.inbox.claim_next(channel.inbox.pending_conversations([], 10)[0])
    assert row is not None

    async def on_new_message(_: UserMessage) -> None:
        pass

    await channel.handle_row(row, on_new_message)
    await channel.receipts.idle()
    assert client.calls == []


async def test_ingest_marks_read_with_typing_after_storing_and_asks_the_tracker_store(
        tmp_path: Path, graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    config = settings(tmp_path, graph.url)
    tracker_db = tmp_path / "tracker.db"
    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tracker_db))
    body = (DATA / "batch_two_entries.json").read_bytes()
    messages = json.loads(body)
    first_sender = messages["entry"][0]["changes"][0]["value"]["contacts"][0]
    paused_id = first_sender.get("user_id") or first_sender["wa_id"]
    tracker = await store.get_or_create_tracker(paused_id)
    tracker.update(ConversationPaused())
    await store.save(tracker)

    inbox = Inbox(create_inbox_engine(config.inbox_db_url))
    from connectors.whatsapp.graph_api import GraphClient

    receipts = Receipts(GraphClient("test-token", graph.url, "v23.0"),
                        paused_in_database(f"sqlite:///{tracker_db}"), config.stale_after_seconds)
    # Not coalesced here, to see each message's own receipt (the batch has two of one conversation).
    async with TestClient(TestServer(create_app(config, inbox, receipts))) as client:
        for _ in range(2):  # a repeat gets no second receipt
            answer = await client.post(ROUTE, data=body, headers={"X-Hub-Signature-256": sign(body, SECRET)})
            assert answer.status == 200
        await receipts.idle()
    reads = [(number, payload) for number, payload in graph.received if payload.get("status") == "read"]
    assert len(reads) == 4
    by_id = {payload["message_id"]: (number, payload) for number, payload in reads}
    rows = {row["message_id"]: row for row in _rows(inbox)}
    assert set(by_id) == set(rows)
    for message_id, (number, payload) in by_id.items():
        assert number == rows[message_id]["business_id"]  # from the number that received it
        typing = rows[message_id]["conversation_id"] != paused_id
        assert ("typing_indicator" in payload) is typing, message_id
    assert any("typing_indicator" not in payload for _, payload in reads)


def test_ingest_sends_no_receipts_without_an_access_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import replace

    assert receipts_for(replace(settings(tmp_path), access_token="")) is None
    assert "no read receipts are sent" in caplog.text
    assert receipts_for(settings(tmp_path)) is not None
