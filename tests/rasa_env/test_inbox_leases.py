"""Several workers on one inbox (Rasa replicas): conversation leases, take-over after a crash, heartbeats."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from connectors.inbox import DONE, PROCESSING, Inbox, InboxRow, create_inbox_engine
from connectors.inbox_calls import IN_PROCESS, IN_THREAD, ON_EVENTS
from connectors.inbox_leases import WorkerIdentity
from connectors.inbox_tables import leases
from connectors.worker import Handler, InboxWorker
from tests.postgres import temporary_database
from tests.rasa_env.conftest import POSTGRES_ADMIN_URL
from tests.rasa_env.inbox_support import item

HERE = WorkerIdentity.of_this_process()


def replica(name: str) -> WorkerIdentity:
    """A worker on another host: never known to be dead, only its lease's expiry frees its conversations."""
    return WorkerIdentity(f"host-{name}", "pid:[1]", 1, name)


def twin(inbox: Inbox, identity: WorkerIdentity, lease_seconds: float = 30.0, calls: str = IN_THREAD) -> Inbox:
    """Another process's view of the same database."""
    return Inbox(create_inbox_engine(inbox.engine.url.render_as_string(hide_password=False)), identity,
                 lease_seconds, calls)


@pytest.fixture
def two(inbox: Inbox) -> Iterator[tuple[Inbox, Inbox]]:
    a, b = twin(inbox, replica("a")), twin(inbox, replica("b"))
    yield a, b
    a.dispose()
    b.dispose()


def lease_owners(inbox: Inbox) -> dict[str, str]:
    with inbox.engine.connect() as conn:
        return {row.conversation_id: row.owner for row in conn.execute(leases.select())}


def test_only_certain_deaths_are_recognised() -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)
    same_place = f"{HERE.host}|{HERE.namespace}"
    assert HERE.knows_is_gone(f"{same_place}|{dead_pid}|x")  # its process is gone
    assert HERE.knows_is_gone(f"{same_place}|{HERE.pid}|earlier")  # our PID now: an earlier run of it
    assert not HERE.knows_is_gone(HERE.owner)
    assert not HERE.knows_is_gone(f"{same_place}|{os.getppid()}|x")  # alive
    assert not HERE.knows_is_gone(f"other-host|{HERE.namespace}|{dead_pid}|x")  # PIDs of another host
    assert not HERE.knows_is_gone(f"{HERE.host}|pid:[999]|{dead_pid}|x")  # another container
    for garbage in ("", "no separators", f"{same_place}|not-a-pid|x", f"{same_place}|-5|x"):
        assert not HERE.knows_is_gone(garbage)
    nowhere = WorkerIdentity(HERE.host, "", HERE.pid, "n")  # no /proc: nothing is known
    assert not nowhere.knows_is_gone(f"{HERE.host}||{dead_pid}|x")


def test_a_conversation_is_held_by_one_worker_at_a_time(two: tuple[Inbox, Inbox]) -> None:
    a, b = two
    a.add([item("m1", "c1", 1), item("m2", "c1", 2), item("n1", "c2", 1)])
    first = a.claim_next("c1", "whatsapp")
    assert first is not None and first.message_id == "m1"
    assert b.claim_next("c1", "whatsapp") is None  # held by a: m2 must wait for m1
    assert b.pending_conversations(channel="whatsapp") == ["c2"]
    assert a.pending_conversations(exclude=["c1"], channel="whatsapp") == ["c2"]
    assert lease_owners(a) == {"c1": a.owner}
    second = a.complete(first, DONE, None)
    assert second is not None and second.message_id == "m2"  # the backlog stays with a
    assert a.complete(second, DONE, None) is None
    assert lease_owners(a) == {}  # given back with the last row
    b.add([item("m3", "c1", 3)])
    third = b.claim_next("c1", "whatsapp")
    assert third is not None and third.message_id == "m3"
    assert lease_owners(a) == {"c1": b.owner}


def test_the_portable_lease_statements_do_the_same(two: tuple[Inbox, Inbox]) -> None:
    """Dialects without an upsert: UPDATE a free lease, else INSERT (a unique violation: taken)."""
    a, b = two
    a._acquire_lease = b._acquire_lease = None
    a.add([item("m1", "c1", 1), item("m2", "c1", 2)])
    first = a.claim_next("c1", "whatsapp")
    assert first is not None
    assert b.claim_next("c1", "whatsapp") is None
    assert a.claim_next("c1", "whatsapp") is not None  # its own lease: taken again (m2)
    assert b.claim_next("c1", "whatsapp") is None


