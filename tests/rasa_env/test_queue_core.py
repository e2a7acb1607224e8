"""The new channel core (connectors/queue.py, claims.py, turns.py, sender.py) on SQLite and PostgreSQL:
inbox → turn → outbox → sender, without Rasa (a scripted turn) and with a scripted platform client."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.claims import Claims, ClaimsUnavailable
from connectors.queue import InboxRow, Queue, Reply
from connectors.queue_schema import DONE, FAILED, SENDING, SENT, STALE, Database
from connectors.sender import Outbox, RetryingSender, Sender
from connectors.turns import TurnResult, Worker
from connectors.whatsapp.errors import GraphError, verdict
from connectors.whatsapp.to_rasa import InboxItem
from tests.postgres import temporary_database

from .conftest import POSTGRES_ADMIN_URL


def item(n: int, conversation: str = "447700900001", sent_at: int | None = None) -> InboxItem:
    stamp = int(time.time()) if sent_at is None else sent_at
    return InboxItem(message_id=f"wamid.{conversation}.{n}", channel="whatsapp", conversation_id=conversation,
                     reply_to=conversation, business_id="PNID", sent_at=stamp,
                     message={"text": f"message {n}", "metadata": {}})


def text(to: str, body: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


class ScriptedClient(RetryingSender):
    """Accepts every send (or fails the scripted ones) and keeps what it was given."""

    def __init__(self, failures: list[GraphError] | None = None) -> None:
        super().__init__(sleep=lambda _s: asyncio.sleep(0), rand=lambda: 0.0)
        self.failures = failures or []
        self.sent: list[dict[str, Any]] = []

    async def post(self, business_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(payload)
        return {"messages": [{"id": f"wamid.OUT{len(self.sent)}"}]}

    def message_id_of(self, body: dict[str, Any]) -> str | None:
        return str(body["messages"][0]["id"])

    def decide(self, error: GraphError, server_errors: int) -> Any:
        return verdict(error, server_errors)

    def tagged(self, payload: dict[str, Any], key: str) -> dict[str, Any]:
        return {**payload, "biz_opaque_callback_data": key}


def echo_turn(seen: list[str]) -> Any:
    async def run(row: InboxRow) -> TurnResult:
        seen.append(row.message_id)
        return TurnResult([Reply(text(row.reply_to, f"re: {row.message['text']}"))])
    return run


async def drain(worker: Worker, sender: Sender) -> None:
    await worker.dispatch_once()
    await worker.idle()
    await sender.idle()


async def test_a_message_stored_three_times_is_answered_once(queue: Queue) -> None:
    for _ in range(3):
        await queue.store([item(1)])
    seen: list[str] = []
    client = ScriptedClient()
    claims = Claims(queue.db)
    sender = Sender(queue, claims, "whatsapp", client)
    worker = Worker(queue, claims, "whatsapp", echo_turn(seen), on_replies=sender.notify)
    await drain(worker, sender)
    assert seen == ["wamid.447700900001.1"]
    assert [p["text"]["body"] for p in client.sent] == ["re: message 1"]
    assert (await queue.counts())["inbox"] == {DONE: 1}
    assert (await queue.counts())["outbox"] == {SENT: 1}
    await claims.close()


async def test_turns_and_replies_keep_each_conversations_order(queue: Queue) -> None:
    await queue.store([item(n, conversation) for n in range(1, 6) for conversation in ("c1", "c2")])
    seen: list[str] = []
    client = ScriptedClient()
    claims = Claims(queue.db)
    sender = Sender(queue, claims, "whatsapp", client)
    worker = Worker(queue, claims, "whatsapp", echo_turn(seen), on_replies=sender.notify, concurrency=2)
    await drain(worker, sender)
    for conversation in ("c1", "c2"):
        assert [m for m in seen if f".{conversation}." in m] == [f"wamid.{conversation}.{n}" for n in range(1, 6)]
        assert [p["text"]["body"] for p in client.sent if p["to"] == conversation] == \
            [f"re: message {n}" for n in range(1, 6)]
    await claims.close()


async def test_a_failing_turn_is_tried_again_then_marked_failed_and_the_conversation_goes_on(queue: Queue) -> None:
    await queue.store([item(1), item(2)])
    calls: list[str] = []

    async def flaky(row: InboxRow) -> TurnResult:
        calls.append(row.message_id)
        if row.message_id.endswith(".1"):
            raise RuntimeError("the action server is down")
        return TurnResult()

    claims = Claims(queue.db)
    worker = Worker(queue, claims, "whatsapp", flaky)
    for _ in range(3):
        worker._latest, worker._next_full_scan = -1, 0.0  # look again at once
        await worker.dispatch_once()
        await worker.idle()
    assert calls == ["wamid.447700900001.1"] * 3 + ["wamid.447700900001.2"]
    assert (await queue.counts())["inbox"] == {FAILED: 1, DONE: 1}
    await claims.close()


async def test_old_messages_are_marked_stale_not_answered(queue: Queue) -> None:
    await queue.store([item(1, sent_at=int(time.time()) - 3 * 86400)])
    seen: list[str] = []
    claims = Claims(queue.db)
    worker = Worker(queue, claims, "whatsapp", echo_turn(seen))
    await worker.dispatch_once()
    await worker.idle()
    assert seen == []
    assert (await queue.counts())["inbox"] == {STALE: 1}
    await claims.close()


async def test_retryable_send_errors_are_retried_and_permanent_ones_recorded(queue: Queue) -> None:
    await queue.store([item(1), item(2)])
    client = ScriptedClient([GraphError(400, 130429, "throughput"), GraphError(500, None, "down")])
    claims = Claims(queue.db)
    sender = Sender(queue, claims, "whatsapp", client)
    worker = Worker(queue, claims, "whatsapp", echo_turn([]), on_replies=sender.notify, concurrency=1)
    await worker.dispatch_once()
    await worker.idle()
    sender.notify("447700900001")
    await sender.idle()
    assert (await queue.send_states([1]))[1]["state"] == SENT  # after a throughput error and a 5xx
    client.failures = [GraphError(400, 131026, "undeliverable")]
    await queue.store([item(3)])
    worker._latest = -1
    await drain(worker, sender)
    last = (await queue.send_states([3]))[3]
    assert (last["state"], last["error_code"]) == ("failed", 131026)
    await claims.close()


async def test_outside_the_window_the_template_goes_once(queue: Queue) -> None:
    await queue.store([item(1)])
    template = {"messaging_product": "whatsapp", "to": "447700900001", "type": "template",
                "template": {"name": "reengage", "language": {"code": "en"}}}

    async def two_replies(row: InboxRow) -> TurnResult:
        return TurnResult([Reply(text(row.reply_to, "one"), template), Reply(text(row.reply_to, "two"), template)])

    class OutsideTheWindow(ScriptedClient):
        async def post(self, business_id: str, payload: dict[str, Any]) -> dict[str, Any]:
            if payload["type"] != "template":
                raise GraphError(400, 131047, "re-engagement message")
            return await super().post(business_id, payload)

    client = OutsideTheWindow()
    claims = Claims(queue.db)
    sender = Sender(queue, claims, "whatsapp", client)
    worker = Worker(queue, claims, "whatsapp", two_replies, on_replies=sender.notify)
    await drain(worker, sender)
    assert [p["type"] for p in client.sent] == ["template"]
    states = await queue.send_states([1, 2, 3])
    assert [states[i]["error_code"] for i in (1, 2)] == [131047, 131047]
    assert states[3]["state"] == SENT
    await claims.close()


async def test_a_send_cut_off_by_a_crash_is_settled_by_its_status_not_sent_twice(queue: Queue) -> None:
    await queue.store([item(1)])
    row = await queue.next_message("whatsapp", "447700900001")
    assert row is not None
    (out_id,) = await queue.finish(row, DONE, [Reply(text("447700900001", "hello"))])
    await Outbox(queue.db).mark_sending(out_id)  # … and the process died before the answer was recorded
    await queue.store([], [{"message_id": "wamid.GONE", "status": "delivered", "sent_at": int(time.time()),
                            "recipient_id": "447700900001", "business_id": "PNID", "errors": None,
                            "callback": f"vb-out-{out_id}"}])
    client = ScriptedClient()
    claims = Claims(queue.db)
    sender = Sender(queue, claims, "whatsapp", client, status_grace=0.0)
    sender.notify("447700900001")
    await sender.idle()
    assert client.sent == []
    assert (await queue.send_states([out_id]))[out_id]["message_id"] == "wamid.GONE"
    await claims.close()


async def test_a_cut_off_send_without_evidence_is_sent_again(queue: Queue) -> None:
    await queue.store([item(1)])
    row = await queue.next_message("whatsapp", "447700900001")
    assert row is not None
    (out_id,) = await queue.finish(row, DONE, [Reply(text("447700900001", "hello"))])
    await Outbox(queue.db).mark_sending(out_id)
    client = ScriptedClient()
    claims = Claims(queue.db)
    sender = Sender(queue, claims, "whatsapp", client, status_grace=0.0)
    sender.notify("447700900001")
    await sender.idle()
    assert [p["biz_opaque_callback_data"] for p in client.sent] == [f"vb-out-{out_id}"]
    assert (await Outbox(queue.db).next_send("whatsapp", "447700900001")) is None
    await claims.close()


async def test_a_message_claimed_before_a_crash_is_pending_again_with_its_attempt_counted(queue: Queue) -> None:
    await queue.store([item(1)])
    first = await queue.next_message("whatsapp", "447700900001")
    again = await queue.next_message("whatsapp", "447700900001")  # nothing marked it done
    assert first is not None and again is not None
    assert (first.id, first.attempts, again.attempts) == (again.id, 1, 2)


async def test_one_holder_per_conversation(queue: Queue) -> None:
    one, other = Claims(queue.db), Claims(queue.db)
    async with one.hold("turn:whatsapp:c1") as held:
        assert held
        async with one.hold("turn:whatsapp:c1") as again:
            assert not again
        if queue.dialect == "postgresql":  # another replica: its own session
            async with other.hold("turn:whatsapp:c1") as elsewhere:
                assert not elsewhere
    async with other.hold("turn:whatsapp:c1") as after:
        assert after
    await one.close()
    await other.close()


async def test_a_replica_that_dies_gives_its_conversations_up_at_once(tmp_path: Path) -> None:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_claims") as url:
        queue = Queue(Database(url))
        dying, survivor = Claims(queue.db), Claims(queue.db)
        holding = dying.hold("turn:whatsapp:c1")
        assert await holding.__aenter__()
        assert dying._conn is not None
        await dying._conn.invalidate()  # the session ends as when its process is killed
        dying._conn = None
        async with survivor.hold("turn:whatsapp:c1") as held:
            assert held
        await survivor.close()
        await queue.close()


def test_one_sqlite_process_serves_a_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    first, second = Claims(Database(url)), Claims(Database(url))
    first.take_database("worker")
    with pytest.raises(ClaimsUnavailable):
        second.take_database("worker")
    first.release_database()
    second.take_database("worker")
    second.release_database()


async def test_a_turn_sees_the_menu_its_conversations_last_reply_offered(queue: Queue) -> None:
    await queue.store([item(1), item(2)])
    menus: list[dict[str, str]] = []

    async def offers(row: InboxRow) -> TurnResult:
        menus.append(row.menu)
        return TurnResult([], {"1": "/order_status"} if row.message_id.endswith(".1") else {})

    claims = Claims(queue.db)
    worker = Worker(queue, claims, "whatsapp", offers)
    await worker.dispatch_once()
    await worker.idle()
    assert menus == [{}, {"1": "/order_status"}]
    await claims.close()


async def test_rows_left_sending_by_an_earlier_version_are_not_lost(queue: Queue) -> None:
    await queue.store([item(1)])
    row = await queue.next_message("whatsapp", "447700900001")
    assert row is not None
    ids = await queue.finish(row, DONE, [Reply(text("447700900001", "a")), Reply(text("447700900001", "b"))])
    assert [r.state for r in [await Outbox(queue.db).next_send("whatsapp", "447700900001")]] == ["queued"]
    await Outbox(queue.db).mark_sending(ids[0])
    pending = await Outbox(queue.db).next_send("whatsapp", "447700900001")
    assert pending is not None and pending.state == SENDING and pending.id == ids[0]


def edit_of(original: str, n: int, text: str = "new words") -> InboxItem:
    base = item(n)
    return InboxItem(message_id=f"wamid.edit.{n}", channel="whatsapp", conversation_id=base.conversation_id,
                     reply_to=base.reply_to, business_id="PNID", sent_at=base.sent_at,
                     message={"text": text, "edits": original, "metadata": {}})


def revoke_of(original: str, n: int, conversation: str = "447700900001") -> InboxItem:
    return InboxItem(message_id=f"wamid.revoke.{n}", channel="whatsapp", conversation_id=conversation,
                     reply_to=conversation, business_id="PNID", sent_at=int(time.time()),
                     message={"skip": "revoke", "revokes": original, "metadata": {}})


async def test_an_edit_before_the_answer_replaces_the_message(queue: Queue) -> None:
    await queue.store([item(1)])
    await queue.store([edit_of("wamid.447700900001.1", 2)])
    await queue.store([edit_of("wamid.447700900001.1", 2)])  # redelivered
    row = await queue.next_message("whatsapp", "447700900001")
    assert row is not None and row.message_id == "wamid.edit.2" and row.message["text"] == "new words"
    assert (await queue.counts())["inbox"] == {"edited": 1, "pending": 1}


async def test_an_edit_after_the_answer_or_of_an_unknown_message_is_only_recorded(queue: Queue) -> None:
    await queue.store([item(1)])
    row = await queue.next_message("whatsapp", "447700900001")
    assert row is not None
    await queue.finish(row, DONE)
    await queue.store([edit_of("wamid.447700900001.1", 2), edit_of("wamid.nobody", 3)])
    assert await queue.next_message("whatsapp", "447700900001") is None
    assert (await queue.counts())["inbox"] == {DONE: 1, "skipped": 2}


async def test_a_deleted_message_is_never_answered_and_others_cannot_delete_it(queue: Queue) -> None:
    await queue.store([item(1), item(2)])
    await queue.store([revoke_of("wamid.447700900001.2", 1, conversation="447700900999")])  # another customer
    await queue.store([revoke_of("wamid.447700900001.1", 2)])
    row = await queue.next_message("whatsapp", "447700900001")
    assert row is not None and row.message_id == "wamid.447700900001.2"
    assert (await queue.counts())["inbox"] == {"revoked": 1, "pending": 1, "skipped": 2}
