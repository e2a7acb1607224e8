"""Fuzz the webhook route with ≥10,000 malformed bodies: no 5xx, no unhandled error, nothing half-written.

The route runs in a real Sanic server (in a thread); each generated body is signed
(so it reaches the parser) unless the case is about signatures. A body answered
200 must have stored every message it holds; any other answer must have stored none.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasa.core.channels.channel import UserMessage
from sanic import Sanic

from connectors.whatsapp.channel import WhatsAppInput
from connectors.whatsapp.signature import sign

from .test_whatsapp_webhook import SECRET
from .test_whatsapp_webhook import settings as channel_settings

DATA = Path(__file__).parent / "data"
EXAMPLES = 10_000
VALID = json.loads((DATA / "batch_two_entries.json").read_text())

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


VALID_PATHS = [p for p in _paths(VALID) if p]


@st.composite
def mutated_valid(draw: st.DrawFn) -> dict[str, Any]:
    """The valid two-entry batch with one to three values replaced or removed."""
    payload = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(VALID_PATHS))
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


def _with_unique_ids(payload: Any, tag: str) -> tuple[Any, list[str]]:
    """Give every message id a per-body prefix so the database can be checked body by body."""
    ids: list[str] = []
    try:
        for entry in payload["entry"]:
            for change in entry["changes"]:
                for message in change["value"]["messages"]:
                    if isinstance(message, dict) and isinstance(message.get("id"), str):
                        message["id"] = f"{tag}.{message['id']}"
                        ids.append(message["id"])
    except (KeyError, TypeError, AttributeError):
        pass
    return payload, ids


bodies = st.one_of(
    mutated_valid().map(lambda p: ("json", p)),
    json_values.map(lambda p: ("json", p)),
    st.dictionaries(st.sampled_from(["object", "entry", "changes"]), json_values).map(lambda p: ("json", p)),
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
)


class Server:
    def __init__(self, app: Sanic) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            server = await self.app.create_server(host="127.0.0.1", port=0, return_asyncio_server=True,
                                                  access_log=False)
            await server.startup()
            await server.after_start()
            self.port = server.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(30)

    def post(self, body: bytes, signature: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-Hub-Signature-256"] = signature
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/webhooks/whatsapp/webhook", data=body,
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("fuzz")

    async def on_new_message(_: UserMessage) -> None:
        raise AssertionError("the worker is off in this test")

    channel = WhatsAppInput(channel_settings(tmp))
    assert channel.inbox.states() == {}  # creates the tables
    app = Sanic(f"wa_fuzz_{uuid.uuid4().hex[:8]}")
    app.blueprint(channel.blueprint(on_new_message), url_prefix="/webhooks/whatsapp")
    running = Server(app)
    running.start()
    yield running, tmp / "inbox.db"
    running.loop.call_soon_threadsafe(running.loop.stop)


def stored(db: Path, ids: list[str]) -> int:
    if not ids:
        return 0
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(ids))
        return conn.execute(f"SELECT COUNT(*) FROM wa_inbox WHERE message_id IN ({marks})", ids).fetchone()[0]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=bodies, signing=st.sampled_from(["good", "good", "good", "good", "bad", "none"]))
def test_fuzzed_webhooks(server: tuple[Server, Path], case: tuple[str, Any], signing: str) -> None:
    running, db = server
    kind, value = case
    ids: list[str] = []
    if kind == "json":
        value, ids = _with_unique_ids(value, uuid.uuid4().hex)
        body = json.dumps(value).encode()
    else:
        body = value
    signature = {"good": sign(body, SECRET), "bad": sign(body, "wrong"), "none": None}[signing]
    status = running.post(body, signature)
    assert status < 500, (status, body[:300])
    if signing != "good":
        assert status == 403
    count = stored(db, ids)
    if status == 200:
        assert count == len(set(ids))  # every message of an accepted body
    else:
        assert count == 0  # nothing of a refused body
