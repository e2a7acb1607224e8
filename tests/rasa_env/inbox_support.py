"""Helpers of the inbox and worker tests: an inbox item, a worker on a fixed clock, running it."""

from __future__ import annotations

import asyncio

from connectors.inbox import Inbox, InboxItem
from connectors.worker import Handler, InboxWorker


def item(message_id: str, conversation: str = "c1", sent_at: int = 1_000, **message: object) -> InboxItem:
    return InboxItem(message_id=message_id, channel="whatsapp", conversation_id=conversation, reply_to=conversation,
                     business_id="PNID", sent_at=sent_at, message=message or {"text": message_id, "metadata": {}})


def count_scans(inbox: Inbox) -> list[int]:
    """Wrap the worker's grouped look for pending conversations; one entry per call."""
    scans: list[int] = []
    scan = inbox.pending_conversations

    def counting_scan(*args: object) -> list[str]:
        scans.append(1)
        return scan(*args)  # type: ignore[arg-type]

    inbox.pending_conversations = counting_scan  # type: ignore[method-assign]
    return scans


def make_worker(inbox: Inbox, handler: Handler, **kwargs: object) -> InboxWorker:
    """A worker whose clock sits just after the test messages' timestamps (nothing is stale)."""
    return InboxWorker(inbox, handler, clock=lambda: 5_000, **kwargs)  # type: ignore[arg-type]


async def stop_once_handled(worker: InboxWorker, task: asyncio.Task[None], handled: list[str],
                             step: float) -> None:
    """Give a running worker up to 100 steps to handle something, then stop it."""
    for _ in range(100):
        if handled:
            break
        await asyncio.sleep(step)
    await worker.stop()
    await asyncio.wait_for(task, 5)  # run() returns once stopped, its background tasks ended


async def run_worker(worker: InboxWorker) -> None:
    await worker.dispatch_once()
    await worker.idle()
