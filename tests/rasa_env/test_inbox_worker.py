"""The worker that drains the inbox: order per conversation, concurrency, retries, staleness, wake-ups."""

from __future__ import annotations

import asyncio
import time

import pytest

from connectors.inbox import (
    DONE,
    PENDING,
    STALE,
    Inbox,
    InboxRow,
)
from connectors.worker import InboxWorker

from .inbox_support import count_scans, item, make_worker, run_worker, stop_once_handled


async def test_worker_keeps_order_per_conversation_and_runs_conversations_concurrently(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add([item(f"a{i}", "A", sent_at=i) for i in range(5)] + [item(f"b{i}", "B", sent_at=i)
                                                                         for i in range(5)])
    log: list[str] = []
    running: set[str] = set()
    overlap = asyncio.Event()

    async def handler(row: InboxRow) -> None:
        running.add(row.conversation_id)
        if len(running) == 2:
            overlap.set()
        await asyncio.sleep(0.01)
        log.append(row.message_id)
        running.discard(row.conversation_id)

    await run_worker(make_worker(sqlite_inbox, handler, concurrency=4))
    assert [m for m in log if m.startswith("a")] == [f"a{i}" for i in range(5)]
    assert [m for m in log if m.startswith("b")] == [f"b{i}" for i in range(5)]
    assert overlap.is_set()
    assert sqlite_inbox.states() == {DONE: 10}


async def test_a_backlog_does_not_hold_a_slot_other_conversations_wait_for(sqlite_inbox: Inbox) -> None:
    """One slot, A has three messages queued: B's message is answered after A's first, not after A's last."""
    sqlite_inbox.add([item(f"a{i}", "A", sent_at=i) for i in range(3)] + [item("b0", "B", sent_at=10)])
    log: list[str] = []

    async def handler(row: InboxRow) -> None:
        await asyncio.sleep(0.005)
        log.append(row.message_id)

    await run_worker(make_worker(sqlite_inbox, handler, concurrency=1))
    assert log == ["a0", "b0", "a1", "a2"]
    assert sqlite_inbox.states() == {DONE: 4}


async def test_a_failing_message_blocks_only_its_conversation_and_is_retried(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add([item("a1", "A", 1), item("a2", "A", 2), item("b1", "B", 1)])
    calls: list[str] = []

    async def handler(row: InboxRow) -> None:
        calls.append(row.message_id)
        if row.message_id == "a1" and row.attempts == 1:
            raise RuntimeError("Rasa was not ready")

    worker = make_worker(sqlite_inbox, handler)
    await run_worker(worker)
    assert calls == ["a1", "b1"] or calls == ["b1", "a1"]
    assert sqlite_inbox.states() == {PENDING: 2, DONE: 1}  # a1 released, a2 not jumped ahead
    await run_worker(worker)
    assert calls[-2:] == ["a1", "a2"]
    assert sqlite_inbox.states() == {DONE: 3}


async def test_worker_gives_up_after_max_attempts(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add([item("bad", "A", 1), item("next", "A", 2)])

    async def handler(row: InboxRow) -> None:
        if row.message_id == "bad":
            raise ValueError("always fails")

    worker = make_worker(sqlite_inbox, handler)
    for _ in range(5):
        await run_worker(worker)
    assert sqlite_inbox.states() == {"failed": 1, DONE: 1}


async def test_worker_marks_stale_and_resumes_on_start(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add([item("old", "A", sent_at=10), item("fresh", "B", sent_at=99_990)])
    sqlite_inbox.claim_next("B")  # left processing by a crash
    handled: list[str] = []

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    worker = InboxWorker(sqlite_inbox, handler, stale_after=3600, poll_interval=0.05, clock=lambda: 100_000)
    task = asyncio.create_task(worker.run())
    await stop_once_handled(worker, task, handled, 0.02)
    assert handled == ["fresh"]
    assert sqlite_inbox.states() == {STALE: 1, DONE: 1}


async def test_a_stale_message_stored_after_the_first_look_is_not_answered(sqlite_inbox: Inbox) -> None:
    """Meta replays a day-old backlog over minutes: rows that arrive between the periodic stale looks
    are caught when claimed, and the conversation's fresh rows after them are still answered."""
    handled: list[str] = []

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    worker = InboxWorker(sqlite_inbox, handler, stale_after=3600, poll_interval=0.01, clock=lambda: 100_000)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)  # the start-up look for stale rows has run
    sqlite_inbox.add([item("replayed", "A", sent_at=10), item("fresh", "A", sent_at=99_990)])
    worker.notify()
    await stop_once_handled(worker, task, handled, 0.02)
    assert handled == ["fresh"]
    assert sqlite_inbox.states() == {STALE: 1, DONE: 1}


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_notify_wakes_the_worker(sqlite_inbox: Inbox, concurrency: int) -> None:
    handled: list[str] = []

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    worker = make_worker(sqlite_inbox, handler, concurrency=concurrency, poll_interval=30)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    sqlite_inbox.add([item("m1")])
    worker.notify()
    await stop_once_handled(worker, task, handled, 0.01)
    assert handled == ["m1"]


async def test_polls_scan_for_conversations_only_when_a_row_was_stored(sqlite_inbox: Inbox) -> None:
    """Rows stored by another process (connectors.ingest) come with no notify: the poll finds them,
    and a poll that sees no new row costs one look at the newest id, not the grouped scan."""
    handled: list[str] = []
    scans = count_scans(sqlite_inbox)

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    worker = InboxWorker(sqlite_inbox, handler, poll_interval=0.01)  # real clock: nothing here is stale
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.2)  # ~20 polls with nothing new
    idle_scans = len(scans)
    sqlite_inbox.add([item("m1", sent_at=int(time.time()))])  # no notify
    await stop_once_handled(worker, task, handled, 0.01)
    assert handled == ["m1"]
    assert idle_scans <= 2  # the first look (and at most one safety-net scan a second)


async def test_menu_offered_by_a_reply_reaches_the_next_message_of_that_conversation(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add([item("m1", "A", 1), item("m2", "A", 2), item("m3", "A", 3), item("other", "B", 1)])
    seen: dict[str, dict[str, str]] = {}

    async def handler(row: InboxRow) -> dict[str, str] | None:
        seen[row.message_id] = row.menu
        if row.message_id == "m1":
            return {"1": "/affirm", "2": "/deny"}
        return None if row.message_id == "m2" else {}  # m2 did not reply: the menu stays; m3 clears it

    await run_worker(make_worker(sqlite_inbox, handler))
    assert seen == {"m1": {}, "m2": {"1": "/affirm", "2": "/deny"}, "m3": {"1": "/affirm", "2": "/deny"},
                    "other": {}}
    assert sqlite_inbox.menu("whatsapp", "A") == {}
    assert sqlite_inbox.states() == {DONE: 4}



async def test_live_messages_named_by_their_conversation_need_no_grouped_scan(sqlite_inbox: Inbox) -> None:
    """A message announced with its conversation (NOTIFY, or the route that stored it) starts that drain;
    a drain that ends looks over nothing — per message a claim and a completion, no scan."""
    handled: list[str] = []
    scans = count_scans(sqlite_inbox)

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    worker = make_worker(sqlite_inbox, handler, poll_interval=30)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    scans_at_start = len(scans)
    for n in range(5):
        sqlite_inbox.add([item(f"m{n}", f"c{n % 2}", sent_at=n)])
        worker.notify(f"c{n % 2}")
        for _ in range(100):
            if len(handled) > n:
                break
            await asyncio.sleep(0.01)
    await worker.stop()
    await asyncio.wait_for(task, 5)
    assert handled == [f"m{n}" for n in range(5)]
    assert len(scans) == scans_at_start  # none after the first look


async def test_a_message_announced_after_its_drain_looked_for_more_is_still_answered(sqlite_inbox: Inbox) -> None:
    """The announcement comes while the drain still runs, but after its last look: the drain starts again."""
    handled: list[str] = []
    scans = count_scans(sqlite_inbox)
    worker: InboxWorker

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    complete = sqlite_inbox.complete

    def complete_then_a_message_arrives(row: InboxRow, *args: object) -> InboxRow | None:
        following = complete(row, *args)  # type: ignore[arg-type]
        if row.message_id == "a1":  # another process stores a2 now, and announces it
            sqlite_inbox.add([item("a2", "A", sent_at=2)])
            worker.notify("A")
        return following

    sqlite_inbox.complete = complete_then_a_message_arrives  # type: ignore[method-assign]
    worker = make_worker(sqlite_inbox, handler, poll_interval=30)
    sqlite_inbox.add([item("a1", "A", sent_at=1)])
    task = asyncio.create_task(worker.run())
    for _ in range(200):
        if len(handled) == 2:
            break
        await asyncio.sleep(0.01)
    await worker.stop()
    await asyncio.wait_for(task, 5)
    assert handled == ["a1", "a2"]
    assert len(scans) == 1  # only the first look: a2 came by its announcement
    assert sqlite_inbox.states() == {DONE: 2}
