"""The agent route of the channels: auth, validation, sending through the channel, tracker record."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from rasa.core.lock_store import InMemoryLockStore
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from sanic import Sanic

from connectors.agent_api import parse_request
from connectors.inbox import FAILED_SEND, SENT
from connectors.whatsapp.channel import WhatsAppInput
from connectors.whatsapp.signature import sign

from .conftest import GraphStandIn, graph_error
from .test_whatsapp_webhook import SECRET, settings

DATA = Path(__file__).parent / "data"
TOKEN = "agent-token"
USER = "34600111222"


class FakeAgent:
    def __init__(self) -> None:
        self.tracker_store = InMemoryTrackerStore(Domain.empty())
        self.lock_store = InMemoryLockStore()


@pytest.fixture
def app_and_channel(tmp_path: Path, graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CHANNEL_AGENT_TOKEN", TOKEN)
    channel = WhatsAppInput(settings(tmp_path, graph.url))
    app = Sanic(f"agent_{uuid.uuid4().hex[:8]}")
    app.ctx.agent = FakeAgent()
    app.blueprint(channel.blueprint(lambda _m: None), url_prefix="/webhooks/whatsapp")  # type: ignore[arg-type]
    return app, channel


async def call(app: Sanic, body: Any, token: str | None = TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    _, response = await app.asgi_client.post("/webhooks/whatsapp/agent/send", content=json.dumps(body),
                                             headers=headers)
    return response


async def seed(app: Sanic) -> None:
    body = (DATA / "text_message.json").read_bytes()
    _, answer = await app.asgi_client.post("/webhooks/whatsapp/webhook", content=body,
                                           headers={"X-Hub-Signature-256": sign(body, SECRET)})
    assert answer.status == 200


async def test_auth_is_required(app_and_channel: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = app_and_channel
    assert (await call(app, {"conversation_id": USER, "text": "hi"}, token=None)).status == 401
    assert (await call(app, {"conversation_id": USER, "text": "hi"}, token="wrong")).status == 401
    monkeypatch.setenv("CHANNEL_AGENT_TOKEN", "")
    assert (await call(app, {"conversation_id": USER, "text": "hi"})).status == 403


async def test_reply_goes_through_the_channel_and_into_the_tracker(app_and_channel: Any, graph: GraphStandIn) -> None:
    app, channel = app_and_channel
    await seed(app)
    answer = await call(app, {"conversation_id": USER, "text": "Hi, Ana from Voltbay here.", "agent": "ana"})
    assert answer.status == 200 and answer.json == {"sent": ["wamid.OUT1"]}
    (payload,) = graph.sent()
    assert payload["to"] == USER and payload["text"]["body"] == "Hi, Ana from Voltbay here."
    assert [r["state"] for r in channel.inbox.outbound_for(USER)] == [SENT]
    tracker = await app.ctx.agent.tracker_store.retrieve(USER)
    (bot,) = [e for e in tracker.events if e.type_name == "bot"]
    assert bot.text == "Hi, Ana from Voltbay here." and bot.metadata["agent"] == "ana"


async def test_unknown_conversation_and_bad_bodies(app_and_channel: Any) -> None:
    app, _ = app_and_channel
    assert (await call(app, {"conversation_id": "nobody", "text": "hi"})).status == 404
    for body in [[1], {"text": "hi"}, {"conversation_id": USER}, {"conversation_id": USER, "text": "x" * 5000},
                 {"conversation_id": USER, "attachment": "http://insecure.example/a.pdf"},
                 {"conversation_id": USER, "text": "hi", "agent": "a" * 500}]:
        assert (await call(app, body)).status == 400, body


async def test_outside_the_window_is_a_409_not_a_silent_failure(app_and_channel: Any, graph: GraphStandIn) -> None:
    app, channel = app_and_channel
    await seed(app)
    graph.failures = [graph_error(131047)]
    answer = await call(app, {"conversation_id": USER, "text": "Are you still there?"})
    assert answer.status == 409 and answer.json["error"] == "outside_24h_window"
    assert answer.json["template_available"] is False
    assert [r["state"] for r in channel.inbox.outbound_for(USER)] == [FAILED_SEND]
    tracker = await app.ctx.agent.tracker_store.retrieve(USER)
    assert tracker is None or not [e for e in tracker.events if e.type_name == "bot"]


def test_attachments_by_url() -> None:
    parsed, _ = parse_request({"conversation_id": "c", "attachment": "https://cdn.example/manual.pdf"})
    assert parsed is not None and parsed["message"] == {"attachment": "https://cdn.example/manual.pdf"}
    parsed, _ = parse_request({"conversation_id": "c", "text": "see", "attachment": "https://cdn.example/a.png"})
    assert parsed is not None and parsed["message"] == {"text": "see", "image": "https://cdn.example/a.png"}
