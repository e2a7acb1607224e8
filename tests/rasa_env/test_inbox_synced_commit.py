"""On SQLite the webhook's commit is synced to disk before the ACK (synchronous=FULL for that commit only):
Meta never delivers a webhook again once it got its 200, so a power loss before the next checkpoint must
not take it. Every other commit (the worker's, on Rasa's loop) keeps synchronous=NORMAL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from connectors.inbox import Inbox

from .inbox_support import item

FULL, NORMAL = 2, 1


def synchronous_at_writes(inbox: Inbox) -> list[tuple[str, int]]:
    """(first words of the statement, PRAGMA synchronous of its connection) for every write on the engine."""
    seen: list[tuple[str, int]] = []

    def before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith(("INSERT", "UPDATE", "DELETE")):
            level = conn.connection.dbapi_connection.execute("PRAGMA synchronous").fetchone()[0]
            seen.append((" ".join(statement.split()[:3]), level))

    event.listen(inbox.engine, "before_cursor_execute", before)
    return seen


def synchronous_of_an_idle_connection(inbox: Inbox) -> int:
    with inbox.engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar())


def test_the_webhooks_commit_is_synced_and_other_writes_are_not(sqlite_inbox: Inbox) -> None:
    seen = synchronous_at_writes(sqlite_inbox)
    status = {"message_id": "wamid.out", "status": "sent", "sent_at": 1, "recipient_id": "c1",
              "business_id": "PNID", "errors": None}
    assert sqlite_inbox.add([item("m1"), item("m2")], [status]) == ["m1", "m2"]
    assert sqlite_inbox.add([item("m1")]) == []  # a redelivery: nothing new, still the same commit path
    assert {level for _, level in seen} == {FULL} and {words for words, _ in seen} == {
        "INSERT INTO wa_inbox", "INSERT INTO wa_statuses"}
    assert synchronous_of_an_idle_connection(sqlite_inbox) == NORMAL  # restored before it went back
    seen.clear()
    row = sqlite_inbox.claim_next("c1")  # the worker's statements: the kept connection, not synced
    assert row is not None
    sqlite_inbox.save_menu("whatsapp", "c1", {"1": "/affirm"})
    kept = sqlite_inbox._kept
    assert kept is not None and kept._connection().execute("PRAGMA synchronous").fetchone()[0] == NORMAL
    assert all(level == NORMAL for _, level in seen)


def test_a_failed_webhook_commit_leaves_no_connection_syncing_every_commit(sqlite_inbox: Inbox,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("the disk went away")

    original = sqlite_inbox.engine.dialect.do_executemany
    monkeypatch.setattr(sqlite_inbox.engine.dialect, "do_executemany", broken)
    with pytest.raises(Exception, match="disk went away"):
        sqlite_inbox.add([item("m1"), item("m2")])
    monkeypatch.setattr(sqlite_inbox.engine.dialect, "do_executemany", original)
    assert synchronous_of_an_idle_connection(sqlite_inbox) == NORMAL
    assert sqlite_inbox.add([item("m1"), item("m2")]) == ["m1", "m2"]  # nothing half-written before
    assert sqlite_inbox.states() == {"pending": 2}


def test_a_database_server_is_left_alone(inbox: Inbox) -> None:
    if inbox.engine.dialect.name == "sqlite":
        pytest.skip("the server's own commits are durable")
    assert inbox.add([item("m1")]) == ["m1"]  # no PRAGMA sent to PostgreSQL