def test_a_crashed_workers_conversation_is_taken_over_when_its_lease_expires(inbox: Inbox) -> None:
    a = twin(inbox, replica("a"), lease_seconds=0.3)
    b = twin(inbox, replica("b"))
    a.add([item("m1", "c1", 1), item("m2", "c1", 2)])
    handled_by_a = a.claim_next("c1", "whatsapp")
    assert handled_by_a is not None
    assert b.claim_next("c1", "whatsapp") is None and b.count_left_unfinished("whatsapp") == 0
    time.sleep(0.4)  # a stopped renewing (crashed, or cut off from the database)
    assert b.pending_conversations(channel="whatsapp") == ["c1"]
    assert b.count_left_unfinished("whatsapp") == 1
    again = b.claim_next("c1", "whatsapp")
    assert again is not None and again.message_id == "m1" and again.attempts == 2  # answered again, first
    # a comes back: it may finish the row it had, but it no longer holds the conversation
    assert a.complete(handled_by_a, DONE, None) is None
    following = b.complete(again, DONE, None)
    assert following is not None and following.message_id == "m2"
    a.dispose()
    b.dispose()


def test_a_restarted_process_on_the_same_host_resumes_at_once(inbox: Inbox) -> None:
    before_crash = twin(inbox, WorkerIdentity.of_this_process())
    before_crash.add([item("m1", "c1", 1)])
    assert before_crash.claim_next("c1", "whatsapp") is not None
    after_restart = twin(inbox, WorkerIdentity.of_this_process())  # same PID (as after a container restart)
    assert after_restart.claim_next("c1", "whatsapp") is None  # the lease is still live…
    assert after_restart.expire_leases_of_gone_workers() == [before_crash.owner]  # …but its owner is gone
    assert after_restart.count_left_unfinished("whatsapp") == 1
    row = after_restart.claim_next("c1", "whatsapp")
    assert row is not None and row.message_id == "m1" and row.attempts == 2
    before_crash.dispose()
    after_restart.dispose()


async def test_the_heartbeat_keeps_a_long_turn_and_stop_gives_every_lease_back(inbox: Inbox) -> None:
    a = twin(inbox, replica("a"), lease_seconds=1.0)  # renewed every third of a second
    b = twin(inbox, replica("b"))
    a.add([item("slow", "c1", 1), item("next", "c1", 2)])
    started = asyncio.Event()
    handled: list[str] = []

    async def slow(row: InboxRow) -> None:
        started.set()
        await asyncio.sleep(2.5 if row.message_id == "slow" else 0)
        handled.append(row.message_id)

    worker = InboxWorker(a, slow, poll_interval=0.02, clock=lambda: 5_000, channel="whatsapp")
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    for _ in range(10):  # well past the lease's length: it was renewed meanwhile
        await asyncio.sleep(0.2)
        assert await b.call(b.claim_next, "c1", "whatsapp") is None
    a.add([item("later", "c2", 3)])
    for _ in range(100):
        if len(handled) == 3:
            break
        await asyncio.sleep(0.05)
    assert sorted(handled) == ["later", "next", "slow"] and handled.index("slow") < handled.index("next")
    await worker.stop()
    await asyncio.wait_for(task, 5)
    assert lease_owners(a) == {}
    assert a.states() == {DONE: 3}
    a.dispose()
    b.dispose()


@pytest.mark.parametrize("calls", [IN_THREAD, ON_EVENTS, IN_PROCESS])
async def test_two_workers_answer_every_message_once_in_order_never_two_at_a_time(inbox: Inbox, calls: str) -> None:
    """Two replicas drain one inbox while messages keep arriving (the drain/return-the-lease boundary);
    on PostgreSQL with their statements in threads, through asyncpg, where they interleave on one loop, and in
    a helper process each."""
    if calls != IN_THREAD and inbox.engine.dialect.name == "sqlite":
        pytest.skip("SQLite's statements always run inline")
    a = twin(inbox, replica("a"), lease_seconds=5, calls=calls)
    b = twin(inbox, replica("b"), lease_seconds=5, calls=calls)
    conversations = [f"c{n}" for n in range(8)]
    handled: dict[str, list[str]] = defaultdict(list)
    by_worker: dict[str, int] = defaultdict(int)
    in_hand: set[str] = set()
    overlaps: list[str] = []
    rng = random.Random(7)

    def handler_for(name: str) -> Handler:
        async def handle(row: InboxRow) -> None:
            if row.conversation_id in in_hand:
                overlaps.append(row.message_id)
            in_hand.add(row.conversation_id)
            await asyncio.sleep(rng.uniform(0, 0.01))
            handled[row.conversation_id].append(row.message_id)
            by_worker[name] += 1
            in_hand.discard(row.conversation_id)
        return handle

    # Two slots each: neither can take every conversation, so both get work (a worker takes a lease
    # only with a slot in hand: one with its slots full leaves new conversations to the other).
    for box in (a, b):  # both ready before the first wave (a helper process takes a moment to start)
        await box.call(box.latest_id)
    workers = [InboxWorker(box, handler_for(name), concurrency=2, poll_interval=0.01, clock=lambda: 5_000,
                           channel="whatsapp") for name, box in (("a", a), ("b", b))]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    for wave in range(6):
        a.add([item(f"{c}.{wave}.{k}", c, sent_at=wave * 10 + k) for c in conversations for k in range(2)])
        for worker in rng.sample(workers, 2):  # who hears of it first varies
            worker.notify()
        await asyncio.sleep(rng.uniform(0, 0.05))
    expected = {c: [f"{c}.{w}.{k}" for w in range(6) for k in range(2)] for c in conversations}
    for _ in range(400):
        if sum(len(v) for v in handled.values()) >= 96:
            break
        await asyncio.sleep(0.025)
    for worker in workers:
        await worker.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert overlaps == []
    assert dict(handled) == expected  # each once, in order
    assert a.states() == {DONE: 96} and lease_owners(a) == {}
    assert by_worker["a"] > 0 and by_worker["b"] > 0
    await a.close()
    await b.close()


