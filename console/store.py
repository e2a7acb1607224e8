"""Reads and writes of the console: queue, one conversation, notes, canned responses, audit, CSAT."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from sqlalchemy import and_, desc, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from console.auth import audit
from console.readers import Readers, parse_event
from console.tables import ASSIGNED, CLOSED, WAITING, agents, audit_log, canned_responses, conversations, notes

logger = logging.getLogger(__name__)

FILTERS = ("unassigned", "mine", "all", "closed")
PAGE = 50
MAX_NOTE = 4000
SHORTCUT = re.compile(r"^[a-z0-9_-]{1,40}$")
PLACEHOLDER = re.compile(r"\{(customer_name|agent_name|order_number)\}")
WINDOW_SECONDS = 24 * 3600  # WhatsApp's customer-service window


class ConsoleError(ValueError):
    """A request the console refuses, with the reason to show (HTTP 400/404/409)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def queue(conn: Connection, view: str, agent_id: int, limit: int = PAGE, offset: int = 0) -> list[dict[str, Any]]:
    """Waiting conversations oldest first; `closed` newest first."""
    if view not in FILTERS:
        raise ConsoleError(f"filter: one of {', '.join(FILTERS)}")
    c = conversations
    query = select(c, agents.c.name.label("agent_name")).outerjoin(agents, agents.c.id == c.c.assigned_to)
    if view == "unassigned":
        query = query.where(c.c.status == WAITING).order_by(c.c.waiting_since)
    elif view == "mine":
        query = query.where(and_(c.c.assigned_to == agent_id, c.c.status == ASSIGNED)).order_by(c.c.waiting_since)
    elif view == "all":
        query = query.where(c.c.status.in_((WAITING, ASSIGNED))).order_by(c.c.waiting_since)
    else:
        query = query.where(c.c.status == CLOSED).order_by(desc(c.c.closed_at))
    return [dict(r._mapping) for r in conn.execute(query.limit(min(limit, 200)).offset(max(offset, 0)))]


def queue_counts(conn: Connection, agent_id: int) -> dict[str, int]:
    c = conversations
    rows = conn.execute(select(c.c.status, func.count()).where(c.c.status.in_((WAITING, ASSIGNED)))
                        .group_by(c.c.status)).all()
    by_status = {status: int(count) for status, count in rows}
    mine = conn.execute(select(func.count()).select_from(c)
                        .where(and_(c.c.assigned_to == agent_id, c.c.status == ASSIGNED))).scalar()
    return {"unassigned": by_status.get(WAITING, 0), "mine": int(mine or 0),
            "all": by_status.get(WAITING, 0) + by_status.get(ASSIGNED, 0)}


def conversation(conn: Connection, sender_id: str) -> dict[str, Any]:
    row = conn.execute(select(conversations, agents.c.name.label("agent_name"))
                       .outerjoin(agents, agents.c.id == conversations.c.assigned_to)
                       .where(conversations.c.sender_id == sender_id)).first()
    if row is None:
        raise ConsoleError("no such conversation", 404)
    return dict(row._mapping)


def outside_window(row: dict[str, Any], now: float | None = None) -> bool:
    last = row.get("last_customer_at")
    return bool(last) and ((now or time.time()) - float(last)) > WINDOW_SECONDS


def tracker_events(readers: Readers, sender_id: str, limit: int = 2000) -> list[dict[str, Any]]:
    """The conversation's events across sessions, oldest first (the last `limit`)."""
    table = readers.table(readers.tracker, "events")
    if table is None:
        return []
    with readers.tracker.connect() as conn:
        rows = conn.execute(select(table.c.id, table.c.data).where(table.c.sender_id == sender_id)
                            .order_by(desc(table.c.id)).limit(limit)).all()
    events = (parse_event(event_id, data) for event_id, data in reversed(rows))
    return [event for event in events if event]


