"""The trigger policy: escalation phrases, sentiment and repeated questions hand over from anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ConversationPaused,
    ConversationResumed,
    Event,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from rasa_components.handoff_policy import HandoffTriggerPolicy

ROOT = Path(__file__).resolve().parent.parent.parent
DOMAIN = Domain.load(str(ROOT / "domain"))


@pytest.fixture
def policy(tmp_path: Path) -> HandoffTriggerPolicy:
    config = {**HandoffTriggerPolicy.get_default_config(), "handoff_config": str(ROOT / "handoff.yml")}
    return HandoffTriggerPolicy.create(config, LocalModelStorage(tmp_path), Resource("handoff"),
                                       ExecutionContext(GraphSchema({}), "test"))


def said(text: str, intent: str = "nlu_fallback", **parse: Any) -> list[Event]:
    return [ActionExecuted(ACTION_LISTEN_NAME),
            UserUttered(text, {"name": intent, "confidence": 0.9}, parse_data={"intent": {"name": intent}, **parse})]


def replied(*events: Event) -> list[Event]:
    return [ActionExecuted("utter_ask_rephrase"), *events]


def predict(policy: HandoffTriggerPolicy, events: list[Event]) -> tuple[str | None, list[Event]]:
    tracker = DialogueStateTracker.from_events("c1", events, slots=DOMAIN.slots)
    prediction = policy.predict_action_probabilities(tracker, DOMAIN)
    if max(prediction.probabilities) == 0:
        return None, []
    return DOMAIN.action_names_or_texts[prediction.max_confidence_index], prediction.optional_events


def test_escalation_phrase_hands_over_at_once(policy: HandoffTriggerPolicy) -> None:
    action, events = predict(policy, said("I will take you to court over this", "complain"))
    assert action == "action_handoff" and events == [SlotSet("handoff_trigger", "escalation_phrase:take you to court")]
    action, _ = predict(policy, said("Quiero hablar con mi ABOGADO", "complain"))  # not in the list
    assert action is None
    assert predict(policy, said("Please CANCEL  my contract!!", "cancel_order"))[0] == "action_handoff"


def test_only_right_after_a_customer_message_and_never_while_paused(policy: HandoffTriggerPolicy) -> None:
    events = said("get me a lawyer")
    assert predict(policy, [*events, ActionExecuted("action_handoff")])[0] is None
    assert predict(policy, [*events[:1], ConversationPaused(), *events[1:]])[0] is None


def test_two_angry_messages_in_a_row(policy: HandoffTriggerPolicy) -> None:
    first = said("This is the worst service ever, absolutely terrible", "complain")
    assert predict(policy, first)[0] is None  # one angry message gets the complaint flow first
    second = said("I am furious, you people are useless and awful", "complain")
    action, events = predict(policy, [*first, *replied(), *second])
    assert action == "action_handoff" and events == [SlotSet("handoff_trigger", "negative_sentiment")]
    calm = said("sorry, thanks for your help", "thanks")
    assert predict(policy, [*first, *replied(), *calm])[0] is None


def test_the_same_question_three_times(policy: HandoffTriggerPolicy) -> None:
    ask = said("when will my parcel arrive", "check_order_status")
    again = said("When will my parcel arrive??", "check_order_status")
    assert predict(policy, [*ask, *replied(), *again])[0] is None
    action, events = predict(policy, [*ask, *replied(), *again, *replied(), *said("when will the parcel arrive")])
    assert action == "action_handoff" and events == [SlotSet("handoff_trigger", "repeated_question")]
    # greetings and thanks repeated are not questions
    hi = said("hi", "greet")
    assert predict(policy, [*hi, *replied(), *hi, *replied(), *hi])[0] is None


def test_counting_starts_again_after_a_hand_back(policy: HandoffTriggerPolicy) -> None:
    ask = said("when will my parcel arrive", "check_order_status")
    history = [*ask, *replied(), *ask, ConversationPaused(), ConversationResumed()]
    assert predict(policy, [*history, *said("when will my parcel arrive", "check_order_status")])[0] is None


def test_settings_are_re_read_and_switches_respected(policy: HandoffTriggerPolicy, tmp_path: Path) -> None:
    config = tmp_path / "handoff.yml"
    config.write_text("triggers:\n  escalation_phrases:\n    enabled: false\n    phrases: [lawyer]\n")
    policy._settings.path = config
    assert predict(policy, said("get me a lawyer"))[0] is None
    config.write_text("triggers:\n  escalation_phrases:\n    phrases: [refund now]\n")
    import os

    os.utime(config, (1, 1))  # a different modification time: re-read
    assert predict(policy, said("I want a REFUND now"))[0] == "action_handoff"
    config.write_text("triggers: [broken")
    os.utime(config, (2, 2))
    assert predict(policy, said("I want a refund now"))[0] == "action_handoff"  # keeps the last good settings


def test_fires_after_a_turn_that_ended_without_listening(policy: HandoffTriggerPolicy) -> None:
    # e.g. after a hand-back, or a turn cut short by Rasa's prediction limit
    events = [*said("hi", "greet"), ActionExecuted("action_fallback"),
              UserUttered("I want a lawyer", {"name": "complain"}, parse_data={"intent": {"name": "complain"}})]
    assert predict(policy, events)[0] == "action_handoff"


@pytest.mark.parametrize("text", ["my bill is wrong again, get me a person", "are you a bot? i want a human",
                                  "pásame con una persona por favor", "Ich möchte mit einem Mitarbeiter sprechen"])
def test_a_request_for_a_person_hands_over_whatever_nlu_said(policy: HandoffTriggerPolicy, text: str) -> None:
    action, events = predict(policy, said(text, "payment_problem"))
    assert action == "action_handoff" and events == [SlotSet("handoff_trigger", "customer_request")]


def test_a_request_for_a_person_inside_a_form(policy: HandoffTriggerPolicy) -> None:
    from rasa.shared.core.events import ActiveLoop

    events = [ActiveLoop("repair_form"), SlotSet("requested_slot", "device"),
              *said("quero falar com um humano", "inform")]
    assert predict(policy, events)[0] == "action_handoff"


def test_a_mention_of_people_does_not_hand_over(policy: HandoffTriggerPolicy) -> None:
    assert predict(policy, said("my husband wants to know when the order arrives", "check_order_status"))[0] is None


def test_the_request_net_can_be_switched_off(policy: HandoffTriggerPolicy, tmp_path: Path) -> None:
    config = tmp_path / "handoff.yml"
    config.write_text("triggers:\n  customer_request: false\n")
    policy._settings.path = config
    assert predict(policy, said("get me a person", "payment_problem"))[0] is None