def test_rows_left_processing_without_any_lease_are_resumed(inbox: Inbox) -> None:
    """An inbox written before leases existed (or whose leases were freed): "processing" means unfinished."""
    inbox.add([item("m1", "c1", 1)])
    claimed = inbox.claim_next("c1", "whatsapp")
    assert claimed is not None
    with inbox.engine.begin() as conn:
        conn.execute(leases.delete())
    assert inbox.states() == {PROCESSING: 1}
    other = twin(inbox, replica("b"))
    assert other.pending_conversations(channel="whatsapp") == ["c1"]
    assert other.claim_next("c1", "whatsapp").attempts == 2  # type: ignore[union-attr]
    other.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_replicas_starting_together_on_a_new_database_all_open_the_inbox(dialect: str, tmp_path: Path) -> None:
    """Creating a missing table is check-then-create: the processes that lose the race try again."""
    with ExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'new.db'}" if dialect == "sqlite"
               else stack.enter_context(temporary_database(POSTGRES_ADMIN_URL, "voltbay_new")))
        engines = [create_inbox_engine(url) for _ in range(4)]
        start_together = threading.Barrier(len(engines))
        errors: list[BaseException] = []

        def open_inbox(engine: object) -> None:
            start_together.wait()
            try:
                Inbox(engine)  # type: ignore[arg-type]
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=open_inbox, args=(engine,)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert Inbox(engines[0]).states() == {}
        for engine in engines:
            engine.dispose()


def test_advancing_renews_the_lease_and_claims_the_next_row_besides_those_still_replying(
        inbox: Inbox, caplog: pytest.LogCaptureFixture) -> None:
    """`advance` on every message: on PostgreSQL one statement (renewal, look-up, mark, stored menu), on
    SQLite a transaction; the same rows either way, and nothing claimed once the lease is lost."""
    from sqlalchemy import update

    from tests.rasa_env.conftest import watch_statements
    from tests.rasa_env.inbox_support import item

    inbox.add([item("m1", "c1", 1), item("m2", "c1", 2), item("m3", "c1", 3), item("m4", "c1", 4)])
    inbox.save_menu("whatsapp", "c1", {"1": "/affirm"})
    first = inbox.claim_next("c1", "whatsapp")
    assert first is not None and first.message_id == "m1"
    statements: list[str] = []
    watch_statements(inbox, statements.append)
    second = inbox.advance(first, None, [first.id])  # m1 still replying: m2 next, with the stored menu
    assert second is not None and second.message_id == "m2" and second.attempts == 1
    assert second.menu == {"1": "/affirm"} and second.claimed_on == "whatsapp" and second.message["text"] == "m2"
    if inbox.engine.dialect.name == "postgresql":
        assert len(statements) == 1 and "renewed AS" in statements[0]
    third = inbox.advance(second, None, [second.id, 999], [first.id])  # m1's replies went out: done with it
    assert third is not None and third.message_id == "m3"  # (an id that is no row changes nothing)
    assert inbox.states() == {DONE: 1, PROCESSING: 2, "pending": 1}
    if inbox.engine.dialect.name == "postgresql":
        assert len([statement for statement in statements if "wa_inbox SET state" in statement]) == 2
    with inbox.engine.begin() as conn:  # the lease expired and another worker took it
        conn.execute(update(leases).values(owner="another-worker"))
    assert inbox.advance(third, None, [third.id], [second.id]) is None  # m2 done all the same
    assert inbox.states() == {DONE: 2, PROCESSING: 1, "pending": 1}  # m4 left to the worker that holds the lease
    assert "lost the lease of a conversation while answering m3" in caplog.text
    with inbox.engine.begin() as conn:
        conn.execute(update(leases).values(owner=inbox.owner))
    fourth = inbox.advance(third, None, [third.id])
    assert fourth is not None and fourth.message_id == "m4"
    assert inbox.advance(fourth, None, [fourth.id], [third.id]) is None  # none left
    assert inbox.states() == {DONE: 3, PROCESSING: 1}