def sends_and_statuses(readers: Readers, sender_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The channels' send records of this conversation and the delivery statuses of those sends."""
    outbound = readers.table(readers.inbox, "wa_outbound")
    statuses = readers.table(readers.inbox, "wa_statuses")
    if outbound is None:
        return [], []
    with readers.inbox.connect() as conn:
        sends = [dict(r._mapping) for r in conn.execute(
            select(outbound.c.message_id, outbound.c.state, outbound.c.error, outbound.c.error_code,
                   outbound.c.created_at).where(outbound.c.conversation_id == sender_id)
            .order_by(outbound.c.id).limit(5000))]
        ids = [s["message_id"] for s in sends if s["message_id"]]
        found: list[dict[str, Any]] = []
        if statuses is not None:
            for start in range(0, len(ids), 500):
                found += [dict(r._mapping) for r in conn.execute(
                    select(statuses.c.message_id, statuses.c.status, statuses.c.errors)
                    .where(statuses.c.message_id.in_(ids[start:start + 500])))]
    return sends, found


def unanswered_messages(readers: Readers, sender_id: str, limit: int = 500) -> list[dict[str, Any]]:
    """The conversation's inbox rows the bot did not answer: deletions, edits, number changes, reactions."""
    inbox = readers.table(readers.inbox, "wa_inbox")
    if inbox is None:
        return []
    with readers.inbox.connect() as conn:
        rows = conn.execute(select(inbox.c.message_id, inbox.c.state, inbox.c.message, inbox.c.received_at)
                            .where(and_(inbox.c.conversation_id == sender_id,
                                        inbox.c.state.in_(("skipped", "revoked", "edited"))))
                            .order_by(desc(inbox.c.id)).limit(limit)).all()
    found = []
    for row in reversed(rows):
        try:
            message = json.loads(row.message)
        except ValueError:
            logger.warning("inbox row %s is not JSON; not shown", row.message_id)
            continue
        found.append({**row._mapping, "message": message if isinstance(message, dict) else {}})
    return found


def claim(conn: Connection, sender_id: str, agent_id: int, by: int) -> None:
    """Assign a waiting (or reassign an assigned) conversation; closed or bot conversations refuse."""
    done = conn.execute(update(conversations)
                        .where(and_(conversations.c.sender_id == sender_id,
                                    conversations.c.status.in_((WAITING, ASSIGNED))))
                        .values(status=ASSIGNED, assigned_to=agent_id, updated_at=time.time())).rowcount
    if not done:
        raise ConsoleError("this conversation is not waiting for a person", 409)
    audit(conn, by, "claim" if agent_id == by else "assign", sender_id, agent_id=agent_id)


def mark(conn: Connection, sender_id: str, status: str, by: int, **values: Any) -> None:
    conn.execute(update(conversations).where(conversations.c.sender_id == sender_id)
                 .values(status=status, updated_at=time.time(), **values))


def add_note(conn: Connection, sender_id: str, agent_id: int, text: str) -> int:
    text = (text or "").strip()
    if not 1 <= len(text) <= MAX_NOTE:
        raise ConsoleError(f"note: 1 to {MAX_NOTE} characters")
    note_id = conn.execute(insert(notes).values(sender_id=sender_id, agent_id=agent_id, text=text,
                                                created_at=time.time())).inserted_primary_key[0]
    audit(conn, agent_id, "note", sender_id, note_id=note_id)
    return int(note_id)


def list_notes(conn: Connection, sender_id: str) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(
        select(notes.c.id, notes.c.text, notes.c.created_at, agents.c.name.label("agent_name"))
        .join(agents, agents.c.id == notes.c.agent_id).where(notes.c.sender_id == sender_id).order_by(notes.c.id))]


def canned(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(canned_responses).order_by(canned_responses.c.shortcut))]


def save_canned(conn: Connection, by: int, shortcut: str, title: str, text: str, canned_id: int | None = None) -> int:
    shortcut = (shortcut or "").strip().lower()
    title, text = " ".join((title or "").split()), (text or "").strip()
    if not SHORTCUT.match(shortcut):
        raise ConsoleError("shortcut: 1–40 of a-z, 0-9, _ and -")
    if not 1 <= len(title) <= 100 or not 1 <= len(text) <= 4096:
        raise ConsoleError("title: 1–100 characters; text: 1–4096 characters")
    unknown = set(re.findall(r"\{(\w+)\}", text)) - {"customer_name", "agent_name", "order_number"}
    if unknown:
        raise ConsoleError(f"unknown placeholder(s): {', '.join(sorted(unknown))}")
    clash = conn.execute(select(canned_responses.c.id).where(canned_responses.c.shortcut == shortcut)).scalar()
    if clash is not None and clash != canned_id:
        raise ConsoleError("shortcut: already used", 409)
    values = {"shortcut": shortcut, "title": title, "text": text, "updated_at": time.time()}
    if canned_id is None:
        canned_id = int(conn.execute(insert(canned_responses).values(**values)).inserted_primary_key[0])
    elif not conn.execute(update(canned_responses).where(canned_responses.c.id == canned_id).values(**values)).rowcount:
        raise ConsoleError("no such canned response", 404)
    audit(conn, by, "canned_saved", None, canned_id=canned_id, shortcut=shortcut)
    return canned_id


def delete_canned(conn: Connection, by: int, canned_id: int) -> None:
    if not conn.execute(canned_responses.delete().where(canned_responses.c.id == canned_id)).rowcount:
        raise ConsoleError("no such canned response", 404)
    audit(conn, by, "canned_deleted", None, canned_id=canned_id)


def fill_placeholders(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1)) or "", text)


def audit_entries(conn: Connection, sender_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    query = select(audit_log, agents.c.email).outerjoin(agents, agents.c.id == audit_log.c.agent_id)
    if sender_id:
        query = query.where(audit_log.c.sender_id == sender_id)
    return [dict(r._mapping) for r in conn.execute(query.order_by(desc(audit_log.c.id)).limit(limit))]


def csat_list(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    c = conversations
    return [dict(r._mapping) for r in conn.execute(
        select(c.c.sender_id, c.c.customer_name, c.c.csat, c.c.closed_at, agents.c.name.label("agent_name"))
        .outerjoin(agents, agents.c.id == c.c.closed_by)
        .where(or_(c.c.csat.is_not(None), c.c.status == CLOSED)).order_by(desc(c.c.closed_at)).limit(limit))]
