"""Read receipts and "typing…", sent by the process that stored the customer's message, after the ACK.

Sent when the message is stored, not when the worker starts its turn: behind connectors.ingest
that puts the receipt's Graph request and its paused-or-not question on the ingest process
instead of Rasa's event loop, where every millisecond is taken from model inference. The customer
sees blue ticks as soon as the message is in the inbox; "typing…" shows until the reply (Meta
clears it after 25 s when the bot is slower, as behind a long backlog).

Receipts wait in a queue that one task drains in batches (one paused-or-not question per batch),
and only while no webhook is being stored: under a burst the ACKs go first, the receipts follow.
Best effort: a receipt that fails, or that a crash cuts off, is not sent again (the message is
still answered).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from connectors.inbox_tables import InboxItem

logger = logging.getLogger(__name__)

# The conversations among these that a person has (no "typing…" for them).
PausedAmong = Callable[[list[str]], Awaitable[set[str]]]
BATCH = 32  # receipts per paused-or-not question (and sent side by side)
MAX_QUEUED = 10_000  # a flood beyond this drops receipts (counted), never memory
MAX_DEFER_SECONDS = 1.0  # receipts wait for a quiet moment at most this long, then go anyway
_QUIET_POLL_SECONDS = 0.002


class ReceiptClient(Protocol):
    async def mark_read_and_typing(self, business_id: str, message_id: str, reply_to: str,
                                   typing: bool = True) -> None: ...

    async def close(self) -> None: ...


def receipt_targets(new_items: Sequence[InboxItem], now: float, stale_after: float) -> list[InboxItem]:
    """The new messages that get a receipt: not skipped (reactions, echoes…), not stale backlog."""
    return [item for item in new_items if "skip" not in item.message and item.sent_at >= now - stale_after]


class Receipts:
    """Queue + one draining task on the caller's event loop; `idle` waits until all went out.

    `coalesce`: a newer message of the same conversation (and business number) replaces its queued
    receipt — the Cloud API marks earlier messages of a conversation read with the later one.
    `busy`: true while the process is storing a webhook; receipts wait for it (up to a second).
    """

    def __init__(self, client: ReceiptClient, paused_among: PausedAmong, stale_after: float,
                 coalesce: bool = False, busy: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.paused_among = paused_among
        self.stale_after = stale_after
        self.coalesce = coalesce
        self.busy = busy
        self.clock = clock
        self._queue: OrderedDict[tuple[str, ...], InboxItem] = OrderedDict()
        self._drain: asyncio.Task[None] | None = None
        self.dropped = 0  # receipts not queued because MAX_QUEUED were waiting

    def after_store(self, new_items: Sequence[InboxItem]) -> None:
        """Queue the receipts of messages just stored (call after the ACK's insert, never before)."""
        for item in receipt_targets(new_items, self.clock(), self.stale_after):
            key = (item.business_id, item.conversation_id) if self.coalesce else (item.message_id,)
            if key not in self._queue and len(self._queue) >= MAX_QUEUED:
                self.dropped += 1
                logger.warning("receipt for %s not sent: %d already waiting", item.message_id, len(self._queue))
                continue
            queued = self._queue.get(key)
            if queued is not None and queued.sent_at > item.sent_at:
                continue  # a late delivery of an older message: the newer one's receipt covers it
            self._queue[key] = item  # a newer message takes the older one's receipt, and its place
        if self._queue and (self._drain is None or self._drain.done()):
            self._drain = asyncio.create_task(self._send_all())

    async def _send_all(self) -> None:
        while self._queue:
            await self._quiet_moment()
            batch = [self._queue.popitem(last=False)[1] for _ in range(min(BATCH, len(self._queue)))]
            try:
                paused = await self.paused_among(list(dict.fromkeys(i.conversation_id for i in batch)))
            except Exception:  # only decides whether "typing…" shows
                logger.warning("could not tell which conversations a person has", exc_info=True)
                paused = set()
            await asyncio.gather(*(self._send(item, item.conversation_id not in paused) for item in batch))

    async def _quiet_moment(self) -> None:
        deadline = time.monotonic() + MAX_DEFER_SECONDS
        while self.busy() and time.monotonic() < deadline:
            await asyncio.sleep(_QUIET_POLL_SECONDS)

    async def _send(self, item: InboxItem, typing: bool) -> None:
        try:
            await self.client.mark_read_and_typing(item.business_id, item.message_id, item.reply_to, typing=typing)
        except Exception:  # never let a courtesy fail loudly or leave a task exception unretrieved
            logger.warning("receipt for %s failed", item.message_id, exc_info=True)

    async def idle(self) -> None:
        """Wait until every queued receipt went out (tests, shutdown)."""
        while self._drain is not None and not self._drain.done():
            await asyncio.gather(self._drain, return_exceptions=True)
