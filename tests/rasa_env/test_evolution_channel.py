"""The `evolution` channel: webhook route (secret, limits, dedup, drops) and a turn through the shared core."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from rasa.core.channels.channel import UserMessage
from sanic import Sanic
from sanic_testing import TestManager

from connectors.evolution.channel import EvolutionInput, EvolutionOutput
from connectors.inbox import FAILED_SEND, SENT
from connectors.settings import EvolutionSettings
from connectors.whatsapp.updates import MAX_BODY_BYTES

from .conftest import start_web

DATA = Path(__file__).parent / "data"
TEXT = json.loads((DATA / "evolution_upsert_text.json").read_text())
ROUTE = "/webhooks/evolution/webhook"
SECRET = "evo-secret"


def evo_settings(tmp_path: Path, api_url: str = "http://127.0.0.1:9") -> EvolutionSettings:
    return EvolutionSettings(api_url=api_url, api_key="evo-key", instance="voltbay", webhook_secret=SECRET,
                             inbox_db_url=f"sqlite:///{tmp_path / 'inbox.db'}", stale_after_seconds=10 * 365 * 86400,
                             concurrency=4, run_worker=False)


@pytest.fixture
def evo_app(tmp_path: Path) -> tuple[Sanic, EvolutionInput]:
    async def on_new_message(_: UserMessage) -> None:
        raise AssertionError("the worker is off in these tests")

    channel = EvolutionInput(evo_settings(tmp_path))
    app = Sanic(f"evo_test_{uuid.uuid4().hex[:8]}")
    app.blueprint(channel.blueprint(on_new_message), url_prefix="/webhooks/evolution")
    TestManager(app)
    return app, channel


def post(app: Sanic, body: Any, secret: str | None = SECRET) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"X-Evolution-Secret": secret} if secret is not None else {})}
    _, response = app.test_client.post(ROUTE, content=raw, headers=headers)
    return response


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
def test_missing_or_wrong_secret_is_403_and_nothing_is_stored(evo_app: Any, secret: str | None) -> None:
    app, channel = evo_app
    assert post(app, TEXT, secret).status == 403
    assert channel.inbox.states() == {}


def test_unconfigured_secret_refuses_everything(tmp_path: Path) -> None:
    channel = EvolutionInput(EvolutionSettings(**{**evo_settings(tmp_path).__dict__, "webhook_secret": ""}))
    app = Sanic(f"evo_test_{uuid.uuid4().hex[:8]}")
    app.blueprint(channel.blueprint(lambda _m: None), url_prefix="/webhooks/evolution")  # type: ignore[arg-type]
    TestManager(app)
    assert post(app, TEXT, "").status == 403


def test_oversized_and_malformed_bodies(evo_app: Any) -> None:
    app, channel = evo_app
    assert post(app, b"x" * (MAX_BODY_BYTES + 1)).status == 413
    assert post(app, b"{not json").status == 400
    broken = copy.deepcopy(TEXT)
    broken["data"]["key"].pop("id")
    response = post(app, broken)  # acknowledged (Evolution would retry it), nothing stored
    assert response.status == 200 and response.json["dropped"] == 1
    assert channel.inbox.states() == {}


def test_duplicate_deliveries_are_stored_once_and_echoes_not_at_all(evo_app: Any) -> None:
    app, channel = evo_app
    for _ in range(3):
        assert post(app, TEXT).status == 200
    assert channel.inbox.states() == {"pending": 1}
    echo = copy.deepcopy(TEXT)
    echo["data"]["key"].update(fromMe=True, id="ECHO1")
    group = copy.deepcopy(TEXT)
    group["data"]["key"].update(remoteJid="1203630@g.us", id="GROUP1")
    assert post(app, echo).json["dropped"] == 1 and post(app, group).status == 200
    assert post(app, {"event": "connection.update", "instance": "voltbay", "data": {"state": "open"}}).status == 200
    assert channel.inbox.states() == {"pending": 1}


def test_delivery_updates_are_stored_as_statuses(evo_app: Any) -> None:
    app, channel = evo_app
    post(app, {"event": "messages.update", "instance": "voltbay",
               "data": {"keyId": "OUT1", "fromMe": True, "status": "DELIVERY_ACK", "remoteJid": "346@s.whatsapp.net"}})
    assert channel.inbox.statuses_for("OUT1") == ["delivered"]


class EvolutionStandIn:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[int] = []
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
        if request.path.startswith("/message/") and self.failures:
            status = self.failures.pop(0)
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


async def test_a_turn_goes_through_the_shared_core(tmp_path: Path, evolution: EvolutionStandIn) -> None:
    channel = EvolutionInput(evo_settings(tmp_path, evolution.url))
    from connectors.evolution.webhook import receive_evolution

    await receive_evolution(json.dumps(TEXT).encode(), SECRET, SECRET, channel.inbox)
    seen: list[UserMessage] = []

    async def on_new_message(message: UserMessage) -> None:
        seen.append(message)
        assert isinstance(message.output_channel, EvolutionOutput)
        await message.output_channel.send_response(message.sender_id, {
            "text": "Shall I cancel it?", "buttons": [{"title": "Yes", "payload": "/affirm"},
                                                      {"title": "No", "payload": "/deny"}]})

    row = channel.inbox.claim_next("34600111222@s.whatsapp.net")
    assert row is not None
    answered = await channel.handle_row(row, on_new_message)
    assert answered is not None
    await answered.sends  # the turn returned before its send ended: the worker marks the row done after
    menu = answered.menu
    await asyncio.gather(*channel._receipts)
    assert seen[0].text == "where is my order VB-310977" and seen[0].input_channel == "evolution"
    assert seen[0].message_id == "voltbay:3EB0C767D26A1D8E9F01"
    assert menu == {"1": "/affirm", "2": "/deny"}
    assert evolution.sends() == [{"number": "34600111222@s.whatsapp.net",
                                  "text": "Shall I cancel it?\n\n1. Yes\n2. No\n\nReply with a number."}]
    paths = [path for path, _ in evolution.requests]
    assert "/chat/sendPresence/voltbay" in paths and "/chat/markMessageAsRead/voltbay" in paths
    [sent] = channel.inbox.outbound_for("34600111222@s.whatsapp.net")
    assert sent["state"] == SENT and sent["channel"] == "evolution" and sent["business_id"] == "voltbay"

    # The customer answers "2": the worker's next claim carries the menu, and "2" becomes /deny.
    answer = copy.deepcopy(TEXT)
    answer["data"]["key"]["id"] = "3EB0ANSWER"
    answer["data"]["message"] = {"conversation": "2"}
    await receive_evolution(json.dumps(answer).encode(), SECRET, SECRET, channel.inbox)
    following = channel.inbox.complete(row, "done", menu)
    assert following is not None
    seen.clear()

    async def record(message: UserMessage) -> None:
        seen.append(message)

    answered = await channel.handle_row(following, record)
    assert answered is not None
    await answered.sends
    assert seen[0].text == "/deny"
    await channel.client.close()


async def test_failed_sends_are_retried_or_recorded(tmp_path: Path, evolution: EvolutionStandIn) -> None:
    channel = EvolutionInput(evo_settings(tmp_path, evolution.url))
    output = EvolutionOutput(channel.client, channel.inbox, "voltbay", "346@s.whatsapp.net", "346@s.whatsapp.net",
                             turn_id="voltbay:T1")
    output.client._sleep = lambda _s: asyncio.sleep(0)  # type: ignore[attr-defined]
    evolution.failures = [500, 429]
    await output.send_text_message("346", "hello")
    evolution.failures = [400]
    await output.send_text_message("346", "never")
    rows = channel.inbox.outbound_for("346@s.whatsapp.net")
    assert [r["state"] for r in rows] == [SENT, FAILED_SEND]
    assert "HTTP 400" in rows[1]["error"]  # kept where the console shows failed sends
    assert len(evolution.sends()) == 4  # 500, 429, then accepted; the 400 is not retried
    await channel.client.close()


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
