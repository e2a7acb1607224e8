"""Where the inbox's synchronous statements run when async code calls them: WHATSAPP_INBOX_CALLS.

SQLite's always run inline (the database is a library in this process). A server's run, as the
setting says, through asyncpg in a greenlet (`async`, the default: the Inbox's own methods,
unchanged, on engines whose every round trip awaits on the event loop, so Rasa's model inference
and other turns go on meanwhile), inline through psycopg2 (`loop`: the loop stands still for each
round trip, as it does for Rasa's own SQL tracker store), or in a thread (`thread`).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.util import greenlet_spawn

from connectors import inbox_tables
from connectors.asyncpg_kept import KeptAsyncpg

T = TypeVar("T")

ON_EVENTS = "async"  # on Rasa's event loop through asyncpg: a round trip lets other turns run
ON_LOOP = "loop"  # on the event loop through psycopg2: the loop waits for every round trip
IN_THREAD = "thread"  # in a thread through psycopg2
IN_PROCESS = "process"  # through asyncpg in a helper process (connectors/inbox_helper.py)
INBOX_CALLS = (ON_EVENTS, ON_LOOP, IN_THREAD, IN_PROCESS)

# URL options of libpq that asyncpg takes under another name; any other option is refused at start
# (connect_timeout becomes the connect's timeout in `create_asyncpg_engine`).
_ASYNCPG_OPTIONS = {"sslmode": "ssl", "ssl": "ssl", "target_session_attrs": "target_session_attrs"}
_CONNECT_TIMEOUT = "connect_timeout"
# Connections an asyncpg pool keeps: one per statement in flight (up to a worker's 16 turns at once),
# so turns neither wait for one nor pay a server process's start-up per statement.
ASYNCPG_POOL_SIZE = 16
ASYNCPG_POOL_OVERFLOW = 8


def asyncpg_url(url: str | URL, calls: str = ON_EVENTS) -> URL:
    """The same PostgreSQL database, reached through asyncpg (its URL options translated)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"WHATSAPP_INBOX_CALLS={calls} needs PostgreSQL, not {parsed.get_backend_name()}")
    unknown = sorted(set(parsed.query) - set(_ASYNCPG_OPTIONS) - {_CONNECT_TIMEOUT})
    if unknown:
        raise ValueError(f"asyncpg does not take the database URL option(s) {', '.join(unknown)}: drop them or "
                         f"set WHATSAPP_INBOX_CALLS={ON_LOOP}")
    query = {_ASYNCPG_OPTIONS[key]: value for key, value in parsed.query.items() if key != _CONNECT_TIMEOUT}
    return parsed.set(drivername="postgresql+asyncpg", query=query)


def create_asyncpg_engine(url: str | URL, autocommit: bool = False) -> Engine:
    """The synchronous face of an asyncpg engine: the inbox's own methods, unchanged, run on it inside
    `sqlalchemy.util.greenlet_spawn`, where each round trip awaits on the event loop instead of blocking it.
    Outside such a greenlet it raises MissingGreenlet (see `call_blocking`)."""
    from sqlalchemy.ext.asyncio import create_async_engine  # asyncpg is needed only in this mode

    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_async_engine(asyncpg_url(url), future=True, pool_size=ASYNCPG_POOL_SIZE,
                               max_overflow=ASYNCPG_POOL_OVERFLOW, connect_args={"timeout": connect_timeout(url)},
                               **options).sync_engine


def connect_timeout(url: str | URL) -> float:
    """Seconds a connect may take: the URL's connect_timeout, else the inbox's default."""
    timeout = make_url(url).query.get(_CONNECT_TIMEOUT) or inbox_tables.SERVER_CONNECT_TIMEOUT_SECONDS
    try:
        return float(timeout)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{_CONNECT_TIMEOUT} in the database URL is not a number of seconds: {timeout!r}") from None


def asyncpg_twin(inbox: T, url: str | URL) -> T:
    """A copy of an inbox whose engines are asyncpg's, its per-message statements on kept asyncpg
    connections (connectors/asyncpg_kept.py): what ON_EVENTS runs the inbox's methods on."""
    twin = copy.copy(inbox)
    twin.engine, twin._autocommit = create_asyncpg_engine(url), create_asyncpg_engine(url, True)  # type: ignore[attr-defined]
    twin._kept = KeptAsyncpg(twin.engine, connect_timeout(url))  # type: ignore[attr-defined]
    return twin


def on_this_loop(calls: str) -> str:
    """Where a statement that is not the inbox's runs (the receipt's question to the tracker store, a process
    without Rasa): the helper process is for the inbox's methods on Rasa's loop, asyncpg takes the rest."""
    return ON_EVENTS if calls == IN_PROCESS else calls


def where_calls_run(engine: Engine, calls: str) -> str:
    """SQLite's statements always run on the caller's thread (ON_LOOP); a server's as WHATSAPP_INBOX_CALLS says."""
    return ON_LOOP if engine.dialect.name == "sqlite" else calls


async def call_blocking(where: str, fn: Callable[..., T], *args: Any) -> T:
    """A synchronous database call from async code: inline, in a greenlet (its asyncpg round trips
    await on the loop), or in a thread (also for IN_PROCESS: what is not an inbox method)."""
    if where == ON_LOOP:
        return fn(*args)
    if where == ON_EVENTS:
        return await greenlet_spawn(fn, *args)
    return await asyncio.to_thread(fn, *args)
