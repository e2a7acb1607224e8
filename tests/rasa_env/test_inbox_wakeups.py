"""Rows stored by another process wake the worker (PostgreSQL LISTEN/NOTIFY), and the worker's drain bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import psycopg2
import pytest
from sqlalchemy import event
from sqlalchemy.engine import default
from sqlalchemy.exc import OperationalError
from sqlalchemy.util import greenlet_spawn

from connectors import inbox_tables, inbox_wakeups
from connectors import worker as worker_module
from connectors.inbox import DONE, Inbox, InboxRow, create_inbox_engine
from connectors.inbox_calls import IN_THREAD, ON_EVENTS, asyncpg_url, create_asyncpg_engine
from connectors.inbox_tables import server_connect_args
from connectors.inbox_wakeups import WAKE_CHANNEL, parse_payload
from connectors.worker import InboxWorker
from tests.postgres import temporary_database
from tests.rasa_env.conftest import POSTGRES_ADMIN_URL
from tests.rasa_env.inbox_support import count_scans, item


@pytest.fixture
def pg_url() -> Iterator[str]:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_wake") as url:
        yield url


def test_payloads_split_at_the_first_colon() -> None:
    assert parse_payload("whatsapp:347:weird:id") == ("whatsapp", "347:weird:id")
    assert parse_payload("garbage") == ("garbage", "")


def test_sqlite_has_no_listener(sqlite_inbox: Inbox) -> None:
    assert sqlite_inbox.listener(lambda *_: None, lambda _: None) is None
    assert not sqlite_inbox.notifies


def _listen(url: str) -> psycopg2.extensions.connection:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {WAKE_CHANNEL}")
    return connection


def _notes(connection: psycopg2.extensions.connection, expected: int = 0, seconds: float = 0.3) -> list[str]:
    """Notifications that arrive until `expected` came (or `seconds` passed: delivery is asynchronous)."""
    found: list[str] = []
    deadline = time.monotonic() + (5.0 if expected else seconds)
    while time.monotonic() < deadline and (not expected or len(found) < expected):
        select.select([connection], [], [], max(0.0, deadline - time.monotonic()))
        connection.poll()
        found += [note.payload for note in connection.notifies]
        connection.notifies.clear()
    return found


def test_only_new_messages_notify_and_only_at_commit(pg_url: str) -> None:
    inbox = Inbox(create_inbox_engine(pg_url))
    listening = _listen(pg_url)
    assert inbox.add([item("m1", "A"), item("m2", "A"), item("m3", "B"), item("m1", "A")]) == ["m1", "m2", "m3"]
    assert sorted(_notes(listening, expected=2)) == ["whatsapp:A", "whatsapp:B"]  # one per conversation
    assert _notes(listening) == []
    assert inbox.add([item("m1", "A")]) == []  # a duplicate delivery: nothing stored, nobody woken
    inbox.add([], [{"message_id": "wamid.out", "status": "sent", "sent_at": 1, "recipient_id": "A",
                    "business_id": "PNID", "errors": None}])  # a status is not a message to answer
    assert _notes(listening) == []
    with pytest.raises(Exception):  # noqa: B017 - a failing transaction: its NOTIFY is never sent
        inbox.add([item("m9", "C", sent_at="not a number")])  # type: ignore[arg-type]
    assert _notes(listening) == []
    listening.close()
    inbox.dispose()


async def _stop(worker: InboxWorker, task: asyncio.Task[None]) -> None:
    await worker.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _until(predicate: object, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)


async def test_a_row_stored_by_another_process_wakes_the_worker_without_polling(pg_url: str) -> None:
    rasa_side = Inbox(create_inbox_engine(pg_url))
    ingest_side = Inbox(create_inbox_engine(pg_url))  # its own engine, as in connectors.ingest
    handled: list[str] = []
    scans = count_scans(rasa_side)

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    worker = InboxWorker(rasa_side, handler, poll_interval=30, clock=lambda: 5_000, channel="whatsapp")
    task = asyncio.create_task(worker.run())
    await _until(lambda: worker._listening)
    assert worker._listening
    await asyncio.sleep(0.1)
    scans_before = len(scans)
    ingest_side.add([item("m1", "A")])
    await _until(lambda: handled)
    assert handled == ["m1"]  # a 30 s poll could not have found it
    # The notification named the conversation: its drain started without a grouped scan.
    assert len(scans) - scans_before <= 1  # (one look after the drain finished, for rows that raced it)
    # Another channel's row (one inbox, two workers): heard, but not this worker's to answer.
    ingest_side.add([replace(item("e1", "E"), channel="evolution")])
    await asyncio.sleep(0.3)
    assert handled == ["m1"] and "E" not in worker._active
    await _stop(worker, task)
    for box in (rasa_side, ingest_side):
        box.dispose()


async def test_the_listener_reconnects_and_the_worker_polls_meanwhile(pg_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox_wakeups, "RECONNECT_SECONDS", 0.3)
    rasa_side = Inbox(create_inbox_engine(pg_url))
    ingest_side = Inbox(create_inbox_engine(pg_url))
    handled: list[str] = []
    states: list[bool] = []

    async def handler(row: InboxRow) -> None:
        handled.append(row.message_id)

    worker = InboxWorker(rasa_side, handler, poll_interval=0.05, clock=lambda: 5_000)
    original = worker._set_listening

    def record(listening: bool) -> None:
        states.append(listening)
        original(listening)

    worker._set_listening = record  # type: ignore[method-assign]
    task = asyncio.create_task(worker.run())
    await _until(lambda: worker._listening)
    killer = psycopg2.connect(pg_url)
    killer.autocommit = True
    with killer.cursor() as cursor:  # the database drops the LISTEN connection (restart, failover)
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE query LIKE 'LISTEN%' AND datname = current_database()")
    await _until(lambda: False in states)
    ingest_side.add([item("during", "A")])  # nobody listens: found by the 50 ms poll
    await _until(lambda: "during" in handled)
    await _until(lambda: states[-1] is True and len(states) >= 3)
    assert states[:3] == [True, False, True]
    ingest_side.add([item("after", "B")])
    await _until(lambda: "after" in handled)
    assert handled == ["during", "after"]
    await _stop(worker, task)
    killer.close()
    for box in (rasa_side, ingest_side):
        box.dispose()


async def test_a_wake_up_for_another_channel_starts_nothing(sqlite_inbox: Inbox) -> None:
    async def handler(row: InboxRow) -> None:
        raise AssertionError("not this channel's row")

    worker = InboxWorker(sqlite_inbox, handler, clock=lambda: 5_000, channel="whatsapp")
    worker._row_stored("evolution", "someone")
    assert worker._active == {}


async def test_a_flood_of_new_conversations_is_capped_in_tasks_and_all_answered(
        sqlite_inbox: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "MAX_DRAINS", 3)
    handled: list[str] = []
    most: list[int] = []

    async def handler(row: InboxRow) -> None:
        most.append(len(worker._active))
        handled.append(row.message_id)
        await asyncio.sleep(0.005)

    # No poll to fall back on: conversations beyond the cap are picked up as drains end.
    worker = InboxWorker(sqlite_inbox, handler, concurrency=2, poll_interval=30, clock=lambda: 5_000)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)
    for n in range(12):
        sqlite_inbox.add([item(f"m{n}", f"c{n}")])
        worker.notify(f"c{n}")  # as the listener does, one per stored conversation
        assert len(worker._active) <= 3
    await _until(lambda: sqlite_inbox.states() == {DONE: 12})
    assert sorted(handled) == sorted(f"m{n}" for n in range(12))
    assert max(most) <= 3
    assert sqlite_inbox.states() == {DONE: 12}
    await _stop(worker, task)


def test_single_statements_on_a_server_open_no_transaction(pg_url: str) -> None:
    """A send's bookkeeping and a webhook's messages: one statement each, no BEGIN/COMMIT round trips."""
    inbox = Inbox(create_inbox_engine(pg_url))
    autocommit: list[bool] = []

    def record(conn: object, *_: object) -> None:
        fairy = conn.connection  # type: ignore[attr-defined]
        autocommit.append((getattr(fairy, "dbapi_connection", None) or fairy.connection).autocommit)

    for engine in (inbox.engine, inbox._autocommit):  # single statements have an autocommit pool of their own
        event.listen(engine, "before_cursor_execute", record)
    row_id = inbox.begin_outbound({"channel": "whatsapp", "conversation_id": "A", "business_id": "PNID",
                                   "turn_key": "t#1", "payload": "{}"})
    inbox.finish_outbound(row_id, "sent", "wamid.out")
    assert inbox.add([item("m1", "A")]) == ["m1"]
    assert autocommit == [True, True, True]  # psycopg2 sends no BEGIN (nor COMMIT) in autocommit
    assert inbox.outbound_states("t") == {"t#1": "sent"}
    inbox.dispose()


def test_a_webhooks_messages_are_stored_by_one_statement_compiled_once(pg_url: str) -> None:
    """The ACK path's statement is the same text for every webhook, whatever its messages: compiled once,
    then a cache hit (a statement built from each webhook's VALUES was compiled anew every time: ~3 ms
    of the ingest's CPU per webhook)."""
    inbox = Inbox(create_inbox_engine(pg_url))
    hits: list[object] = []
    event.listen(inbox._autocommit, "after_cursor_execute",
                 lambda _conn, _cursor, statement, _params, context, _many: hits.append(context.cache_hit)
                 if "new_messages" in statement else None)
    for n in range(6):  # 1, 2 or 3 messages, a repeat among them
        assert inbox.add([item(f"m{n}.{k}", f"c{k}", sent_at=n) for k in range(n % 3 + 1)]
                         + [item(f"m{n}.0", "c0")]) == [f"m{n}.{k}" for k in range(n % 3 + 1)]
    assert hits[0] is default.CACHE_MISS and hits[1:] == [default.CACHE_HIT] * 5
    order = []  # the messages of a conversation keep their order
    while (row := inbox.claim_next("c1")) is not None:
        order.append(row.message_id)
        inbox.complete(row, "done", None, claim_next=False)
    assert order == ["m1.1", "m2.1", "m4.1", "m5.1"]
    inbox.dispose()


@pytest.mark.parametrize("calls", [IN_THREAD, ON_EVENTS])
async def test_every_call_survives_the_server_dropping_its_connections(pg_url: str, calls: str) -> None:
    """No pre-ping round trip per checkout: the call that meets a dropped connection is tried again once,
    on a new one (a database restart or failover), reads and writes, transactions and autocommit alike;
    through psycopg2 and through asyncpg."""
    inbox = Inbox(create_inbox_engine(pg_url), calls=calls)
    inbox.add([item("m0", "A", sent_at=1)])
    calls_made: dict[str, tuple[Callable[..., object], tuple[object, ...]]] = {
        "add (ACK path)": (inbox.add, ([item("m1", "A", sent_at=2)],)),
        "latest_id": (inbox.latest_id, ()),
        "pending_conversations": (inbox.pending_conversations, ()),
        "claim_next": (inbox.claim_next, ("A", "whatsapp")),
        "begin_outbound (autocommit)": (inbox.begin_outbound, ({
            "channel": "whatsapp", "conversation_id": "A", "business_id": "PNID", "turn_key": None,
            "payload": "{}"},)),
        "outbound_for": (inbox.outbound_for, ("A",)),
        "states": (inbox.states, ()),
    }
    killer = psycopg2.connect(pg_url)
    killer.autocommit = True
    for name, (method, args) in calls_made.items():
        await inbox.call(method, *args)  # the pools hold live connections now
        with killer.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        try:
            await inbox.call(method, *args)
        except Exception as error:
            pytest.fail(f"{name} failed after the server dropped its connections: {error}")
    killer.close()
    assert inbox.states() == {"pending": 1, "processing": 1}
    await inbox.close()


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg", "asyncpg, the URL's connect_timeout"])
async def test_a_server_that_never_answers_fails_the_connect_in_seconds(monkeypatch: pytest.MonkeyPatch,
                                                                        driver: str) -> None:
    """With the worker's statements on Rasa's loop, a hung connect must not last TCP's minutes."""
    assert server_connect_args("sqlite:///x.db") == {}
    from_url = driver.endswith("connect_timeout")
    monkeypatch.setattr(inbox_tables, "SERVER_CONNECT_TIMEOUT_SECONDS", 30 if from_url else 1)
    silent = socket.socket()  # the kernel completes the handshake; nothing ever answers libpq
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/inbox"
    try:
        started = time.monotonic()
        if driver == "psycopg2":
            with pytest.raises(OperationalError, match="timeout"):
                create_inbox_engine(url).connect()
        else:
            engine = create_asyncpg_engine(url + "?connect_timeout=1" if from_url else url)
            with pytest.raises((asyncio.TimeoutError, OperationalError)):
                await greenlet_spawn(engine.connect)
        assert time.monotonic() - started < 5
    finally:
        silent.close()


def test_asyncpg_urls_translate_libpq_options_and_refuse_the_rest() -> None:
    assert str(asyncpg_url("postgresql://u:p@db:5432/rasa")) == "postgresql+asyncpg://u:p@db:5432/rasa"
    assert str(asyncpg_url("postgresql+psycopg2://u@db/rasa?sslmode=require")) == \
        "postgresql+asyncpg://u@db/rasa?ssl=require"
    assert str(asyncpg_url("postgresql://u@db/rasa?connect_timeout=3")) == "postgresql+asyncpg://u@db/rasa"
    with pytest.raises(ValueError, match="connect_timeout in the database URL is not a number"):
        create_asyncpg_engine("postgresql://u@db/rasa?connect_timeout=soon")
    with pytest.raises(ValueError, match=r"option\(s\) application_name, keepalives: .*WHATSAPP_INBOX_CALLS=loop"):
        asyncpg_url("postgresql://u@db/rasa?keepalives=1&application_name=rasa")
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        asyncpg_url("sqlite:///var/tracker.db")
