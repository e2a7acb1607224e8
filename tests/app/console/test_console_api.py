"""The console's JSON API: login, queue from the tracker store, conversation, reply, note, handback, close."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from console.tables import audit_log
from tests.app.console.conftest import ADMIN, AGENT, Browser
from tests.app.console.helpers import add_events, handoff_events, user


async def admin_and_agent(env: dict[str, Any]) -> tuple[Browser, Browser]:
    admin = Browser(env["app"])
    assert (await admin.api_login(*ADMIN)).status == 200
    created = await admin.api("post", "/api/agents", {"email": AGENT[0], "name": "Ana", "password": AGENT[1],
                                                      "role": "agent"})
    assert created.status == 201, created.json
    agent = Browser(env["app"])
    assert (await agent.api_login(*AGENT)).status == 200
    return admin, agent


def hand_over(env: dict[str, Any], sender: str = "34600000001", reason: str = "customer_request",
              at: float | None = None, channel: str = "whatsapp") -> None:
    add_events(env["tracker"], sender, [user("I want a person", "human_handoff", at=at, channel=channel, wa_id=sender),
                                        *handoff_events(reason, at=at)])
    env["app"].ctx.projector.catch_up()


async def test_queue_shows_handed_over_conversations_with_reason_oldest_first(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    hand_over(env, "34600000002", "negative_sentiment", at=time.time() - 60)
    hand_over(env, "34600000001", "escalation_phrase:lawyer", at=time.time() - 600)
    add_events(env["tracker"], "34600000003", [user("hello", "greet")])  # the bot has this one
    env["app"].ctx.projector.catch_up()
    answer = await agent.api("get", "/api/queue?filter=unassigned")
    assert answer.status == 200
    rows = answer.json["conversations"]
    assert [r["sender_id"] for r in rows] == ["34600000001", "34600000002"]
    assert rows[0]["reason"] == "escalation_phrase:lawyer" and rows[0]["summary"] == "Wants a person."
    assert rows[0]["customer_name"] == "Maria" and rows[0]["channel"] == "whatsapp"
    assert rows[0]["last_message"] == "I want a person" and rows[0]["waiting_seconds"] >= 590
    assert answer.json["counts"] == {"unassigned": 2, "mine": 0, "all": 2}


async def test_claim_reply_note_handback_close(env: dict[str, Any]) -> None:
    admin, agent = await admin_and_agent(env)
    hand_over(env)
    sender = "34600000001"
    assert (await agent.api("post", f"/api/conversations/{sender}/claim", {})).status == 200
    assert (await agent.api("get", "/api/queue?filter=mine")).json["conversations"][0]["sender_id"] == sender
    # someone else cannot take it over; an admin can reassign
    other = await admin.api("post", f"/api/conversations/{sender}/reply", {"text": "hi"})
    assert other.status == 200  # admins may answer any conversation
    reply = await agent.api("post", f"/api/conversations/{sender}/reply", {"text": "Hello Maria, Ana here."})
    assert reply.status == 200, reply.json
    path, body, headers = env["rasa"].calls[-1]
    assert path == "/webhooks/whatsapp/agent/send" and headers["authorization"] == "Bearer channel-token"
    assert body == {"conversation_id": sender, "agent": "Ana", "template": False, "text": "Hello Maria, Ana here."}
    note = await agent.api("post", f"/api/conversations/{sender}/note", {"text": "Customer is a reseller"})
    assert note.status == 200
    view = await agent.api("get", f"/api/conversations/{sender}")
    assert view.json["notes"][0]["text"] == "Customer is a reseller"
    assert [e["kind"] for e in view.json["transcript"]][:2] == ["customer", "bot"]
    back = await agent.api("post", f"/api/conversations/{sender}/handback", {"note": "refund approved"})
    assert back.status == 200 and back.json["resumed"] is True
    assert env["rasa"].calls[-1][1]["note"] == "refund approved"
    env["app"].ctx.projector.catch_up()
    assert (await agent.api("get", "/api/queue?filter=all")).json["conversations"] == []
    hand_over(env)  # the customer asks again: back in the queue
    closed = await agent.api("post", f"/api/conversations/{sender}/close", {"csat": True})
    assert closed.status == 200 and env["rasa"].calls[-1][0] == "/webhooks/whatsapp/agent/close"
    add_events(env["tracker"], sender, [user('/csat{"csat_score":"4"}', "csat",
                                              entities=[{"entity": "csat_score", "value": "4"}])])
    env["app"].ctx.projector.catch_up()
    closed_list = (await agent.api("get", "/api/queue?filter=closed")).json["conversations"]
    assert closed_list[0]["sender_id"] == sender and closed_list[0]["csat"] == 4
    with env["app"].ctx.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit_log.c.action).where(audit_log.c.sender_id == sender))]
    assert {"claim", "reply", "note", "handback", "close"} <= set(actions)


async def test_duplicate_submissions(env: dict[str, Any]) -> None:
    """A double-clicked claim is harmless; a second hand-back or close finds the bot in charge (409)."""
    _admin, agent = await admin_and_agent(env)
    hand_over(env)
    sender = "34600000001"
    assert (await agent.api("post", f"/api/conversations/{sender}/claim", {})).status == 200
    assert (await agent.api("post", f"/api/conversations/{sender}/claim", {})).status == 200
    assert (await agent.api("post", f"/api/conversations/{sender}/handback", {})).status == 200
    calls = len(env["rasa"].calls)
    again = await agent.api("post", f"/api/conversations/{sender}/handback", {})
    assert again.status == 409 and "not handed over" in again.json["error"]
    assert (await agent.api("post", f"/api/conversations/{sender}/close", {})).status == 409
    assert (await agent.api("post", f"/api/conversations/{sender}/reply", {"text": "hi"})).status == 409
    assert len(env["rasa"].calls) == calls  # nothing reached Rasa twice