def test_claiming_takes_the_lease_and_the_oldest_row_or_gives_the_lease_back(
        inbox: Inbox, two: tuple[Inbox, Inbox]) -> None:
    """`claim_next` when a drain starts and ends: on PostgreSQL one statement, on SQLite a transaction;
    the same rows and leases either way."""
    from sqlalchemy import update

    from tests.rasa_env.conftest import watch_statements

    a, b = two
    inbox.add([item("m1", "c1", 1), item("m2", "c1", 2)])
    inbox.save_menu("whatsapp", "c1", {"1": "/affirm"})
    statements: list[str] = []
    watch_statements(a, statements.append)
    first = a.claim_next("c1", "whatsapp")
    assert first is not None and first.message_id == "m1" and first.attempts == 1
    assert first.menu == {"1": "/affirm"} and first.claimed_on == "whatsapp" and first.message["text"] == "m1"
    one_statement = inbox.engine.dialect.name == "postgresql"
    if one_statement:
        assert len(statements) == 1 and "taken AS" in statements[0]
    assert b.claim_next("c1", "whatsapp") is None  # a holds it: nothing claimed, a's lease untouched
    assert lease_owners(inbox) == {"c1": a.owner} and inbox.states() == {PROCESSING: 1, "pending": 1}
    second = a.claim_next("c1", "whatsapp", [first.id])  # m1's replies went out: done, and m2 claimed
    assert second is not None and second.message_id == "m2" and second.menu == {"1": "/affirm"}
    assert inbox.states() == {DONE: 1, PROCESSING: 1}
    statements.clear()
    assert a.claim_next("c1", "whatsapp", [second.id]) is None  # nothing left: the lease given back
    assert lease_owners(inbox) == {} and inbox.states() == {DONE: 2}
    if one_statement:
        assert len(statements) == 1
    assert b.claim_next("c1", "whatsapp") is None and lease_owners(inbox) == {}  # no lease taken for nothing
    inbox.add([item("m3", "c1", 3)])
    third = b.claim_next("c1", "whatsapp")
    assert third is not None and third.message_id == "m3"
    with inbox.engine.begin() as conn:  # b died: its lease expired
        conn.execute(update(leases).values(expires_at=time.time() - 1))
    again = a.claim_next("c1", "whatsapp")  # m3, left processing by b, is answered again
    assert again is not None and again.message_id == "m3" and again.attempts == 2
    assert lease_owners(inbox) == {"c1": a.owner}


def test_a_row_finished_after_the_claims_snapshot_is_not_claimed_again(inbox: Inbox) -> None:
    """The lease's last holder finishes its row and gives the lease back in one commit. A claim that
    started before that commit (PostgreSQL: it waits on the lease row, its snapshot older) must not
    answer the finished row again: it claims the next one."""
    from sqlalchemy import delete, update

    from connectors.inbox_tables import inbox as inbox_table

    if inbox.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: a claim never sees an older snapshot")
    a = twin(inbox, replica("a"))
    try:
        inbox.add([item("m1", "c1", 1), item("m2", "c1", 2)])
        first = a.claim_next("c1", "whatsapp")
        assert first is not None
        holder = inbox.engine.connect()
        finishing = holder.begin()  # a's `complete`, not committed yet
        holder.execute(update(inbox_table).where(inbox_table.c.id == first.id).values(state=DONE))
        holder.execute(delete(leases))
        claimed: list[InboxRow | None] = []
        claiming = threading.Thread(target=lambda: claimed.append(inbox.claim_next("c1", "whatsapp")))
        claiming.start()
        claiming.join(0.5)
        assert claiming.is_alive()  # waiting for the lease row
        finishing.commit()
        claiming.join(10)
        holder.close()
        assert [row.message_id for row in claimed if row is not None] == ["m2"]
        assert inbox.states() == {DONE: 1, PROCESSING: 1} and lease_owners(inbox) == {"c1": inbox.owner}
    finally:
        a.dispose()

