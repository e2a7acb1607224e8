"""bench/whatsapp_vs_rest.py on a database an earlier run used: its message ids would come again and be
dropped as duplicates (the run then waited forever for replies), so it refuses to start instead."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from bench.whatsapp_vs_rest import rows_left_in
from connectors.inbox import Inbox
from tests.rasa_env.inbox_support import item


def url_of(inbox: Inbox) -> str:
    return inbox.engine.url.render_as_string(hide_password=False)


def test_an_empty_database_or_one_without_our_tables_is_taken(inbox: Inbox, tmp_path: Path) -> None:
    assert rows_left_in(url_of(inbox)) == ""  # the inbox's tables exist, without rows
    assert rows_left_in(f"sqlite:///{tmp_path / 'new.db'}") == ""  # nothing at all yet


def test_rows_of_an_earlier_run_are_named(inbox: Inbox) -> None:
    inbox.add([item("wamid.bench.1"), item("wamid.bench.2")])
    with inbox.engine.begin() as conn:  # Rasa's tracker store table, as a REST run leaves it
        conn.execute(text("CREATE TABLE events (id INTEGER PRIMARY KEY, sender_id VARCHAR(255))"))
        conn.execute(text("INSERT INTO events (id, sender_id) VALUES (1, 'rest-r0-0')"))
    assert rows_left_in(url_of(inbox)) == "1 rows in events, 2 rows in wa_inbox"
