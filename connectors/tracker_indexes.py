"""Indexes on Rasa's SQL tracker store for the look-ups every message makes, so they stay flat as conversations grow.

Rasa indexes `events` by `sender_id` alone, and a WhatsApp conversation is the customer's number: its
events pile up for as long as the customer writes, and each of these look-ups read all of them.
- Is a person handling the conversation? Its last `pause` or `resume` event (LAST_PAUSE_OR_RESUME, asked
  by the claim and the advance, or by the read receipt): `ix_events_pause_resume`, those events only.
- Rasa's own retrieval of the tracker starts from the time of the conversation's last `session_started`
  event (`SQLTrackerStore._event_query`, every turn, both channels): `ix_events_session_started`, those
  events only. (The events from there on are still found through Rasa's `sender_id` index: its query's
  "or there was no session start" leaves no range for an index to serve.)
Both hold only rare events, so Rasa's writes of every other event do not grow them. Figures:
bench/tracker_lookups.py.

Created once, when a channel starts on a SQL tracker store (PostgreSQL: CONCURRENTLY, so Rasa's writes go
on while an existing table is indexed; a build a crash cut off leaves an invalid index, which is dropped
and built again). Without them everything works, only slower: any failure is logged, never raised.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

# name → what it indexes; our own names and constants, never input.
INDEXES = {
    "ix_events_pause_resume": "events (sender_id, id) WHERE type_name IN ('pause', 'resume')",
    "ix_events_session_started": "events (sender_id, timestamp) WHERE type_name = 'session_started'",
}
_INVALID_ON_POSTGRESQL = text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")
# Both channels (Cloud API, Evolution) start on the same tracker store: one build per database and process.
_lock = threading.Lock()
_made: set[str] = set()


def create_tracker_indexes(engine: Engine) -> bool:
    """Make sure the indexes exist on the `events` table `engine` reaches (Rasa's own engine, so its schema
    settings apply). True: they exist now; False: no `events` table, a database without partial indexes, or
    a failure (logged)."""
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return False
    database = engine.url.render_as_string(hide_password=True)
    with _lock:
        if database in _made:
            return True
        made = _create(engine, dialect)
        if made:
            _made.add(database)
        return made


def _create(engine: Engine, dialect: str) -> bool:
    concurrently = "CONCURRENTLY " if dialect == "postgresql" else ""
    name = ""
    try:
        # CREATE INDEX CONCURRENTLY cannot run inside a transaction block.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not inspect(conn).has_table("events"):
                return False
            for name, indexed in INDEXES.items():
                if dialect == "postgresql" and conn.execute(_INVALID_ON_POSTGRESQL, {"name": name}).scalar():
                    logger.warning("index %s was left invalid by an interrupted build; building it again", name)
                    conn.execute(text(f"DROP INDEX {concurrently}IF EXISTS {name}"))
                conn.execute(text(f"CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {indexed}"))
        return True
    except Exception as error:  # another replica building it at the same moment, no rights on Rasa's table…
        logger.warning("could not create index %s on Rasa's events table (%s): the look-ups it serves read all of "
                       "a conversation's events until it exists", name, error)
        return False
