"""Read receipts and "typing…", sent by the process that stored the customer's message, after the ACK.

Sent when the message is stored, not when the worker starts its turn: behind connectors.ingest
that puts the receipt's Graph request and its paused-or-not question on the ingest process
instead of Rasa's event loop, where every millisecond is taken from model inference. The customer
sees blue ticks as soon as the message is in the inbox; "typing…" shows until the reply (Meta
clears it after 25 s when the bot is slower, as behind a long backlog). Best effort: a receipt
that fails or that a crash cuts off is not sent again (the message is still answered).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from connectors.inbox_tables import InboxItem

logger = logging.getLogger(__name__)

PausedCheck = Callable[[str], Awaitable[bool]]
# Receipts in flight at once: a flood of webhooks must not become an unbounded pile of requests.
MAX_IN_FLIGHT = 64


class ReceiptClient(Protocol):
    async def mark_read_and_typing(self, business_id: str, message_id: str, reply_to: str,
                                   typing: bool = True) -> None: ...

    async def close(self) -> None: ...


def receipt_targets(new_items: Sequence[InboxItem], now: float, stale_after: float) -> list[InboxItem]:
    """The new messages that get a receipt: not skipped (reactions, echoes…), not stale backlog."""
    return [item for item in new_items if "skip" not in item.message and item.sent_at >= now - stale_after]


class Receipts:
    """Fire-and-forget receipts on the caller's event loop; `close` waits for the ones in flight."""

    def __init__(self, client: ReceiptClient, paused: PausedCheck, stale_after: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.paused = paused
        self.stale_after = stale_after
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped = 0  # receipts not sent because MAX_IN_FLIGHT were pending (a flood)

    def after_store(self, new_items: Sequence[InboxItem]) -> None:
        """Start the receipts of messages just stored (call after the ACK's insert, never before)."""
        for item in receipt_targets(new_items, self.clock(), self.stale_after):
            if len(self._tasks) >= MAX_IN_FLIGHT:
                # Receipts are a courtesy: under a flood the answers matter, not the blue ticks.
                self.dropped += 1
                logger.info("receipt for %s not sent: %d in flight", item.message_id, len(self._tasks))
                continue
            task = asyncio.create_task(self._send(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, item: InboxItem) -> None:
        try:
            typing = not await self.paused(item.conversation_id)  # no "typing…" while a person has it
            await self.client.mark_read_and_typing(item.business_id, item.message_id, item.reply_to, typing=typing)
        except Exception:  # never let a courtesy fail loudly or leave a task exception unretrieved
            logger.warning("receipt for %s failed", item.message_id, exc_info=True)

    async def idle(self) -> None:
        """Wait for the receipts in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
