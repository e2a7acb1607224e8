"""Durable inbox, delivery statuses, outbound failures and option menus of the WhatsApp channels.

SQLAlchemy Core (1.4 in the Rasa env, written 2.0-style), so the same code runs on
the tracker store's SQLite file and on PostgreSQL. Blocking calls: the channel runs
them in a thread (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

PENDING, PROCESSING, DONE, STALE, SKIPPED = "pending", "processing", "done", "stale", "skipped"
SENDING, SENT, FAILED_SEND, INTERRUPTED = "sending", "sent", "failed", "interrupted"

metadata = MetaData()

inbox = Table(
    "wa_inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(256), nullable=False, unique=True),  # wamid / Evolution key.id
    Column("channel", String(32), nullable=False),
    Column("conversation_id", String(128), nullable=False),
    Column("reply_to", String(128), nullable=False),
    Column("business_id", String(64), nullable=False),  # phone_number_id / Evolution instance
    Column("sent_at", Integer, nullable=False),  # the platform's timestamp (s)
    Column("received_at", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("message", Text, nullable=False),  # JSON: text + metadata for Rasa
    Column("updated_at", Float, nullable=False),
    Index("ix_wa_inbox_state_conversation", "state", "conversation_id", "id"),
)

statuses = Table(
    "wa_statuses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(256), nullable=False, index=True),  # our outbound wamid
    Column("status", String(16), nullable=False),
    Column("sent_at", Integer, nullable=False),
    Column("recipient_id", String(128)),
    Column("business_id", String(64), nullable=False),
    Column("errors", Text),
)

outbound = Table(
    "wa_outbound",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("channel", String(32), nullable=False),
    Column("conversation_id", String(128), nullable=False, index=True),
    Column("business_id", String(64), nullable=False),
    Column("message_id", String(256), index=True),  # returned by the platform when accepted
    # "<inbound message id>#<n>": the n-th send of the reply to that message. A reply
    # re-run after a crash skips the sends already made.
    Column("turn_key", String(300), index=True),
    Column("state", String(16), nullable=False),  # sending | sent | failed | interrupted
    Column("error_code", Integer),
    Column("error", Text),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

menus = Table(
    "wa_menus",
    metadata,
    Column("conversation_id", String(128), primary_key=True),
    Column("channel", String(32), primary_key=True),
    Column("menu", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)


@dataclass(frozen=True)
class InboxItem:
    """One customer message as the inbox stores it."""

    message_id: str
    channel: str
    conversation_id: str
    reply_to: str
    business_id: str
    sent_at: int
    message: dict[str, Any]  # {"text": ..., "metadata": {...}} or {"skip": reason}


@dataclass(frozen=True)
class InboxRow(InboxItem):
    """A stored message claimed for handling."""

    id: int
    attempts: int


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (console) do not block the webhook
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL against app crashes
    cursor.close()


def create_inbox_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, future=True, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, future=True, pool_pre_ping=True)


class Inbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    # --- inbound ------------------------------------------------------------
    def add(self, items: Sequence[InboxItem], now: float | None = None) -> list[str]:
        """Store new messages in one transaction; returns the ids that were new (duplicates are dropped)."""
        now = time.time() if now is None else now
        if not items:
            return []
        ids = [item.message_id for item in items]
        with self.engine.begin() as conn:
            known = set(conn.execute(select(inbox.c.message_id).where(inbox.c.message_id.in_(ids))).scalars())
            fresh: list[InboxItem] = []
            seen: set[str] = set()
            for item in items:
                if item.message_id in known or item.message_id in seen:
                    continue
                seen.add(item.message_id)
                fresh.append(item)
            if fresh:
                conn.execute(insert(inbox), [self._row(item, now) for item in fresh])
        return [item.message_id for item in fresh]

    def add_safely(self, items: Sequence[InboxItem]) -> list[str]:
        """`add`, retried once when a concurrent delivery of the same ids won the race."""
        try:
            return self.add(items)
        except IntegrityError:
            return self.add(items)

    @staticmethod
    def _row(item: InboxItem, now: float) -> dict[str, Any]:
        return {
            "message_id": item.message_id,
            "channel": item.channel,
            "conversation_id": item.conversation_id,
            "reply_to": item.reply_to,
            "business_id": item.business_id,
            "sent_at": item.sent_at,
            "received_at": now,
            "state": SKIPPED if "skip" in item.message else PENDING,
            "attempts": 0,
            "message": json.dumps(item.message, ensure_ascii=False),
            "updated_at": now,
        }

    def resume_unfinished(self) -> int:
        """After a crash: rows that were being handled go back to pending."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(inbox).where(inbox.c.state == PROCESSING).values(state=PENDING, updated_at=time.time())
            )
        return result.rowcount or 0

    def mark_stale(self, older_than: int) -> int:
        """Pending messages sent before `older_than` (epoch s) are not answered."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(inbox)
                .where(and_(inbox.c.state == PENDING, inbox.c.sent_at < older_than))
                .values(state=STALE, updated_at=time.time())
            )
        return result.rowcount or 0

    def pending_conversations(self, exclude: Iterable[str] = (), limit: int = 100) -> list[str]:
        excluded = list(exclude)
        query = select(inbox.c.conversation_id).where(inbox.c.state == PENDING)
        if excluded:
            query = query.where(inbox.c.conversation_id.not_in(excluded))
        query = query.group_by(inbox.c.conversation_id).order_by(func.min(inbox.c.id)).limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def claim_next(self, conversation_id: str) -> InboxRow | None:
        """The oldest pending message of a conversation, marked processing."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(inbox)
                .where(and_(inbox.c.conversation_id == conversation_id, inbox.c.state == PENDING))
                .order_by(inbox.c.sent_at, inbox.c.id)
                .limit(1)
            ).first()
            if row is None:
                return None
            conn.execute(
                update(inbox)
                .where(inbox.c.id == row.id)
                .values(state=PROCESSING, attempts=inbox.c.attempts + 1, updated_at=time.time())
            )
        return InboxRow(
            id=row.id, message_id=row.message_id, channel=row.channel, conversation_id=row.conversation_id,
            reply_to=row.reply_to, business_id=row.business_id, sent_at=row.sent_at, attempts=row.attempts + 1,
            message=json.loads(row.message),
        )

    def finish(self, row_id: int, state: str = DONE) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(inbox).where(inbox.c.id == row_id).values(state=state, updated_at=time.time()))

    def release(self, row_id: int) -> None:
        """Give a claimed row back (the handler failed before Rasa took the message)."""
        self.finish(row_id, PENDING)

    def states(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(inbox.c.state, func.count()).group_by(inbox.c.state))
            return {state: count for state, count in rows}

    # --- statuses and outbound ----------------------------------------------
    def add_statuses(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(statuses), list(rows))

    def begin_outbound(self, row: dict[str, Any]) -> int:
        """Record a send about to happen (state "sending"), before the request leaves."""
        with self.engine.begin() as conn:
            result = conn.execute(insert(outbound), [{"created_at": time.time(), "state": SENDING, **row}])
            return int(result.inserted_primary_key[0])

    def finish_outbound(self, row_id: int, values: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(outbound).where(outbound.c.id == row_id).values(**values))

    def outbound_states(self, turn_prefix: str) -> dict[str, str]:
        """turn key → state of the sends of one reply (to re-run it after a crash)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbound.c.turn_key, outbound.c.state).where(outbound.c.turn_key.like(f"{turn_prefix}#%"))
            )
            return {key: state for key, state in rows}

    def mark_interrupted(self, turn_key: str) -> None:
        """A send whose outcome a crash hid: kept for the record, sent again by the caller."""
        with self.engine.begin() as conn:
            conn.execute(
                update(outbound)
                .where(and_(outbound.c.turn_key == turn_key, outbound.c.state == SENDING))
                .values(state=INTERRUPTED, turn_key=None)
            )

    def adopt_delivered(self, turn_key: str, recipient: str) -> str | None:
        """Settle a send cut off by a crash with the platform's own evidence.

        A status webhook (sent/delivered/read) to the same recipient, dated no earlier than
        the cut-off send and for a message id none of our sends knows, means the platform
        accepted it: the send is marked sent with that id and returned. None: no evidence.
        """
        with self.engine.begin() as conn:
            pending = conn.execute(
                select(outbound.c.id, outbound.c.created_at)
                .where(and_(outbound.c.turn_key == turn_key, outbound.c.state == SENDING))
            ).first()
            if pending is None:
                return None
            known = select(outbound.c.message_id).where(outbound.c.message_id.is_not(None))
            evidence = conn.execute(
                select(statuses.c.message_id)
                .where(
                    and_(
                        statuses.c.recipient_id == recipient,
                        statuses.c.sent_at >= int(pending.created_at),
                        statuses.c.status.in_(("sent", "delivered", "read")),
                        statuses.c.message_id.not_in(known),
                    )
                )
                .order_by(statuses.c.id)
                .limit(1)
            ).scalar()
            if evidence is None:
                return None
            conn.execute(update(outbound).where(outbound.c.id == pending.id).values(state=SENT, message_id=evidence))
            return str(evidence)

    def outbound_for(self, conversation_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbound).where(outbound.c.conversation_id == conversation_id).order_by(outbound.c.id)
            ).mappings()
            return [dict(row) for row in rows]

    def statuses_for(self, message_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(statuses.c.status).where(statuses.c.message_id == message_id).order_by(statuses.c.id)
                ).scalars()
            )

    # --- numbered menus -----------------------------------------------------
    def save_menu(self, channel: str, conversation_id: str, menu: dict[str, str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(menus.delete().where(and_(menus.c.conversation_id == conversation_id,
                                                   menus.c.channel == channel)))
            if menu:
                conn.execute(insert(menus).values(conversation_id=conversation_id, channel=channel,
                                                  menu=json.dumps(menu), updated_at=time.time()))

    def menu(self, channel: str, conversation_id: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(menus.c.menu).where(and_(menus.c.conversation_id == conversation_id, menus.c.channel == channel))
            ).scalar()
        return json.loads(value) if value else {}
