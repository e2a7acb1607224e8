"""Holding a conversation while its messages (or its replies) are handled: one holder at a time.

PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) per conversation, taken on one
connection the process keeps for its claims. The server drops every lock of a session that ends,
so when a replica dies its conversations are free at once for the others; no clock or lease is
involved. SQLite: one process per database file serves the queue (an exclusive file
lock taken at start says which), and within it one task per conversation.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from connectors.queue_schema import Database

logger = logging.getLogger(__name__)


class ClaimsUnavailable(RuntimeError):
    """Another process serves this SQLite database's queue."""


class Claims:
    """`hold(key)` yields True while this process holds `key`, False when another holder has it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.on_server = db.async_engine is not None
        self._held: set[str] = set()
        self._file: IO[str] | None = None
        self._conn: AsyncConnection | None = None
        self._serialised = asyncio.Lock()  # one statement at a time on the claims connection

    def take_database(self, role: str) -> None:
        """SQLite: become the one process that serves this file's queue as `role` (worker, sender);
        ClaimsUnavailable when another one does. Nothing on a database server."""
        if self.on_server or self._file is not None:
            return
        database = self.db.database
        if not database:
            return
        lock_file = open(f"{database}.{role}.lock", "w")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise ClaimsUnavailable(f"another process is the {role} of {os.path.basename(database)}") from None
        self._file = lock_file

    def release_database(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the lock
            self._file = None

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[bool]:
        if key in self._held:
            yield False
            return
        # Reserved before the lock is asked for: a session's advisory locks are re-entrant, so two tasks of
        # this process asking at once would both be granted it.
        self._held.add(key)
        try:
            # Shielded: a cancellation while the server grants the lock must not leave it held, unknown to us.
            if self.on_server and not await asyncio.shield(self._lock(key)):
                yield False
                return
            try:
                yield True
            finally:
                if self.on_server:
                    await asyncio.shield(self._unlock(key))
        finally:
            self._held.discard(key)

    async def _lock(self, key: str) -> bool:
        async with self._serialised:
            try:
                conn = await self._connection()
                return bool((await conn.execute(select(func.pg_try_advisory_lock(_number(key))))).scalar())
            except Exception:
                await self._drop_connection()
                raise

    async def _unlock(self, key: str) -> None:
        async with self._serialised:
            if self._conn is None:
                return  # the session ended, and its locks with it
            try:
                await self._conn.execute(select(func.pg_advisory_unlock(_number(key))))
            except Exception:  # a broken session holds nothing any more
                logger.warning("could not give back the claim on %s; its session is closed", key, exc_info=True)
                await self._drop_connection()

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            # Autocommit: a session lock needs no transaction, and an open one would hold back vacuum.
            assert self.db.async_engine is not None
            self._conn = await (await self.db.async_engine.connect()).execution_options(isolation_level="AUTOCOMMIT")
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close()
            except Exception:
                logger.debug("closing a broken claims connection failed", exc_info=True)

    async def close(self) -> None:
        """Give back every claim: the session's locks end with it."""
        async with self._serialised:
            await self._drop_connection()
        self.release_database()


def _number(key: str) -> Any:
    """A claim's key as the 64-bit number advisory locks take."""
    return func.hashtextextended(key, 0)
