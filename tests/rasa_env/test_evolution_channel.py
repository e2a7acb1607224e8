"""The `evolution` channel: webhook route (secret, limits, dedup, drops, every event, both URL forms, deletions)
and turns through the shared core (worker, outbox, sender) against an Evolution API stand-in."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from rasa.core.channels.channel import UserMessage
from sanic import Sanic

from connectors.evolution.channel import EvolutionInput
from connectors.queue_schema import FAILED_SEND, REVOKED, SENT
from connectors.settings import EvolutionSettings
from connectors.whatsapp.updates import MAX_BODY_BYTES

from .conftest import queue_states, serving, start_web

DATA = Path(__file__).parent / "data"
TEXT = json.loads((DATA / "evolution_upsert_text.json").read_text())
ROUTE = "/webhooks/evolution/webhook"
SECRET = "evo-secret"
CUSTOMER = "34600111222@s.whatsapp.net"


def evo_settings(tmp_path: Path, api_url: str = "http://127.0.0.1:9", run_worker: bool = False) -> EvolutionSettings:
    return EvolutionSettings(api_url=api_url, api_key="evo-key", instance="voltbay", webhook_secret=SECRET,
                             inbox_db_url=f"sqlite:///{tmp_path / 'inbox.db'}", stale_after_seconds=10 * 365 * 86400,
                             concurrency=4, run_worker=run_worker, poll_interval_seconds=0.02)


def app_for(channel: EvolutionInput, on_new_message: Any = None) -> Sanic:
    async def refuse(_: UserMessage) -> None:
        raise AssertionError("the worker is off in these tests")

    app = Sanic(f"evo_test_{uuid.uuid4().hex[:8]}")
    app.blueprint(channel.blueprint(on_new_message or refuse), url_prefix="/webhooks/evolution")
    return app


@pytest.fixture
def evo_app(tmp_path: Path) -> tuple[Sanic, Path]:
    return app_for(EvolutionInput(evo_settings(tmp_path))), tmp_path / "inbox.db"


async def post(app: Sanic, body: Any, secret: str | None = SECRET, route: str = ROUTE) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"X-Evolution-Secret": secret} if secret is not None else {})}
    _, response = await app.asgi_client.post(route, content=raw, headers=headers)
    return response


async def post_to(base: str, body: Any) -> int:
    """A webhook to a served app (its worker running)."""
    async with aiohttp.ClientSession() as session, session.post(
            base + ROUTE, json=body, headers={"X-Evolution-Secret": SECRET}) as response:
        return response.status


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
async def test_missing_or_wrong_secret_is_403_and_nothing_is_stored(evo_app: Any, secret: str | None) -> None:
    app, db = evo_app
    assert (await post(app, TEXT, secret)).status == 403
    assert queue_states(db) == {}


async def test_unconfigured_secret_refuses_everything(tmp_path: Path) -> None:
    channel = EvolutionInput(EvolutionSettings(**{**evo_settings(tmp_path).__dict__, "webhook_secret": ""}))
    assert (await post(app_for(channel), TEXT, "")).status == 403


async def test_oversized_and_malformed_bodies(evo_app: Any) -> None:
    app, db = evo_app
    assert (await post(app, b"x" * (MAX_BODY_BYTES + 1))).status == 413
    assert (await post(app, b"{not json")).status == 400
    assert (await post(app, b"[1, 2]")).status == 400  # not an object
    broken = copy.deepcopy(TEXT)
    broken["data"]["key"].pop("id")
    response = await post(app, broken)  # acknowledged (Evolution would retry it), nothing stored
    assert response.status == 200 and response.json["dropped"] == 1
    assert (await post(app, {"event": "messages.upsert", "instance": "voltbay"})).status == 200  # no data
    assert queue_states(db) == {}


async def test_duplicates_once_echoes_never_and_every_event_acknowledged(evo_app: Any) -> None:
    app, db = evo_app
    for _ in range(3):
        assert (await post(app, TEXT)).status == 200
    assert queue_states(db) == {"pending": 1}
    echo = copy.deepcopy(TEXT)
    echo["data"]["key"].update(fromMe=True, id="ECHO1")
    group = copy.deepcopy(TEXT)
    group["data"]["key"].update(remoteJid="1203630@g.us", id="GROUP1")
    assert (await post(app, echo)).json["dropped"] == 1 and (await post(app, group)).status == 200
    for event in ("connection.update", "qrcode.updated", "contacts.upsert", "chats.update", "presence.update",
                  "send.message", "something.new"):
        assert (await post(app, {"event": event, "instance": "voltbay", "data": {"state": "open"}})).status == 200
    assert queue_states(db) == {"pending": 1}


async def test_webhook_by_events_appends_the_event_to_the_path(evo_app: Any) -> None:
    app, db = evo_app
    body = copy.deepcopy(TEXT)
    body.pop("event")
    assert (await post(app, body, route=f"{ROUTE}/messages-upsert")).status == 200
    assert (await post(app, {"instance": "voltbay", "data": {}}, route=f"{ROUTE}/connection-update")).status == 200
    assert queue_states(db) == {"pending": 1}


async def test_a_deleted_message_is_marked_revoked_and_never_answered(evo_app: Any) -> None:
    app, db = evo_app
    assert (await post(app, TEXT)).status == 200
    key = TEXT["data"]["key"]
    deletion = {"event": "messages.delete", "instance": "voltbay", "data": {"key": {**key}}}
    assert (await post(app, deletion)).status == 200
    assert (await post(app, deletion)).status == 200  # redelivered
    assert queue_states(db) == {REVOKED: 1, "skipped": 1}


async def test_delivery_updates_are_stored_as_statuses(evo_app: Any) -> None:
    app, db = evo_app
    await post(app, {"event": "messages.update", "instance": "voltbay",
                     "data": {"keyId": "OUT1", "fromMe": True, "status": "DELIVERY_ACK",
                              "remoteJid": "346@s.whatsapp.net"}})
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT status FROM wa_statuses WHERE message_id = 'OUT1'").fetchall()
    assert found == [("delivered",)]


class EvolutionStandIn:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[int] = []
        self.refused: set[str] = set()  # texts answered 400
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers.get("apikey") == "evo-key"
        body = await request.json()
        self.requests.append((request.path, body))
        if request.path.startswith("/chat/getBase64FromMediaMessage/"):
            if body["message"]["key"]["id"] != "IMG1":
                return web.json_response({"status": 400, "response": {"message": ["not found"]}}, status=400)
            return web.json_response({"mediaType": "imageMessage", "mimetype": "image/jpeg",
                                      "base64": base64.b64encode(b"\xff\xd8\xff jpeg").decode()}, status=201)
        if request.path.startswith("/message/") and (self.failures or body.get("text") in self.refused):
            status = self.failures.pop(0) if self.failures else 400
            return web.json_response({"status": status, "response": {"message": ["no"]}}, status=status)
        return web.json_response({"key": {"id": f"OUT{len(self.requests)}"}, "status": "PENDING"}, status=201)

    def sends(self) -> list[dict[str, Any]]:
        return [body for path, body in self.requests if path.startswith("/message/")]


@pytest.fixture
async def evolution() -> AsyncIterator[EvolutionStandIn]:
    stand_in = EvolutionStandIn()
    app = web.Application()
    app.router.add_post("/{tail:.*}", stand_in.handle)
    runner, stand_in.url = await start_web(app)
    yield stand_in
    await runner.cleanup()


async def wait_until(check: Any, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def outbound(db: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT state, error FROM wa_outbound ORDER BY id").fetchall()


async def test_turns_go_through_the_shared_core_with_numbered_options(tmp_path: Path,
                                                                      evolution: EvolutionStandIn) -> None:
    seen: list[UserMessage] = []

    async def on_new_message(message: UserMessage) -> None:
        seen.append(message)
        if message.text != "/deny":
            await message.output_channel.send_response(message.sender_id, {
                "text": "Shall I cancel it?", "buttons": [{"title": "Yes", "payload": "/affirm"},
                                                          {"title": "No", "payload": "/deny"}]})

    app = app_for(EvolutionInput(evo_settings(tmp_path, evolution.url, run_worker=True)), on_new_message)
    async with serving(app) as base:
        await turns_with_a_menu(base, seen, evolution, tmp_path / "inbox.db")


async def turns_with_a_menu(base: str, seen: list[UserMessage], evolution: EvolutionStandIn, db: Path) -> None:
    assert await post_to(base, TEXT) == 200
    await wait_until(lambda: evolution.sends())
    assert seen[0].text == "where is my order VB-310977" and seen[0].input_channel == "evolution"
    assert seen[0].message_id == "voltbay:3EB0C767D26A1D8E9F01"
    assert evolution.sends() == [{"number": CUSTOMER,
                                  "text": "Shall I cancel it?\n\n1. Yes\n2. No\n\nReply with a number."}]
    await wait_until(lambda: "/chat/sendPresence/voltbay" in [path for path, _ in evolution.requests])
    assert "/chat/markMessageAsRead/voltbay" in [path for path, _ in evolution.requests]
    # The customer answers "2": the menu the reply offered turns it into /deny.
    answer = copy.deepcopy(TEXT)
    answer["data"]["key"]["id"] = "3EB0ANSWER"
    answer["data"]["message"] = {"conversation": "2"}
    assert await post_to(base, answer) == 200
    await wait_until(lambda: len(seen) == 2)
    assert seen[1].text == "/deny"
    await wait_until(lambda: queue_states(db) == {"done": 2})
    assert [state for state, _ in outbound(db)] == [SENT]


async def test_failed_sends_are_retried_or_recorded(tmp_path: Path, evolution: EvolutionStandIn) -> None:
    async def two_replies(message: UserMessage) -> None:
        await message.output_channel.send_response(message.sender_id, {"text": "hello"})
        await message.output_channel.send_response(message.sender_id, {"text": "never"})

    channel = EvolutionInput(evo_settings(tmp_path, evolution.url, run_worker=True))
    channel.client._sleep = lambda _s: asyncio.sleep(0)  # type: ignore[attr-defined]
    evolution.failures = [500, 429]
    evolution.refused = {"never"}
    db = tmp_path / "inbox.db"
    async with serving(app_for(channel, two_replies)) as base:
        assert await post_to(base, TEXT) == 200
        await wait_until(lambda: len(outbound(db)) == 2
                         and all(state in (SENT, FAILED_SEND) for state, _ in outbound(db)))
    rows = outbound(db)
    assert [state for state, _ in rows] == [SENT, FAILED_SEND]
    assert "HTTP 400" in (rows[1][1] or "")  # kept where the console shows failed sends
    assert len(evolution.sends()) == 4  # 500, 429, then accepted; the 400 is not retried


async def test_customer_media_is_fetched_as_base64_from_evolution(evolution: EvolutionStandIn) -> None:
    from connectors.evolution.api import EvolutionClient
    from connectors.sender import MediaTooLarge
    from connectors.whatsapp.errors import GraphError

    client = EvolutionClient(evolution.url, "evo-key")
    content, mime = await client.download_media("voltbay", "voltbay:IMG1")
    assert content == b"\xff\xd8\xff jpeg" and mime == "image/jpeg"
    assert evolution.requests[-1] == ("/chat/getBase64FromMediaMessage/voltbay",
                                      {"message": {"key": {"id": "IMG1"}}, "convertToMp4": False})
    with pytest.raises(GraphError):
        await client.download_media("voltbay", "voltbay:OTHER")
    with pytest.raises(MediaTooLarge):
        await client.download_media("voltbay", "IMG1", max_bytes=2)
    await client.close()
