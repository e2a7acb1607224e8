"""No call of ours blocks an event loop: a webhook stored by the receiver, its turn run by the worker and its
reply sent by the sender, on SQLite and on PostgreSQL, with a guard that catches `time.sleep`, a sqlite3
connection, a psycopg2 connection or a blocking socket connect made on the loop's thread.

The guard is tested first on calls it must catch, so a pass means something."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.claims import Claims
from connectors.queue import InboxRow, Queue, Reply
from connectors.queue_schema import DONE, SENT, Database
from connectors.receiver import create_app
from connectors.sender import Sender
from connectors.turns import TurnResult, Worker
from connectors.whatsapp.graph_api import GraphClient
from connectors.whatsapp.signature import sign
from tests.postgres import temporary_database

from .conftest import POSTGRES_ADMIN_URL, GraphStandIn

DATA = Path(__file__).parent / "data"
SECRET = "app-secret"


class LoopGuard:
    """Records blocking calls made on the watched thread while it is on (an audit hook cannot be removed: it
    stays installed, idle, for the rest of the process)."""

    installed = False

    def __init__(self) -> None:
        self.thread: int | None = None
        self.caught: list[str] = []

    def on_loop(self) -> bool:
        return self.thread is not None and threading.get_ident() == self.thread

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.on_loop():
            return
        if event == "sqlite3.connect":
            self.caught.append("sqlite3.connect")
        elif event == "socket.connect" and isinstance(args[0], socket.socket) and args[0].getblocking():
            self.caught.append(f"blocking socket.connect {args[1]}")


GUARD = LoopGuard()


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopGuard]:
    if not LoopGuard.installed:
        import sys

        sys.addaudithook(lambda event, args: GUARD.audit(event, args))
        LoopGuard.installed = True
    real_sleep, real_pg_connect = time.sleep, psycopg2.connect

    def sleep(seconds: float) -> None:
        if GUARD.on_loop():
            GUARD.caught.append(f"time.sleep({seconds})")
        real_sleep(seconds)

    def pg_connect(*args: Any, **kwargs: Any) -> Any:
        if GUARD.on_loop():
            GUARD.caught.append("psycopg2.connect")
        return real_pg_connect(*args, **kwargs)

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(psycopg2, "connect", pg_connect)
    GUARD.caught = []
    GUARD.thread = None
    yield GUARD
    GUARD.thread = None


def watch_this_loop(guard: LoopGuard) -> None:
    asyncio.get_running_loop()
    guard.thread = threading.get_ident()


async def test_the_guard_catches_what_it_must(guard: LoopGuard, tmp_path: Path) -> None:
    watch_this_loop(guard)
    time.sleep(0)
    sqlite3.connect(str(tmp_path / "x.db")).close()
    with socket.socket() as blocking:
        blocking.settimeout(None)
        with contextlib.suppress(OSError):
            blocking.connect(("127.0.0.1", 9))
    await asyncio.to_thread(time.sleep, 0)  # in a thread: allowed
    assert guard.caught[:2] == ["time.sleep(0)", "sqlite3.connect"]
    assert any(call.startswith("blocking socket.connect") for call in guard.caught)
    assert len(guard.caught) == 3


@pytest.fixture(params=["sqlite", "postgresql"])
async def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_loop") as url:
        yield url


async def test_a_message_from_webhook_to_reply_blocks_no_loop(guard: LoopGuard, queue_url: str,
                                                             graph: GraphStandIn) -> None:
    watch_this_loop(guard)
    queue = Queue(Database(queue_url))
    await queue.create_tables()
    claims = Claims(queue.db)
    client = GraphClient("test-token", graph.url, "v23.0")
    sender = Sender(queue, claims, "whatsapp", client)

    async def turn(row: InboxRow) -> TurnResult:
        await client.mark_read_and_typing(row.business_id, row.message_id, row.reply_to)
        return TurnResult([Reply({"messaging_product": "whatsapp", "to": row.reply_to, "type": "text",
                                  "text": {"body": "hello"}})])

    worker = Worker(queue, claims, "whatsapp", turn, on_replies=sender.notify, stale_after=10 * 365 * 86400)
    server = TestServer(create_app(queue, SECRET, "verify", "evo-secret"))
    async with TestClient(server) as http:
        body = (DATA / "text_message.json").read_bytes()
        answer = await http.post("/webhooks/whatsapp/webhook", data=body,
                                 headers={"X-Hub-Signature-256": sign(body, SECRET)})
        assert answer.status == 200
        await worker.dispatch_once()
        await worker.idle()
        await sender.idle()
        counts = await queue.counts()
    await claims.close()
    await client.close()
    assert counts == {"inbox": {DONE: 1}, "outbox": {SENT: 1}}
    assert len(graph.sent()) == 1
    assert guard.caught == []
