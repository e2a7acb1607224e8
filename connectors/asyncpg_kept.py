"""PostgreSQL's per-message statements on kept asyncpg connections, past SQLAlchemy's per-call machinery.

With WHATSAPP_INBOX_CALLS=async the inbox's methods run in a greenlet on Rasa's event loop, and each
of a message's ~9 round trips went through SQLAlchemy's asyncpg adaption: pool checkout and reset,
execution context, the adapted cursor, a rollback on check-in (py-spy: ~0.5 of the channel's ~0.7
samples per message outside Rasa's turn, against ~0.1 for the statements themselves). Here each
statement — the same SQLAlchemy construct, compiled once as connectors/sqlite_kept.py does — runs
through asyncpg on a connection this class keeps, awaited from that same greenlet, so a round
trip still lets other turns run. Parameters carry the casts SQLAlchemy's asyncpg dialect gives them;
errors come out as SQLAlchemy's (`IntegrityError`, `DBAPIError` with `connection_invalidated` when
the connection died), so `retry_transient` and the callers do not tell the two paths apart.

Only for code that runs inside `sqlalchemy.util.greenlet_spawn` on an event loop (`Inbox.call` in
that mode); connections belong to the loop that opened them.
"""

from __future__ import annotations

import asyncio
import re
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.types import Float
from sqlalchemy.util import await_only

from connectors.sqlite_kept import CompiledStatement, KeptResult, compiled_once
from connectors.waiting_line import WaitingLine

# Idle connections kept per event loop however long they wait: one per turn in flight (a worker's 16).
MAX_IDLE = 16
# The connections a burst opened beyond MAX_IDLE stay idle this long before they are closed: closing each
# as soon as it went back made a busy worker (16 turns, their sends' records and receipts beside them)
# open a server connection — a TLS attempt and a backend's start-up — for most of its statements
# (bench.channel_cost on PostgreSQL: 2.9 → 1.8 ms of the loop's CPU a message once they were kept).
SURPLUS_IDLE_SECONDS = 60.0
# Connections open at once per event loop (in use or idle). Sends, receipts and claims of many
# conversations run their statements at the same time, beyond the worker's slots: without a bound a burst
# of a few hundred conversations would open as many server connections and meet PostgreSQL's
# max_connections (100 by default) for every replica at once. Beyond it a statement waits for a free one,
# for at most FREE_CONNECTION_WAIT_SECONDS (then an error, as SQLAlchemy's pool gives after its timeout).
MAX_OPEN = 32
FREE_CONNECTION_WAIT_SECONDS = 30.0
_PLACEHOLDER = re.compile(r"%%|%s")  # the dialect's "format" paramstyle: %s, and %% for a literal %


class PgCompiled(CompiledStatement):
    """The statement with asyncpg's $n placeholders, each cast as SQLAlchemy's asyncpg dialect casts it."""

    def __init__(self, statement: ClauseElement, keys: tuple[str, ...] | None, dialect: Any,
                 for_executemany: bool = False) -> None:
        if dialect.paramstyle != "format":  # SQLAlchemy 2 renders its casts and $n itself: not this path
            raise ValueError(f"asyncpg_kept needs SQLAlchemy 1.4's asyncpg dialect, not {dialect.paramstyle!r}")
        super().__init__(statement, keys, dialect, for_executemany)
        casts = [_cast(kind, dialect) for kind in self.types]
        numbers = iter(range(1, len(casts) + 1))

        def placeholder(match: re.Match[str]) -> str:
            if match.group(0) == "%%":
                return "%"
            n = next(numbers)
            return f"${n}::{casts[n - 1]}" if casts[n - 1] else f"${n}"

        self.sql = _PLACEHOLDER.sub(placeholder, self.sql)
        if next(numbers, None) is not None:
            raise ValueError(f"fewer placeholders than parameters in {self.sql!r}")

    def converts_results(self, column: Any, dialect: Any) -> bool:
        # asyncpg returns double precision as float itself; SQLAlchemy's Float processor asks for the type's OID.
        return not isinstance(column.type, Float) and super().converts_results(column, dialect)


def _cast(kind: Any, dialect: Any) -> str | None:
    from sqlalchemy.dialects.postgresql.asyncpg import _pg_types  # SQLAlchemy 1.4's (the Rasa env)

    if kind is None:
        return None
    dbapi_type = kind.dialect_impl(dialect).get_dbapi_type(dialect.dbapi)
    if dbapi_type is None or dbapi_type == dialect.dbapi.ENUM:  # an enum is cast to its own type's name: none here
        return None
    return _pg_types.get(dbapi_type)


