"""Shared harness of the webhook fuzz tests (Cloud API and Evolution routes)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rasa.core.channels.channel import UserMessage
from sanic import Sanic

# CI runs 10,000 bodies per route; FUZZ_EXAMPLES=200 for a quick local look.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10000"))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.data_too_large])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found



def mutations(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one to three values replaced or removed."""
    paths = [p for p in _paths(valid) if p]

    @st.composite
    def mutated(draw: st.DrawFn) -> dict[str, Any]:
        payload = copy.deepcopy(valid)
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(paths))
            parent: Any = payload
            try:
                for key in path[:-1]:
                    parent = parent[key]
                if draw(st.booleans()) and isinstance(parent, dict):
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = draw(json_values)
            except (KeyError, IndexError, TypeError):
                continue
        return payload

    return mutated()


class Server:
    def __init__(self, app: Sanic) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.server: Any = None
        self.ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            # Sanic 21.12 reads port=0 as "default" (8000): ask the OS for a free port first.
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            server = await self.app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True,
                                                  access_log=False)
            await server.startup()
            await server.before_start()  # the channel creates its tables here
            await server.after_start()
            self.server = server
            self.port = port
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(close(), self.loop)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(30)

    def post(self, body: bytes, signature: str | None, route: str = "/webhooks/whatsapp/webhook",
             header: str = "X-Hub-Signature-256") -> int:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers[header] = signature
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{route}", data=body,
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


def stored(db: Path, ids: list[str]) -> int:
    if not ids:
        return 0
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(ids))
        return conn.execute(f"SELECT COUNT(*) FROM wa_inbox WHERE message_id IN ({marks})", ids).fetchone()[0]


def body_cases(valid: dict[str, Any], top_level_keys: list[str]) -> st.SearchStrategy[tuple[str, Any]]:
    """("json", value) or ("bytes", raw): mutations of a valid payload, any JSON, objects with the
    payload's own top-level keys holding anything, and raw bytes."""
    return st.one_of(
        mutations(valid).map(lambda p: ("json", p)),
        json_values.map(lambda p: ("json", p)),
        st.dictionaries(st.sampled_from(top_level_keys), json_values).map(lambda p: ("json", p)),
        st.binary(max_size=300).map(lambda b: ("bytes", b)),
    )


def encode_case(case: tuple[str, Any], unique: Callable[[Any, str], tuple[Any, list[str]]]
                ) -> tuple[bytes, list[str]]:
    """(body bytes, inbox ids an accepted body must store): JSON cases get per-body ids first."""
    kind, value = case
    if kind != "json":
        return value, []
    value, ids = unique(value, uuid.uuid4().hex[:12])
    return json.dumps(value).encode(), ids


def assert_all_or_nothing(status: int, authorised: bool, db: Path, ids: list[str], body: bytes,
                          kept: Callable[[Any], list[str]]) -> None:
    """No 5xx; unauthorised → 403; an accepted body stored every message its parser kept (`kept`: the ids the
    channel's pure parser keeps of a decoded body; items it cannot store are dropped), a refused one none."""
    assert status < 500, (status, body[:300])
    if not authorised:
        assert status == 403
    count = stored(db, ids)
    if status == 200:
        try:
            expected = set(kept(json.loads(body))) & set(ids)
        except ValueError:
            expected = set()
        assert count == len(expected)
    else:
        assert count == 0


def serve(channel: Any, prefix: str) -> Server:
    """The channel's blueprint (worker off) in a real Sanic server on a free port."""

    async def on_new_message(_: UserMessage) -> None:
        raise AssertionError("the worker is off in the fuzz tests")

    app = Sanic(f"fuzz_{uuid.uuid4().hex[:8]}")
    app.blueprint(channel.blueprint(on_new_message), url_prefix=prefix)
    running = Server(app)
    running.start()
    return running
