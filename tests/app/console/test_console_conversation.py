"""Transcript with reasoning and ticks, the 24 h window, canned responses, agent assist, other channels,
and the projector on PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import create_engine, insert

from console.projector import Projector, apply_event, new_conversation
from console.tables import create_db_engine, create_tables
from console.transcript import build_transcript, latest_statuses
from tests.app.console.conftest import Browser
from tests.app.console.helpers import add_events, events_table, handoff_events, tracker_metadata, user
from tests.app.console.test_console_api import admin_and_agent, hand_over
from tests.postgres import temporary_database


def test_transcript_shows_reasoning_ticks_and_failed_sends() -> None:
    t = 1000.0
    events = [
        {**user("how long does delivery take", "faq", 0.93, at=t), "parse_data": {
            "intent": {"name": "faq", "confidence": 0.93}, "entities": [],
            "response_selector": {"faq": {"response": {"intent_response_key": "faq/delivery_time"}}}}},
        {"event": "action", "name": "utter_faq", "policy": "RulePolicy", "confidence": 1.0, "timestamp": t + 1},
        {"event": "bot", "text": "1–2 working days.", "timestamp": t + 1,
         "metadata": {"knowledge": {"answer_mode": "extractive", "sources": [{"title": "Delivery"}]}}},
        {"event": "pause", "timestamp": t + 2},
        {"event": "bot", "text": "Ana here", "timestamp": t + 3,
         "metadata": {"agent": "Ana", "message_ids": ["wamid.A"]}},
        {"event": "resume", "timestamp": t + 4, "metadata": {"agent": "Ana", "closed": True}},
    ]
    outbound = [{"message_id": "wamid.B", "state": "sent", "error": None, "created_at": t + 1.2},
                {"message_id": None, "state": "failed", "error": "(#131026) undeliverable", "created_at": t + 1.3},
                {"message_id": "wamid.A", "state": "sent", "error": None, "created_at": t + 3.1}]
    statuses = [{"message_id": "wamid.B", "status": "delivered"}, {"message_id": "wamid.B", "status": "sent"},
                {"message_id": "wamid.A", "status": "read"}]
    entries = build_transcript(events, outbound, statuses)
    assert [e.kind for e in entries] == ["customer", "bot", "system", "agent", "system"]
    customer, bot, paused, agent, closed = entries
    assert customer.intent == "faq/delivery_time" and customer.confidence == 0.93
    assert bot.action == "utter_faq" and bot.policy == "RulePolicy" and bot.knowledge["answer_mode"] == "extractive"
    assert bot.failed and [d.status for d in bot.deliveries] == ["delivered", "failed"]
    assert agent.agent == "Ana" and agent.ticks == "read" and not agent.failed
    assert closed.text == "Closed by Ana" and paused.text == "Handed over to a person"
    assert latest_statuses([{"message_id": "x", "status": "failed", "errors": "e"},
                            {"message_id": "x", "status": "read"}]) == {"x": ("failed", "e")}


def test_projector_folds_events_and_is_idempotent(tmp_path: Any) -> None:
    tracker = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    tracker_metadata.create_all(tracker)
    console = create_db_engine(f"sqlite:///{tmp_path / 'c.db'}")
    create_tables(console)
    add_events(tracker, "a", [user("hi", "greet"), *handoff_events("low_confidence")])
    with tracker.begin() as conn:  # a row Rasa would never write: skipped, not fatal
        conn.execute(insert(events_table).values(sender_id="a", type_name="user", timestamp=1.0, data="{broken"))
    projector = Projector(console, tracker, batch=2)
    assert projector.catch_up() == 7
    assert projector.catch_up() == 0  # nothing new: nothing read twice
    row = apply_event(new_conversation("b"), {"event": "pause", "timestamp": 5.0}, 1)
    assert row["status"] == "waiting" and row["waiting_since"] == 5.0
    again = apply_event(row, {"event": "pause", "timestamp": 9.0}, 2)
    assert again["waiting_since"] == 5.0  # a second pause does not reset the waiting time


async def test_outside_the_window_the_console_offers_the_template(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    hand_over(env, at=time.time() - 25 * 3600)
    view = await agent.api("get", "/api/conversations/34600000001")
    assert view.json["outside_window"] is True
    refused = await agent.api("post", "/api/conversations/34600000001/reply", {"text": "still there?"})
    assert refused.status == 409 and refused.json["error"].startswith("outside_24h_window")
    page = await agent.request("get", "/c/34600000001")
    assert "Send the template" in page.text
    sent = await agent.api("post", "/api/conversations/34600000001/reply", {"template": True})
    assert sent.status == 200 and env["rasa"].calls[-1][1]["template"] is True
    env["rasa"].send_status, env["rasa"].send_body = 409, {"error": "no_template_configured"}
    failed = await agent.api("post", "/api/conversations/34600000001/reply", {"template": True})
    assert failed.status == 409 and failed.json["error"] == "no_template_configured"


async def test_canned_responses_with_placeholders(env: dict[str, Any]) -> None:
    admin, agent = await admin_and_agent(env)
    hand_over(env)
    add_events(env["tracker"], "34600000001", [{"event": "slot", "name": "order_number", "value": "VB-123456"}])
    saved = await admin.api("post", "/api/canned", {"shortcut": "refund", "title": "Refund on its way",
                                                    "text": "Hi {customer_name}, {agent_name} here: the refund "
                                                            "for {order_number} is on its way."})
    assert saved.status == 200
    bad = await admin.api("post", "/api/canned", {"shortcut": "x y", "title": "t", "text": "t"})
    assert bad.status == 400
    unknown = await admin.api("post", "/api/canned", {"shortcut": "x", "title": "t", "text": "{password}"})
    assert unknown.status == 400 and "password" in unknown.json["error"]
    page = await agent.request("get", "/c/34600000001")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    used = await agent.request("post", "/c/34600000001/canned", data={"canned_id": str(saved.json["id"]),
                                                                      "csrf_token": token})
    assert used.status == 303 and "prefill=" in used.headers["location"]
    page = await agent.request("get", used.headers["location"])
    assert "Hi Maria, Ana here: the refund for VB-123456 is on its way." in page.text


async def test_agent_assist_answers_the_last_typed_question(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    add_events(env["tracker"], "34600000001", [user("how long does delivery to Porto take?", "nlu_fallback"),
                                               user("/affirm", "affirm"), *handoff_events()])
    env["app"].ctx.projector.catch_up()
    answer = await agent.api("get", "/api/conversations/34600000001/suggestion")
    assert answer.status == 200 and answer.json["sources"][0]["title"] == "Delivery"
    assert env["suggestions"] == ["how long does delivery to Porto take?"]


async def test_conversations_of_other_channels_are_resumed_through_rasas_api(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    hand_over(env, "web-user-1", channel="rest")
    refused = await agent.api("post", "/api/conversations/web-user-1/reply", {"text": "hello"})
    assert refused.status == 409 and "cannot send" in refused.json["error"]
    back = await agent.api("post", "/api/conversations/web-user-1/handback", {"note": "done"})
    assert back.status == 200
    path, body, _headers = env["rasa"].calls[-1]
    assert path == "/conversations/web-user-1/tracker/events"
    assert body[0]["event"] == "resume" and body[1] == {"event": "slot", "name": "handback_note", "value": "done"}
    assert body[2] == {"event": "action", "name": "action_listen"}


async def test_claims_do_not_steal(env: dict[str, Any]) -> None:
    admin, agent = await admin_and_agent(env)
    hand_over(env)
    assert (await admin.api("post", "/api/conversations/34600000001/claim", {})).status == 200
    taken = await agent.api("post", "/api/conversations/34600000001/reply", {"text": "mine?"})
    assert taken.status == 409 and "has this conversation" in taken.json["error"]
    agents = (await admin.api("get", "/api/agents")).json["agents"]
    ana = next(a["id"] for a in agents if a["name"] == "Ana")
    assert (await agent.api("post", "/api/conversations/34600000001/claim", {"agent_id": 1})).status == 403
    assert (await admin.api("post", "/api/conversations/34600000001/claim", {"agent_id": ana})).status == 200
    assert (await agent.api("get", "/api/queue?filter=mine")).json["counts"]["mine"] == 1


def test_projector_and_queue_on_postgresql(tmp_path: Any) -> None:
    from console import store

    with temporary_database("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", "console") as url:
        engine = create_db_engine(url)
        create_tables(engine)
        tracker_metadata.create_all(engine)
        for i in range(3):
            add_events(engine, f"pg{i}", [user("a person please", "human_handoff", at=100.0 + i),
                                          *handoff_events(at=100.0 + i)])
        assert Projector(engine, engine).catch_up() == 18
        with engine.connect() as conn:
            rows = store.queue(conn, "unassigned", 1)
        assert [r["sender_id"] for r in rows] == ["pg0", "pg1", "pg2"]
        engine.dispose()


@pytest.mark.parametrize("data", ["", "null", json.dumps([1, 2])])
def test_projector_survives_odd_rows(tmp_path: Any, data: str) -> None:
    tracker = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    tracker_metadata.create_all(tracker)
    console = create_db_engine(f"sqlite:///{tmp_path / 'c.db'}")
    create_tables(console)
    with tracker.begin() as conn:
        conn.execute(insert(events_table).values(sender_id="x", type_name="user", timestamp=1.0, data=data))
    assert Projector(console, tracker).catch_up() == 1


async def test_customer_media_is_shown_through_the_channel(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    photo = {**user("/share_media{\"media_type\":\"image\"}", "share_media")}
    photo["metadata"] = {**photo["metadata"], "media": {"type": "image", "id": "MEDIA1", "mime_type": "image/png"}}
    page_doc = {**user("invoice", "share_media")}
    page_doc["metadata"] = {**page_doc["metadata"], "media": {"type": "document", "id": "DOC1"}}
    add_events(env["tracker"], "34600000001", [photo, page_doc, *handoff_events()])
    env["app"].ctx.projector.catch_up()
    page = await agent.request("get", "/c/34600000001")
    assert '<img src="/c/34600000001/media/MEDIA1"' in page.text
    image = await agent.request("get", "/c/34600000001/media/MEDIA1")
    assert image.status == 200 and image.headers["content-type"] == "image/png" and image.body.startswith(b"\x89PNG")
    assert image.headers["content-security-policy"].startswith("sandbox")
    assert env["rasa"].calls[-1][0] == "/webhooks/whatsapp/agent/media"
    html = await agent.request("get", "/c/34600000001/media/DOC1")  # never rendered by the browser
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment")
    assert (await agent.request("get", "/c/34600000001/media/OTHER")).status == 404  # not in this conversation
    assert (await Browser(env["app"]).request("get", "/c/34600000001/media/MEDIA1")).status == 302


async def test_evolution_conversations_are_answered_through_evolution(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    hand_over(env, "346000000099@s.whatsapp.net", channel="evolution")
    row = (await agent.api("get", "/api/queue?filter=unassigned")).json["conversations"][0]
    assert row["channel"] == "evolution"
    sent = await agent.api("post", "/api/conversations/346000000099@s.whatsapp.net/reply", {"text": "hola"})
    assert sent.status == 200 and env["rasa"].calls[-1][0] == "/webhooks/evolution/agent/send"
    back = await agent.api("post", "/api/conversations/346000000099@s.whatsapp.net/handback", {})
    assert back.status == 200 and env["rasa"].calls[-1][0] == "/webhooks/evolution/agent/handback"


async def test_the_conversation_shows_the_customers_language(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    add_events(env["tracker"], "34600000002", [user("quiero hablar con alguien", "human_handoff",
                                                    wa_id="34600000002"),
                                               {"event": "slot", "name": "language", "value": "es"},
                                               *handoff_events()])
    env["app"].ctx.projector.catch_up()
    view = await agent.api("get", "/api/conversations/34600000002")
    assert view.json["conversation"]["language"] == "es"
    page = await agent.request("get", "/c/34600000002")
    assert 'id="language">Español (es)</strong>' in page.text
    queue = await agent.request("get", "/")
    assert '<span class="badge lang" title="language">ES</span>' in queue.text


def test_an_older_console_database_gets_the_new_column(tmp_path: Any) -> None:
    from sqlalchemy import inspect, text

    console = create_db_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with console.begin() as conn:  # the table as the previous version made it, without `language`
        conn.execute(text("CREATE TABLE console_conversations (sender_id VARCHAR(255) PRIMARY KEY, "
                          "status VARCHAR(16) NOT NULL, last_event_id INTEGER NOT NULL, updated_at FLOAT NOT NULL)"))
        conn.execute(text("INSERT INTO console_conversations VALUES ('a', 'bot', 1, 1.0)"))
    create_tables(console)
    create_tables(console)  # idempotent
    assert "language" in {c["name"] for c in inspect(console).get_columns("console_conversations")}
    with console.connect() as conn:
        assert conn.execute(text("SELECT sender_id, language FROM console_conversations")).all() == [("a", None)]


def inbox_row(message_id: str, state: str, message: dict[str, Any], at: float) -> dict[str, Any]:
    return {"message_id": message_id, "state": state, "message": message, "received_at": at}


def test_deletions_edits_number_changes_and_ads_in_the_transcript() -> None:
    t = 1000.0
    ad = {"source_url": "https://fb.me/ad1", "source_type": "ad", "headline": "Winter sale"}
    events = [
        {**user("hi, about the sale", at=t), "message_id": "wamid.1",
         "metadata": {"wa_id": "491", "referral": ad}},
        {**user("my order VB-1", at=t + 2), "message_id": "wamid.2"},
        {**user("my order VB-104233", at=t + 6), "message_id": "wamid.4",
         "metadata": {"edits": "wamid.3", "wa_id": "491"}},
        {**user("hello again", at=t + 9), "message_id": "wamid.6", "metadata": {"referral": {
            "source_url": "javascript:alert(1)", "headline": "<b>x</b>"}}},
    ]
    unanswered = [
        inbox_row("wamid.2b", "skipped", {"skip": "edit", "edits": "wamid.2", "text": "my order VB-2"}, t + 3),
        inbox_row("wamid.3", "edited", {"text": "my order VB-10423"}, t + 4),
        inbox_row("wamid.5", "revoked", {"text": "oops wrong chat"}, t + 7),
        inbox_row("wamid.1d", "skipped", {"skip": "revoke", "revokes": "wamid.1"}, t + 7.5),
        inbox_row("wamid.S", "skipped", {"skip": "system", "links": {"from": ["491"], "to": ["492"],
                                                                    "reply_to": "492"},
                                         "metadata": {"system": {"type": "user_changed_number"}}}, t + 8),
        inbox_row("wamid.K", "skipped", {"skip": "system", "metadata": {"system": {
            "type": "customer_identity_changed"}}}, t + 8.5),
    ]
    entries = build_transcript(events, unanswered=unanswered)
    texts = [(e.kind, e.text) for e in entries]
    assert texts == [("customer", "hi, about the sale"), ("customer", "my order VB-1"),
                     ("customer", "my order VB-10423"), ("customer", "my order VB-104233"),
                     ("customer", "oops wrong chat"),
                     ("system", "The customer changed their number to 492; replies go there now"),
                     ("system", "The customer's security code changed (a new phone or a reinstall)"),
                     ("customer", "hello again")]
    first, second, replaced, edit, deleted, *_rest, last = entries
    assert first.revoked and first.referral == ad  # deleted after the answer; from an ad
    assert second.edits == ["my order VB-2"] and not second.revoked  # edited after the answer
    assert replaced.edits and edit.edited  # replaced before the answer: the edit was answered
    assert deleted.revoked
    assert last.referral == {"headline": "<b>x</b>"}  # no javascript: link


async def test_the_page_strikes_deleted_messages_through_and_shows_the_number_change(env: dict[str, Any]) -> None:
    from sqlalchemy import text

    _admin, agent = await admin_and_agent(env)
    add_events(env["tracker"], "34600000007", [
        {**user("this one I delete", wa_id="34600000007"), "message_id": "wamid.D"}, *handoff_events()])
    with env["tracker"].begin() as conn:  # the channels' inbox table (here in the tracker's database)
        conn.execute(text("CREATE TABLE wa_inbox (id INTEGER PRIMARY KEY, message_id TEXT, conversation_id TEXT, "
                          "state TEXT, message TEXT, received_at FLOAT)"))
        for n, (wamid, message) in enumerate([
                ("wamid.D#deleted", {"skip": "revoke", "revokes": "wamid.D"}),
                ("wamid.S", {"skip": "system", "links": {"reply_to": "34600000070"},
                             "metadata": {"system": {"type": "user_changed_number"}}}),
                ("wamid.bad", "not json at all")]):
            conn.execute(text("INSERT INTO wa_inbox VALUES (:id, :m, '34600000007', 'skipped', :j, :t)"),
                         {"id": n + 1, "m": wamid, "t": time.time() + n,
                          "j": json.dumps(message) if isinstance(message, dict) else message})
    env["app"].ctx.projector.catch_up()
    page = await agent.request("get", "/c/34600000007")
    assert '<del title="deleted by the customer">this one I delete</del>' in page.text
    assert "The customer changed their number to 34600000070" in page.text
    view = await agent.api("get", "/api/conversations/34600000007")
    assert view.json["transcript"][0]["revoked"] is True
