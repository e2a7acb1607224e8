"""Hands the conversation to a person when the whole conversation says so, whatever the stories say.

After every customer message this policy applies handoff/triggers.py (escalation phrases, strongly
negative sentiment over the last messages, the same question asked again and again) to the
customer's messages since the bot last took over (session start or an agent's hand-back). When one
fires it predicts `action_handoff` with confidence 1 and a priority above the RulePolicy's, and sets
`handoff_trigger` to the reason, which the action records. Otherwise it abstains (all zeros).

Settings come from handoff.yml (HANDOFF_CONFIG, else config `handoff_config`), re-read when the file changes, so
designers can edit phrases without retraining. Sentiment: VADER, whose lexicon ships in the package.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rasa.core.policies.policy import Policy, PolicyPrediction
from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, Event, SlotSet, UserUttered
from rasa.shared.core.generator import TrackerWithCachedStates
from rasa.shared.core.trackers import DialogueStateTracker

from handoff.config import DEFAULT_PATH, HandoffSettings, load_settings
from handoff.triggers import TRIGGER_SLOT, UserTurn, triggered

logger = logging.getLogger(__name__)

HANDOFF_ACTION = "action_handoff"
# Events after which the bot is in charge again: what came before does not count towards a trigger.
RESTART_EVENTS = frozenset({"resume", "session_started", "restart"})


def turns_since_bot_took_over(events: Sequence[Event]) -> list[UserTurn]:
    """The customer's messages since the last session start / hand-back, oldest first (sentiment 0).
    Reads back from the newest event only as far as that point, not the whole history."""
    turns: list[UserTurn] = []
    for event in reversed(events):
        if event.type_name in RESTART_EVENTS:
            break
        if isinstance(event, UserUttered):
            parse = event.parse_data or {}
            name = (parse.get("intent") or {}).get("name")
            selected = ((parse.get("response_selector") or {}).get(str(name)) or {}).get("response") or {}
            turns.append(UserTurn(text=event.text or "", intent=selected.get("intent_response_key") or name))
    turns.reverse()
    return turns


def awaiting_first_action(tracker: DialogueStateTracker) -> bool:
    """No action has run since the latest customer message (normally: the last action was
    action_listen; also after a turn that ended without one, e.g. a hand-back or a prediction limit)."""
    for event in reversed(tracker.events):
        if isinstance(event, ActionExecuted):
            return False
        if isinstance(event, UserUttered):
            return True
    return False


class _SettingsFile:
    """handoff.yml, re-read when its modification time changes; the last good version on errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mtime: float | None = None
        self.settings = HandoffSettings()

    def get(self) -> HandoffSettings:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return self.settings
        if mtime != self.mtime:
            try:
                self.settings = load_settings(self.path)
            except Exception:  # a typo in the file must not stop the bot; the log says where
                logger.exception("handoff.yml could not be read; keeping the previous settings")
            self.mtime = mtime
        return self.settings


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.POLICY_WITHOUT_END_TO_END_SUPPORT, is_trainable=False)
class HandoffTriggerPolicy(Policy):
    @staticmethod
    def get_default_config() -> dict[str, Any]:
        # Above the RulePolicy (6): an escalation wins over a rule predicting with confidence 1 too.
        return {"priority": 7, "handoff_config": str(DEFAULT_PATH)}

    def __init__(self, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
                 execution_context: ExecutionContext, featurizer: Any = None) -> None:
        super().__init__(config, model_storage, resource, execution_context, featurizer)
        path = Path(os.environ.get("HANDOFF_CONFIG") or config.get("handoff_config") or DEFAULT_PATH)
        self._settings = _SettingsFile(path if path.is_absolute() else Path.cwd() / path)
        self._analyzer: Any = None

    def train(self, training_trackers: list[TrackerWithCachedStates], domain: Domain, **kwargs: Any) -> Resource:
        return self._resource

    def _sentiment(self, text: str) -> float:
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._analyzer = SentimentIntensityAnalyzer()
        if not text or text.startswith("/"):
            return 0.0
        return float(self._analyzer.polarity_scores(text[:2000])["compound"])

    def reason(self, tracker: DialogueStateTracker) -> str | None:
        """The trigger that fires on the customer's latest message, if any."""
        settings = self._settings.get().triggers
        turns = turns_since_bot_took_over(list(tracker.events))
        if settings.negative_sentiment:
            window = turns[-max(settings.sentiment_turns, 1):]
            scored = [UserTurn(t.text, t.intent, self._sentiment(t.text)) for t in window]
            turns = turns[: len(turns) - len(window)] + scored
        return triggered(turns, settings)

    def predict_action_probabilities(self, tracker: DialogueStateTracker, domain: Domain,
                                     rule_only_data: dict[str, Any] | None = None,
                                     **kwargs: Any) -> PolicyPrediction:
        abstain = self._prediction(self._default_predictions(domain))
        # Only right after a customer message, once; never while paused (the bot is silent then).
        if not awaiting_first_action(tracker) or tracker.is_paused():
            return abstain
        if HANDOFF_ACTION not in domain.action_names_or_texts:
            return abstain
        reason = self.reason(tracker)
        if reason is None:
            return abstain
        logger.info("handoff trigger %s for %s", reason, tracker.sender_id)
        probabilities = self._default_predictions(domain)
        probabilities[domain.index_for_action(HANDOFF_ACTION)] = 1.0
        return self._prediction(probabilities, optional_events=[SlotSet(TRIGGER_SLOT, reason)],
                                diagnostic_data={"handoff_trigger": reason})
