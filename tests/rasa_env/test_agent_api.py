"""The agent route of the channels: auth, validation, sending through the channel, tracker record."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rasa.core.lock_store import InMemoryLockStore
from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from sanic import Sanic
from sqlalchemy.engine import make_url

from connectors.agent_api import parse_request
from connectors.queue_schema import FAILED_SEND, SENT
from connectors.whatsapp.channel import WhatsAppInput
from connectors.whatsapp.signature import sign

from .conftest import GraphStandIn, graph_error
from .test_whatsapp_webhook import SECRET, settings

DATA = Path(__file__).parent / "data"
TOKEN = "agent-token"
USER = "34600111222"


ROOT = Path(__file__).resolve().parent.parent.parent


class FakeAgent:
    """What the routes use of Rasa's Agent: tracker store, lock store and the responses of our domain."""

    def __init__(self) -> None:
        self.domain = Domain.load(str(ROOT / "domain"))
        self.tracker_store = InMemoryTrackerStore(self.domain)
        self.lock_store = InMemoryLockStore()
        self.nlg = TemplatedNaturalLanguageGenerator(self.domain.responses)


@pytest.fixture
def app_and_channel(tmp_path: Path, graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CHANNEL_AGENT_TOKEN", TOKEN)
    channel = WhatsAppInput(settings(tmp_path, graph.url, run_worker=True))  # the sender sends agent replies
    app = Sanic(f"agent_{uuid.uuid4().hex[:8]}")
    app.ctx.agent = FakeAgent()
    async def turn(_message: Any) -> None:
        """Rasa's turn on the seeded message: no reply (these tests are about the agent's)."""

    app.blueprint(channel.blueprint(turn), url_prefix="/webhooks/whatsapp")
    return app, channel


def outbound_for(channel: WhatsAppInput, conversation_id: str) -> list[dict[str, Any]]:
    with sqlite3.connect(make_url(channel.settings.inbox_db_url).database or "") as conn:
        rows = conn.execute("SELECT state, error_code FROM wa_outbound WHERE conversation_id = ? ORDER BY id",
                            (conversation_id,)).fetchall()
    return [{"state": state, "error_code": code} for state, code in rows]


async def call(app: Sanic, body: Any, token: str | None = TOKEN, action: str = "send") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    _, response = await app.asgi_client.post(f"/webhooks/whatsapp/agent/{action}", content=json.dumps(body),
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
    assert [r["state"] for r in outbound_for(channel, USER)] == [SENT]
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
    assert [r["state"] for r in outbound_for(channel, USER)] == [FAILED_SEND]
    tracker = await app.ctx.agent.tracker_store.retrieve(USER)
    assert tracker is None or not [e for e in tracker.events if e.type_name == "bot"]


def test_attachments_by_url() -> None:
    parsed, _ = parse_request({"conversation_id": "c", "attachment": "https://cdn.example/manual.pdf"})
    assert parsed is not None and parsed["message"] == {"attachment": "https://cdn.example/manual.pdf"}
    parsed, _ = parse_request({"conversation_id": "c", "text": "see", "attachment": "https://cdn.example/a.png"})
    assert parsed is not None and parsed["message"] == {"text": "see", "image": "https://cdn.example/a.png"}


async def paused(app: Sanic) -> None:
    from rasa.shared.core.events import ConversationPaused, SlotSet

    tracker = await app.ctx.agent.tracker_store.get_or_create_tracker(USER)
    for event in (SlotSet("order_number", "VB-123456"), SlotSet("handoff_reason", "customer_request"),
                  ConversationPaused()):
        tracker.update(event)
    await app.ctx.agent.tracker_store.save(tracker)


async def test_handback_resumes_with_the_note_and_tells_the_customer(app_and_channel: Any,
                                                                     graph: GraphStandIn) -> None:
    app, _ = app_and_channel
    await seed(app)
    await paused(app)
    answer = await call(app, {"conversation_id": USER, "agent": "Ana", "note": "refund approved"}, action="handback")
    assert answer.status == 200 and answer.json["resumed"] is True and answer.json["notified"] is True
    tracker = await app.ctx.agent.tracker_store.retrieve(USER)
    assert not tracker.is_paused()
    assert tracker.get_slot("handback_note") == "refund approved"
    assert tracker.get_slot("order_number") == "VB-123456"  # the bot keeps its context
    assert tracker.latest_action_name == "action_listen"  # the next message starts a normal turn
    (payload,) = graph.sent()
    assert payload["text"]["body"].startswith("You're chatting with the Voltbay assistant again")


async def test_close_resumes_and_sends_the_rating_list(app_and_channel: Any, graph: GraphStandIn) -> None:
    app, _ = app_and_channel
    await seed(app)
    await paused(app)
    answer = await call(app, {"conversation_id": USER, "agent": "Ana", "csat": True}, action="close")
    assert answer.status == 200 and answer.json["notified"] is True
    tracker = await app.ctx.agent.tracker_store.retrieve(USER)
    resumed = [e for e in tracker.events if e.type_name == "resume"]
    assert not tracker.is_paused() and resumed[-1].metadata == {"agent": "Ana", "closed": True}
    (payload,) = graph.sent()
    assert payload["type"] == "interactive" and payload["interactive"]["type"] == "list"
    rows = payload["interactive"]["action"]["sections"][0]["rows"]
    assert len(rows) == 5 and rows[0]["title"].startswith("5")
    # without the rating question: resumed, nothing sent
    await paused(app)
    answer = await call(app, {"conversation_id": USER, "agent": "Ana", "csat": False}, action="close")
    assert answer.json == {"resumed": True, "notified": False, "sent": []} and len(graph.sent()) == 1


async def test_handback_and_close_refuse_bad_input(app_and_channel: Any) -> None:
    app, _ = app_and_channel
    assert (await call(app, {"conversation_id": USER}, token="wrong", action="handback")).status == 401
    assert (await call(app, {"conversation_id": "nobody"}, action="handback")).status == 404
    for body in [None, [1], {}, {"conversation_id": ""}, {"conversation_id": USER, "note": "x" * 5000},
                 {"conversation_id": USER, "csat": "yes"}, {"conversation_id": USER, "agent": {"a": 1}}]:
        for action in ("handback", "close"):
            assert (await call(app, body, action=action)).status == 400, (action, body)


async def test_template_reopens_the_window_when_configured(app_and_channel: Any, graph: GraphStandIn) -> None:
    app, channel = app_and_channel
    await seed(app)
    answer = await call(app, {"conversation_id": USER, "template": True})
    assert answer.status == 409 and answer.json == {"error": "no_template_configured"}
    channel.settings = replace(channel.settings, template=("welcome_back", "en"))
    answer = await call(app, {"conversation_id": USER, "template": True, "agent": "Ana"})
    assert answer.status == 200
    (payload,) = graph.sent()
    assert payload["type"] == "template" and payload["template"]["name"] == "welcome_back"


async def test_media_of_a_conversation_through_the_channels_client(app_and_channel: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    app, channel = app_and_channel
    await seed(app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    _, answer = await app.asgi_client.get(f"/webhooks/whatsapp/agent/media?conversation_id={USER}&media_id=MEDIA1",
                                          headers=headers)
    assert answer.status == 200 and answer.headers["content-type"] == "image/png"
    assert answer.body.startswith(b"\x89PNG")
    _, answer = await app.asgi_client.get(f"/webhooks/whatsapp/agent/media?conversation_id={USER}&media_id=NOPE",
                                          headers=headers)
    assert answer.status == 502
    for query in ["", f"conversation_id={USER}", f"conversation_id={USER}&media_id=../../etc"]:
        _, answer = await app.asgi_client.get(f"/webhooks/whatsapp/agent/media?{query}", headers=headers)
        assert answer.status == 400, query
    _, answer = await app.asgi_client.get("/webhooks/whatsapp/agent/media?conversation_id=nobody&media_id=MEDIA1",
                                          headers=headers)
    assert answer.status == 404
    _, answer = await app.asgi_client.get(f"/webhooks/whatsapp/agent/media?conversation_id={USER}&media_id=MEDIA1")
    assert answer.status == 401
    import connectors.agent_api as agent_api

    original = channel.client.download_media

    async def small(business_id: str, media_id: str, max_bytes: int = 4) -> Any:
        return await original(business_id, media_id, max_bytes=4)

    monkeypatch.setattr(channel.client, "download_media", small)
    _, answer = await app.asgi_client.get(f"/webhooks/whatsapp/agent/media?conversation_id={USER}&media_id=MEDIA1",
                                          headers=headers)
    assert answer.status == 413 and agent_api.MediaTooLarge
