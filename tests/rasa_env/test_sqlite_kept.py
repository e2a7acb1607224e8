"""connectors/sqlite_kept.py: the inbox's statements on kept sqlite3 connections, as SQLAlchemy runs them."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError

from connectors import inbox_statements as sql
from connectors.inbox import DONE, PENDING, PROCESSING, Inbox, create_inbox_engine
from connectors.inbox_tables import inbox as inbox_table
from connectors.inbox_tables import sqlite_pragmas
from connectors.sqlite_kept import MAX_COMPILED, KeptSqlite

from .inbox_support import item


@pytest.fixture
def box(tmp_path: Path) -> Inbox:
    return Inbox(create_inbox_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))


def test_a_sqlite_file_runs_its_turn_statements_on_kept_connections_memory_does_not(tmp_path: Path) -> None:
    assert Inbox(create_inbox_engine(f"sqlite:///{tmp_path / 'a.db'}"))._kept is not None
    assert Inbox(create_inbox_engine("sqlite://"))._kept is None  # a second connection would see another database


def test_rows_read_back_as_sqlalchemy_reads_them(box: Inbox) -> None:
    box.add([item("m1", "c1", 1), item("m2", "c1", 2), item("m3", "c1", 3)])
    parameters = {"conversation": "c1", "on_channel": "whatsapp", "few": 2}
    with box.engine.connect() as conn:
        expected = [tuple(row) for row in conn.execute(sql.NEXT_UNFINISHED[True], parameters)]
    assert box._kept is not None
    with box._kept.connect() as kept:
        rows = kept.execute(sql.NEXT_UNFINISHED[True], parameters).all()
        assert [tuple(row) for row in rows] == expected and [row.message_id for row in rows] == ["m1", "m2"]
        assert kept.execute(sql.LATEST_ID).scalar() == 3
        assert kept.execute(sql.CONVERSATIONS_SINCE[False], {"after_id": 1}).scalars() == ["c1"]
        assert kept.execute(sql.MENU, {"conversation": "nobody", "on_channel": "whatsapp"}).first() is None


def test_the_claim_skips_the_rows_still_replying_and_only_those(box: Inbox) -> None:
    box.add([item("m1", "c1", 1), item("m2", "c1", 2), item("m3", "c1", 3)])
    first = box.claim_next("c1", "whatsapp")
    assert first is not None and first.message_id == "m1"
    second = box.advance(first, {}, [first.id])  # m1 still replying: stays processing, m2 is next
    assert second is not None and second.message_id == "m2"
    third = box.advance(second, None, [first.id, second.id, 999])  # an id that is no row changes nothing
    assert third is not None and third.message_id == "m3"
    assert box.states() == {PROCESSING: 3}
    assert box.advance(third, None, [first.id, second.id, third.id]) is None


def test_a_failed_block_writes_nothing_and_errors_are_sqlalchemys(box: Inbox) -> None:
    box.add([item("m1", "c1", 1)])
    assert box._kept is not None
    with pytest.raises(IntegrityError), box._kept.begin() as kept:
        kept.execute(sql.SET_STATE, {"row_id": 1, "new_state": DONE, "now": 1.0})
        kept.execute(sql.INSERT_MESSAGES, {"message_id": "m1", "channel": "whatsapp", "conversation_id": "c1",
                                           "reply_to": "c1", "business_id": "P", "sent_at": 1, "received_at": 1.0,
                                           "state": PENDING, "attempts": 0, "message": "{}", "updated_at": 1.0})
    assert box.states() == {PENDING: 1}  # the update before the duplicate was rolled back with it
    with pytest.raises(RuntimeError), box._kept.begin() as kept:
        kept.execute(sql.SET_STATE, {"row_id": 1, "new_state": DONE, "now": 1.0})
        raise RuntimeError("the caller failed mid-transaction")
    assert box.states() == {PENDING: 1}


def test_a_savepoint_undoes_only_its_own_part(box: Inbox) -> None:
    box.add([item("m1", "c1", 1)])
    assert box._kept is not None
    with box._kept.begin() as kept:
        kept.execute(sql.SET_STATE, {"row_id": 1, "new_state": DONE, "now": 1.0})
        with pytest.raises(IntegrityError), kept.begin_nested():
            kept.execute(sql.INSERT_LEASE, {"lease_channel": "whatsapp", "conversation": "c1",
                                            "lease_owner": "a", "lease_until": 9e9})
            kept.execute(sql.INSERT_LEASE, {"lease_channel": "whatsapp", "conversation": "c1",
                                            "lease_owner": "b", "lease_until": 9e9})
    assert box.states() == {DONE: 1}
    with box.engine.connect() as conn:
        assert conn.execute(select(sql.leases.c.owner)).first() is None


def test_a_missing_parameter_is_named_and_runs_nothing(box: Inbox) -> None:
    box.add([item("m1", "c1", 1)])
    assert box._kept is not None
    with pytest.raises(KeyError, match="row_id"), box._kept.begin() as kept:
        kept.execute(sql.SET_STATE, {"new_state": DONE, "now": 1.0})
    assert box.states() == {PENDING: 1}


def test_an_in_list_given_per_call_is_refused(box: Inbox) -> None:
    assert box._kept is not None
    with pytest.raises(ValueError, match="IN list"), box._kept.connect() as kept:
        kept.execute(sql.KNOWN_IDS, {"ids": ["m1"]})


def test_hostile_values_are_values(box: Inbox) -> None:
    hostile = "c1'); DROP TABLE wa_inbox; --"
    box.add([item("m1", hostile, 1)])
    row = box.claim_next(hostile, "whatsapp")
    assert row is not None and row.conversation_id == hostile
    box.finish(row.id)
    assert box.states() == {DONE: 1}


def test_a_writer_holding_the_file_delays_the_call_and_loses_nothing(box: Inbox, tmp_path: Path) -> None:
    box.add([item("m1", "c1", 1)])
    row = box.claim_next("c1", "whatsapp")
    assert row is not None
    other = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process's write transaction
    threading.Timer(0.2, other.execute, ["COMMIT"]).start()
    started = time.monotonic()
    box.finish(row.id)  # "database is locked" as SQLAlchemy's OperationalError: retry_transient tries again
    assert time.monotonic() - started >= 0.15
    assert box.states() == {DONE: 1}
    other.close()


def test_a_lock_that_never_ends_comes_out_as_operational_error(box: Inbox, tmp_path: Path) -> None:
    box.add([item("m1", "c1", 1)])
    other = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    assert box._kept is not None
    with pytest.raises(OperationalError, match="locked"), box._kept.begin() as kept:
        kept.execute(sql.SET_STATE, {"row_id": 1, "new_state": DONE, "now": 1.0})
    other.execute("ROLLBACK")
    other.close()


def test_each_thread_has_its_own_connection_and_close_closes_them(box: Inbox) -> None:
    assert box._kept is not None
    kept = box._kept
    seen: list[object] = [kept._connection()]
    thread = threading.Thread(target=lambda: seen.append(kept._connection()))
    thread.start()
    thread.join()
    assert seen[0] is not seen[1] and kept._connection() is seen[0]
    kept.close()
    with pytest.raises(sqlite3.ProgrammingError):
        seen[1].execute("SELECT 1")  # type: ignore[attr-defined]
    box.add([item("m1", "c1", 1)])
    assert box.claim_next("c1", "whatsapp") is not None  # a new connection after close


def test_statements_built_per_call_do_not_grow_the_cache(box: Inbox) -> None:
    assert box._kept is not None
    with box._kept.connect() as kept:
        for n in range(MAX_COMPILED * 2):
            statement = select(inbox_table.c.id).where(inbox_table.c.id > bindparam("after")).limit(n + 1)
            assert kept.execute(statement, {"after": 0}).all() == []
    assert len(box._kept._compiled) <= MAX_COMPILED


def test_the_connection_has_the_engines_pragmas(tmp_path: Path) -> None:
    engine = create_inbox_engine(f"sqlite:///{tmp_path / 'p.db'}")
    kept = KeptSqlite(engine, sqlite_pragmas)
    connection = kept._connection()
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    kept.close()
