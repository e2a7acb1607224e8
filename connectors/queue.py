"""The database as the queue: the inbox of customer messages and the outbox of replies.

The inbox's statements (the outbox's drain is in connectors/sender.py): the same SQLAlchemy Core statements
on SQLite and PostgreSQL, each transaction a function of a Connection that `Database` runs without blocking
the event loop (connectors/queue_schema.py). See docs/architecture.md for how the processes use the tables.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.engine import Connection

from connectors.queue_schema import (
    EDITED,
    PENDING,
    QUEUED,
    REVOKED,
    SKIPPED,
    STALE,
    Database,
    add_missing_columns,
    aliases,
    inbox,
    insert_ignoring,
    menus,
    metadata,
    outbox,
    statuses,
)
from connectors.whatsapp.to_rasa import InboxItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboxRow(InboxItem):
    """A stored message taken by the worker."""

    id: int = 0
    attempts: int = 0
    menu: dict[str, str] = field(default_factory=dict)  # numbered options of the last reply: "1" → payload


@dataclass(frozen=True)
class Reply:
    """One platform message to send, as the outbox stores it."""

    payload: dict[str, Any]
    template: dict[str, Any] | None = None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    channel: str
    conversation_id: str
    business_id: str
    state: str
    payload: dict[str, Any]
    template: dict[str, Any] | None
    attempts: int
    created_at: float


def _json(value: str | None) -> Any:
    return json.loads(value) if value else None


class Queue:
    """The tables as the receiver, the worker and the sender use them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.dialect = db.dialect

    async def create_tables(self) -> None:
        """Create what is missing. Several processes may start at once on a new database: the loser
        of a race on a table gets an error, and by then the table exists, so a second try passes."""
        for attempt in range(2):
            try:
                await self.db.write(_create_tables)
                return
            except Exception:
                if attempt:
                    raise

    async def close(self) -> None:
        await self.db.dispose()

    # --- receiver -----------------------------------------------------------------------------
    async def store(self, items: Sequence[InboxItem], status_rows: Sequence[dict[str, Any]] = ()) -> None:
        """A webhook's messages (a message id already stored is dropped) and statuses, in one commit.

        A deletion marks its message revoked when no turn has begun on it (it is then never answered). An edit
        of a message no turn has begun on replaces it: the original is marked edited and the edit is answered;
        an edit of a message answered already (or unknown) is recorded only, for the agent to see."""
        if not items and not status_rows:
            return
        await self.db.write(self._store, items, status_rows, time.time())

    def _store(self, conn: Connection, items: Sequence[InboxItem], status_rows: Sequence[dict[str, Any]],
               now: float) -> None:
        rows = []
        for item in items:
            values = _inbox_values(item, now)
            values["conversation_id"] = _followed(conn, item.channel, item.conversation_id)
            original = item.message.get("revokes") or item.message.get("edits")
            if original:
                superseded = conn.execute(update(inbox).where(and_(
                    inbox.c.message_id == str(original)[:256], inbox.c.conversation_id == values["conversation_id"],
                    inbox.c.state == PENDING, inbox.c.attempts == 0))
                    .values(state=REVOKED if "revokes" in item.message else EDITED, updated_at=now))
                if "edits" in item.message and not superseded.rowcount:
                    values["state"] = SKIPPED
            if item.message.get("links"):
                values.update(self._link(conn, item, values["conversation_id"], now))
            rows.append(values)
        if rows:
            conn.execute(insert_ignoring(self.dialect, inbox), rows)
        if status_rows:
            conn.execute(statuses.insert(), list(status_rows))

    def _link(self, conn: Connection, item: InboxItem, conversation_id: str,
                    now: float) -> dict[str, Any]:
        """A changed number or BSUID: the new ids are linked to the conversation the customer wrote from, so
        that their next messages continue it (the tracker and its slots, one conversation in the console)
        and replies go to the new number. Nothing is linked when nobody wrote from the old ids, or to a new
        id that already has a conversation of its own (two conversations are never merged)."""
        links = item.message["links"]
        known = None
        for old in [conversation_id, *links.get("from", [])]:
            candidate = _followed(conn, item.channel, str(old))
            if _has_messages(conn, item.channel, candidate):
                known = candidate
                break
        if known is None:
            logger.info("%s: a number change from ids nobody wrote from; recorded, nothing linked", item.message_id)
            return {}
        for new in links.get("to", []):
            target = _followed(conn, item.channel, str(new))
            if target == known:
                continue
            if _has_messages(conn, item.channel, target):
                logger.warning("%s: the new id already has a conversation of its own; not merged", item.message_id)
                continue
            conn.execute(insert_ignoring(self.dialect, aliases).values(
                channel=item.channel, alias=str(new)[:128], conversation_id=known,
                linked_by=item.message_id, linked_at=now))
        last = _last_message(conn, item.channel, known)
        reply_to = links.get("reply_to") or (last.reply_to if last is not None else item.reply_to)
        return {"conversation_id": known, "reply_to": str(reply_to)[:128]}

    # --- worker -------------------------------------------------------------------------------
    async def latest_message_id(self) -> int:
        return await self.db.read(lambda conn: int(conn.execute(select(func.max(inbox.c.id))).scalar() or 0))

    async def pending_conversations(self, channel: str, exclude: Iterable[str] = (), limit: int = 64) -> list[str]:
        """Conversations with messages to answer, the one waiting longest first."""
        query = (select(inbox.c.conversation_id)
                 .where(and_(inbox.c.state == PENDING, inbox.c.channel == channel))
                 .group_by(inbox.c.conversation_id).order_by(func.min(inbox.c.id)).limit(limit))
        excluded = list(exclude)
        if excluded:
            query = query.where(inbox.c.conversation_id.not_in(excluded))
        return await self.db.read(lambda conn: list(conn.execute(query).scalars()))

    async def next_message(self, channel: str, conversation_id: str) -> InboxRow | None:
        """The conversation's oldest pending message, its attempt counted, with the conversation's menu.
        The caller holds the conversation (connectors/claims.py)."""
        return await self.db.write(_next_message, channel, conversation_id)

    async def finish(self, row: InboxRow, state: str, replies: Sequence[Reply] = (),
                     menu: dict[str, str] | None = None) -> list[int]:
        """The turn's end, in one transaction: its replies into the outbox, the menu its last reply
        offered (None: leave the stored one), and the message marked `state`. Returns the outbox ids."""
        def finish(conn: Connection) -> list[int]:
            now = time.time()
            ids = _queue(conn, row.channel, row.conversation_id, row.business_id, replies, row.message_id, now)
            if menu is not None and (menu or row.menu):
                _save_menu(conn, row.channel, row.conversation_id, menu, now)
            conn.execute(update(inbox).where(inbox.c.id == row.id).values(state=state, updated_at=now))
            return ids

        return await self.db.write(finish)

    async def mark_stale(self, channel: str, older_than: float) -> int:
        """Pending messages the platform dated before `older_than` (epoch s) are not answered."""
        statement = (update(inbox).where(and_(inbox.c.state == PENDING, inbox.c.channel == channel,
                                              inbox.c.sent_at < int(older_than)))
                     .values(state=STALE, updated_at=time.time()))
        return await self.db.write(lambda conn: int(conn.execute(statement).rowcount or 0))

    async def last_message_of(self, channel: str, conversation_id: str) -> InboxRow | None:
        """The customer's latest message on a channel: where a reply outside a turn goes (after a number
        change, the system message's row, which carries the new number)."""
        return await self.db.read(_last_message, channel, conversation_id)

    # --- outbox -------------------------------------------------------------------------------
    async def queue_replies(self, channel: str, conversation_id: str, business_id: str,
                            replies: Sequence[Reply], turn_key: str = "agent") -> list[int]:
        """Replies made outside a turn (an agent's, a reminder's), queued behind the bot's."""
        return await self.db.write(_queue, channel, conversation_id, business_id, replies, turn_key, time.time())

    async def send_states(self, row_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """state, message_id, error_code and error of outbox rows (what an agent's request waits for)."""
        if not row_ids:
            return {}
        query = select(outbox.c.id, outbox.c.state, outbox.c.message_id, outbox.c.error_code,
                       outbox.c.error).where(outbox.c.id.in_(list(row_ids)))
        return await self.db.read(lambda conn: {row.id: dict(row._mapping) for row in conn.execute(query)})

    async def save_menu(self, channel: str, conversation_id: str, menu: dict[str, str]) -> None:
        await self.db.write(_save_menu, channel, conversation_id, menu, time.time())

    async def counts(self) -> dict[str, dict[str, int]]:
        """Rows per state of both queues (health checks, tests)."""
        def counts(conn: Connection) -> dict[str, dict[str, int]]:
            return {name: dict(conn.execute(select(table.c.state, func.count()).group_by(table.c.state)).all())
                    for name, table in (("inbox", inbox), ("outbox", outbox))}

        return await self.db.read(counts)


def _create_tables(conn: Connection) -> None:
    metadata.create_all(conn)
    add_missing_columns(conn)


def _next_message(conn: Connection, channel: str, conversation_id: str) -> InboxRow | None:
    row = conn.execute(select(inbox).where(and_(
        inbox.c.channel == channel, inbox.c.conversation_id == conversation_id, inbox.c.state == PENDING))
        .order_by(inbox.c.id).limit(1)).first()
    if row is None:
        return None
    conn.execute(update(inbox).where(inbox.c.id == row.id).values(attempts=inbox.c.attempts + 1,
                                                                  updated_at=time.time()))
    menu = conn.execute(select(menus.c.menu).where(
        and_(menus.c.conversation_id == conversation_id, menus.c.channel == channel))).scalar()
    return _inbox_row(row, attempts=row.attempts + 1, menu=_json(menu) or {})


def _last_message(conn: Connection, channel: str, conversation_id: str) -> InboxRow | None:
    row = conn.execute(select(inbox).where(and_(
        inbox.c.channel == channel, inbox.c.conversation_id == conversation_id))
        .order_by(inbox.c.id.desc()).limit(1)).first()
    return None if row is None else _inbox_row(row, attempts=row.attempts, menu={})


def _queue(conn: Connection, channel: str, conversation_id: str, business_id: str, replies: Sequence[Reply],
           turn_key: str, now: float) -> list[int]:
    ids = []
    for n, reply in enumerate(replies, start=1):
        result = conn.execute(outbox.insert().values(
            channel=channel, conversation_id=conversation_id, business_id=business_id, state=QUEUED,
            turn_key=f"{turn_key}#{n}", payload=json.dumps(reply.payload, ensure_ascii=False),
            template=json.dumps(reply.template, ensure_ascii=False) if reply.template else None,
            attempts=0, created_at=now, updated_at=now))
        ids.append(int(result.inserted_primary_key[0]))
    return ids


def _followed(conn: Connection, channel: str, conversation_id: str) -> str:
    """The conversation a sender's id belongs to: the one it was linked to, else its own."""
    linked = conn.execute(select(aliases.c.conversation_id).where(and_(
        aliases.c.channel == channel, aliases.c.alias == conversation_id))).scalar()
    return str(linked or conversation_id)


def _has_messages(conn: Connection, channel: str, conversation_id: str) -> bool:
    return conn.execute(select(inbox.c.id).where(and_(
        inbox.c.channel == channel, inbox.c.conversation_id == conversation_id)).limit(1)).first() is not None


def _save_menu(conn: Connection, channel: str, conversation_id: str, menu: dict[str, str], now: float) -> None:
    conn.execute(delete(menus).where(and_(menus.c.conversation_id == conversation_id, menus.c.channel == channel)))
    if menu:
        conn.execute(menus.insert().values(conversation_id=conversation_id, channel=channel,
                                           menu=json.dumps(menu), updated_at=now))


def _inbox_values(item: InboxItem, now: float) -> dict[str, Any]:
    return {"message_id": item.message_id, "channel": item.channel, "conversation_id": item.conversation_id,
            "reply_to": item.reply_to, "business_id": item.business_id, "sent_at": item.sent_at,
            "received_at": now, "state": SKIPPED if "skip" in item.message else PENDING, "attempts": 0,
            "message": json.dumps(item.message, ensure_ascii=False), "updated_at": now}


def _inbox_row(row: Any, attempts: int, menu: dict[str, str]) -> InboxRow:
    return InboxRow(message_id=row.message_id, channel=row.channel, conversation_id=row.conversation_id,
                    reply_to=row.reply_to, business_id=row.business_id, sent_at=row.sent_at,
                    message=json.loads(row.message), id=row.id, attempts=attempts, menu=menu)
