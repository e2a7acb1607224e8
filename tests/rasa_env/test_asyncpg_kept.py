"""connectors/asyncpg_kept.py: with WHATSAPP_INBOX_CALLS=async the inbox's per-message statements run on
kept asyncpg connections, as SQLAlchemy runs them (same rows, same errors, same transactions)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import bindparam, event, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.util import await_only, greenlet_spawn

from connectors import inbox_statements as sql
from connectors.asyncpg_kept import MAX_IDLE, KeptAsyncpg
from connectors.inbox import DONE, PENDING, PROCESSING, SENT, Inbox, create_inbox_engine
from connectors.inbox_calls import ON_EVENTS
from connectors.inbox_tables import inbox as inbox_table
from tests.postgres import temporary_database

from .conftest import POSTGRES_ADMIN_URL
from .inbox_support import item

T = TypeVar("T")


@pytest.fixture
async def box() -> AsyncIterator[Inbox]:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_kept_pg") as url:
        inbox = Inbox(create_inbox_engine(url), calls=ON_EVENTS)
        yield inbox
        await inbox.close()


def kept_of(box: Inbox) -> KeptAsyncpg:
    assert box._on_events is not None and isinstance(box._on_events._kept, KeptAsyncpg)
    return box._on_events._kept


async def in_greenlet(fn: Callable[[], T]) -> T:
    return await greenlet_spawn(fn)


def statements_through_sqlalchemy(box: Inbox) -> list[str]:
    """The SQL the asyncpg twin runs through SQLAlchemy's own engines from now on (filled as it runs)."""
    twin = box._on_events
    assert twin is not None
    seen: list[str] = []
    for engine in {twin.engine, twin._autocommit}:
        event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement))
    return seen


def end_backend_of(box: Inbox, connection: Any) -> None:
    """The database restarted, or an admin ended the session: the server drops this connection."""
    with box.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": connection.get_server_pid()})
        admin.commit()


async def test_rows_read_back_as_sqlalchemy_reads_them(box: Inbox) -> None:
    box.add([item("m1", "c1", 1), item("m2", "c1", 2), item("m3", "c1", 3)])
    parameters = {"conversation": "c1", "on_channel": "whatsapp", "few": 2}
    with box.engine.connect() as conn:
        expected = [tuple(row) for row in conn.execute(sql.NEXT_UNFINISHED[True], parameters)]
    kept = kept_of(box)

    def read() -> None:
        with kept.connect() as conn:
            rows = conn.execute(sql.NEXT_UNFINISHED[True], parameters).all()
            assert [tuple(row) for row in rows] == expected and [row.message_id for row in rows] == ["m1", "m2"]
            assert conn.execute(sql.LATEST_ID).scalar() == 3
            assert conn.execute(sql.CONVERSATIONS_SINCE[False], {"after_id": 1}).scalars() == ["c1"]
            assert conn.execute(sql.MENU, {"conversation": "nobody", "on_channel": "whatsapp"}).first() is None

    await in_greenlet(read)


async def test_a_turn_runs_on_kept_connections_not_on_sqlalchemys_engines(box: Inbox) -> None:
    through_sqlalchemy = statements_through_sqlalchemy(box)
    await box.call(box.add, [item("m1"), item("m2")], [])
    through_sqlalchemy.clear()  # the webhook's insert is the ingest's, not a turn's
    first = await box.call(box.claim_next, "c1", "whatsapp")
    assert first is not None and first.message_id == "m1" and first.attempts == 1
    sent = await box.call(box.begin_outbound, {"channel": "whatsapp", "conversation_id": "c1", "business_id": "P",
                                               "turn_key": "m1#1", "payload": "{}"})
    assert isinstance(sent, int) and sent > 0  # the id from the insert's RETURNING
    await box.call(box.finish_outbound, sent, SENT, "wamid.out")
    second = await box.call(box.advance, first, {"1": "/affirm"}, [first.id])
    assert second is not None and second.message_id == "m2" and second.menu == {"1": "/affirm"}
    await box.call(box.finish, first.id)
    assert await box.call(box.complete, second, DONE, None) is None
    assert await box.call(box.renew_leases) == 0  # the lease went back with the last row
    assert through_sqlalchemy == []
    assert box.states() == {DONE: 2} and box.outbound_states("m1") == {"m1#1": SENT}
    assert len(kept_of(box)._idle) == 1  # one connection did it all, one statement after the other


