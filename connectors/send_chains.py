"""A conversation's sends in order, off the turn that makes them.

Under load a Graph request awaited inside Rasa's turn costs the turn a whole event-loop cycle
(its answer waits behind every other turn's step: ~250 ms with 16 turns in flight, measured with
bench/latency_parts.py), and the customer's next message waited for it. Queued here, the turn
goes on at once; each send still leaves only after the conversation's previous one ended, across
turns too, so replies keep their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class SendChains:
    """One chain of send tasks per conversation; a chain is forgotten once its last task ended."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Task[None]] = {}

    def then(self, conversation_id: str, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `work` after the conversation's sends queued so far, whatever became of them."""
        previous = self._tails.get(conversation_id)

        async def in_turn() -> None:
            if previous is not None and not previous.done():  # (asyncio.wait on a done task still yields twice)
                await asyncio.wait([previous])  # its failure is its own (logged where it happened)
            await work()

        task = asyncio.create_task(in_turn())
        self._tails[conversation_id] = task
        task.add_done_callback(lambda done: self._forget(conversation_id, done))
        return task

    def idle(self, conversation_id: str) -> bool:
        """No send of the conversation is queued or on its way: one begun now keeps the order."""
        tail = self._tails.get(conversation_id)
        return tail is None or tail.done()

    def _forget(self, conversation_id: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(conversation_id) is task:
            del self._tails[conversation_id]

    def __len__(self) -> int:
        return len(self._tails)
