"""The production topology: two Rasa replicas, each running the worker and the sender, sharing the tracker
store and the queue in PostgreSQL and the lock store in Redis; webhooks at the receiver (connectors/receiver.py).

Each replica holds the conversations it works on with PostgreSQL advisory locks on its own session: a killed
replica's session ends, and its conversations are the survivor's at once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from rasa.core.lock import Ticket, TicketLock
from rasa.core.lock_store import RedisLockStore
from sqlalchemy import create_engine, text

from tests.postgres import temporary_database

from .harness import Stack, text_webhook, wait_for

pytestmark = pytest.mark.integration

# Rasa's Redis lock of a conversation a killed replica was answering lasts this long (seconds).
LEFT_TICKET_LIFETIME = 10
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL_RASA", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_live") as url, \
            Stack(tmp_path_factory.mktemp("postgres_topology"), tracker_db_url=url,
                  with_evolution=False, replicas=2, redis_lock_prefix=f"voltbay{uuid.uuid4().hex[:8]}",
                  extra_env={"TICKET_LOCK_LIFETIME": str(LEFT_TICKET_LIFETIME)}).running() as running:
        yield running


def inbox_query(stack: Stack, sql: str, **params: object) -> list[Any]:
    """Rows of one query on the stack's inbox database (a throwaway engine, as another process would)."""
    engine = create_engine(stack.inbox_url, future=True)
    with engine.connect() as conn:
        rows = conn.execute(text(sql), params).all()
    engine.dispose()
    return rows


def inbox_states(stack: Stack, prefix: str) -> dict[str, int]:
    return dict(inbox_query(stack, "SELECT state, COUNT(*) FROM wa_inbox WHERE message_id LIKE :p GROUP BY state",
                            p=f"{prefix}%"))


def test_a_message_stored_by_the_receiver_is_answered(pg_stack: Stack) -> None:
    user = "44722000001"
    assert pg_stack.post_webhook(text_webhook(user, "wamid.pg.1", "hi")) == 200
    (greeting,) = wait_for(lambda: pg_stack.sent_to(user), 15, what="greeting")
    assert greeting["type"] == "interactive"
    assert pg_stack.post_webhook(text_webhook(user, "wamid.pg.2", "do you take paypal")) == 200
    wait_for(lambda: len(pg_stack.sent_to(user)) >= 2, 15, what="second answer")
    user_events = [e for e in pg_stack.tracker(user)["events"] if e["event"] == "user"]
    assert [e["message_id"] for e in user_events] == ["wamid.pg.1", "wamid.pg.2"]  # the tracker in PostgreSQL
    wait_for(lambda: inbox_states(pg_stack, "wamid.pg.") == {"done": 2}, 15, what="rows marked done")


def test_duplicate_deliveries_get_one_reply(pg_stack: Stack) -> None:
    user = "44722000002"
    body = text_webhook(user, "wamid.pg.dup", "hi")
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(pg_stack.post_webhook, [body] * 3)) == [200, 200, 200]
    wait_for(lambda: pg_stack.sent_to(user), 15, what="greeting")
    wait_for(lambda: inbox_states(pg_stack, "wamid.pg.dup") == {"done": 1}, 15, what="one row, done")
    assert len(pg_stack.sent_to(user)) == 1


def test_a_ticket_left_in_rasas_redis_lock_delays_the_answer_but_never_loses_it(pg_stack: Stack) -> None:
    """A replica killed mid-turn leaves its Redis ticket; its clock ran 1 s ahead, so the ticket lapses
    after the one the next turn takes. Rasa's own lock then waits forever (connectors/lock_store.py)."""
    user = "44722000003"
    store = RedisLockStore(host="127.0.0.1", port=6379, key_prefix=pg_stack.redis_lock_prefix)
    store.save_lock(TicketLock(user, deque([Ticket(0, time.time() + LEFT_TICKET_LIFETIME + 1)])))
    assert pg_stack.post_webhook(text_webhook(user, "wamid.pg.left", "hi")) == 200
    wait_for(lambda: pg_stack.sent_to(user), LEFT_TICKET_LIFETIME + 15, what="the greeting once the ticket lapsed")
    wait_for(lambda: inbox_states(pg_stack, "wamid.pg.left") == {"done": 1}, 15, what="the row done")
    assert store.get_lock(user) is None  # the turn gave its ticket back
    assert len(pg_stack.sent_to(user)) == 1


def claim_holders(stack: Stack) -> set[int]:
    """The PostgreSQL sessions holding a conversation (an advisory lock) in the queue's database."""
    return {pid for (pid,) in inbox_query(
        stack, "SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
               "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()")}


def user_message_ids(stack: Stack, user: str) -> list[str]:
    return [e["message_id"] for e in stack.tracker(user)["events"] if e["event"] == "user"]


# Last in this module: it leaves the second replica dead.
def test_two_replicas_answer_each_message_once_in_order_and_one_killed_loses_nothing(pg_stack: Stack) -> None:
    script = ["hi", "do you take paypal", "thanks"]
    reference = "44722000900"  # how many sends each answer takes, from a conversation nobody disturbs
    for turn, text_ in enumerate(script):
        assert pg_stack.post_webhook(text_webhook(reference, f"wamid.ref.{turn}", text_)) == 200
        wait_for(lambda t=turn: user_message_ids(pg_stack, reference) == [f"wamid.ref.{n}" for n in range(t + 1)]
                 and inbox_states(pg_stack, "wamid.ref.") == {"done": t + 1}, 20, what="reference answer")
    time.sleep(1)
    sends_per_conversation = len(pg_stack.sent_to(reference))

    users = [f"346225{n:05d}" for n in range(30)]

    def converse(user: str) -> list[int]:  # in order per customer, as WhatsApp delivers them
        return [pg_stack.post_webhook(text_webhook(user, f"wamid.rep.{user}.{turn}", text_))
                for turn, text_ in enumerate(script)]

    holders_seen: set[int] = set()
    with ThreadPoolExecutor(10) as pool:
        acks = list(pool.map(converse, users))
    assert acks == [[200, 200, 200]] * 30  # all stored
    wait_for(lambda: holders_seen.update(claim_holders(pg_stack)) or len(holders_seen) >= 2
             or None, 30, interval=0.05, what="both replicas holding conversations")
    wait_for(lambda: sum(1 for u in users if pg_stack.sent_to(u)) >= 5, 60, what="the first answers")
    pg_stack.kill_rasa(replica=1)  # mid-flight: its conversations are taken over by the other replica
    wait_for(lambda: inbox_states(pg_stack, "wamid.rep.") == {"done": 90}, 180, what="all 90 messages done")
    time.sleep(6)  # a send that would double would have arrived by now
    for user in users:
        assert user_message_ids(pg_stack, user) == [f"wamid.rep.{user}.{turn}" for turn in range(3)], user
    doubled = {u: n for u in users if (n := len(pg_stack.sent_to(u))) != sends_per_conversation}
    assert doubled == {}
    assert claim_holders(pg_stack) == set()  # every claim given back, or ended with the killed session
