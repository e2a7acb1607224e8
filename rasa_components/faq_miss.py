"""An FAQ question whose canned answer the ResponseSelector is unsure of goes to the fallback instead.

NLU is often sure a message is *an* FAQ ("do gift cards expire?" → faq, 1.00) while the
ResponseSelector only half-believes in the answer it picked (faq/payment_methods, 0.69): sending
that canned answer would answer another question. Below `threshold`, this component turns the
prediction into `nlu_fallback`; action_fallback then looks the question up in the help centre
(knowledge/) before asking to rephrase. Runs after the ResponseSelectors and FallbackClassifier.
"""

from __future__ import annotations

from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.constants import DEFAULT_NLU_FALLBACK_INTENT_NAME
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, INTENT_RANKING_KEY, PREDICTED_CONFIDENCE_KEY
from rasa.shared.nlu.training_data.message import Message


def selector_confidence(data: dict[str, Any], retrieval_intent: str) -> float | None:
    """Confidence of the response the selector picked for `retrieval_intent`; None if it did not run."""
    selector = (data.get("response_selector") or {}).get(retrieval_intent) or {}
    confidence = (selector.get("response") or {}).get("confidence")
    return float(confidence) if isinstance(confidence, (int, float)) else None


def faq_miss(data: dict[str, Any], retrieval_intent: str, threshold: float) -> bool:
    if (data.get(INTENT) or {}).get(INTENT_NAME_KEY) != retrieval_intent:
        return False
    confidence = selector_confidence(data, retrieval_intent)
    return confidence is not None and confidence < threshold


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class FaqMissFallback(GraphComponent):
    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {"threshold": 0.8, "retrieval_intents": ["faq"]}

    def __init__(self, config: dict[str, Any]) -> None:
        self.threshold = float(config["threshold"])
        self.retrieval_intents = list(config["retrieval_intents"])

    @classmethod
    def create(cls, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> FaqMissFallback:
        return cls(config)

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            for retrieval_intent in self.retrieval_intents:
                if faq_miss(message.data, retrieval_intent, self.threshold):
                    confidence = selector_confidence(message.data, retrieval_intent) or 0.0
                    fallback = {INTENT_NAME_KEY: DEFAULT_NLU_FALLBACK_INTENT_NAME, PREDICTED_CONFIDENCE_KEY: confidence}
                    message.data[INTENT] = fallback
                    message.data.setdefault(INTENT_RANKING_KEY, []).insert(0, dict(fallback))
                    break
        return messages
