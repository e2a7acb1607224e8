"""Per-message look-ups on long conversations, without and with connectors/tracker_indexes.py's indexes, one run.

    .venv/rasa/bin/python -m bench.tracker_lookups [--postgres postgresql://…/postgres] [--events 1000]

Every message asks whether a person handles its conversation (the last pause/resume event in Rasa's
`events`), and Rasa retrieves its tracker from the last session start. A WhatsApp conversation is the
customer's number, so its events pile up for as long as the customer writes. This fills Rasa's own table
(made by its SQLTrackerStore) with `--conversations` × `--events` events (a session start every 50) and
measures, before the indexes (the baseline) and after them:
- PostgreSQL: the database's CPU per claim and per advance (they carry the pause question), run through
  asyncpg as the worker runs them, and the same without the question at all (the floor); per retrieval by
  Rasa's own `SQLTrackerStore.retrieve`; read from the server processes' `/proc` times;
- SQLite: Rasa's loop CPU per pause look-up (the read receipt asks it there).
The PostgreSQL part needs a server; it runs in a database of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from bench.process_cpu import process_cpu_seconds
from bench.scratch_database import scratch_database
from connectors.inbox import Inbox, InboxItem, create_inbox_engine
from connectors.inbox_calls import ON_EVENTS
from connectors.inbox_statements import LAST_PAUSE_OR_RESUME
from connectors.tracker_indexes import _made, create_tracker_indexes

STATEMENTS = 300


def fill(engine: Engine, conversations: int, events: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO events (sender_id, type_name, timestamp, data) VALUES (:s, :t, :n, :d)"),
                     [{"s": f"c{n % conversations}", "t": "session_started" if n // conversations % 50 == 0 else "user",
                       "n": float(n), "d": "{}"} for n in range(conversations * events)])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def server_cpu_seconds(engine: Engine) -> float:
    with engine.connect() as conn:
        pids = list(conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                                      " AND backend_type = 'client backend'")).scalars())
    return sum(process_cpu_seconds(pid) for pid in pids)


async def claims_and_advances(url: str, engine: Engine, conversations: int, ask: bool) -> tuple[float, float]:
    """PostgreSQL CPU per claim and per advance (ms), STATEMENTS of each."""
    inbox = Inbox(create_inbox_engine(url), calls=ON_EVENTS)
    inbox.pauses_in_this_database = ask
    tag = uuid.uuid4().hex[:6]
    inbox.add([InboxItem(f"{tag}.{n}", "whatsapp", f"c{n % conversations}", f"c{n % conversations}", "PNID", 1_000 + n,
                         {"text": "hi", "metadata": {}}) for n in range(2 * STATEMENTS + 40)])
    rows = [await inbox.call(inbox.claim_next, f"c{n % conversations}", "whatsapp") for n in range(20)]  # warm
    before = server_cpu_seconds(engine)
    rows = [await inbox.call(inbox.claim_next, f"c{n % conversations}", "whatsapp") for n in range(STATEMENTS)]
    claim = (server_cpu_seconds(engine) - before) * 1000 / STATEMENTS
    before, advanced = server_cpu_seconds(engine), 0
    for row in rows:
        if row is not None:
            await inbox.call(inbox.advance, row, None, [row.id])
            advanced += 1
    advance = (server_cpu_seconds(engine) - before) * 1000 / max(advanced, 1)
    if advanced < STATEMENTS:
        raise RuntimeError(f"only {advanced} of {STATEMENTS} claims found a row")
    await inbox.call(inbox.release_leases)  # the next run is another worker (its own identity)
    await inbox.close()
    return claim, advance


async def retrievals(store: SQLTrackerStore, conversations: int) -> float:
    """PostgreSQL CPU per retrieval of a tracker by Rasa's own store (ms)."""
    for n in range(10):
        await store.retrieve(f"c{n % conversations}")
    before = server_cpu_seconds(store.engine)
    for n in range(STATEMENTS):
        await store.retrieve(f"c{n % conversations}")
    return (server_cpu_seconds(store.engine) - before) * 1000 / STATEMENTS


def postgresql(admin_url: str, conversations: int, events: int) -> None:
    with scratch_database(admin_url, "voltbay_pause_bench") as url:
        parts = make_url(url)
        store = SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parts.host, port=parts.port,
                                db=parts.database, username=parts.username, password=parts.password)
        fill(store.engine, conversations, events)
        floor = asyncio.run(claims_and_advances(url, store.engine, conversations, ask=False))
        before = asyncio.run(claims_and_advances(url, store.engine, conversations, ask=True))
        retrieval_before = asyncio.run(retrievals(store, conversations))
        _made.clear()
        create_tracker_indexes(store.engine)
        after = asyncio.run(claims_and_advances(url, store.engine, conversations, ask=True))
        retrieval_after = asyncio.run(retrievals(store, conversations))
        print(f"PostgreSQL, {events} events a conversation: database CPU per claim / advance")
        print(f"  without the pause question (floor): {floor[0]:.3f} / {floor[1]:.3f} ms")
        print(f"  with it, Rasa's sender_id index only (baseline): {before[0]:.3f} / {before[1]:.3f} ms")
        print(f"  with it and {create_tracker_indexes.__module__}'s indexes: {after[0]:.3f} / {after[1]:.3f} ms"
              f"  ({before[0] / after[0]:.1f}× / {before[1] / after[1]:.1f}× less)")
        print(f"PostgreSQL: database CPU per retrieval of a tracker by Rasa's store {retrieval_before:.3f} ms "
              f"(baseline) → {retrieval_after:.3f} ms with the indexes")
        store.engine.dispose()


def sqlite(conversations: int, events: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pause_bench_") as tmp:
        store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(Path(tmp) / "rasa.db"))
        fill(store.engine, conversations, events)
        connection = sqlite3.connect(Path(tmp) / "rasa.db")
        look_up = LAST_PAUSE_OR_RESUME.format(sender="?")

        def per_look_up() -> float:
            started = time.process_time()
            for n in range(STATEMENTS * 3):
                connection.execute(look_up, (f"c{n % conversations}",)).fetchone()
            return (time.process_time() - started) * 1000 / (STATEMENTS * 3)

        before = per_look_up()
        _made.clear()
        create_tracker_indexes(store.engine)
        after = per_look_up()
        print(f"SQLite, {events} events a conversation: loop CPU per pause look-up {before:.3f} ms (baseline) → "
              f"{after:.4f} ms with the index ({before / after:.0f}× less)")
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server's admin URL (a database is made and dropped there); empty: SQLite only")
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--events", type=int, default=1000, help="events per conversation")
    args = parser.parse_args()
    sqlite(args.conversations, args.events)
    if args.postgres:
        postgresql(args.postgres, args.conversations, args.events)


if __name__ == "__main__":
    main()
