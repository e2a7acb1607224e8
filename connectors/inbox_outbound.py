"""Outbound bookkeeping of the inbox: every send recorded before its request leaves, and how it ended.

Part of `connectors.inbox.Inbox` (its base class): a reply re-run after a crash finds the sends
already made by their turn keys, and a send the crash cut off is settled by the platform's status
webhook when one arrived (`adopt_delivered`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Engine

from connectors import inbox_statements as sql
from connectors.asyncpg_kept import KeptAsyncpg
from connectors.delivery import Sent, record_and_send
from connectors.inbox_helper import InboxHelper
from connectors.inbox_tables import INTERRUPTED, SENDING, SENT, outbound, retry_transient, statuses
from connectors.sending import RetryingSender
from connectors.sqlite_kept import KeptSqlite


class OutboundRecords:
    engine: Engine
    local: bool  # SQLite: the database is a library in this process
    _autocommit: Engine
    # The statements of every message on kept connections: sqlite3's on a SQLite file, asyncpg's
    # with WHATSAPP_INBOX_CALLS=async (the methods then run in a greenlet on the event loop).
    _kept: KeptSqlite | KeptAsyncpg | None
    _helper: InboxHelper | None  # WHATSAPP_INBOX_CALLS=process
    _statements_in_helper: bool  # (a database server's)
    call: Callable[..., Awaitable[Any]]

    def _transaction(self) -> Any:
        """A transaction for the statements run on every message."""
        return self._kept.begin() if self._kept is not None else self.engine.begin()

    def _reading(self) -> Any:
        """A connection for the reads run on every message or poll."""
        return self._kept.connect() if self._kept is not None else self.engine.connect()

    def _one_statement(self) -> Any:
        """A connection for one statement: on a server in autocommit (atomic on its own, and no
        BEGIN and COMMIT round trips), on SQLite a transaction (there they cost nothing)."""
        if self.local:
            return self._transaction()
        return self._kept.connect() if self._kept is not None else self._autocommit.connect()

    async def record_and_send(self, client: RetryingSender, record: dict[str, Any], payload: dict[str, Any],
                              template: dict[str, Any] | None) -> Sent:
        """Record a send, make it, record how it ended (`connectors.delivery.record_and_send`): in the helper
        process when it can build `client` itself (one call there instead of two statements and a request
        on Rasa's loop), else here."""
        sender = self._helper_sender(client)
        if sender is not None:
            return await self._helper.record_and_send(sender, record, payload, template)  # type: ignore[union-attr,no-any-return]
        return await record_and_send(self.call, self, client, record, payload, template)

    def _helper_sender(self, client: RetryingSender) -> str | None:
        """The helper process's key for `client` (None: no helper, or it cannot build the client)."""
        return self._helper.sender_key(client) if self._helper is not None else None

    def start_record_and_send(self, client: RetryingSender, record: dict[str, Any], payload: dict[str, Any],
                              template: dict[str, Any] | None) -> asyncio.Future[Sent] | None:
        """`record_and_send` handed to a running helper process now (awaited later); None: no helper runs, it
        cannot send for `client`, or it runs the statements too. There (PostgreSQL) a first reply out before
        its turn ended brought the customer's next message while the conversation still held its worker slot
        for the advance's round trip, to queue for one again: e2e p95 WhatsApp/REST 1.10–1.11 without, 1.14–
        1.26 with (bench/latency_parts.py, alternated); on SQLite, where the advance costs no round trip, 1.06."""
        if self._statements_in_helper:
            return None
        sender = self._helper_sender(client)
        if sender is None:
            return None
        return self._helper.start_record_and_send(sender, record, payload, template)  # type: ignore[union-attr]

    def receipt_in_helper(self, client: RetryingSender, business_id: str, message_id: str, reply_to: str,
                          typing: bool) -> bool:
        """Hand the read receipt (+ typing) to the helper process, unanswered (best effort, as it always is);
        False: it cannot send for `client`, the caller sends it."""
        return self._helper is not None and self._helper.receipt(client, business_id, message_id, reply_to, typing)

    @retry_transient
    def begin_outbound(self, row: dict[str, Any]) -> int:
        """Record a send about to happen (state "sending"), before the request leaves."""
        with self._one_statement() as conn:
            result = conn.execute(sql.INSERT_OUTBOUND, {"created_at": time.time(), "state": SENDING, **row})
            return int(result.inserted_primary_key[0])

    @retry_transient
    def finish_outbound(self, row_id: int, state: str, message_id: str | None = None, error_code: int | None = None,
                        error: str | None = None, clear_turn_key: bool = False) -> None:
        """Record how a send ended; `clear_turn_key`: it no longer counts as that turn's send."""
        with self._one_statement() as conn:
            conn.execute(sql.FINISH_OUTBOUND[clear_turn_key], {"row_id": row_id, "new_state": state,
                                                               "new_message_id": message_id,
                                                               "new_error_code": error_code, "new_error": error})

    @retry_transient
    def outbound_states(self, turn_prefix: str) -> dict[str, str]:
        """turn key → state of the sends of one reply (to re-run it after a crash)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbound.c.turn_key, outbound.c.state).where(outbound.c.turn_key.like(f"{turn_prefix}#%"))
            )
            return {key: state for key, state in rows}

    @retry_transient
    def unfinished_sends(self, turn_prefix: str) -> list[tuple[str, dict[str, Any]]]:
        """(turn key, payload) of a reply's sends still "sending", in the order they were made."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbound.c.turn_key, outbound.c.payload)
                .where(and_(outbound.c.turn_key.like(f"{turn_prefix}#%"), outbound.c.state == SENDING))
                .order_by(outbound.c.id)
            )
            return [(key, json.loads(payload)) for key, payload in rows]

    @retry_transient
    def mark_interrupted(self, turn_key: str) -> None:
        """A send whose outcome a crash hid: kept for the record, sent again by the caller."""
        with self.engine.begin() as conn:
            conn.execute(
                update(outbound)
                .where(and_(outbound.c.turn_key == turn_key, outbound.c.state == SENDING))
                .values(state=INTERRUPTED, turn_key=None)
            )

    @retry_transient
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

    @retry_transient
    def outbound_for(self, conversation_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbound).where(outbound.c.conversation_id == conversation_id).order_by(outbound.c.id)
            ).mappings()
            return [dict(row) for row in rows]

    @retry_transient
    def statuses_for(self, message_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(statuses.c.status).where(statuses.c.message_id == message_id).order_by(statuses.c.id)
                ).scalars()
            )
