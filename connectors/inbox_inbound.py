"""Inbound side of the inbox: a webhook's messages and delivery statuses stored in one commit.

Part of `connectors.inbox.Inbox` (its base class). Duplicate message ids (Meta's redeliveries) are
dropped here, so a message is answered once however often it arrives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from connectors import inbox_statements as sql
from connectors.inbox_tables import PENDING, SKIPPED, InboxItem, retry_transient, synced_commit

ADD_TRIES = 10


class InboundRecords:
    engine: Engine
    notifies: bool  # PostgreSQL: workers hear of new rows (LISTEN/NOTIFY)
    _transaction: Callable[[], Any]
    _one_statement: Callable[[], Any]

    @retry_transient
    def add(
        self, items: Sequence[InboxItem], status_rows: Sequence[dict[str, Any]] = (), now: float | None = None
    ) -> list[str]:
        """Store new messages (and the webhook's statuses) in one transaction; returns the new ids.

        Duplicate message ids are dropped. One webhook = one commit: the ACK waits for nothing else.
        """
        now = time.time() if now is None else now
        if not items and not status_rows:
            return []
        rows: dict[str, dict[str, Any]] = {}
        for item in items:
            rows.setdefault(item.message_id, self._row(item, now))  # the first of a batch's repeats
        new_ids = self._add_on_postgresql(list(rows.values()), status_rows) if self.notifies \
            else self._add_in_process(list(rows.values()), status_rows)
        return [message_id for message_id in rows if message_id in new_ids]

    def _add_in_process(self, rows: list[dict[str, Any]], status_rows: Sequence[dict[str, Any]]) -> set[str]:
        fresh: list[dict[str, Any]] = []
        with self.engine.connect() as conn, synced_commit(conn), conn.begin():
            if rows:
                known = set(conn.execute(sql.KNOWN_IDS, {"ids": [row["message_id"] for row in rows]}).scalars())
                fresh = [row for row in rows if row["message_id"] not in known]
                if fresh:
                    conn.execute(sql.INSERT_MESSAGES, fresh)
            if status_rows:
                conn.execute(sql.INSERT_STATUSES, list(status_rows))
        return {row["message_id"] for row in fresh}

    def _add_on_postgresql(self, rows: list[dict[str, Any]], status_rows: Sequence[dict[str, Any]]) -> set[str]:
        """PostgreSQL: the messages in one statement (known ids skipped, workers notified at commit).

        On its own in autocommit it is one round trip instead of six (BEGIN, look-up, insert, notify,
        COMMIT), each a wait for the server that the ACK would sit through under load.
        """
        both = bool(rows) and bool(status_rows)
        with (self._transaction() if both else self._one_statement()) as conn:
            fresh = set(conn.execute(sql.INSERT_NEW_MESSAGES, sql.new_messages_parameters(rows)).scalars()) \
                if rows else set()
            if status_rows:
                conn.execute(sql.INSERT_STATUSES, list(status_rows))
        return fresh

    def add_safely(self, items: Sequence[InboxItem], status_rows: Sequence[dict[str, Any]] = ()) -> list[str]:
        """`add`, tried again when a concurrent delivery of the same ids won the race.

        SQLite: the look-up of known ids and the insert are two statements, so another writer can
        store an id in between; each try sees the ids stored so far, and with k webhooks racing
        at most k - 1 lose. (PostgreSQL's single statement skips them itself.)
        """
        for _ in range(ADD_TRIES - 1):
            try:
                return self.add(items, status_rows)
            except IntegrityError:
                continue
        return self.add(items, status_rows)

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

    def add_statuses(self, rows: Sequence[dict[str, Any]]) -> None:
        self.add((), rows)
