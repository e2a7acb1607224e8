"""Callers waiting for a free connection of a bounded set, served in arrival order.

Both kept-connection pools (connectors/asyncpg_kept.py: PostgreSQL statements; connectors/http_kept.py:
Graph requests) open at most so many connections per event loop; beyond that a caller joins this line,
and each connection that goes back (or away) is handed to the one waiting longest.
"""

from __future__ import annotations

import asyncio
import collections


class WaitingLine:
    """A caller `join`s and awaits the future (with its own deadline); the owner calls `serve_next` when a
    connection is free; a caller that gives up `leave`s, passing on what it was handed meanwhile."""

    def __init__(self) -> None:
        self._futures: collections.deque[asyncio.Future[None]] = collections.deque()

    def __len__(self) -> int:
        return len(self._futures)

    def join(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        freed = loop.create_future()
        self._futures.append(freed)
        return freed

    def leave(self, freed: asyncio.Future[None]) -> None:
        """The caller stopped waiting (timed out, cancelled): out of the line, or, when it had just been
        woken for a connection it will not take, that connection goes to the next one in line."""
        if freed in self._futures:
            self._futures.remove(freed)
        elif freed.done() and not freed.cancelled() and freed.exception() is None:
            self.serve_next()

    def serve_next(self) -> None:
        """A connection went back (or away): the longest-waiting caller takes it."""
        while self._futures:
            freed = self._futures.popleft()
            if not freed.done():
                freed.set_result(None)
                return
