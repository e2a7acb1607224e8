"""Numbered menus of the inbox: the options a reply offered as numbered text ("1" → payload), per conversation.

Part of `connectors.inbox.Inbox` (its base class): the worker saves a reply's menu with the turn that
offered it, and the conversation's next message maps a bare "1", "2"… back to its payload.
"""

from __future__ import annotations

import json
import time

from sqlalchemy.engine import Connection, Engine

from connectors import inbox_statements as sql
from connectors.inbox_tables import retry_transient


def menu_changes(stored: dict[str, str], offered: dict[str, str] | None) -> bool:
    """Does a handled row's reply change the stored menu? (None: the turn did not get to reply; most turns
    offer none after none: nothing to write.)"""
    return offered is not None and bool(offered or stored)


class MenuRecords:
    engine: Engine

    @retry_transient
    def save_menu(self, channel: str, conversation_id: str, menu: dict[str, str]) -> None:
        with self.engine.begin() as conn:
            self._save_menu(conn, channel, conversation_id, menu)

    @staticmethod
    def _save_menu(conn: Connection, channel: str, conversation_id: str, menu: dict[str, str]) -> None:
        conn.execute(sql.DELETE_MENU, {"conversation": conversation_id, "on_channel": channel})
        if menu:
            conn.execute(sql.INSERT_MENU, {"conversation_id": conversation_id, "channel": channel,
                                           "menu": json.dumps(menu), "updated_at": time.time()})

    @retry_transient
    def menu(self, channel: str, conversation_id: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            value = conn.execute(sql.MENU, {"conversation": conversation_id, "on_channel": channel}).scalar()
        return json.loads(value) if value else {}
