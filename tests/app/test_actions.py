"""Custom actions run against a seeded SQLite shop and trackers built from JSON fixtures."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk.events import ConversationPaused, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.handoff_actions import ActionFallback, ActionHandoff, handoff_reason, unclear_turns_in_a_row
from actions.order_actions import (
    ActionCancelOrder,
    ActionCheckCancellation,
    ActionOrderStatus,
    ValidateOrderStatusForm,
)
from actions.service_actions import (
    ActionSubmitRepair,
    ActionSubmitReturn,
    ValidateRepairForm,
    ValidateReturnForm,
    request_key,
    return_reason_from_text,
)
from actions.shop import OrderStatus
from actions.shop_db import ShopDatabase

from .conftest import load_tracker, texts
from .responses import variation


async def test_order_form_takes_a_number_typed_in_any_shape(shop: ShopDatabase, dispatcher, domain) -> None:
    tracker = load_tracker("order_form_tracker")  # latest text: "its vb 104233"
    events = await ValidateOrderStatusForm().run(dispatcher, tracker, domain)
    assert SlotSet("order_number", "VB-104233") in events
    assert texts(dispatcher) == []


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("VB-999999", "I couldn't find order VB-999999"),
        ("my number is banana", None),  # nothing extracted: the form re-asks, no slot set
    ],
)
async def test_order_form_refuses_unknown_or_missing_numbers(
    shop: ShopDatabase, dispatcher: CollectingDispatcher, domain: dict[str, Any], typed: str, message: str | None
) -> None:
    tracker = load_tracker("order_form_tracker", latest_message={"text": typed, "intent": {"name": "inform"}})
    events = await ValidateOrderStatusForm().run(dispatcher, tracker, domain)
    assert SlotSet("order_number", "VB-999999") not in events
    if message:
        assert SlotSet("order_number", None) in events
        assert message in texts(dispatcher)[0]
    else:
        assert events == []


async def test_order_form_explains_a_malformed_entity(shop: ShopDatabase, dispatcher, domain) -> None:
    validator = ValidateOrderStatusForm()
    result = await validator.validate_order_number("VB-12", dispatcher, load_tracker("order_form_tracker"), domain)
    assert result == {"order_number": None}
    assert texts(dispatcher) == [
        "Hmm, that doesn't look like an order number. It's \"VB-\" followed by 6 digits, e.g. VB-104233 — "
        "you'll find it in your confirmation email."]
    tracker = load_tracker("order_form_tracker")
    result = await validator.validate_order_number({"not": "text"}, dispatcher, tracker, domain)
    assert result == {"order_number": None}


async def test_order_status_reports_the_order(shop: ShopDatabase, dispatcher, domain) -> None:
    tracker = load_tracker("order_form_tracker", slots={"order_number": "VB-310977"})
    assert await ActionOrderStatus().run(dispatcher, tracker, domain) == []
    assert "is on its way" in texts(dispatcher)[0]


async def test_cancellation_of_a_processing_order(shop: ShopDatabase, dispatcher, domain) -> None:
    tracker = load_tracker("order_form_tracker", slots={"order_number": "VB-412650", "order_request": "cancel"})
    assert await ActionCheckCancellation().run(dispatcher, tracker, domain) == [SlotSet("order_cancellable", True)]
    assert texts(dispatcher) == []  # utter_confirm_cancel asks next
    await ActionCancelOrder().run(dispatcher, tracker, domain)
    assert "is cancelled" in texts(dispatcher)[-1]
    assert shop.get_order("VB-412650").status is OrderStatus.CANCELLED  # type: ignore[union-attr]
    # A duplicate confirmation does not pretend to cancel twice.
    await ActionCancelOrder().run(dispatcher, tracker, domain)
    assert "couldn't cancel it" in texts(dispatcher)[-2] and "already cancelled" in texts(dispatcher)[-1]


async def test_shipped_order_cannot_be_cancelled(shop: ShopDatabase, dispatcher, domain) -> None:
    tracker = load_tracker("order_form_tracker", slots={"order_number": "VB-310977"})
    assert await ActionCheckCancellation().run(dispatcher, tracker, domain) == [SlotSet("order_cancellable", False)]
    assert "already shipped" in texts(dispatcher)[0]


async def test_repair_form_checks_the_order_and_tells_warranty(shop: ShopDatabase, dispatcher, domain) -> None:
    tracker = load_tracker("order_form_tracker")
    validator = ValidateRepairForm()
    assert await validator.validate_order_number("VB-104233", dispatcher, tracker, domain) == {
        "order_number": "VB-104233"
    }
    assert "under warranty" in texts(dispatcher)[-1]
    assert await validator.validate_order_number("VB-208415", dispatcher, tracker, domain) == {
        "order_number": "VB-208415"
    }
    assert "warranty has ended" in texts(dispatcher)[-1]
    assert await validator.validate_order_number("VB-412650", dispatcher, tracker, domain) == {"order_number": None}
    assert "hasn't been delivered" in texts(dispatcher)[-2]
    assert texts(dispatcher)[-1] == "Is there another order I can help with?"


@pytest.mark.parametrize(
    ("slot", "value", "accepted"),
    [
        ("device", "  Pixel   8 ", "Pixel 8"),
        ("device", "", None),
        ("device", "x" * 300, None),
        ("issue_description", "broken", None),  # too short to help a technician
        ("issue_description", "the screen flickers\nwhen charging", "the screen flickers when charging"),
        ("issue_description", 42, None),
    ],
)
async def test_repair_form_free_text(
    shop: ShopDatabase, dispatcher, domain, slot: str, value: Any, accepted: str | None
) -> None:
    validate = getattr(ValidateRepairForm(), f"validate_{slot}")
    result = await validate(value, dispatcher, load_tracker("order_form_tracker"), domain)
    assert result == {slot: accepted}
    assert bool(texts(dispatcher)) == (accepted is None)


async def test_return_form_enforces_the_window(shop: ShopDatabase, dispatcher, domain) -> None:
    tracker = load_tracker("order_form_tracker")
    validator = ValidateReturnForm()
    assert (await validator.validate_order_number("VB-117864", dispatcher, tracker, domain))["order_number"]
    assert "can be returned until" in texts(dispatcher)[-1]
    assert (await validator.validate_order_number("VB-841020", dispatcher, tracker, domain))["order_number"] is None
    assert "outside the return window" in texts(dispatcher)[-2]
    assert (await validator.validate_order_number("VB-905377", dispatcher, tracker, domain))["order_number"] is None
    assert "already been returned" in texts(dispatcher)[-2]


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("damaged", "damaged"),
        ("it arrived BROKEN", "damaged"),
        ("you sent the wrong size", "wrong_item"),
        ("looks different from the photos", "not_as_described"),
        ("i changed my mind", "changed_mind"),
        ("other", "other"),
        ("asdfgh", None),
        ("", None),
        (None, None),
    ],
)
def test_return_reason_from_text(typed: str | None, reason: str | None) -> None:
    found = return_reason_from_text(typed)
    assert (found.value if found else None) == reason


async def test_submitting_twice_books_one_repair(shop: ShopDatabase, dispatcher, domain) -> None:
    tracker = load_tracker(
        "order_form_tracker",
        slots={"order_number": "VB-104233", "device": "headphones", "issue_description": "no sound on the left"},
    )
    events = await ActionSubmitRepair().run(dispatcher, tracker, domain)
    await ActionSubmitRepair().run(dispatcher, tracker, domain)  # Rasa retried the call
    first, second = texts(dispatcher)
    assert "RP-000001" in first and "RP-000001" in second
    assert len(shop.service_requests_for("VB-104233")) == 1
    assert events == [SlotSet("device", None), SlotSet("issue_description", None)]


async def test_submit_return(shop: ShopDatabase, dispatcher, domain) -> None:
    tracker = load_tracker("order_form_tracker", slots={"order_number": "VB-117864", "return_reason": "damaged"})
    assert await ActionSubmitReturn().run(dispatcher, tracker, domain) == [SlotSet("return_reason", None)]
    assert "RT-000001" in texts(dispatcher)[0]
    assert shop.service_requests_for("VB-117864")[0]["return_reason"] == "damaged"


def test_request_key_prefers_the_message_id() -> None:
    tracker = load_tracker("order_form_tracker")
    assert request_key(tracker) == "34600111222:wamid.HBgLMzQ2MDAxMTEyMjIVAgASGBQzQTlCRDg3"
    no_id = load_tracker("order_form_tracker", latest_message={"text": "x", "intent": {"name": "inform"}})
    assert request_key(no_id) == "34600111222:1764072000.0"


async def test_handoff_pauses_and_records_the_reason(dispatcher, domain) -> None:
    tracker = load_tracker("offer_accepted_tracker")
    events = await ActionHandoff().run(dispatcher, tracker, domain)
    assert events[0] == SlotSet("handoff_reason", "accepted_offer:payment_problem")
    assert events[1]["name"] == "handoff_summary" and "accepted the offer of a person" in events[1]["value"]
    assert events[-1] == ConversationPaused()
    assert dispatcher.messages[0]["response"] == "utter_handoff"


@pytest.mark.parametrize(
    ("intent", "reason"),
    [("human_handoff", "customer_request"), ("nlu_fallback", "low_confidence"), ("greet", "other:greet")],
)
def test_handoff_reason(intent: str, reason: str) -> None:
    tracker = load_tracker("offer_accepted_tracker", latest_message={"text": "x", "intent": {"name": intent}})
    assert handoff_reason(tracker) == reason


def _tracker_with_turns(*turns: tuple[str, list[str]]) -> Any:
    """A tracker whose user messages (intent) were each answered by the given actions."""
    events: list[dict[str, Any]] = [{"event": "action", "name": "action_listen"}]
    for intent, actions in turns:
        events.append({"event": "user", "text": intent, "parse_data": {"intent": {"name": intent}}})
        events.extend({"event": "action", "name": name} for name in actions)
        if actions:
            events.append({"event": "action", "name": "action_listen"})
    last_intent = turns[-1][0]
    return load_tracker("offer_accepted_tracker", events=events,
                        latest_message={"text": last_intent, "intent": {"name": last_intent}})


async def test_first_unclear_message_asks_to_rephrase(dispatcher, domain) -> None:
    tracker = _tracker_with_turns(("greet", ["utter_greet"]), ("nlu_fallback", []))
    assert await ActionFallback().run(dispatcher, tracker, domain) == [FollowupAction("action_listen")]
    assert dispatcher.messages[0]["response"] == "utter_ask_rephrase"


async def test_second_unclear_message_in_a_row_hands_over(dispatcher, domain) -> None:
    tracker = _tracker_with_turns(("nlu_fallback", ["action_fallback"]), ("nlu_fallback", []))
    events = await ActionFallback().run(dispatcher, tracker, domain)
    assert events[0] == SlotSet("handoff_reason", "low_confidence") and events[-1] == ConversationPaused()
    assert dispatcher.messages[0]["response"] == "utter_handoff"


async def test_a_clear_message_in_between_resets_the_count(dispatcher, domain) -> None:
    tracker = _tracker_with_turns(
        ("nlu_fallback", ["action_fallback"]), ("faq", ["utter_faq"]), ("nlu_fallback", [])
    )
    assert unclear_turns_in_a_row(tracker) == 1
    assert await ActionFallback().run(dispatcher, tracker, domain) == [FollowupAction("action_listen")]


def test_the_action_server_registers_every_domain_action() -> None:
    from pathlib import Path

    import yaml
    from rasa_sdk.executor import ActionExecutor

    executor = ActionExecutor()
    executor.register_package("actions")
    domain_actions: set[str] = set()
    for file in (Path(__file__).resolve().parents[2] / "domain").glob("*.yml"):
        domain_actions.update((yaml.safe_load(file.read_text()) or {}).get("actions") or [])
    assert domain_actions <= set(executor.actions), domain_actions - set(executor.actions)


def _question_tracker(text: str, intent: str = "out_of_scope", earlier: list[str] | None = None) -> Any:
    events: list[dict[str, Any]] = [{"event": "action", "name": "action_listen"}]
    for previous in earlier or []:
        events += [{"event": "user", "text": previous, "parse_data": {"intent": {"name": "faq"}}},
                   {"event": "action", "name": "utter_faq"}, {"event": "action", "name": "action_listen"}]
    events.append({"event": "user", "text": text, "parse_data": {"intent": {"name": intent}}})
    return load_tracker("offer_accepted_tracker", events=events,
                        latest_message={"text": text, "intent": {"name": intent}})


async def test_knowledge_question_is_answered_with_its_source_and_why(dispatcher, domain) -> None:
    from actions.knowledge_actions import ActionAnswerQuestion

    events = await ActionAnswerQuestion().run(dispatcher, _question_tracker("Bizum PayPal Apple Pay payment"),
                                              domain)
    message = dispatcher.messages[0]
    assert events == [SlotSet("kb_answer_mode", "extractive")]
    assert message["response"] == "utter_kb_passage"
    assert "Bizum" in texts(dispatcher)[0] and texts(dispatcher)[0].endswith("📄 Help centre: Payment methods")
    meta = message["knowledge"]
    assert meta["answer_mode"] == "extractive" and meta["doc_ids"][0] == "payment-methods"
    assert meta["query"] == "Bizum PayPal Apple Pay payment" and len(meta["scores"]) == len(meta["doc_ids"])
    assert not message["buttons"]


async def test_nothing_relevant_is_said_honestly_with_an_offer_of_a_person(dispatcher, domain) -> None:
    from actions.knowledge_actions import ActionAnswerQuestion

    events = await ActionAnswerQuestion().run(dispatcher, _question_tracker("zzz qqq xylophone"), domain)
    message = dispatcher.messages[0]
    assert events == [SlotSet("kb_answer_mode", "no_answer")]
    assert message["response"] == "utter_kb_no_answer" and "couldn't find" in texts(dispatcher)[0]
    offer = variation("utter_kb_no_answer", {"language": "en"})["buttons"]
    assert [b["payload"] for b in offer] == ["/affirm", "/deny"]


async def test_a_broken_knowledge_base_is_not_a_crash(dispatcher, domain, knowledge, monkeypatch) -> None:
    from actions.knowledge_actions import ActionAnswerQuestion

    def broken(*_args: Any) -> Any:
        raise RuntimeError("index missing")

    monkeypatch.setattr(knowledge, "reply", broken)
    events = await ActionAnswerQuestion().run(dispatcher, _question_tracker("how do refunds work"), domain)
    assert events == [SlotSet("kb_answer_mode", "no_answer")]
    assert dispatcher.messages[0]["knowledge"]["answer_mode"] == "unavailable"


async def test_followup_question_is_searched_with_the_previous_one(dispatcher, domain) -> None:
    from actions.knowledge_actions import ActionAnswerQuestion

    tracker = _question_tracker("and for PayPal?", earlier=["refund to my Visa card how long"])
    await ActionAnswerQuestion().run(dispatcher, tracker, domain)
    assert dispatcher.messages[0]["knowledge"]["query"] == "refund to my Visa card how long and for PayPal?"


async def test_fallback_answers_from_the_help_centre_and_that_is_not_an_unclear_turn(dispatcher, domain) -> None:
    tracker = _question_tracker("Bizum PayPal Apple Pay payment", intent="nlu_fallback")
    events = await ActionFallback().run(dispatcher, tracker, domain)
    assert events == [SlotSet("kb_answer_mode", "extractive")]
    answered_turn = [{"event": "action", "name": "action_fallback"},
                     {"event": "bot", "text": "…", "metadata": {"knowledge": {"answer_mode": "extractive"}}},
                     {"event": "action", "name": "action_listen"}]
    events_log = [{"event": "user", "text": "q", "parse_data": {"intent": {"name": "nlu_fallback"}}},
                  *answered_turn,
                  {"event": "user", "text": "xyz", "parse_data": {"intent": {"name": "nlu_fallback"}}}]
    later = load_tracker("offer_accepted_tracker", events=events_log,
                         latest_message={"text": "xyz", "intent": {"name": "nlu_fallback"}})
    assert unclear_turns_in_a_row(later) == 1


def test_accepting_the_offer_after_a_knowledge_miss_is_recorded_as_such() -> None:
    tracker = _tracker_with_turns(("out_of_scope", ["action_answer_question"]), ("affirm", []))
    assert handoff_reason(tracker) == "accepted_offer:knowledge_miss"
