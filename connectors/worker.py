"""Drains the inbox: in order within a conversation, concurrently across conversations.

A row is marked done only after its handler returned (Rasa handled the message) and, when the handler
left its replies going out (`Answered`), once they were recorded; the conversation's next row is taken
meanwhile, and the row is marked done by the drain's next statement (the claim or advance that follows).
Messages older than `stale_after` seconds are marked stale and not answered. Channel-agnostic:
the Cloud API and Evolution channels pass their own handler.

Any number of replicas may run a worker on one inbox: a conversation is drained under a lease
(connectors/inbox_leases.py) that the worker renews while it runs and gives back when it stops.
Rows a crashed worker left `processing` are answered again (first, in their place) by whichever
worker takes the conversation once the dead one's lease is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from connectors.inbox import DONE, STALE, Inbox, InboxRow
from connectors.worker_replies import Answered, Replying, StillReplying, rows_to_skip, sends_recorded, take_recorded

logger = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["Answered", "Handler", "InboxWorker"]

MAX_ATTEMPTS = 5
FAILED = "failed"
# Staleness is about day-old backlog: checking it on every poll would only add writes.
STALE_CHECK_EVERY_SECONDS = 5.0
# Between polls that saw no new row, the full look for pending conversations (a grouped scan,
# ~1.5 ms of the Rasa process's CPU with a backlog) runs only this often, as a safety net.
FULL_SCAN_EVERY_SECONDS = 1.0
# While a LISTEN connection reports new rows (PostgreSQL), polling is only the net for a lost one.
SAFETY_NET_POLL_SECONDS = 1.0
# Conversations with a drain task (running or waiting for a slot): a flood of new customers must
# not become a task each; beyond this the scan picks them up as drains finish.
MAX_DRAINS = 1000
SCAN_LIMIT = 100

# Returns the numbered options its reply offered ("1" → payload), saved with the row's completion;
# or `Answered` when the reply's sends are still going out.
Handler = Callable[[InboxRow], Awaitable["dict[str, str] | Answered | None"]]


class InboxWorker:
    def __init__(
        self,
        inbox: Inbox,
        handler: Handler,
        concurrency: int = 16,
        stale_after: float = 86400.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        channel: str | None = None,  # only this channel's rows (several channels share one inbox)
    ) -> None:
        self.channel = channel
        self.inbox = inbox
        self.handler = handler
        self.stale_after = stale_after
        self.poll_interval = poll_interval
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting_for_slot = 0
        self._active: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._next_stale_check = 0.0
        self._next_full_scan = 0.0
        self._latest_seen: int | None = None  # the newest inbox row id at the last full look
        self._listening = False  # a LISTEN connection is up: rows stored elsewhere are announced
        # Conversations whose drain was running when new rows were announced or a look skipped them:
        # their drain may have looked for its next row already, so it starts again when it ends.
        self._missed: set[str] = set()
        self._more_waiting = False  # the last look found more conversations than it had room for
        # Drains waiting for their replies to go out with nothing new to claim: set when a row comes.
        self._news: dict[str, asyncio.Future[None]] = {}

    def notify(self, conversation_id: str | None = None) -> None:
        """New rows were stored: look now instead of at the next poll.

        For one named conversation no look is needed: its drain starts here, or, when one is running,
        it claims the row itself or starts again once it ends.
        """
        if self._stopped.is_set():
            return
        if conversation_id is None or len(self._active) >= MAX_DRAINS:
            self._wake.set()
        elif conversation_id in self._active:
            self._missed.add(conversation_id)
            self._wake_drain(conversation_id)  # one waiting for its replies to go out takes the row at once
        else:
            self._start(conversation_id)

    def _row_stored(self, channel: str, conversation_id: str) -> None:
        if self.channel is None or channel == self.channel:
            self.notify(conversation_id)

    def _set_listening(self, listening: bool) -> None:
        self._listening = listening
        self._wake.set()  # rows stored while nobody listened: look once

    async def run(self) -> None:
        await self._expire_leases_of_gone_workers()
        unfinished = await self.inbox.call(self.inbox.count_left_unfinished, self.channel)
        if unfinished:
            logger.warning("resuming %d inbox message(s) a stopped worker left unfinished", unfinished)
        background = [asyncio.create_task(self.inbox.checkpoint_forever()),
                      asyncio.create_task(self._keep_leases())]
        listener = self.inbox.listener(self._row_stored, self._set_listening)
        if listener is not None:
            background.append(asyncio.create_task(listener.run()))
        try:
            await self._loop()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

    async def _expire_leases_of_gone_workers(self) -> None:
        gone = await self.inbox.call(self.inbox.expire_leases_of_gone_workers)
        if gone:
            logger.warning("took over the conversations of %d stopped worker(s) on this host", len(gone))
            self._wake.set()

    async def _keep_leases(self) -> None:
        """Heartbeat: renew this worker's leases every third of their length; free those of dead local ones."""
        interval = self.inbox.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.inbox.call(self.inbox.renew_leases)
                await self._expire_leases_of_gone_workers()
            except Exception:  # the database is away: the next beat tries again, well within the lease
                logger.warning("could not renew the inbox leases; retrying in %.1fs", interval, exc_info=True)

    async def _loop(self) -> None:
        while not self._stopped.is_set():
            # Cleared before looking, so a wake-up that comes during the look is not lost.
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                await self.dispatch_once(full=woken)
            except Exception:  # the loop must survive a database hiccup
                logger.exception("inbox dispatch failed; retrying")
            interval = max(self.poll_interval, SAFETY_NET_POLL_SECONDS) if self._listening else self.poll_interval
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    async def dispatch_once(self, full: bool = True) -> int:
        """Start a drain task for every conversation with pending rows and none running.

        `full=False` (a plain poll): only when a row was stored since the last look, or once a
        second. Rows for a conversation being drained are claimed by its drain, not found here.
        """
        now = self.clock()
        if now >= self._next_stale_check:
            self._next_stale_check = now + STALE_CHECK_EVERY_SECONDS
            stale = await self.inbox.call(self.inbox.mark_stale, int(now - self.stale_after), self.channel)
            if stale:
                logger.warning("marked %d old inbox message(s) stale (older than %ss)", stale, self.stale_after)
        latest = await self.inbox.call(self.inbox.latest_id)
        if not full and now < self._next_full_scan:
            if latest == self._latest_seen:
                return 0
            if self._latest_seen is not None:
                # Only the conversations of the rows stored since the last look (an id range), not the
                # grouped scan: their drains start, or take the row if one runs (rows whose ids commit
                # out of order on a server are found by the full look within a second).
                fresh = await self.inbox.call(self.inbox.conversations_since, self._latest_seen, self.channel)
                self._latest_seen = latest
                for conversation_id in fresh:
                    self.notify(conversation_id)
                return len(fresh)
        self._latest_seen, self._next_full_scan = latest, now + FULL_SCAN_EVERY_SECONDS
        room = min(SCAN_LIMIT, MAX_DRAINS - len(self._active))
        if room <= 0:
            self._more_waiting = True
            return 0
        running = list(self._active)
        self._missed.update(running)  # their new rows are not looked for here
        conversations = await self.inbox.call(self.inbox.pending_conversations, running, room, self.channel)
        self._more_waiting = len(conversations) >= room
        started = [c for c in conversations if c not in self._active]  # a wake-up may have started one
        for conversation_id in started:
            self._start(conversation_id)
        return len(started)

    def _start(self, conversation_id: str) -> None:
        task = asyncio.create_task(self._drain(conversation_id))
        self._active[conversation_id] = task
        task.add_done_callback(lambda _t, c=conversation_id: self._finished(c))

    def _finished(self, conversation_id: str) -> None:
        """A drain ended. No look over all conversations: a drain's last transaction looked for its
        conversation's next row, and rows stored since were announced (or the poll sees them)."""
        self._active.pop(conversation_id, None)
        if self._stopped.is_set():
            return
        if conversation_id in self._missed:
            self._missed.discard(conversation_id)
            self._start(conversation_id)
        elif self._more_waiting:
            self._wake.set()

    async def _drain(self, conversation_id: str) -> None:
        """Handle a conversation's rows in order, taking a slot per message, not per conversation.

        A slot held for a whole backlog would let 16 chatty customers keep everyone else waiting
        (and leave Rasa half idle once only a few conversations are left); giving it back after
        each message lets every conversation with pending rows take its turn.
        """
        row: InboxRow | None = None
        replying: Replying = []
        try:
            while True:
                async with self._slot():
                    if row is None:
                        if self._stopped.is_set():
                            return
                        row = await self._look(conversation_id, self.inbox.claim_next, conversation_id, self.channel)
                        if row is None:
                            return
                    outcome = await self._handle(row, replying)
                if isinstance(outcome, StillReplying):
                    outcome = await self._next_after_replies(conversation_id, outcome.last, replying)
                row = outcome
                if row is None:
                    return
                if self._waiting_for_slot:
                    # asyncio.Semaphore (Python 3.10) lets a task that releases and re-acquires at once jump
                    # the queue: yield first so a waiting conversation gets the slot (only then: the yield
                    # costs the customer a loop iteration, tens of ms under load).
                    await asyncio.sleep(0)
        finally:
            await self._settled(replying)

    async def _handle(self, row: InboxRow, replying: Replying) -> InboxRow | StillReplying | None:
        """One message through the handler; returns the conversation's next row, already claimed.

        A handler that answers with its sends still going out (`Answered`) lets the next row start
        at once: the handled row stays "processing" until they finished, and the lease is given back
        only when none is left (a restart re-runs such a row; Rasa knows it, its sends are settled).
        """
        if row.sent_at < self.clock() - self.stale_after:
            # A replayed backlog keeps arriving after the periodic look for stale rows: checked here too.
            logger.warning("inbox message %s is older than %ss: marked stale, not answered",
                           row.message_id, self.stale_after)
            await self._settled(replying)
            return await self._look(row.conversation_id, self.inbox.complete, row, STALE, None,
                                    not self._stopped.is_set())
        try:
            answer = await self.handler(row)
        except Exception:
            logger.exception("handling inbox message %s failed (attempt %d)", row.message_id, row.attempts)
            await self._settled(replying)
            if row.attempts < MAX_ATTEMPTS:
                await self.inbox.call(self.inbox.release, row.id)
                return None  # keep the order: try this conversation again on a later round
            return await self._look(row.conversation_id, self.inbox.complete, row, FAILED, None,
                                    not self._stopped.is_set())
        if isinstance(answer, Answered) and not self._stopped.is_set():
            finished = take_recorded(replying)
            besides = rows_to_skip(row, replying)
            replying.append((row.id, asyncio.create_task(sends_recorded(row, answer.sends))))
            following = await self._look(row.conversation_id, self.inbox.advance, row, answer.menu, besides, finished)
            return StillReplying(row) if following is None else following
        menu = answer
        if isinstance(answer, Answered):  # stopping: nothing more is claimed, the sends end first
            if not await sends_recorded(row, answer.sends):
                await self._settled(replying)
                return None  # left "processing": taken up again after the restart
            menu = answer.menu
        await self._settled(replying)
        # Done, menu saved and the next message claimed in one transaction.
        return await self._look(row.conversation_id, self.inbox.complete, row, DONE, menu, not self._stopped.is_set())

    async def _next_after_replies(self, conversation_id: str, last: InboxRow, replying: Replying) -> InboxRow | None:
        """Nothing new after `last` while replies still go out (no slot held): a row stored meanwhile is
        taken the moment it is announced; once every reply went out, the next row is claimed or the
        lease given back. Without the wait for news the customer's next message, posted as soon as the
        first reply showed, waited for the previous turn's sends all the same."""
        loop = asyncio.get_running_loop()
        sending = asyncio.gather(*(task for _row_id, task in replying), return_exceptions=True)
        sending.add_done_callback(lambda _sent: self._wake_drain(conversation_id))
        try:
            while not sending.done() and not self._stopped.is_set():
                if conversation_id not in self._missed:
                    # One future that the announcement or the sends' end resolves: the drain wakes on the
                    # loop's next iteration, where an Event waited on beside the sends took three (under
                    # load each iteration runs every other turn's step: tens of ms).
                    self._news[conversation_id] = loop.create_future()
                    await self._news[conversation_id]
                if conversation_id in self._missed:
                    async with self._slot():
                        finished = take_recorded(replying)
                        following = await self._look(conversation_id, self.inbox.advance, last, None,
                                                     rows_to_skip(last, replying), finished)
                    if following is not None:
                        return following
            if self._stopped.is_set():
                return None  # the lease goes back with all others at stop (the drain's end settles the rows)
            # Every reply went out: mark their rows done and claim what came meanwhile, or give the lease back.
            return await self._look(conversation_id, self.inbox.claim_next, conversation_id, self.channel,
                                    take_recorded(replying))
        finally:
            self._news.pop(conversation_id, None)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        self._waiting_for_slot += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting_for_slot -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def _look(self, conversation_id: str, statement: Callable[..., T], *args: Any) -> T:
        """Run a statement that looks for the conversation's next row (claim, advance, complete): it answers the
        announcements made before it. Left standing, one made the drain queue for a slot again for a look
        finding nothing (test: ...announced during its predecessor's turn...), and the customer's next
        message then queued a second time."""
        self._missed.discard(conversation_id)
        return await self.inbox.call(statement, *args)

    def _wake_drain(self, conversation_id: str) -> None:
        news = self._news.get(conversation_id)
        if news is not None and not news.done():
            news.set_result(None)

    async def _settled(self, replying: Replying) -> None:
        """Wait for the drain's sends still going out and mark done the rows whose sends were recorded."""
        if not replying:
            return
        await asyncio.gather(*(sending for _row_id, sending in replying), return_exceptions=True)
        finished = take_recorded(replying)
        if not finished:
            return  # none recorded: nothing to write
        try:
            await self.inbox.call(self.inbox.finish_rows, finished)
        except Exception:
            logger.exception("could not mark inbox messages done; they are taken up again")

    async def idle(self) -> None:
        """Wait until no drain task is running (tests, shutdown)."""
        while self._active:
            await asyncio.gather(*list(self._active.values()), return_exceptions=True)

    async def stop(self) -> None:
        """Finish the messages in hand, then give back every lease (other replicas go on at once)."""
        self._stopped.set()
        self._wake.set()
        await self.idle()
        try:
            await self.inbox.call(self.inbox.release_leases)
        except Exception:  # they expire on their own
            logger.warning("could not give back the inbox leases at stop", exc_info=True)
