"""The worker: takes each conversation's next stored message, runs its Rasa turn, writes the replies.

In order within a conversation (one holder per conversation: connectors/claims.py), up to
`concurrency` turns of different conversations at once. A turn's replies and the message's
"done" are written in one transaction (`Queue.finish`); the sender sends them afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from connectors.claims import Claims
from connectors.queue import InboxRow, Queue, Reply
from connectors.queue_schema import DONE, FAILED, STALE

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a message whose turn fails this often is marked failed; its conversation goes on
FULL_SCAN_SECONDS = 1.0  # a look over every conversation at least this often (rows of other replicas)
STALE_CHECK_SECONDS = 60.0
RETRY_PAUSE_SECONDS = 1.0  # before a failed turn's conversation is tried again


@dataclass(frozen=True)
class TurnResult:
    replies: list[Reply] = field(default_factory=list)
    menu: dict[str, str] | None = None  # the options the last reply offered; None: leave the stored ones


RunTurn = Callable[[InboxRow], Awaitable[TurnResult]]



class ConversationDrains:
    """One drain task per conversation with work, at most `max_drains` at once; a conversation announced while
    its drain runs is drained again when it ends. The worker and the sender are both this, over their table."""

    what = "work"

    def __init__(self, channel: str, concurrency: int, poll_interval: float) -> None:
        self.channel = channel
        self.poll_interval = poll_interval
        self.max_drains = concurrency * 2  # conversations held at once; each waits for a slot
        self._slots = asyncio.Semaphore(concurrency)
        self._active: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()

    def notify(self, conversation_id: str) -> None:
        """Work for this conversation was stored in this process: start on it without a look."""
        if self._stopped.is_set():
            return
        if conversation_id in self._active:
            self._again.add(conversation_id)
        elif len(self._active) < self.max_drains:
            self._start(conversation_id)
        else:
            self._wake.set()

    async def dispatch_once(self) -> int:
        raise NotImplementedError

    async def _drain(self, conversation_id: str) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                await self.dispatch_once()
            except Exception:  # a database hiccup must not end the loop
                logger.exception("%s: looking for %s failed; trying again", self.channel, self.what)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)

    def _start(self, conversation_id: str) -> None:
        task = asyncio.create_task(self._drain(conversation_id))
        self._active[conversation_id] = task
        task.add_done_callback(lambda _task: self._ended(conversation_id))

    def _ended(self, conversation_id: str) -> None:
        self._active.pop(conversation_id, None)
        if conversation_id in self._again and not self._stopped.is_set():
            self._again.discard(conversation_id)
            self._start(conversation_id)
        else:
            self._wake.set()  # room for a conversation that waited

    async def idle(self) -> None:
        """Until no drain runs (tests, shutdown)."""
        while self._active:
            await asyncio.gather(*list(self._active.values()), return_exceptions=True)

    async def stop(self) -> None:
        """Let the work in hand finish; the rest waits for the next start."""
        self._stopped.set()
        self._wake.set()
        await self.idle()


class Worker(ConversationDrains):
    what = "messages"

    def __init__(self, queue: Queue, claims: Claims, channel: str, run_turn: RunTurn, *,
                 concurrency: int = 16, stale_after: float = 86400.0, poll_interval: float = 0.05,
                 on_replies: Callable[[str], None] = lambda _conversation: None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(channel, concurrency, poll_interval)
        self.queue = queue
        self.claims = claims
        self.run_turn = run_turn
        self.stale_after = stale_after
        self.on_replies = on_replies
        self.clock = clock
        self._latest = -1
        self._next_full_scan = 0.0
        self._next_stale_check = 0.0

    async def dispatch_once(self) -> int:
        """Start a drain for each conversation with pending messages and none running here."""
        now = self.clock()
        if now >= self._next_stale_check:
            self._next_stale_check = now + STALE_CHECK_SECONDS
            stale = await self.queue.mark_stale(self.channel, now - self.stale_after)
            if stale:
                logger.warning("%d %s message(s) older than %ss marked stale, not answered",
                               stale, self.channel, self.stale_after)
        latest = await self.queue.latest_message_id()
        if latest == self._latest and now < self._next_full_scan:
            return 0
        self._latest, self._next_full_scan = latest, now + FULL_SCAN_SECONDS
        room = self.max_drains - len(self._active)
        if room <= 0:
            return 0
        found = await self.queue.pending_conversations(self.channel, list(self._active), room)
        started = [conversation for conversation in found if conversation not in self._active]
        for conversation_id in started:
            self._start(conversation_id)
        return len(started)

    async def _drain(self, conversation_id: str) -> None:
        """The conversation's messages one by one, a turn slot taken per message (not per conversation,
        so a customer with a backlog does not keep others waiting)."""
        try:
            async with self.claims.hold(f"turn:{self.channel}:{conversation_id}") as held:
                if not held:
                    return  # another replica has it
                while not self._stopped.is_set():
                    self._again.discard(conversation_id)
                    async with self._slots:
                        row = await self.queue.next_message(self.channel, conversation_id)
                        if row is None:
                            return
                        handled = await self._handle(row)
                    if not handled:  # tried again later, still before the conversation's next messages
                        await asyncio.sleep(RETRY_PAUSE_SECONDS)
                        return
        except Exception:
            logger.exception("%s worker: a conversation's drain failed; it is taken up again", self.channel)

    async def _handle(self, row: InboxRow) -> bool:
        """One message; False when its turn failed and it stays pending, to be tried again."""
        if row.sent_at < self.clock() - self.stale_after:
            logger.warning("message %s is older than %ss: marked stale, not answered", row.message_id,
                           self.stale_after)
            await self.queue.finish(row, STALE)
            return True
        try:
            result = await self.run_turn(row)
        except Exception:
            logger.exception("the turn on message %s failed (attempt %d of %d)", row.message_id, row.attempts,
                             MAX_ATTEMPTS)
            if row.attempts < MAX_ATTEMPTS:
                return False
            await self.queue.finish(row, FAILED)
            return True
        if await self.queue.finish(row, DONE, result.replies, result.menu):
            self.on_replies(row.conversation_id)
        return True
