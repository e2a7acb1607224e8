"""action_handoff: the reason, what the customer is told (office hours), the summary, switches."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from rasa_sdk.events import ActiveLoop, ConversationPaused, FollowupAction, SlotSet

from actions import runtime
from actions.handoff_actions import ActionFallback, ActionHandoff
from handoff.config import HandoffSettings, load_settings, parse_settings
from tests.app.conftest import load_tracker

ROOT = Path(__file__).resolve().parents[2]


def tracker(intent: str = "human_handoff", **overrides: Any) -> Any:
    events = [{"event": "action", "name": "action_listen"},
              {"event": "user", "text": "my order VB-123456 has not arrived",
               "parse_data": {"intent": {"name": "faq"}}},
              {"event": "bot", "text": "It should arrive soon."},
              {"event": "user", "text": "I want a person", "parse_data": {"intent": {"name": intent}}}]
    return load_tracker("offer_accepted_tracker", events=events,
                        latest_message={"text": "I want a person", "intent": {"name": intent}}, **overrides)


def settings_with_hours() -> HandoffSettings:
    return load_settings(ROOT / "handoff.yml")


async def test_in_office_hours_the_customer_hears_someone_will_reply(dispatcher, domain) -> None:
    runtime.override(handoff=settings_with_hours(),
                     wall_clock=lambda: datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc))  # Wed 11:00 Madrid
    events = await ActionHandoff().run(dispatcher, tracker(), domain)
    assert dispatcher.messages == [{**dispatcher.messages[0], "response": "utter_handoff"}]
    assert events[0] == SlotSet("handoff_reason", "customer_request") and events[-1] == ConversationPaused()


@pytest.mark.parametrize(("now", "when"), [
    (datetime(2026, 11, 25, 20, 0, tzinfo=timezone.utc), "tomorrow at 09:00"),  # Wed 21:00 Madrid
    (datetime(2026, 11, 28, 14, 30, tzinfo=timezone.utc), "on Monday at 09:00"),  # Sat 15:30, closed Sunday
    (datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc), "today at 09:00"),  # Thu 07:00
    (datetime(2026, 12, 24, 19, 0, tzinfo=timezone.utc), "on Saturday at 10:00"),  # 25 Dec is a closed date
])
async def test_after_hours_the_customer_hears_when(dispatcher, domain, now: datetime, when: str) -> None:
    runtime.override(handoff=settings_with_hours(), wall_clock=lambda: now)
    await ActionHandoff().run(dispatcher, tracker(), domain)
    (message,) = dispatcher.messages
    assert message["response"] == "utter_handoff_after_hours" and message["next_opening"] == when


async def test_the_agent_gets_an_extractive_summary(dispatcher, domain, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    events = await ActionHandoff().run(dispatcher, tracker(slots={"order_number": "VB-123456"}), domain)
    summary = next(e["value"] for e in events if e.get("name") == "handoff_summary")
    assert summary.startswith("Handed over because the customer asked for a person.")
    assert "my order VB-123456 has not arrived" in summary and "order VB-123456" in summary


async def test_the_trigger_policy_reason_wins_and_a_form_is_left(dispatcher, domain) -> None:
    state = tracker(intent="complain", slots={"handoff_trigger": "escalation_phrase:lawyer"},
                    active_loop={"name": "return_form"})
    events = await ActionHandoff().run(dispatcher, state, domain)
    assert events[0] == SlotSet("handoff_reason", "escalation_phrase:lawyer")
    assert SlotSet("handoff_trigger", None) in events and ActiveLoop(None) in events
    assert SlotSet("requested_slot", None) in events and events[-1] == ConversationPaused()


async def test_a_switched_off_trigger_does_not_pause(dispatcher, domain) -> None:
    off = parse_settings({"triggers": {"customer_request": False}})
    runtime.override(handoff=off)
    events = await ActionHandoff().run(dispatcher, tracker(), domain)
    assert events == [SlotSet("handoff_trigger", None)]
    assert dispatcher.messages[0]["response"] == "utter_handoff_unavailable"


async def test_low_confidence_turns_come_from_the_settings(dispatcher, domain) -> None:
    three = HandoffSettings(triggers=replace(HandoffSettings().triggers, low_confidence_turns=3))
    runtime.override(handoff=three)
    events = [{"event": "action", "name": "action_listen"},
              {"event": "user", "text": "blorp", "parse_data": {"intent": {"name": "nlu_fallback"}}},
              {"event": "action", "name": "action_fallback"},
              {"event": "user", "text": "zzzz", "parse_data": {"intent": {"name": "nlu_fallback"}}}]
    state = load_tracker("offer_accepted_tracker", events=events,
                         latest_message={"text": "zzzz", "intent": {"name": "nlu_fallback"}})
    assert await ActionFallback().run(dispatcher, state, domain) == [FollowupAction("action_listen")]  # 2 of 3
    assert dispatcher.messages[-1]["response"] == "utter_ask_rephrase"


async def test_llm_summary_when_configured_and_extractive_when_it_fails(dispatcher, domain, monkeypatch) -> None:
    from retrieval import llm

    class FakeLLM:
        fail = False

        def complete(self, prompt: str) -> str:
            if self.fail:
                raise TimeoutError("slow")
            assert "Customer: my order VB-123456 has not arrived" in prompt
            return "Customer waits for order VB-123456 and wants a person."

    fake = FakeLLM()
    monkeypatch.setattr(llm.LLMAnswerer, "from_env", classmethod(lambda cls: fake))
    events = await ActionHandoff().run(dispatcher, tracker(), domain)
    assert next(e["value"] for e in events if e.get("name") == "handoff_summary") == \
        "Customer waits for order VB-123456 and wants a person."
    fake.fail = True
    events = await ActionHandoff().run(dispatcher, tracker(), domain)
    assert next(e["value"] for e in events if e.get("name") == "handoff_summary").startswith("Handed over because")
