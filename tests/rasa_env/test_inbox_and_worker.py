"""Durable inbox (SQLite and PostgreSQL) and the worker that drains it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import default

from connectors import sqlite_kept
from connectors.inbox import (
    DONE,
    ON_EVENTS,
    ON_LOOP,
    PENDING,
    PROCESSING,
    SENT,
    SKIPPED,
    STALE,
    Inbox,
    InboxItem,
    InboxRow,
    create_inbox_engine,
)
from connectors.worker import Handler, InboxWorker

from .conftest import watch_statements


def item(message_id: str, conversation: str = "c1", sent_at: int = 1_000, **message: object) -> InboxItem:
    return InboxItem(message_id=message_id, channel="whatsapp", conversation_id=conversation, reply_to=conversation,
                     business_id="PNID", sent_at=sent_at, message=message or {"text": message_id, "metadata": {}})


def test_duplicates_are_dropped_in_one_batch_and_across_batches(inbox: Inbox) -> None:
    assert inbox.add([item("m1"), item("m2"), item("m1")]) == ["m1", "m2"]
    assert inbox.add([item("m2"), item("m3")]) == ["m3"]
    assert inbox.add_safely([item("m1")]) == []
    assert inbox.states() == {PENDING: 3}


def test_reactions_are_recorded_but_not_queued(inbox: Inbox) -> None:
    inbox.add([item("r1", skip="reaction", metadata={})])
    assert inbox.states() == {SKIPPED: 1}
    assert inbox.pending_conversations() == []


def test_claim_in_order_and_resume_after_crash(inbox: Inbox) -> None:
    inbox.add([item("late", sent_at=2_000), item("early", sent_at=1_000), item("other", conversation="c2")])
    assert inbox.pending_conversations() == ["c1", "c2"]
    first = inbox.claim_next("c1")
    assert first is not None and first.message_id == "early" and first.attempts == 1
    assert inbox.states() == {PENDING: 2, PROCESSING: 1}
    # The process died while handling "early"; the restarted one (same host) takes its place at once.
    restarted = Inbox(create_inbox_engine(inbox.engine.url.render_as_string(hide_password=False)))
    assert restarted.expire_leases_of_gone_workers() == [inbox.owner]
    assert restarted.count_left_unfinished() == 1
    again = restarted.claim_next("c1")
    assert again is not None and again.message_id == "early" and again.attempts == 2
    assert restarted.complete(again).message_id == "late"  # type: ignore[union-attr]
    assert restarted.pending_conversations(exclude=["c1"]) == ["c2"]
    restarted.dispose()


def test_old_backlog_is_marked_stale(inbox: Inbox) -> None:
    inbox.add([item("old", sent_at=100), item("new", sent_at=5_000)])
    assert inbox.mark_stale(older_than=1_000) == 1
    assert inbox.states() == {STALE: 1, PENDING: 1}


def test_menus_and_turn_keys(inbox: Inbox) -> None:
    inbox.save_menu("whatsapp", "c1", {"1": "/affirm", "2": "/deny"})
    assert inbox.menu("whatsapp", "c1") == {"1": "/affirm", "2": "/deny"}
    assert inbox.menu("evolution", "c1") == {}
    inbox.save_menu("whatsapp", "c1", {})
    assert inbox.menu("whatsapp", "c1") == {}
    for key, state in (("m1#1", "sent"), ("m1#2", "failed"), ("m1#3", None), ("m10#1", "sent")):
        row_id = inbox.begin_outbound({"channel": "whatsapp", "conversation_id": "c1", "business_id": "P",
                                       "turn_key": key, "payload": "{}"})
        if state:
            inbox.finish_outbound(row_id, state)
    assert inbox.outbound_states("m1") == {"m1#1": "sent", "m1#2": "failed", "m1#3": "sending"}
    inbox.mark_interrupted("m1#3")
    assert inbox.outbound_states("m1") == {"m1#1": "sent", "m1#2": "failed"}
    assert [row["state"] for row in inbox.outbound_for("c1")][-2:] == ["interrupted", "sent"]


def test_hostile_text_is_stored_verbatim(inbox: Inbox) -> None:
    nasty = "'); DROP TABLE wa_inbox; -- \x00\u202e"
    inbox.add([item("x1", text=nasty, metadata={"profile_name": nasty})])
    row = inbox.claim_next("c1")
    assert row is not None and row.message["text"] == nasty


def count_scans(inbox: Inbox) -> list[int]:
    """Wrap the worker's grouped look for pending conversations; one entry per call."""
    scans: list[int] = []
    scan = inbox.pending_conversations

    def counting_scan(*args: object) -> list[str]:
        scans.append(1)
        return scan(*args)  # type: ignore[arg-type]

    inbox.pending_conversations = counting_scan  # type: ignore[method-assign]
    return scans


