"""An index on Rasa's SQL tracker store for the question every message asks: is a person handling this conversation?

The answer is the conversation's last `pause` or `resume` event (connectors/inbox_statements.py,
LAST_PAUSE_OR_RESUME). Rasa indexes `events` by `sender_id` only, so the look-up read every event
the conversation ever had: a WhatsApp conversation is the customer's number, and its events pile up
for as long as the customer writes. Measured through asyncpg, as the worker runs it: with 1,000
events per conversation the claim and the advance cost PostgreSQL 1.08 ms of CPU each instead of
0.20–0.23 ms, growing with every event; with this partial index 0.23 ms, however many. The index holds
only the pause and resume events (rare), so Rasa's writes of every other event do not grow it.

Created once, when the channel starts on a SQL tracker store (PostgreSQL: CONCURRENTLY, so Rasa's writes
go on while an existing table is indexed; a build a crash cut off leaves an invalid index, which is
dropped and built again). Without it everything works, only slower: any failure is logged, never raised.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

PAUSE_INDEX = "ix_events_pause_resume"
# Our own names and constants, never input.
_COLUMNS = "events (sender_id, id) WHERE type_name IN ('pause', 'resume')"
_INVALID_ON_POSTGRESQL = text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")
# Both channels (Cloud API, Evolution) start on the same tracker store: one build per database and process.
_lock = threading.Lock()
_made: set[str] = set()


def create_pause_index(engine: Engine) -> bool:
    """Make sure the index exists on the `events` table `engine` reaches (Rasa's own engine, so its schema
    settings apply). True: it exists now; False: no `events` table, a database without partial indexes, or
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
    try:
        # CREATE INDEX CONCURRENTLY cannot run inside a transaction block.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not inspect(conn).has_table("events"):
                return False
            if dialect == "postgresql" and conn.execute(_INVALID_ON_POSTGRESQL, {"name": PAUSE_INDEX}).scalar():
                logger.warning("index %s was left invalid by an interrupted build; building it again", PAUSE_INDEX)
                conn.execute(text(f"DROP INDEX {concurrently}IF EXISTS {PAUSE_INDEX}"))
            conn.execute(text(f"CREATE INDEX {concurrently}IF NOT EXISTS {PAUSE_INDEX} ON {_COLUMNS}"))
        return True
    except Exception as error:  # another replica building it at the same moment, no rights on Rasa's table…
        logger.warning("could not create index %s on Rasa's events table (%s): asking whether a person handles "
                       "a conversation reads all of its events until it exists", PAUSE_INDEX, error)
        return False
