"""`Inbox.advance` for a turn that offered options or cleared them: the menu is saved with the claim of the
next row (on PostgreSQL in the same single statement), replaced, cleared, and saved even when the lease is lost."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from connectors.inbox import PROCESSING, Inbox
from connectors.inbox_tables import leases
from tests.rasa_env.conftest import watch_statements
from tests.rasa_env.inbox_support import item


def test_advancing_saves_replaces_and_clears_the_menu_in_the_claims_statement(inbox: Inbox) -> None:
    inbox.add([item(f"m{n}", "c1", n) for n in range(1, 6)] + [item("o1", "c2", 1)])
    inbox.save_menu("whatsapp", "c2", {"1": "/other"})  # another conversation's menu is never touched
    first = inbox.claim_next("c1", "whatsapp")
    assert first is not None and first.menu == {}
    statements: list[str] = []
    watch_statements(inbox, statements.append)

    second = inbox.advance(first, {"1": "/affirm", "2": "/deny"}, [first.id])  # first menu: inserted
    if inbox.engine.dialect.name == "postgresql":
        assert len(statements) == 1 and "menu_saved AS" in statements[0] and "renewed AS" in statements[0]
    assert second is not None and second.message_id == "m2" and second.menu == {"1": "/affirm", "2": "/deny"}
    assert inbox.menu("whatsapp", "c1") == {"1": "/affirm", "2": "/deny"}

    statements.clear()
    third = inbox.advance(second, {"1": "/shipping"}, [second.id], [first.id])  # replaced
    if inbox.engine.dialect.name == "postgresql":
        assert len(statements) == 1
    assert third is not None and third.message_id == "m3" and third.menu == {"1": "/shipping"}
    assert inbox.menu("whatsapp", "c1") == {"1": "/shipping"}

    statements.clear()
    fourth = inbox.advance(third, {}, [third.id], [second.id])  # the turn offered none: cleared
    if inbox.engine.dialect.name == "postgresql":
        assert len(statements) == 1 and "menu_cleared AS" in statements[0]  # one round trip, saving or not
    assert fourth is not None and fourth.message_id == "m4" and fourth.menu == {}
    assert inbox.menu("whatsapp", "c1") == {}
    assert inbox.menu("whatsapp", "c2") == {"1": "/other"}

    fifth = inbox.advance(fourth, None, [fourth.id], [third.id])  # None: the turn did not reply, menu left alone
    assert fifth is not None and fifth.message_id == "m5" and fifth.menu == {}


def test_a_menu_is_saved_even_when_the_lease_was_lost(inbox: Inbox, caplog: pytest.LogCaptureFixture) -> None:
    """As in the transaction: the options the customer now sees are stored; the next row is left to the
    lease's holder."""
    inbox.add([item("m1", "c1", 1), item("m2", "c1", 2)])
    first = inbox.claim_next("c1", "whatsapp")
    assert first is not None
    with inbox.engine.begin() as conn:  # the lease expired and another worker took it
        conn.execute(update(leases).values(owner="another-worker"))
    assert inbox.advance(first, {"1": "/affirm"}, [first.id]) is None
    assert inbox.menu("whatsapp", "c1") == {"1": "/affirm"}
    assert inbox.states() == {PROCESSING: 1, "pending": 1}
    assert "lost the lease of a conversation while answering m1" in caplog.text


def test_hostile_options_are_stored_as_data(inbox: Inbox) -> None:
    """Payloads come from the bot's domain, but whatever they hold is a bound parameter, never SQL."""
    inbox.add([item("m1", "c1", 1), item("m2", "c1", 2)])
    first = inbox.claim_next("c1", "whatsapp")
    assert first is not None
    hostile = {"1": "'); DROP TABLE wa_menus; --", "2": "/intent{\"x\": \"$1 :menu %s\"}"}
    second = inbox.advance(first, hostile, [first.id])
    assert second is not None and second.menu == hostile
    assert inbox.menu("whatsapp", "c1") == hostile