async def test_a_failed_block_writes_nothing_and_errors_are_sqlalchemys(box: Inbox) -> None:
    box.add([item("m1", "c1", 1)])
    kept = kept_of(box)
    duplicate = {"message_id": "m1", "channel": "whatsapp", "conversation_id": "c1", "reply_to": "c1",
                 "business_id": "P", "sent_at": 1, "received_at": 1.0, "state": PENDING, "attempts": 0,
                 "message": "{}", "updated_at": 1.0}

    def duplicate_in_a_transaction() -> None:
        with kept.begin() as conn:
            conn.execute(sql.SET_STATE, {"row_id": 1, "new_state": DONE, "now": 1.0})
            conn.execute(sql.INSERT_MESSAGES, duplicate)

    with pytest.raises(IntegrityError):
        await in_greenlet(duplicate_in_a_transaction)
    assert box.states() == {PENDING: 1}  # the update before the duplicate was rolled back with it

    def caller_fails() -> None:
        with kept.begin() as conn:
            conn.execute(sql.SET_STATE, {"row_id": 1, "new_state": DONE, "now": 1.0})
            raise RuntimeError("the caller failed mid-transaction")

    with pytest.raises(RuntimeError):
        await in_greenlet(caller_fails)
    assert box.states() == {PENDING: 1}
    assert len(kept._idle) == 1  # rolled back and kept: the error was the statement's, not the connection's


async def test_a_savepoint_undoes_only_its_own_part(box: Inbox) -> None:
    box.add([item("m1", "c1", 1)])
    kept = kept_of(box)
    lease = {"lease_channel": "whatsapp", "conversation": "c1", "lease_owner": "w", "lease_until": 9e9}

    def nested() -> None:
        with kept.begin() as conn:
            conn.execute(sql.SET_STATE, {"row_id": 1, "new_state": DONE, "now": 1.0})
            conn.execute(sql.INSERT_LEASE, lease)
            with pytest.raises(IntegrityError), conn.begin_nested():
                conn.execute(sql.INSERT_LEASE, lease)

    await in_greenlet(nested)
    assert box.states() == {DONE: 1}


async def test_a_missing_parameter_is_named_and_nothing_runs(box: Inbox) -> None:
    box.add([item("m1", "c1", 1)])
    kept = kept_of(box)

    def incomplete() -> None:
        with kept.begin() as conn:
            conn.execute(sql.SET_STATE, {"row_id": 1, "now": 1.0})

    with pytest.raises(KeyError, match="new_state"):
        await in_greenlet(incomplete)
    assert box.states() == {PENDING: 1} and len(kept._idle) == 1


async def test_hostile_values_stay_values(box: Inbox) -> None:
    hostile = "c1'); DROP TABLE wa_inbox; -- $1 %s %% :few"
    box.add([item("m1", hostile, 1)])
    row = await box.call(box.claim_next, hostile, "whatsapp")
    assert row is not None and row.conversation_id == hostile
    assert box.states() == {PROCESSING: 1}


async def test_an_in_list_given_per_call_is_refused(box: Inbox) -> None:
    kept = kept_of(box)

    def per_call() -> None:
        with kept.connect() as conn:
            conn.execute(select(inbox_table.c.id).where(inbox_table.c.id.in_(bindparam("ids", expanding=True))),
                         {"ids": [1, 2]})

    with pytest.raises(ValueError, match="IN list"):
        await in_greenlet(per_call)


async def test_a_connection_the_server_dropped_is_replaced_and_the_call_retried(box: Inbox) -> None:
    box.add([item("m1", "c1", 1)])
    assert await box.call(box.latest_id) == 1
    kept = kept_of(box)
    (connection,) = kept._idle
    end_backend_of(box, connection)
    # At once, before the event loop hears of the closed socket: the connection still looks alive.
    assert await box.call(box.latest_id) == 1  # retry_transient: the first try's error said "invalidated"
    assert len(kept._idle) == 1 and kept._idle[0] is not connection

    def on_dead_connection() -> None:
        with kept.connect() as conn:
            conn.execute(sql.LATEST_ID)

    (connection,) = kept._idle
    end_backend_of(box, connection)
    with pytest.raises(DBAPIError) as raised:
        await in_greenlet(on_dead_connection)
    assert raised.value.connection_invalidated and kept._idle == []


