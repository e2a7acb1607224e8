"""Wake the inbox worker when another process stores a message: PostgreSQL LISTEN/NOTIFY.

connectors.ingest stores webhooks in its own process. Without a signal the worker finds them only
at its next poll: 20 queries a second per Rasa replica, each a hop to a thread and back inside the
Rasa process, and up to 50 ms added to every reply. On PostgreSQL the transaction that stores a
message also sends NOTIFY with the message's channel and conversation (delivered at commit, never
for a rolled-back insert); each worker LISTENs on a connection of its own that the event loop reads
directly (no thread, no query). A notification is a hint, not the record: while the listener is
down (database restart) the worker polls as before, and it always keeps a slow safety-net poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

WAKE_CHANNEL = "voltbay_inbox"
RECONNECT_SECONDS = 2.0

OnNewRow = Callable[[str, str], None]  # (channel, conversation_id)
OnListening = Callable[[bool], None]


def notifies(engine: Engine) -> bool:
    """Stored rows announce themselves only where a listener can hear them."""
    return engine.dialect.name == "postgresql"


def parse_payload(payload: str) -> tuple[str, str]:
    """A payload as the storing statement writes it, "channel:conversation", split."""
    channel, _, conversation = payload.partition(":")
    return channel, conversation


class InboxListener:
    """LISTEN on a dedicated psycopg2 connection, read by the event loop; reconnects after a loss."""

    def __init__(self, engine: Engine, on_new: OnNewRow, on_listening: OnListening) -> None:
        self.engine = engine
        self.on_new = on_new
        self.on_listening = on_listening

    @staticmethod
    def supported(engine: Engine) -> bool:
        return notifies(engine) and engine.dialect.driver == "psycopg2"

    def _connect(self) -> Any:
        # Taken out of the pool for good: it stays in autocommit mode, LISTENing, for the process's life.
        fairy = self.engine.raw_connection()
        fairy.detach()
        connection = getattr(fairy, "dbapi_connection", None) or fairy.connection
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {WAKE_CHANNEL}")
        return connection

    async def run(self) -> None:
        """Forever (until cancelled): listen, and after a lost connection wait and listen again."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection = await asyncio.to_thread(self._connect)
            except Exception:
                logger.warning("inbox listener could not connect; polling meanwhile", exc_info=True)
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            lost: asyncio.Future[None] = loop.create_future()
            descriptor = connection.fileno()
            loop.add_reader(descriptor, self._readable, connection, lost)
            self.on_listening(True)
            try:
                await lost
                logger.warning("inbox listener lost its connection; polling until it is back")
            finally:
                self.on_listening(False)
                loop.remove_reader(descriptor)
                connection.close()
            await asyncio.sleep(RECONNECT_SECONDS)

    def _readable(self, connection: Any, lost: asyncio.Future[None]) -> None:
        try:
            connection.poll()
        except Exception:  # the server went away: reconnect
            if not lost.done():
                lost.set_result(None)
            return
        while connection.notifies:
            note = connection.notifies.pop(0)
            try:
                self.on_new(*parse_payload(note.payload))
            except Exception:  # a wake-up must never kill the listener
                logger.exception("inbox wake-up handler failed")
