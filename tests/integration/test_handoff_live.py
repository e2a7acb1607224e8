"""Handoff triggers inside a running Rasa (the trigger policy from config.yml, the handoff action),
pause semantics (recorded, silent) and the hand-back through the channel's agent route."""

from __future__ import annotations

import uuid

import pytest

from .harness import CHANNEL_AGENT_TOKEN, Stack, http, text_webhook, wait_for

pytestmark = pytest.mark.integration


def converse(stack: Stack, user: str, texts: list[str]) -> None:
    for text in texts:
        before = len(stack.sent_to(user))
        assert stack.post_webhook(text_webhook(user, f"wamid.{user}.{uuid.uuid4().hex[:12]}", text)) == 200
        wait_for(lambda b=before: len(stack.sent_to(user)) > b, 60, what=f"reply to {text!r}")


def slots_and_pause(stack: Stack, user: str) -> tuple[dict, bool]:
    tracker = stack.tracker(user)
    return tracker["slots"], tracker["paused"]


@pytest.mark.parametrize(("user", "texts", "reason"), [
    ("44722000001", ["I'm going to take you to court over this"], "escalation_phrase:take you to court"),
    ("44722000002", ["This is the worst, most useless service ever, I hate it",
                     "You are terrible and awful, I am furious and disgusted"], "negative_sentiment"),
    ("44722000003", ["when will my parcel arrive", "when will my parcel arrive?",
                     "WHEN will my parcel arrive"], "repeated_question"),
])
def test_each_conversation_wide_trigger_hands_over(stack: Stack, user: str, texts: list[str], reason: str) -> None:
    converse(stack, user, texts)
    wait_for(lambda: slots_and_pause(stack, user)[1], 30, what="paused")
    slots, paused = slots_and_pause(stack, user)
    assert paused and slots["handoff_reason"] == reason and slots["handoff_summary"]
    assert "passing you to a person" in stack.sent_to(user)[-1]["text"]["body"]


def test_paused_messages_are_recorded_silently_and_hand_back_resumes(stack: Stack) -> None:
    user = "44722000010"
    converse(stack, user, ["agent please"])
    wait_for(lambda: slots_and_pause(stack, user)[1], 30, what="paused")
    sent = len(stack.sent_to(user))
    assert stack.post_webhook(text_webhook(user, "wamid.paused.1", "hello? anyone there?")) == 200
    wait_for(lambda: any(e.get("text") == "hello? anyone there?" for e in stack.tracker(user)["events"]), 30,
             what="the paused message in the tracker")
    assert len(stack.sent_to(user)) == sent  # the bot stayed silent
    status, body = http("POST", f"{stack.rasa_url}/webhooks/whatsapp/agent/handback",
                        body={"conversation_id": user, "agent": "Ana", "note": "sorted"},
                        headers={"Authorization": f"Bearer {CHANNEL_AGENT_TOKEN}"})
    assert status == 200 and body["resumed"] and body["notified"]
    assert "assistant again" in stack.sent_to(user)[-1]["text"]["body"]
    converse(stack, user, ["hi"])
    greeting = stack.sent_to(user)[-1]
    assert greeting["type"] == "interactive"  # the greeting with its buttons: the rules match again
    slots, paused = slots_and_pause(stack, user)
    assert not paused and slots["handback_note"] == "sorted"


def test_evolution_conversation_agent_reply_and_rating_by_number(stack: Stack) -> None:
    from .test_evolution_live import texts, upsert

    jid = "44722000077@s.whatsapp.net"
    assert stack.post_evolution(upsert(jid, "EVO.HANDOFF.1", "I want to talk to a human")) == 200
    wait_for(lambda: stack.tracker(jid).get("paused"), 60, what="paused")
    auth = {"Authorization": f"Bearer {CHANNEL_AGENT_TOKEN}"}
    status, body = http("POST", f"{stack.rasa_url}/webhooks/evolution/agent/send",
                        body={"conversation_id": jid, "agent": "Ana", "text": "Hola, soy Ana"}, headers=auth)
    assert status == 200 and body["sent"]
    assert texts(stack, jid)[-1] == "Hola, soy Ana"  # went out through Evolution's sendText
    status, body = http("POST", f"{stack.rasa_url}/webhooks/evolution/agent/close",
                        body={"conversation_id": jid, "agent": "Ana", "csat": True}, headers=auth)
    assert status == 200 and body["notified"]
    rating = texts(stack, jid)[-1]
    assert "1. 5 · Very happy" in rating and "5. 1 · Very unhappy" in rating  # numbered on Baileys
    assert stack.post_evolution(upsert(jid, "EVO.HANDOFF.2", "2")) == 200  # "2" = "4 · Happy"
    wait_for(lambda: stack.tracker(jid)["slots"].get("csat_score") == "4", 60, what="rating stored")
    wait_for(lambda: "Thank you for your feedback" in texts(stack, jid)[-1], 60, what="thanks")