async def test_a_cancelled_statement_leaves_no_connection_half_used(box: Inbox) -> None:
    box.add([item("m1", "c1", 1)])
    await box.call(box.latest_id)
    kept = kept_of(box)
    blocker = box.engine.raw_connection()
    blocker.cursor().execute("LOCK TABLE wa_inbox IN ACCESS EXCLUSIVE MODE")
    waiting = asyncio.create_task(box.call(box.latest_id))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    blocker.commit()
    blocker.close()
    assert kept._idle == []  # dropped, not handed to the next turn mid-statement
    assert await box.call(box.latest_id) == 1


async def test_connections_kept_are_bounded_and_belong_to_their_loop(
        box: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst's connections beyond MAX_IDLE stay for the next burst (one connect per statement made a busy
    worker pay a backend's start-up for most of its statements), and are closed once unused for a while."""
    import asyncpg

    from connectors import asyncpg_kept

    monkeypatch.setattr(asyncpg_kept, "SURPLUS_IDLE_SECONDS", 0.5)
    connects = 0
    connect = asyncpg.connect

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal connects
        connects += 1
        return await connect(*args, **kwargs)

    monkeypatch.setattr(asyncpg, "connect", counted)
    box.add([item(f"m{n}", f"c{n}", n) for n in range(MAX_IDLE + 4)])
    kept = kept_of(box)

    async def burst() -> None:
        blocker = box.engine.raw_connection()
        blocker.cursor().execute("LOCK TABLE wa_inbox IN ACCESS EXCLUSIVE MODE")  # all of them wait at once
        calls = [asyncio.create_task(box.call(box.latest_id)) for _ in range(MAX_IDLE + 4)]
        await asyncio.sleep(0.2)
        blocker.commit()
        blocker.close()
        assert await asyncio.gather(*calls) == [MAX_IDLE + 4] * (MAX_IDLE + 4)

    await burst()
    assert connects == MAX_IDLE + 4 and len(kept._idle) == MAX_IDLE + 4
    await burst()  # the second wave's claims find their connections kept
    assert connects == MAX_IDLE + 4 and len(kept._idle) == MAX_IDLE + 4
    most_recent = kept._idle[4:]
    await asyncio.sleep(0.8)
    assert kept._idle == most_recent and kept._open == MAX_IDLE  # the 4 least recently used were closed
    loop_before = kept._loop

    def latest_on_another_loop() -> int:
        async def ask() -> int:
            return await box.call(box.latest_id)  # type: ignore[no-any-return]
        return asyncio.run(ask())

    assert await asyncio.to_thread(latest_on_another_loop) == MAX_IDLE + 4
    assert kept._loop is not loop_before and len(kept._idle) == 1


async def test_a_burst_of_statements_opens_at_most_max_open_connections(
        box: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sends, receipts and claims of many conversations at once: each waits for a free connection beyond
    MAX_OPEN (a burst would otherwise open as many server connections as statements), in the order they
    came; one that waits too long fails as SQLAlchemy's pool does, and a cancelled one leaves the line."""
    import asyncpg

    from connectors import asyncpg_kept

    monkeypatch.setattr(asyncpg_kept, "MAX_OPEN", 3)
    opened: list[Any] = []
    connect = asyncpg.connect

    async def counted(*args: Any, **kwargs: Any) -> Any:
        connection = await connect(*args, **kwargs)
        opened.append(connection)
        return connection

    monkeypatch.setattr(asyncpg, "connect", counted)
    kept = kept_of(box)
    live: list[int] = []

    def slow_statement() -> int:
        with kept.connect() as conn:
            live.append(sum(not c.is_closed() for c in opened))
            return int(conn.execute(text("SELECT 1 FROM pg_sleep(0.02)")).rowcount)

    assert await asyncio.gather(*(in_greenlet(slow_statement) for _ in range(40))) == [1] * 40
    assert len(opened) == 3 and max(live) <= 3 and kept._open == 3 and not kept._waiting

    gate = asyncio.Event()

    def held() -> None:
        with kept.connect():
            await_only(gate.wait())

    holders = [asyncio.create_task(in_greenlet(held)) for _ in range(3)]
    await asyncio.sleep(0.1)
    monkeypatch.setattr(asyncpg_kept, "FREE_CONNECTION_WAIT_SECONDS", 0.2)
    with pytest.raises(DBAPIError, match=r"no free connection within 0\.2s: 3 in use"):
        await in_greenlet(slow_statement)
    cancelled = asyncio.create_task(in_greenlet(slow_statement))
    monkeypatch.setattr(asyncpg_kept, "FREE_CONNECTION_WAIT_SECONDS", 5.0)
    waiting = asyncio.create_task(in_greenlet(slow_statement))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    gate.set()
    assert await waiting == 1
    await asyncio.gather(*holders)
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert len(opened) == 3 and kept._open == 3 and not kept._waiting


async def test_a_webhooks_messages_and_statuses_are_stored_on_kept_connections(box: Inbox) -> None:
    """connectors.ingest's ACK path: one statement for the messages, the statuses in the same transaction."""
    through_sqlalchemy = statements_through_sqlalchemy(box)
    statuses = [{"message_id": "wamid.out", "status": status, "sent_at": 1, "recipient_id": "c1", "business_id": "P",
                 "errors": None} for status in ("sent", "delivered")]
    assert await box.call(box.add_safely, [item("m1"), item("m1"), item("m2")], statuses) == ["m1", "m2"]
    assert await box.call(box.add_safely, [item("m2"), item("m3")], []) == ["m3"]  # the repeat is dropped
    assert await box.call(box.add_safely, [], statuses[:1]) == []  # a status-only webhook
    assert through_sqlalchemy == []
    assert box.states() == {PENDING: 3} and box.statuses_for("wamid.out") == ["sent", "delivered", "sent"]


async def test_a_customer_who_waits_for_each_reply_costs_the_worker_three_statements(
        box: Inbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The common turn on PostgreSQL: the claim, the advance that finds nothing new, and, once the replies
    went out, one statement that marks the row done and gives the lease back — no BEGIN or COMMIT; a turn
    that offers options, or clears them, saves its menu in the advance's statement."""
    from connectors.asyncpg_kept import KeptAsyncpgConnection
    from connectors.worker import Answered

    from .inbox_support import make_worker
    from .test_replies_off_the_turn import wait_until

    ran: list[str] = []
    execute, run = KeptAsyncpgConnection.execute, KeptAsyncpgConnection._run

    def counted_execute(self: KeptAsyncpgConnection, statement: Any, parameters: Any = None) -> Any:
        sql_text = str(statement)
        ran.append("advance" if "renewed AS" in sql_text else "claim" if "taken AS" in sql_text else sql_text)
        return execute(self, statement, parameters)

    def counted_run(self: KeptAsyncpgConnection, sql_text: str) -> None:
        ran.append(sql_text)
        run(self, sql_text)

    monkeypatch.setattr(KeptAsyncpgConnection, "execute", counted_execute)
    monkeypatch.setattr(KeptAsyncpgConnection, "_run", counted_run)
    handled: list[str] = []

    menus = {"m1": {"1": "/affirm"}, "m2": {}, "m3": {}}  # offered, cleared, none after none

    async def handler(row: Any) -> Answered:
        handled.append(row.message_id)
        return Answered(menus[row.message_id], asyncio.sleep(0.02))  # the replies still going out when it returns

    worker = make_worker(box, handler, poll_interval=30.0, channel="whatsapp")
    running = asyncio.create_task(worker.run())
    await wait_until(lambda: worker._listening)
    await asyncio.sleep(0.2)  # the start-up look is over
    for n in range(1, 4):
        ran.clear()
        box.add([item(f"m{n}", "c1", 1_000 + n)])  # announced (NOTIFY): the drain starts
        await wait_until(lambda n=n: box.states() == {DONE: n})
        await worker.idle()
        assert ran == ["claim", "advance", "claim"]
        assert box.menu("whatsapp", "c1") == menus[f"m{n}"]
    assert handled == ["m1", "m2", "m3"]
    assert await box.call(box.renew_leases) == 0  # the lease went back with the last row
    await worker.stop()
    running.cancel()
