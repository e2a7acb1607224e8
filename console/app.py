"""The console's Sanic app: pages, JSON API, live updates (SSE) and the queue projector.

    .venv/app/bin/python -m console         (make run starts it on CONSOLE_PORT, default 8080)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy import create_engine, select

from console import api, views
from console.auth import ensure_first_admin
from console.broker import consume_broker
from console.projector import Projector
from console.rasa_client import RasaClient
from console.readers import Readers
from console.service import Console, suggest_from_kb
from console.settings import ConsoleSettings, load_settings
from console.store import ConsoleError, queue_counts
from console.tables import conversations, create_db_engine, create_tables
from console.web import agent_of, authenticated, error, security_headers

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
SSE_HEARTBEAT_SECONDS = 15.0


class Changes:
    """Wakes the live views when the projector saw new events."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.version = 0

    def notify(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


def _reader_engine(url: str) -> Any:
    # Plain engine: the console only reads Rasa's and the channels' tables and must not take their locks.
    return create_engine(url, pool_pre_ping=not url.startswith("sqlite"))


def create_app(settings: ConsoleSettings | None = None, *, name: str = "voltbay_console",
               rasa_transport: Any = None, suggest: Callable[[str], dict[str, Any]] | None = None,
               run_projector: bool = True) -> Sanic:
    settings = settings or load_settings()
    app = Sanic(name)
    app.config.REQUEST_MAX_SIZE = MAX_BODY
    app.config.RESPONSE_TIMEOUT = 3600  # SSE streams stay open
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.ctx.settings = settings
    app.blueprint(views.bp)
    app.blueprint(api.bp)
    app.static("/static", Path(__file__).parent / "static", name="static")

    @app.before_server_start
    async def open_resources(app: Sanic, _loop: Any = None) -> None:
        engine = create_db_engine(settings.db_url)
        create_tables(engine)
        logger.info("console: %s", ensure_first_admin(engine, settings.admin_email, settings.admin_password))
        readers = Readers(_reader_engine(settings.tracker_db_url), _reader_engine(settings.inbox_db_url))
        app.ctx.engine = engine
        app.ctx.readers = readers
        app.ctx.rasa = RasaClient(settings.rasa_url, settings.rasa_token, settings.channel_token, rasa_transport)
        app.ctx.console = Console(engine, readers, app.ctx.rasa, suggest or suggest_from_kb)
        app.ctx.changes = Changes()
        app.ctx.wake = asyncio.Event()
        app.ctx.projector = Projector(engine, readers)
        if run_projector:
            app.add_task(project_forever(app), name="projector")
            if settings.broker_url:
                app.add_task(consume_broker(settings.broker_url, settings.broker_exchange, app.ctx.wake.set),
                             name="broker")

    @app.after_server_stop
    async def close_resources(app: Sanic, _loop: Any = None) -> None:
        await app.ctx.rasa.close()

    @app.on_request
    async def limit_body(request: Request) -> HTTPResponse | None:
        # Sanic's server refuses larger bodies itself; this also covers ASGI deployments.
        if len(request.body or b"") > MAX_BODY:
            return response.json({"error": f"request body over {MAX_BODY} bytes"}, status=413)
        return None

    @app.on_response
    async def headers(request: Request, resp: HTTPResponse) -> None:
        security_headers(resp)

    @app.exception(ConsoleError)
    async def console_error(request: Request, failure: ConsoleError) -> HTTPResponse:
        return error(request, str(failure), failure.status)

    @app.get("/healthz")
    async def health(request: Request) -> HTTPResponse:
        return response.json({"ok": True, "projected_up_to": request.app.ctx.projector.position()})

    @app.get("/events/queue")
    @authenticated()
    async def queue_events(request: Request) -> None:
        stream = await request.respond(content_type="text/event-stream",
                                       headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        changes: Changes = request.app.ctx.changes
        seen = -1
        while True:
            if changes.version != seen:
                seen = changes.version
                with request.app.ctx.engine.connect() as conn:
                    counts = queue_counts(conn, agent_of(request).id)
                await stream.send(f"event: queue\ndata: {json.dumps(counts)}\n\n")
            else:
                await stream.send(": heartbeat\n\n")
            await changes.wait(SSE_HEARTBEAT_SECONDS)

    @app.get("/events/c/<sender_id>")
    @authenticated()
    async def conversation_events(request: Request, sender_id: str) -> None:
        stream = await request.respond(content_type="text/event-stream",
                                       headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        changes: Changes = request.app.ctx.changes
        last: tuple[Any, ...] | None = None
        while True:
            with request.app.ctx.engine.connect() as conn:
                row = conn.execute(select(conversations.c.last_event_id, conversations.c.status,
                                          conversations.c.assigned_to, conversations.c.updated_at)
                                   .where(conversations.c.sender_id == sender_id)).first()
            state = tuple(row) if row else None
            if last is not None and state != last:
                await stream.send(f"event: conversation\ndata: {json.dumps({'last_event_id': state and state[0]})}\n\n")
            elif last is None:
                await stream.send("event: ready\ndata: {}\n\n")
            else:
                await stream.send(": heartbeat\n\n")
            last = state
            await changes.wait(SSE_HEARTBEAT_SECONDS)

    return app


async def project_forever(app: Sanic) -> None:
    """Fold new tracker events into the queue every poll interval (at once when the broker says so)."""
    settings: ConsoleSettings = app.ctx.settings
    projector: Projector = app.ctx.projector
    while True:
        try:
            read = await asyncio.to_thread(projector.run_once)
        except Exception:  # the tracker store being away for a moment must not stop the console
            logger.exception("projecting tracker events failed; retrying")
            read = 0
        if read:
            app.ctx.changes.notify()
            continue
        wake: asyncio.Event = app.ctx.wake
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), settings.poll_interval)
        wake.clear()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    app = create_app(settings)
    app.run(host=settings.host, port=settings.port, single_process=True, access_log=False)


if __name__ == "__main__":
    main()
