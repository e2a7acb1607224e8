"""Shared harness of the webhook fuzz tests (Cloud API and Evolution routes of the receiver)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from connectors.queue import Queue
from connectors.queue_schema import Database
from connectors.receiver import create_app

CLOUD_SECRET = "fuzz-app-secret"
EVOLUTION_SECRET = "fuzz-evolution-secret"

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


class Receiver:
    """The webhook receiver (connectors/receiver.py, the routes `make run` serves) on a free port, driven from
    one event loop the fixture owns, so that each example is a real HTTP round trip without threads."""

    def __init__(self, db: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.queue = Queue(Database(f"sqlite:///{db}"))
        self.loop.run_until_complete(self.queue.create_tables())
        app = create_app(self.queue, CLOUD_SECRET, "verify-me", EVOLUTION_SECRET)
        self.server = TestServer(app, host="127.0.0.1")
        self.loop.run_until_complete(self.server.start_server(loop=self.loop))
        self.session = self.loop.run_until_complete(self._session())

    @staticmethod
    async def _session() -> ClientSession:
        return ClientSession(timeout=ClientTimeout(total=10))

    def post(self, route: str, body: bytes, headers: dict[str, str]) -> int:
        async def send() -> int:
            async with self.session.post(self.server.make_url(route), data=body,
                                         headers={"Content-Type": "application/json", **headers}) as response:
                await response.read()
                return response.status

        return self.loop.run_until_complete(send())

    def close(self) -> None:
        self.loop.run_until_complete(self.session.close())
        self.loop.run_until_complete(self.server.close())  # the app's cleanup closes the queue
        self.loop.close()


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
