"""Fixtures for the channel tests (rasa env): queue databases and a Graph API stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web

from connectors.queue import Queue
from connectors.queue_schema import Database
from tests.postgres import temporary_database

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL_RASA", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", "postgresql"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Queue]:
    """An empty channel queue on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        box = Queue(Database(f"sqlite:///{tmp_path / 'queue.db'}"))
        await box.create_tables()
        yield box
        await box.close()
        return
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_queue") as url:
        box = Queue(Database(url))
        await box.create_tables()
        yield box
        await box.close()


def queue_states(db: Path) -> dict[str, int]:
    """wa_inbox rows per state of a SQLite queue file, read with the stdlib (as an operator would)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        try:
            return dict(conn.execute("SELECT state, COUNT(*) FROM wa_inbox GROUP BY state").fetchall())
        except sqlite3.OperationalError:  # no tables yet
            return {}


class GraphStandIn:
    """Answers /{version}/{phone_number_id}/messages like the Cloud API; scripted failures first."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[int, dict[str, Any]]] = []  # (http status, body) served before successes
        self.count = 0
        self.url = ""
        self.answer_when: asyncio.Event | None = None  # set: each request is answered only once it is set

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        assert request.headers.get("Authorization") == "Bearer test-token"
        self.received.append((request.match_info["phone_number_id"], payload))
        if self.answer_when is not None:
            await self.answer_when.wait()
        if self.failures and payload.get("status") != "read":  # scripted failures are for sends, not receipts
            status, body = self.failures.pop(0)
            return web.json_response(body, status=status)
        if payload.get("status") == "read":
            return web.json_response({"success": True})
        self.count += 1
        return web.json_response({"messaging_product": "whatsapp", "contacts": [{"input": payload.get("to")}],
                                  "messages": [{"id": f"wamid.OUT{self.count}"}]})

    def sent(self) -> list[dict[str, Any]]:
        return [p for _, p in self.received if p.get("status") != "read"]

    # Media download as documented: GET /{media_id} → {url, mime_type, file_size}; GET url, same token.
    MEDIA: ClassVar[dict[str, bytes]] = {"MEDIA1": b"\x89PNG\r\n\x1a\n fake image"}

    async def media_info(self, request: web.Request) -> web.Response:
        assert request.headers.get("Authorization") == "Bearer test-token"
        media_id = request.match_info["media_id"]
        if media_id not in self.MEDIA:
            return web.json_response({"error": {"message": "Unsupported get request", "code": 100}}, status=400)
        return web.json_response({"url": f"{self.url}/_media/{media_id}", "mime_type": "image/png",
                                  "file_size": len(self.MEDIA[media_id]), "id": media_id,
                                  "messaging_product": "whatsapp"})

    async def media_bytes(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer test-token":
            return web.Response(status=401)
        return web.Response(body=self.MEDIA[request.match_info["media_id"]], content_type="image/png")


def graph_error(code: int, status: int = 400) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": f"error {code}", "type": "OAuthException", "code": code,
                              "error_data": {"details": "details"}, "fbtrace_id": "Atrace"}}


async def start_web(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve an aiohttp app on a free local port: (runner to clean up, base URL)."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    stand_in = GraphStandIn()
    app = web.Application()
    app.router.add_post("/{version}/{phone_number_id}/messages", stand_in.handle)
    app.router.add_get("/_media/{media_id}", stand_in.media_bytes)
    app.router.add_get("/{version}/{media_id}", stand_in.media_info)
    runner, stand_in.url = await start_web(app)
    yield stand_in
    await runner.cleanup()


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """A Sanic app served on the test's own event loop with its server listeners run (the channel's worker and
    sender start and stop with them, as inside Rasa); yields its base URL."""
    with socket.socket() as probe:  # Sanic 21.12 reads port=0 as its default, 8000: ask the OS for a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False)
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()