class KeptAsyncpgConnection:
    def __init__(self, owner: KeptAsyncpg, connection: Any) -> None:
        self._owner = owner
        self._connection = connection

    def execute(self, statement: ClauseElement,
                parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None) -> KeptResult:
        if isinstance(parameters, Sequence):  # a write per mapping (a webhook's statuses), one round trip
            return self._execute_many(statement, parameters)
        parameters = parameters or {}
        compiled = self._owner.compiled(statement, parameters)
        values = compiled.values(parameters)
        try:
            if compiled.returns_rows:
                records = await_only(self._connection.fetch(compiled.sql, *values))
                rowcount = len(records)
            else:
                records, status = [], await_only(self._connection.execute(compiled.sql, *values))
                last = status.rsplit(" ", 1)[-1] if status else ""
                rowcount = int(last) if last.isdigit() else -1
        except Exception as error:
            raise self._owner.as_sqlalchemy_error(compiled.sql, values, error, self._connection) from error
        rows: list[Any] = []
        if records:
            names = records[0].keys()  # (iterating a Record gives its values)
            row_type = compiled.row_type([(name,) for name in names])
            rows = [row_type._make(record.values()) for record in records]
        inserted = rows[0][0] if rows and getattr(statement, "is_insert", False) else None
        return KeptResult(rows, rowcount, inserted)

    def _execute_many(self, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> KeptResult:
        if not rows:
            return KeptResult([], 0, None)
        compiled = self._owner.compiled(statement, rows[0], many=True)  # (an insert without RETURNING)
        if compiled.returns_rows:
            raise ValueError("a statement that returns rows takes one set of parameters")
        values = [compiled.values(row) for row in rows]
        try:
            await_only(self._connection.executemany(compiled.sql, values))
        except Exception as error:
            raise self._owner.as_sqlalchemy_error(compiled.sql, values, error, self._connection) from error
        return KeptResult([], len(rows), None)

    def _run(self, sql: str) -> None:
        try:
            await_only(self._connection.execute(sql))
        except Exception as error:
            raise self._owner.as_sqlalchemy_error(sql, (), error, self._connection) from error

    @contextmanager
    def begin_nested(self) -> Iterator[KeptAsyncpgConnection]:
        """A savepoint inside the transaction: what the block did is undone when it raises."""
        self._run("SAVEPOINT kept_nested")
        try:
            yield self
        except Exception:  # (a cancelled await is left to `begin`, which drops the connection)
            self._run("ROLLBACK TO SAVEPOINT kept_nested")
            raise
        self._run("RELEASE SAVEPOINT kept_nested")


def _terminate_all(connections: list[Any]) -> None:
    for connection in connections:
        if not connection.is_closed():
            connection.terminate()


class KeptAsyncpg:
    """asyncpg connections on an asyncpg engine's database, kept per event loop, for the hot statements."""

    def __init__(self, engine: Engine, connect_timeout: float) -> None:
        self.dialect = engine.dialect
        self.dbapi = engine.dialect.dbapi
        _, options = engine.dialect.create_connect_args(engine.url)
        self._connect_kwargs = {**options, "timeout": connect_timeout}
        self._idle: list[Any] = []  # the most recently used last
        self._idle_since: list[float] = []  # when each of them went back (loop time)
        self._pruning: asyncio.TimerHandle | None = None
        self._open = 0  # connections of this loop, idle or in use
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()  # those connections themselves
        self._waiting = WaitingLine()  # statements without a connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._compiled: dict[tuple[ClauseElement, tuple[str, ...] | None], PgCompiled] = {}
        self._compiled_many: dict[tuple[ClauseElement, tuple[str, ...] | None], PgCompiled] = {}
        self._lock = threading.Lock()

    def compiled(self, statement: ClauseElement, parameters: Mapping[str, Any], many: bool = False) -> PgCompiled:
        return compiled_once(self._compiled_many if many else self._compiled, self._lock, statement, parameters,
                             lambda keys: PgCompiled(statement, keys, self.dialect, many))

    def as_sqlalchemy_error(self, sql: str, values: Any, error: Exception, connection: Any) -> DBAPIError:
        """asyncpg's error as SQLAlchemy's asyncpg dialect raises it; `connection_invalidated` when the
        connection is gone (the caller's retry then runs on a new one)."""
        translated: Exception | None = None
        if isinstance(error, self.dbapi.Error):
            translated = error
        else:
            for kind in type(error).__mro__:
                if kind in self.dbapi._asyncpg_error_translate:
                    translated = self.dbapi._asyncpg_error_translate[kind](f"{type(error)}: {error}")
                    translated.pgcode = translated.sqlstate = getattr(error, "sqlstate", None)  # type: ignore[attr-defined]
                    break
        if translated is None:  # the socket itself: refused, reset, timed out
            translated = self.dbapi.OperationalError(f"{type(error).__name__}: {error}")
        gone = connection is None or connection.is_closed()
        return DBAPIError.instance(sql, values, translated, self.dbapi.Error, connection_invalidated=gone)

    def _acquire(self) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a connection works only on the loop it was opened on (tests run several)
            self._let_go_of_another_loops(self._loop, self._idle)
            self._idle, self._idle_since, self._loop, self._open = [], [], loop, 0
            self._waiting, self._pruning = WaitingLine(), None  # (a prune due on the other loop does nothing)
            self._opened = weakref.WeakSet()
        while True:
            while self._idle:
                connection = self._idle.pop()
                self._idle_since.pop()
                if not connection.is_closed():
                    return connection
                self._open -= 1
            if self._open < MAX_OPEN:
                break
            self._wait_for_a_free_connection(loop)
        import asyncpg  # installed with the Rasa env's PostgreSQL extras; needed only in this mode

        self._open += 1
        try:
            connection = await_only(asyncpg.connect(**self._connect_kwargs))
        except BaseException as error:
            self._closed_one()
            if isinstance(error, Exception):
                raise self.as_sqlalchemy_error("connect", (), error, None) from error
            raise
        self._opened.add(connection)
        return connection

    @staticmethod
    def _let_go_of_another_loops(loop: asyncio.AbstractEventLoop | None, idle: list[Any]) -> None:
        """The idle connections of a loop still open go back to it to be closed there: freed from this
        thread while that loop runs in its own, their transports crashed the process now and then (uvloop,
        a test's second loop in a thread: one run in 5-10 segfaulted)."""
        if idle and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(_terminate_all, idle)

    def _wait_for_a_free_connection(self, loop: asyncio.AbstractEventLoop) -> None:
        freed = self._waiting.join(loop)
        try:
            await_only(asyncio.wait_for(freed, FREE_CONNECTION_WAIT_SECONDS))
        except BaseException as error:
            self._waiting.leave(freed)
            if isinstance(error, asyncio.TimeoutError):
                raise self.as_sqlalchemy_error(
                    "connect", (), OSError(f"no free connection within {FREE_CONNECTION_WAIT_SECONDS:g}s: "
                                           f"{MAX_OPEN} in use"), None) from error
            raise

    def _closed_one(self) -> None:
        self._open -= 1
        self._waiting.serve_next()

    def _release(self, connection: Any, reusable: bool) -> None:
        if connection not in self._opened:  # opened on a finished loop (tests): not counted here
            if not connection.is_closed():
                connection.terminate()
            return
        if reusable and not connection.is_closed() and not connection.is_in_transaction():
            self._idle.append(connection)
            self._idle_since.append(self._loop.time() if self._loop else 0.0)
            self._waiting.serve_next()
            if len(self._idle) > MAX_IDLE and self._pruning is None and self._loop is not None:
                self._pruning = self._loop.call_later(SURPLUS_IDLE_SECONDS, self._close_surplus, self._loop)
            return
        if not connection.is_closed():
            connection.terminate()  # mid-statement (cancelled): never handed out again
        self._closed_one()

    def _close_surplus(self, loop: asyncio.AbstractEventLoop) -> None:
        """Idle connections beyond MAX_IDLE, unused for SURPLUS_IDLE_SECONDS, are closed (the least recently
        used first); while surplus ones are younger than that, this looks again when the oldest comes of age."""
        if loop is not self._loop:  # due on a loop the connections have since left (tests): theirs now
            return
        self._pruning = None
        now = loop.time()
        while len(self._idle) > MAX_IDLE and now - self._idle_since[0] >= SURPLUS_IDLE_SECONDS:
            connection = self._idle.pop(0)
            self._idle_since.pop(0)
            if not connection.is_closed():
                connection.terminate()
            self._closed_one()
        if len(self._idle) > MAX_IDLE:
            self._pruning = loop.call_later(SURPLUS_IDLE_SECONDS - (now - self._idle_since[0]),
                                            self._close_surplus, loop)

    @contextmanager
    def begin(self) -> Iterator[KeptAsyncpgConnection]:
        """A transaction: committed when the block ends, rolled back when it raises."""
        connection = self._acquire()
        kept = KeptAsyncpgConnection(self, connection)
        reusable = False  # a cancelled await may leave the connection mid-statement: then it is dropped
        try:
            kept._run("BEGIN")
            try:
                yield kept
            except Exception:
                if not connection.is_closed() and connection.is_in_transaction():
                    kept._run("ROLLBACK")
                reusable = True
                raise
            kept._run("COMMIT")
            reusable = True
        finally:
            self._release(connection, reusable)

    @contextmanager
    def connect(self) -> Iterator[KeptAsyncpgConnection]:
        """Statements each on its own (autocommit): one round trip each."""
        connection = self._acquire()
        reusable = False
        try:
            yield KeptAsyncpgConnection(self, connection)
            reusable = True
        except Exception:
            reusable = True  # the statement's own error (or the caller's): the connection is idle again
            raise
        finally:
            self._release(connection, reusable)

    async def close(self) -> None:
        """Close the kept connections; those of another (finished) loop are only let go."""
        idle, self._idle, self._idle_since = self._idle, [], []
        if self._pruning is not None:
            self._pruning.cancel()
            self._pruning = None
        if self._loop is not asyncio.get_running_loop():
            return
        self._open -= len(idle)
        for connection in idle:
            if not connection.is_closed():
                await connection.close(timeout=5)