def make_worker(inbox: Inbox, handler: Handler, **kwargs: object) -> InboxWorker:
    """A worker whose clock sits just after the test messages' timestamps (nothing is stale)."""
    return InboxWorker(inbox, handler, clock=lambda: 5_000, **kwargs)  # type: ignore[arg-type]


async def _stop_once_handled(worker: InboxWorker, task: asyncio.Task[None], handled: list[str],
                             step: float) -> None:
    """Give a running worker up to 100 steps to handle something, then stop it."""
    for _ in range(100):
        if handled:
            break
        await asyncio.sleep(step)
    await worker.stop()
    await asyncio.wait_for(task, 5)  # run() returns once stopped, its background tasks ended


async def _run_worker(worker: InboxWorker) -> None:
    await worker.dispatch_once()
    await worker.idle()


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

    await _run_worker(make_worker(sqlite_inbox, handler, concurrency=4))
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

    await _run_worker(make_worker(sqlite_inbox, handler, concurrency=1))
    assert log == ["a0", "b0", "a1", "a2"]
    assert sqlite_inbox.states() == {DONE: 4}


def test_sqlite_file_engine_keeps_its_connections(tmp_path: Path) -> None:
    """No new connection (and PRAGMA, and WAL checkpoint on close) per transaction."""
    engine = create_inbox_engine(f"sqlite:///{tmp_path / 'inbox.db'}")
    box = Inbox(engine)
    opened: list[object] = []
    event.listen(engine, "connect", lambda connection, _record: opened.append(connection))
    for n in range(20):
        box.add([item(f"m{n}")])
        box.pending_conversations()
    assert len(opened) <= 1
    assert box.states() == {PENDING: 20}


