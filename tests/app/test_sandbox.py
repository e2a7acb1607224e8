"""The sandbox server: Graph stand-in answers, the page API's validation, ticks, failure injection."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sanic import Sanic
from sanic_testing.testing import SanicASGITestClient

from sandbox.app import SandboxConfig, create_app
from sandbox.store import ChatMessage, SandboxStore
from sandbox.webhooks import customer_message, status_update

TOKEN = "sandbox-token"


@pytest.fixture
def app() -> Sanic:
    config = SandboxConfig(channel_url="http://127.0.0.1:9/unreachable", app_secret="s", access_token=TOKEN)
    return create_app(config, name=f"sandbox_{uuid.uuid4().hex[:8]}")


def client(app: Sanic) -> SanicASGITestClient:
    return SanicASGITestClient(app)


async def graph_post(app: Sanic, payload: dict[str, Any], token: str = TOKEN) -> Any:
    _, answer = await client(app).post("/v23.0/PNID/messages", content=json.dumps(payload),
                                       headers={"Authorization": f"Bearer {token}",
                                                "Content-Type": "application/json"})
    return answer


async def test_graph_stand_in_answers_like_meta(app: Sanic) -> None:
    answer = await graph_post(app, {"messaging_product": "whatsapp", "to": "34600000001", "type": "text",
                                    "text": {"body": "hi"}})
    assert answer.status == 200
    assert answer.json["messages"][0]["id"].startswith("wamid.sandbox.out.")
    assert (await graph_post(app, {"to": "1", "type": "text"}, token="wrong")).json["error"]["code"] == 190
    assert (await graph_post(app, {"type": "text"})).json["error"]["code"] == 100
    phone = app.ctx.store.phones["34600000001"]
    assert phone.messages[0].direction == "out" and phone.messages[0].status == "sent"


async def test_read_receipt_sets_blue_ticks_and_typing(app: Sanic) -> None:
    store: SandboxStore = app.ctx.store
    store.add(ChatMessage(id="wamid.in.1", phone="34600000001", direction="in", payload={"text": "hi"},
                          status="delivered"))
    answer = await graph_post(app, {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in.1",
                                    "typing_indicator": {"type": "text"}})
    assert answer.json == {"success": True}
    result = store.since("34600000001", 0)
    assert result["messages"][0]["status"] == "read" and result["typing"] is True


async def test_failure_injection(app: Sanic) -> None:
    _, answer = await client(app).post("/_sandbox/config", content=json.dumps({"window_closed_for": ["1"]}))
    assert answer.status == 200
    payload = {"to": "1", "type": "text", "text": {"body": "x"}}
    failed = await graph_post(app, payload)
    assert failed.status == 400 and failed.json["error"]["code"] == 131047
    template = await graph_post(app, {"to": "1", "type": "template", "template": {"name": "t"}})
    assert template.status == 200


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("not json", "JSON object"),
        ({"phone": "12", "text": "hi"}, "phone"),
        ({"phone": "34600000001"}, "text"),
        ({"phone": "34600000001", "text": "   "}, "text"),
        ({"phone": "34600000001", "text": "x" * 5000}, "4096"),
        ({"phone": "34600000001", "reply": {"type": "poll", "id": "x"}}, "reply"),
        ({"phone": "34600000001", "reply": "yes"}, "reply"),
    ],
)
async def test_send_rejects_bad_input(app: Sanic, body: Any, error: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    _, answer = await client(app).post("/api/send", content=content)
    assert answer.status == 400 and error in answer.json["error"]
    assert app.ctx.store.phones == {}


async def test_send_marks_failed_when_the_channel_is_down(app: Sanic) -> None:
    _, answer = await client(app).post("/api/send", content=json.dumps({"phone": "+34 600 000 001", "text": "hi"}))
    assert answer.status == 502
    assert answer.json["status"] == "failed" and "channel answered 0" in answer.json["error"]
    assert app.ctx.store.phones["34600000001"].messages[0].payload == {"text": "hi"}


async def test_messages_api(app: Sanic) -> None:
    _, answer = await client(app).get("/api/messages", params={"phone": "1", "since": "x"})
    assert answer.status == 400
    _, answer = await client(app).get("/api/messages", params={"phone": "1"})
    assert answer.json == {"messages": [], "typing": False, "seq": 0}
    _, page = await client(app).get("/")
    assert page.status == 200 and "sandbox" in page.text.lower()


async def test_a_long_poll_wakes_for_its_own_phone_only() -> None:
    """One page (or bench client) per phone long-polls: another phone's messages, ticks and "typing…"
    must not wake it (with 20 phones that was ~40 empty answers and new polls per reply)."""
    import asyncio

    store = SandboxStore()
    first = asyncio.create_task(store.wait_for_change("1", 5))
    also_first = asyncio.create_task(store.wait_for_change("1", 5))
    await asyncio.sleep(0)
    store.add(ChatMessage(id="b", phone="2", direction="out", payload={}))
    store.set_status("b", "delivered")
    store.typing("2")
    await asyncio.sleep(0.05)
    assert not first.done() and not also_first.done()
    store.add(ChatMessage(id="a", phone="1", direction="out", payload={}))
    await asyncio.wait_for(asyncio.gather(first, also_first), 1)  # both of phone 1's polls woke
    assert store.since("1", 0)["messages"][0]["id"] == "a"
    await store.wait_for_change("3", 0.01)  # timed out: nothing kept for a phone nobody waits for
    await asyncio.gather(*(store.wait_for_change(f"random-{n}", 0.01) for n in range(100)))
    assert store._changes == {} and store._waiting == {}


def test_ticks_only_move_forward() -> None:
    store = SandboxStore()
    store.add(ChatMessage(id="m", phone="1", direction="in", payload={}))
    store.set_status("m", "read")
    store.set_status("m", "delivered")
    assert store.by_id["m"].status == "read"
    assert store.set_status("unknown", "read") is None


def test_webhook_builders_match_the_channel_parser_shape() -> None:
    message = customer_message(phone_number_id="P", display_number="1555", wa_id="346", name="Ana", wamid="w",
                               timestamp=1, reply={"type": "list_reply", "id": "/x", "title": "X"})
    value = message["entry"][0]["changes"][0]["value"]
    assert value["messages"][0]["interactive"] == {"type": "list_reply", "list_reply": {"id": "/x", "title": "X"}}
    assert value["contacts"][0]["wa_id"] == "346"
    status = status_update(phone_number_id="P", display_number="1555", wamid="w", status="read", recipient="346",
                           timestamp=1)
    assert status["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] == "read"
