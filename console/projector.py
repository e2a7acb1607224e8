"""The queue, projected from Rasa's tracker store: one console row per conversation.

Rasa writes every event to the tracker store's `events` table (id increasing). The projector reads the
events after the last id it saw, folds them into the conversation rows (`apply_event`, pure) and
saves rows and position in one transaction, so a crash replays from the last saved id and nothing is
lost or counted twice. It polls; with an event broker configured, broker messages wake it early.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from console.readers import Readers, parse_event
from console.tables import ASSIGNED, BOT, CLOSED, WAITING, conversations, projector_state

POSITION = "tracker_events"
MAX_TEXT = 500


def new_conversation(sender_id: str) -> dict[str, Any]:
    return {"sender_id": sender_id, "channel": None, "business_number": None, "customer_name": None,
            "customer_number": None, "status": BOT, "reason": None, "summary": None, "waiting_since": None,
            "assigned_to": None, "last_message": None, "last_customer_at": None, "last_event_at": None,
            "last_event_id": 0, "csat": None, "closed_at": None, "closed_by": None, "updated_at": 0.0}


def _clip(text: Any) -> str:
    value = " ".join(str(text or "").split())
    return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"


def _csat(event: Mapping[str, Any]) -> int | None:
    parse = event.get("parse_data") or {}
    if (parse.get("intent") or {}).get("name") != "csat":
        return None
    for entity in parse.get("entities") or []:
        if entity.get("entity") == "csat_score":
            try:
                score = int(str(entity.get("value")).strip())
            except ValueError:
                return None
            return score if 1 <= score <= 5 else None
    return None


def apply_event(row: dict[str, Any], event: Mapping[str, Any], event_id: int) -> dict[str, Any]:
    """The conversation row after one tracker event (a new dict; `row` is not changed)."""
    row = dict(row)
    kind = event.get("event")
    at = float(event.get("timestamp") or time.time())
    row["last_event_id"] = max(int(row.get("last_event_id") or 0), event_id)
    row["last_event_at"] = at
    row["updated_at"] = time.time()
    if kind == "user":
        metadata = event.get("metadata") or {}
        row["channel"] = event.get("input_channel") or metadata.get("channel") or row["channel"]
        row["customer_name"] = _clip(metadata.get("profile_name") or metadata.get("push_name")) or row["customer_name"]
        number = metadata.get("wa_id") or metadata.get("user_id")
        row["customer_number"] = str(number)[:64] if number else row["customer_number"]
        business = metadata.get("display_phone_number") or metadata.get("phone_number_id")
        row["business_number"] = str(business)[:64] if business else row["business_number"]
        row["last_message"] = _clip(event.get("text")) or f"[{metadata.get('message_type') or 'message'}]"
        row["last_customer_at"] = at
        score = _csat(event)
        if score is not None and row["status"] in (CLOSED, BOT):
            row["csat"] = score  # the answer to the rating question sent on closing
        elif row["status"] == CLOSED:  # writing again after a close: the bot has it
            row["status"] = BOT
    elif kind == "slot" and event.get("name") == "handoff_reason" and event.get("value"):
        row["reason"] = _clip(event.get("value"))
    elif kind == "slot" and event.get("name") == "language" and event.get("value"):
        row["language"] = str(event.get("value"))[:8]
    elif kind == "slot" and event.get("name") == "handoff_summary" and event.get("value"):
        row["summary"] = str(event.get("value"))[:2000]
    elif kind == "pause":
        if row["status"] not in (WAITING, ASSIGNED):
            row.update(status=WAITING, waiting_since=at, assigned_to=None, closed_at=None)
    elif kind == "resume":
        closed = bool((event.get("metadata") or {}).get("closed"))
        row["status"] = CLOSED if closed else BOT
        row["closed_at"] = at if closed else row["closed_at"]
    elif kind == "restart":
        row["status"] = BOT
    return row


class Projector:
    def __init__(self, console: Engine, tracker: Engine | Readers, batch: int = 5000) -> None:
        self.console = console
        self.readers = tracker if isinstance(tracker, Readers) else Readers(tracker)
        self.tracker = self.readers.tracker
        self.batch = batch

    def position(self) -> int:
        with self.console.connect() as conn:
            value = conn.execute(select(projector_state.c.value).where(projector_state.c.name == POSITION)).scalar()
        return int(value or 0)

    def _fetch(self, after: int) -> list[tuple[int, str, dict[str, Any]]]:
        table = self.readers.table(self.tracker, "events")
        if table is None:
            return []  # Rasa has not created its tables yet
        query = select(table.c.id, table.c.sender_id, table.c.data).where(table.c.id > after) \
            .order_by(table.c.id).limit(self.batch)
        out = []
        with self.tracker.connect() as conn:
            for event_id, sender_id, data in conn.execute(query):
                out.append((int(event_id), str(sender_id), parse_event(event_id, data)))
        return out

    def run_once(self) -> int:
        """Project the next batch of events; returns how many were read."""
        after = self.position()
        batch = self._fetch(after)
        if not batch:
            return 0
        senders = sorted({sender for _id, sender, _e in batch})
        with self.console.begin() as conn:
            existing: dict[str, dict[str, Any]] = {}
            for chunk in _chunks(senders, 500):
                for row in conn.execute(select(conversations).where(conversations.c.sender_id.in_(chunk))
                                     .with_for_update()):  # a claim in between waits (PostgreSQL)
                    existing[row.sender_id] = dict(row._mapping)
            changed: dict[str, dict[str, Any]] = {}
            for event_id, sender, event in batch:
                row = changed.get(sender) or existing.get(sender) or new_conversation(sender)
                if event_id > int(row.get("last_event_id") or 0):
                    changed[sender] = apply_event(row, event, event_id)
            for sender, row in changed.items():
                if sender in existing:
                    conn.execute(conversations.update().where(conversations.c.sender_id == sender).values(**row))
                else:
                    conn.execute(conversations.insert().values(**row))
            last = batch[-1][0]
            updated = conn.execute(projector_state.update().where(projector_state.c.name == POSITION)
                                   .values(value=last))
            if updated.rowcount == 0:
                conn.execute(projector_state.insert().values(name=POSITION, value=last))
        return len(batch)

    def catch_up(self) -> int:
        total = 0
        while True:
            read = self.run_once()
            total += read
            if read < self.batch:
                return total


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
