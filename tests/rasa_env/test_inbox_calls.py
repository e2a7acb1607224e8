"""How the inbox's statements run: inline on SQLite, on the loop or in a thread on a server, kept connections."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event

from connectors.inbox import (
    DONE,
    ON_EVENTS,
    ON_LOOP,
    PENDING,
    SENT,
    Inbox,
    create_inbox_engine,
)

from .inbox_support import item


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
