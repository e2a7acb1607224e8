"""The production topology: Rasa's tracker store and the inbox in PostgreSQL, webhooks at connectors.ingest.

The worker's poll is set to 30 s here, so a reply within seconds can only come from the
LISTEN/NOTIFY wake-up the ingest's storing statement sends to the Rasa process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import create_engine, text

from tests.postgres import temporary_database

from .harness import Stack, text_webhook, wait_for

pytestmark = pytest.mark.integration

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL_RASA", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_live") as url, \
            Stack(tmp_path_factory.mktemp("postgres_topology"), with_ingest=True, tracker_db_url=url,
                  with_evolution=False, extra_env={"WHATSAPP_POLL_INTERVAL": "30"}).running() as running:
        yield running


def inbox_states(stack: Stack, prefix: str) -> dict[str, int]:
    engine = create_engine(stack.inbox_url, future=True)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, COUNT(*) FROM wa_inbox WHERE message_id LIKE :p GROUP BY state"),
                            {"p": f"{prefix}%"}).all()
    engine.dispose()
    return dict(rows)


def test_a_message_stored_by_the_ingest_is_answered_at_once(pg_stack: Stack) -> None:
    user = "34622000001"
    assert pg_stack.post_webhook(text_webhook(user, "wamid.pg.1", "hi")) == 200
    (greeting,) = wait_for(lambda: pg_stack.sent_to(user), 15, what="greeting (a 30 s poll could not bring it)")
    assert greeting["type"] == "interactive"
    assert pg_stack.post_webhook(text_webhook(user, "wamid.pg.2", "do you take paypal")) == 200
    wait_for(lambda: len(pg_stack.sent_to(user)) >= 2, 15, what="second answer")
    user_events = [e for e in pg_stack.tracker(user)["events"] if e["event"] == "user"]
    assert [e["message_id"] for e in user_events] == ["wamid.pg.1", "wamid.pg.2"]  # the tracker in PostgreSQL
    wait_for(lambda: inbox_states(pg_stack, "wamid.pg.") == {"done": 2}, 15, what="rows marked done")


def test_duplicate_deliveries_get_one_reply(pg_stack: Stack) -> None:
    user = "34622000002"
    body = text_webhook(user, "wamid.pg.dup", "hi")
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(pg_stack.post_webhook, [body] * 3)) == [200, 200, 200]
    wait_for(lambda: pg_stack.sent_to(user), 15, what="greeting")
    wait_for(lambda: inbox_states(pg_stack, "wamid.pg.dup") == {"done": 1}, 15, what="one row, done")
    assert len(pg_stack.sent_to(user)) == 1
