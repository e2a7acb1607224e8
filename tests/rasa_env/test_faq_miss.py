"""FaqMissFallback: an FAQ whose selected answer is uncertain becomes nlu_fallback; sure ones stay."""

from __future__ import annotations

from typing import Any

from rasa.shared.nlu.training_data.message import Message

from rasa_components.faq_miss import FaqMissFallback


def message(intent: str, selector_confidence: float | None) -> Message:
    data: dict[str, Any] = {"text": "q", "intent": {"name": intent, "confidence": 1.0},
                            "intent_ranking": [{"name": intent, "confidence": 1.0}]}
    if selector_confidence is not None:
        data["response_selector"] = {"faq": {"response": {"intent_response_key": "faq/payment_methods",
                                                          "confidence": selector_confidence}}}
    return Message(data=data)


def test_uncertain_faq_answer_goes_to_the_fallback() -> None:
    component = FaqMissFallback(FaqMissFallback.get_default_config())
    [miss, sure, other, no_selector] = component.process([
        message("faq", 0.69), message("faq", 0.97), message("greet", 0.1), message("faq", None)])
    assert miss.data["intent"] == {"name": "nlu_fallback", "confidence": 0.69}
    assert miss.data["intent_ranking"][0]["name"] == "nlu_fallback" and miss.data["intent_ranking"][1]["name"] == "faq"
    assert sure.data["intent"]["name"] == "faq"
    assert other.data["intent"]["name"] == "greet"
    assert no_selector.data["intent"]["name"] == "faq"


def test_threshold_is_configurable() -> None:
    component = FaqMissFallback({"threshold": 0.5, "retrieval_intents": ["faq"]})
    [kept] = component.process([message("faq", 0.69)])
    assert kept.data["intent"]["name"] == "faq"