async def test_a_failing_message_blocks_only_its_conversation_and_is_retried(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add([item("a1", "A", 1), item("a2", "A", 2), item("b1", "B", 1)])
    calls: list[str] = []

    async def handler(row: InboxRow) -> None:
        calls.append(row.message_id)
        if row.message_id == "a1" and row.attempts == 1:
            raise RuntimeError("Rasa was not ready")

    worker = make_worker(sqlite_inbox, handler)
    await _run_worker(worker)
    assert calls == ["a1", "b1"] or calls == ["b1", "a1"]
    assert sqlite_inbox.states() == {PENDING: 2, DONE: 1}  # a1 released, a2 not jumped ahead
    await _run_worker(worker)
    assert calls[-2:] == ["a1", "a2"]
    assert sqlite_inbox.states() == {DONE: 3}


async def test_worker_gives_up_after_max_attempts(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add([item("bad", "A", 1), item("next", "A", 2)])

    async def handler(row: InboxRow) -> None:
        if row.message_id == "bad":
            raise ValueError("always fails")

    worker = make_worker(sqlite_inbox, handler)
    for _ in range(5):
        await _run_worker(worker)
    assert sqlite_inbox.states() == {"failed": 1, DONE: 1}


async def test_worker_marks_stale_and_resumes_on_start(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add([item("old", "A", sent_at=10), item("fresh", "B", sent_at=99_990)])
    sqlite_inbox.claim_next("B")  # left processing by a crash
    handled: list[str] = []

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    worker = InboxWorker(sqlite_inbox, handler, stale_after=3600, poll_interval=0.05, clock=lambda: 100_000)
    task = asyncio.create_task(worker.run())
    await _stop_once_handled(worker, task, handled, 0.02)
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
    await _stop_once_handled(worker, task, handled, 0.02)
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
    await _stop_once_handled(worker, task, handled, 0.01)
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
    await _stop_once_handled(worker, task, handled, 0.01)
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

    await _run_worker(make_worker(sqlite_inbox, handler))
    assert seen == {"m1": {}, "m2": {"1": "/affirm", "2": "/deny"}, "m3": {"1": "/affirm", "2": "/deny"},
                    "other": {}}
    assert sqlite_inbox.menu("whatsapp", "A") == {}
    assert sqlite_inbox.states() == {DONE: 4}


def test_complete_finishes_saves_menu_and_claims_next_in_one_call(inbox: Inbox) -> None:
    inbox.add([item("m1", "c1", 1), item("m2", "c1", 2)])
    first = inbox.claim_next("c1", "whatsapp")
    assert first is not None
    second = inbox.complete(first, DONE, {"1": "/greet"})
    assert second is not None and second.message_id == "m2" and second.menu == {"1": "/greet"}
    assert inbox.complete(second, DONE, None) is None
    assert inbox.states() == {DONE: 2}


def test_every_statement_of_a_turn_is_compiled_once(inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn's statements run on Rasa's event loop: after the first turn each is a compiled-cache hit.
    (SQLAlchemy 1.4 has no cache key for its ON CONFLICT constructs: the lease's upsert and the ACK's
    insert were compiled anew every time.) On a SQLite file the turn's statements run on kept
    connections, each compiled there once."""
    seen: list[tuple[str, object]] = []
    for engine in {inbox.engine, inbox._autocommit}:
        event.listen(engine, "after_cursor_execute",
                     lambda _c, _cur, statement, _p, context, _m: seen.append((statement, context.cache_hit)))
    kept_compiles: list[str] = []
    compile_kept = sqlite_kept.CompiledStatement

    def counted(statement: object, keys: object, dialect: object) -> sqlite_kept.CompiledStatement:
        compiled = compile_kept(statement, keys, dialect)  # type: ignore[arg-type]
        kept_compiles.append(compiled.sql)
        return compiled

    monkeypatch.setattr(sqlite_kept, "CompiledStatement", counted)
    for turn in range(3):
        inbox.add([item(f"m{turn}", f"c{turn}")])
        row = inbox.claim_next(f"c{turn}", "whatsapp")
        assert row is not None
        sent = inbox.begin_outbound({"channel": "whatsapp", "conversation_id": f"c{turn}", "business_id": "PNID",
                                     "turn_key": f"m{turn}#1", "payload": "{}"})
        inbox.finish_outbound(sent, SENT, f"wamid.out{turn}")
        assert inbox.complete(row, DONE, {"1": "/affirm"} if turn else {}, True) is None
    first, again = set(), []
    for statement, hit in seen:
        if statement in first:
            again.append(hit)
        else:
            first.add(statement)
            assert hit is default.CACHE_MISS, statement  # compiled, and kept
    assert not again or set(again) == {default.CACHE_HIT}
    assert len(kept_compiles) == len(set(kept_compiles))  # none compiled twice
    if inbox._kept is None:
        assert len(first) >= 9 and again and not kept_compiles
    else:  # the webhook's insert still runs through SQLAlchemy (connectors.ingest, not Rasa's loop)
        assert len(kept_compiles) >= 9
        assert {prefix for prefix in ("INSERT INTO wa_inbox", "SELECT wa_inbox.message_id")
                if any(statement.startswith(prefix) for statement in first)} == {"INSERT INTO wa_inbox",
                                                                              "SELECT wa_inbox.message_id"}


def test_a_turn_that_offers_no_menu_after_none_writes_no_menu(inbox: Inbox) -> None:
    deletes: list[str] = []
    watch_statements(inbox, lambda statement: deletes.append(statement) if "DELETE FROM wa_menus" in statement
                     else None)
    inbox.add([item("m1"), item("m2"), item("m3"), item("m4")])
    first = inbox.claim_next("c1", "whatsapp")
    assert first is not None and first.menu == {}
    second = inbox.complete(first, DONE, {})  # nothing offered, nothing stored: no statement
    assert second is not None and deletes == []
    third = inbox.complete(second, DONE, {"1": "/a"})  # offered: stored
    assert third is not None and third.menu == {"1": "/a"} and len(deletes) == 1
    fourth = inbox.complete(third, DONE, {})  # nothing offered after a menu: the old numbers are dropped
    assert fourth is not None and fourth.menu == {} and len(deletes) == 2
    assert inbox.menu("whatsapp", "c1") == {}


async def test_sqlite_calls_run_inline_and_the_wal_is_checkpointed_in_the_background(tmp_path: Path) -> None:
    """No thread hop per statement on SQLite; commits never checkpoint (no fsync on the ACK or the
    event loop): `checkpoint` does it, in a thread, once a second from the worker and the ingest."""
    box = Inbox(create_inbox_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    assert box.runs == ON_LOOP
    caller = threading.get_ident()
    assert await box.call(threading.get_ident) == caller
    for n in range(50):
        await box.call(box.add, [item(f"m{n}", sent_at=n)], [])
    wal = tmp_path / "inbox.db-wal"
    with box.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    task = asyncio.create_task(box.checkpoint_forever(interval=0.01))
    await asyncio.sleep(0.1)
    task.cancel()
    for _ in range(50):  # a checkpoint the cancelled task had started in its thread may still run
        with box.engine.connect() as conn:
            busy, frames, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").first()  # type: ignore[misc]
        if not busy:
            break
        await asyncio.sleep(0.01)
    assert wal.exists() and busy == 0 and frames == copied  # nothing left to copy
    assert box.states() == {PENDING: 50}


async def test_calls_run_inline_on_sqlite_and_in_a_thread_on_a_database_server(inbox: Inbox) -> None:
    on_server = inbox.engine.dialect.name != "sqlite"
    assert (inbox.runs == ON_LOOP) is not on_server
    assert (await inbox.call(threading.get_ident) != threading.get_ident()) is on_server
    inbox.checkpoint()  # a no-op on a server
    if on_server:  # and no background task waking every second for nothing
        await asyncio.wait_for(inbox.checkpoint_forever(interval=0.01), timeout=1)


@pytest.mark.parametrize("calls", [ON_LOOP, ON_EVENTS])
async def test_a_database_servers_statements_can_run_on_the_loop(inbox: Inbox, calls: str) -> None:
    """WHATSAPP_INBOX_CALLS=async (asyncpg, the default) or loop (psycopg2): no thread per statement on a
    server either; SQLite is unchanged (inline)."""
    sqlite = inbox.engine.dialect.name == "sqlite"
    on_loop = Inbox(inbox.engine, calls=calls)
    assert on_loop.local is sqlite and on_loop.runs == (ON_LOOP if sqlite else calls)
    assert await on_loop.call(threading.get_ident) == threading.get_ident()
    if on_loop.runs == ON_EVENTS:  # the methods run on asyncpg's engines; the Inbox keeps psycopg2's
        assert (await on_loop.call(lambda: on_loop._on_events.engine.dialect.driver)) == "asyncpg"  # type: ignore[union-attr]
        assert on_loop.engine.dialect.driver == "psycopg2"
    await on_loop.call(on_loop.add, [item("m1"), item("m2")], [])
    first = await on_loop.call(on_loop.claim_next, "c1", None)
    assert first is not None and first.message_id == "m1"
    row_id = await on_loop.call(on_loop.begin_outbound, {"channel": "whatsapp", "conversation_id": "c1",
                                                         "business_id": "PNID", "turn_key": "t#1", "payload": "{}"})
    await on_loop.call(on_loop.finish_outbound, row_id, SENT, "wamid.out")
    second = await on_loop.call(on_loop.complete, first, DONE, {"1": "/affirm"})
    assert second is not None and second.message_id == "m2" and second.menu == {"1": "/affirm"}
    assert await on_loop.call(on_loop.complete, second, DONE, None) is None
    assert inbox.outbound_states("t") == {"t#1": SENT}  # the same rows, seen by the default Inbox
    assert await on_loop.call(on_loop.states) == {DONE: 2} == inbox.states()
    on_loop.checkpoint()  # still a no-op on a server
    await on_loop.close()


async def test_through_asyncpg_a_statement_waiting_on_the_server_lets_other_turns_run(inbox: Inbox) -> None:
    """The point of WHATSAPP_INBOX_CALLS=async: while one turn's statement waits for the database, the
    event loop (Rasa's model inference, other turns) goes on; through psycopg2 on the loop it stands still."""
    if inbox.engine.dialect.name == "sqlite":
        pytest.skip("SQLite's statements are in-process")
    inbox.add([item("m1")])
    ticks: dict[str, int] = {}
    for calls in (ON_LOOP, ON_EVENTS):
        box = Inbox(inbox.engine, calls=calls)
        await box.call(box.latest_id)  # connected before the clock starts
        blocker = inbox.engine.raw_connection()
        blocker.cursor().execute("LOCK TABLE wa_inbox IN ACCESS EXCLUSIVE MODE")  # another process's long write
        threading.Timer(0.3, blocker.commit).start()
        count = 0

        async def tick() -> None:
            nonlocal count
            while True:
                await asyncio.sleep(0.01)
                count += 1

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        started = time.monotonic()
        assert await box.call(box.latest_id) > 0  # waits ~0.3 s for the lock
        assert time.monotonic() - started >= 0.25
        ticker.cancel()
        ticks[calls] = count
        blocker.close()
        await box.close()
    assert ticks[ON_LOOP] <= 1 and ticks[ON_EVENTS] >= 10, ticks


def _status(wamid: str, status: str) -> dict[str, object]:
    return {"message_id": wamid, "status": status, "sent_at": 1, "recipient_id": "c1", "business_id": "PNID",
            "errors": None}


def test_a_webhook_with_messages_and_statuses_stores_both(inbox: Inbox) -> None:
    assert inbox.add([item("m1"), item("m1")], [_status("wamid.out", "sent"), _status("wamid.out", "read")]) == ["m1"]
    assert inbox.statuses_for("wamid.out") == ["sent", "read"]
    assert inbox.add([], [_status("wamid.out", "delivered")]) == []  # a status-only webhook
    assert sorted(inbox.statuses_for("wamid.out")) == ["delivered", "read", "sent"]
    assert inbox.states() == {PENDING: 1}


def test_concurrent_deliveries_of_the_same_messages_store_each_once(inbox: Inbox) -> None:
    """Meta retries while the first delivery is still being stored, maybe at another ingest replica."""
    other = Inbox(create_inbox_engine(inbox.engine.url.render_as_string(hide_password=False)))
    batches = [[item(f"m{n}", f"c{n % 3}") for n in range(start, start + 20)] for start in (0, 10, 0, 5)]
    with ThreadPoolExecutor(4) as pool:
        stored = list(pool.map(lambda pair: pair[0].add_safely(pair[1]),
                               zip([inbox, other, inbox, other], batches, strict=True)))
    assert sorted(m for new in stored for m in new) == sorted(f"m{n}" for n in range(30))
    assert inbox.states() == {PENDING: 30}
    other.dispose()


@pytest.mark.parametrize("write", ["add", "begin_outbound", "finish_outbound", "complete", "save_menu"])
def test_writes_wait_for_another_connections_sqlite_lock(sqlite_inbox: Inbox, tmp_path: Path, write: str) -> None:
    """Rasa's tracker store and connectors.ingest write to the same file: a write that meets the other's
    lock waits for it (SQLite itself gives up after 1 ms here) instead of failing the turn or the ACK."""
    sqlite_inbox.add([item("m1")])
    row = sqlite_inbox.claim_next("c1")
    sent = sqlite_inbox.begin_outbound({"channel": "whatsapp", "conversation_id": "c1", "business_id": "PNID",
                                        "turn_key": None, "payload": "{}"})
    writes = {
        "add": lambda: sqlite_inbox.add([item("m2")]),
        "begin_outbound": lambda: sqlite_inbox.begin_outbound({"channel": "whatsapp", "conversation_id": "c1",
                                                               "business_id": "PNID", "turn_key": None,
                                                               "payload": "{}"}),
        "finish_outbound": lambda: sqlite_inbox.finish_outbound(sent, "sent", "wamid.x"),
        "complete": lambda: sqlite_inbox.complete(row, DONE, {"1": "/a"}),
        "save_menu": lambda: sqlite_inbox.save_menu("whatsapp", "c1", {"1": "/a"}),
    }
    other = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the other process holds the write lock…
    threading.Timer(0.2, other.execute, ["COMMIT"]).start()  # …for 200 ms
    started = time.monotonic()
    writes[write]()
    assert time.monotonic() - started >= 0.15  # it waited rather than failed
    other.close()


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
