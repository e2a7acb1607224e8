"""Durable inbox rows (SQLite and PostgreSQL): storing webhooks once, claims, menus, sends, statuses."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import default

from connectors import sqlite_kept
from connectors.inbox import (
    DONE,
    PENDING,
    PROCESSING,
    SENT,
    SKIPPED,
    STALE,
    Inbox,
    create_inbox_engine,
)

from .conftest import watch_statements
from .inbox_support import item


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

    def executed(_c: object, _cur: object, statement: str, _p: object, context: Any, _m: object) -> None:
        if context.compiled is not None:  # (the webhook commit's PRAGMAs are driver SQL: nothing to compile)
            seen.append((statement, context.cache_hit))

    for engine in {inbox.engine, inbox._autocommit}:
        event.listen(engine, "after_cursor_execute", executed)
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
