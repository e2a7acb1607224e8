"""A message that names a person without asking for one is not `human_handoff`.

"i'm a real person btw", "no, I don't need a human", "el contacto de mi compañero": the words
of a request for a person are there, so NLU sometimes takes it for one, and the rules would hand
the conversation over. When the handoff net (handoff/person_request.py) finds the person word
negated, self-descriptive or someone else's, and no request, this component takes the next intent
of the ranking instead. Runs after the classifiers and before the FallbackClassifier, so a weak
runner-up still becomes nlu_fallback.
"""

from __future__ import annotations

from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from handoff.person_request import mentions_without_asking

HANDOFF_INTENT = "human_handoff"


def demoted(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The intent and ranking without `human_handoff`, when the message only mentions a person."""
    if (data.get(INTENT) or {}).get(INTENT_NAME_KEY) != HANDOFF_INTENT:
        return None
    if not mentions_without_asking(str(data.get(TEXT) or "")):
        return None
    ranking = [dict(r) for r in data.get(INTENT_RANKING_KEY) or [] if r.get(INTENT_NAME_KEY) != HANDOFF_INTENT]
    if not ranking:
        return None
    return dict(ranking[0]), ranking


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=False)
class PersonMentionGuard(GraphComponent):
    @classmethod
    def create(cls, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> PersonMentionGuard:
        return cls()

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            replaced = demoted(message.data)
            if replaced is not None:
                message.set(INTENT, replaced[0], add_to_output=True)
                message.set(INTENT_RANKING_KEY, replaced[1], add_to_output=True)
        return messages
