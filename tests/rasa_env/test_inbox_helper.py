"""WHATSAPP_INBOX_CALLS=process: the inbox's statements in a helper process (connectors/inbox_helper.py)."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from connectors import inbox_helper
from connectors.inbox import (
    DONE,
    IN_PROCESS,
    IN_THREAD,
    ON_EVENTS,
    ON_LOOP,
    PROCESSING,
    SENT,
    Inbox,
    create_inbox_engine,
)
from connectors.inbox_calls import on_this_loop
from connectors.inbox_helper import InboxHelperError, InboxHelperGone, _carried, _frame, _Frames
from connectors.settings import WhatsAppSettings
from tests.postgres import temporary_database

from .conftest import POSTGRES_ADMIN_URL
from .inbox_support import item

ROOT = Path(__file__).resolve().parents[2]


# --- framing and errors, without a process ---------------------------------------------------------


def test_frames_are_read_whole_however_the_pipe_cuts_them() -> None:
    calls = [(1, "claim_next", ("c1", "whatsapp")), (2, "states", ()), (3, "add", ([item("m1")], []))]
    stream = b"".join(_frame(call) for call in calls)
    byte_by_byte = _Frames()
    seen = [frame for n in range(len(stream)) for frame in byte_by_byte.feed(stream[n:n + 1])]
    assert seen == calls
    assert _Frames().feed(stream) == calls  # and all in one read


def test_a_frame_over_the_limit_is_refused_on_both_sides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox_helper, "MAX_FRAME_BYTES", 1000)
    with pytest.raises(ValueError, match="over the helper's 1000-byte limit"):
        _frame((1, "add", ("x" * 2000,)))
    with pytest.raises(ValueError, match="over the limit"):
        _Frames().feed((5000).to_bytes(4, "big") + b"...")


def test_an_error_that_cannot_be_pickled_comes_back_as_its_text() -> None:
    plain = ValueError("bad row")
    assert _carried(plain) is plain
    odd = RuntimeError("holds a lock")
    odd.lock = threading.Lock()  # type: ignore[attr-defined]
    carried = _carried(odd)
    assert isinstance(carried, InboxHelperError) and str(carried) == "RuntimeError: holds a lock"
    pickle.dumps(carried)


def test_the_setting_takes_process_and_the_ingest_keeps_its_statements_at_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHATSAPP_INBOX_CALLS", "process")
    assert WhatsAppSettings.load({}).inbox_calls == IN_PROCESS
    monkeypatch.delenv("WHATSAPP_INBOX_CALLS")
    assert WhatsAppSettings.load({}).inbox_calls == IN_PROCESS  # the default too
    # The ingest (no Rasa) and the receipt's question to the tracker store run through asyncpg themselves.
    assert on_this_loop(IN_PROCESS) == ON_EVENTS
    assert [on_this_loop(calls) for calls in (ON_EVENTS, ON_LOOP, IN_THREAD)] == [ON_EVENTS, ON_LOOP, IN_THREAD]
    assert "on_this_loop(settings.inbox_calls)" in (ROOT / "connectors" / "ingest.py").read_text()


async def test_sqlite_keeps_its_statements_here_and_a_file_has_a_helper_for_sends(tmp_path: Path) -> None:
    box = Inbox(create_inbox_engine(f"sqlite:///{tmp_path / 'inbox.db'}"), calls=IN_PROCESS)
    assert box.runs == ON_LOOP and box._helper is not None
    assert await box.call(box.add, [item("m1")], []) == ["m1"]
    assert box._helper._transport is None  # a statement never starts the child
    await box.close()
    memory = Inbox(create_inbox_engine("sqlite://"), calls=IN_PROCESS)  # nothing another process could open
    assert memory._helper is None and memory.runs == ON_LOOP


# --- on PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture
def database() -> Iterator[str]:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_helper") as url:
        yield url


@pytest.fixture
async def helped(database: str) -> AsyncIterator[Inbox]:
    box = Inbox(create_inbox_engine(database), calls=IN_PROCESS)
    yield box
    await box.close()  # (its pooled psycopg2 connections too)


def child_pid(box: Inbox) -> int:
    assert box._helper is not None and box._helper._transport is not None
    return int(box._helper._transport.get_pid())


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: only its parent's wait is missing
        return stat.read().split(") ", 1)[1].startswith("Z")


async def test_the_methods_run_in_a_child_process_on_the_same_rows(helped: Inbox) -> None:
    box = helped
    await box.call(box.add, [item("m1"), item("m2")], [])
    first = await box.call(box.claim_next, "c1", None)
    assert child_pid(box) != os.getpid()
    assert first is not None and first.message_id == "m1" and first.message == item("m1").message
    row_id = await box.call(box.begin_outbound, {"channel": "whatsapp", "conversation_id": "c1",
                                                 "business_id": "PNID", "turn_key": "t#1", "payload": "{}"})
    await box.call(box.finish_outbound, row_id, SENT, "wamid.out")
    with box.engine.connect() as conn:  # the lease is this process's, so a restart here takes it over at once
        assert conn.execute(text("SELECT owner FROM wa_leases")).scalar() == box.owner
    second = await box.call(box.complete, first, DONE, {"1": "/affirm"})
    assert second is not None and second.message_id == "m2" and second.menu == {"1": "/affirm"}
    assert await box.call(box.complete, second, DONE, None) is None
    assert box.outbound_states("t") == {"t#1": SENT} and box.states() == {DONE: 2}  # seen in this process
    many = await asyncio.gather(*(box.call(box.latest_id) for _ in range(50)))  # answers find their callers
    assert set(many) == {box.latest_id()}


async def test_errors_come_back_as_themselves_and_only_public_methods_are_called(helped: Inbox) -> None:
    box = helped
    with pytest.raises(Exception) as raised:
        await box.call(box.finish_outbound, "not a row id", SENT)
    assert type(raised.value).__module__.startswith("sqlalchemy") and "not a row id" in str(raised.value)
    assert box._helper is not None
    for name in ("_claim", "__init__", "engine", "no_such_method"):
        with pytest.raises(AttributeError, match="no method"):
            await box._helper.call(name)
    assert await box.call(box.states) == {}  # the child is still there


async def test_a_call_whose_child_died_runs_again_in_a_new_one(helped: Inbox) -> None:
    box = helped
    await box.call(box.add, [item("m1")], [])
    first = child_pid(box)
    blocker = box.engine.raw_connection()
    blocker.cursor().execute("LOCK TABLE wa_inbox IN ACCESS EXCLUSIVE MODE")
    try:
        waiting = asyncio.create_task(box.call(box.claim_next, "c1", None))  # waits for the lock in the child
        await asyncio.sleep(0.3)
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0.5)  # the call is in a new child's hands by now, waiting for the lock again
        assert not waiting.done()
    finally:
        blocker.rollback()
        blocker.close()
    row = await asyncio.wait_for(waiting, 10)
    assert row is not None and row.message_id == "m1" and row.attempts == 1  # claimed once: the first was cut off
    assert child_pid(box) != first and box.states() == {PROCESSING: 1}


async def test_a_child_that_dies_twice_fails_the_call(helped: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    box = helped
    assert await box.call(box.states) == {}
    assert box._helper is not None
    started: list[int] = []
    spawn = box._helper._spawn

    async def spawn_and_kill() -> None:  # every new child dies at once
        await spawn()
        started.append(child_pid(box))
        os.kill(started[-1], signal.SIGKILL)

    monkeypatch.setattr(box._helper, "_spawn", spawn_and_kill)
    os.kill(child_pid(box), signal.SIGKILL)
    with pytest.raises(InboxHelperGone):
        await asyncio.wait_for(box.call(box.states), 10)
    assert len(started) >= 1
    monkeypatch.undo()
    assert await box.call(box.states) == {}  # and the next call gets a working one


async def test_the_child_gets_the_attributes_set_before_and_after_it_started(helped: Inbox, database: str) -> None:
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.domain import Domain
    from sqlalchemy.engine import make_url

    url = make_url(database)
    store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=url.host, port=url.port, db=url.database,
                            username=url.username)  # Rasa's events table, which the claim asks about pauses
    box = helped
    await box.call(box.add, [item("m1"), item("m2", conversation="c2")], [])
    first = await box.call(box.claim_next, "c1", None)
    assert first is not None and first.paused is None  # not asked
    box.pauses_in_this_database = True
    second = await box.call(box.claim_next, "c2", None)
    assert second is not None and second.paused is False  # asked, in the child
    store.engine.dispose()


async def test_close_ends_the_child(helped: Inbox) -> None:
    await helped.call(helped.states)
    pid = child_pid(helped)
    await helped.close()
    assert gone(pid)
    assert await helped.call(helped.states) == {}  # a later call starts a new one (closed again by the fixture)


def test_the_child_exits_when_rasa_is_killed(database: str) -> None:
    """kill -9 of the Rasa process: the child's input closes and it exits, leaving no process behind."""
    script = (
        "import asyncio, sys\n"
        "from connectors.inbox import Inbox, create_inbox_engine\n"
        "async def main():\n"
        f"    box = Inbox(create_inbox_engine({database!r}), calls='process')\n"
        "    await box.call(box.states)\n"
        "    print(box._helper._transport.get_pid(), flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    rasa = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert rasa.stdout is not None
        pid = int(rasa.stdout.readline())
        assert not gone(pid)
        rasa.send_signal(signal.SIGKILL)
        rasa.wait(10)
        deadline = time.monotonic() + 10
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(pid)
    finally:
        rasa.kill()
