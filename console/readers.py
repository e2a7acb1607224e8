"""Rasa's tables (tracker store `events`, the channels' inbox), read only: reflection and event rows."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import NoSuchTableError, OperationalError, ProgrammingError

logger = logging.getLogger(__name__)


def parse_event(event_id: int, data: Any) -> dict[str, Any]:
    """The event dict of a stored row; {} (counted as read, changes nothing) when it is not one."""
    try:
        event = json.loads(data) if isinstance(data, (str, bytes)) else data
    except ValueError:
        event = None
    if not isinstance(event, dict):
        logger.warning("tracker event %s is not a JSON object; skipped", event_id)
        return {}
    return event


class Readers:
    """Rasa's tracker store and the channels' inbox, read only (tables reflected on first use)."""

    # A table not there yet (Rasa not started) is looked for again after this, not on every call.
    MISSING_RETRY_SECONDS = 1.0

    def __init__(self, tracker: Engine, inbox: Engine | None = None) -> None:
        self.tracker = tracker
        self.inbox = inbox if inbox is not None else tracker
        self._tables: dict[tuple[int, str], Table] = {}
        self._missing: dict[tuple[int, str], float] = {}

    def table(self, engine: Engine, name: str) -> Table | None:
        key = (id(engine), name)
        if key in self._tables:
            return self._tables[key]
        if time.monotonic() - self._missing.get(key, -1e9) < self.MISSING_RETRY_SECONDS:
            return None
        try:
            self._tables[key] = Table(name, MetaData(), autoload_with=engine)
        except (NoSuchTableError, OperationalError, ProgrammingError):
            self._missing[key] = time.monotonic()
            return None
        return self._tables[key]
