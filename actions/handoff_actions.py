"""Passing a conversation to a person, and the fallback that decides when to.

Both pause the bot with `ConversationPaused`, record why in `handoff_reason`, tell the customer what
happens next (office hours from handoff.yml) and leave a summary for the agent in `handoff_summary`.
The console lists paused conversations with both. Triggers that watch the whole conversation
(escalation phrases, sentiment, repeated questions) are decided by rasa_components/handoff_policy.py,
which sets `handoff_trigger` and predicts action_handoff.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, ConversationPaused, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions import runtime
from actions.knowledge_actions import (
    ANSWER_MODE_SLOT,
    ANSWERED_MODES,
    answered,
    knowledge_metadata,
    knowledge_reply,
    utter_reply,
)
from handoff.config import HandoffSettings
from handoff.summary import extractive_summary, summary_prompt, transcript_lines
from handoff.triggers import TRIGGER_SLOT
from languages.dates import describe_opening

logger = logging.getLogger(__name__)

FALLBACK_ACTION = "action_fallback"
SUMMARY_SLOT = "handoff_summary"

# The bot's offer that an "affirm" accepted, by the response that made it.
OFFER_TOPICS = {
    "utter_payment_problem": "payment_problem",
    "utter_account_problem": "account_problem",
    "utter_change_address": "change_delivery_address",
    "utter_missing_package": "missing_package",
    "utter_complain": "complaint",
    "action_answer_question": "knowledge_miss",  # its offer of a person comes only with "I couldn't find that"
    "utter_unsupported_language": "unsupported_language",
}


def events_after_user_turns(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """For each user message, newest first, the events of the bot's reply to it."""
    turns: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for event in reversed(events):
        if event.get("event") == "user":
            turns.append(current)
            current = []
        else:
            current.insert(0, event)
    return turns


def actions_after_user_turns(events: list[dict[str, Any]]) -> list[list[str]]:
    """For each user message, newest first, the actions the bot ran in reply to it."""
    return [[str(e.get("name")) for e in turn if e.get("event") == "action" and e.get("name") != "action_listen"]
            for turn in events_after_user_turns(events)]


def _answered_from_knowledge(turn: list[dict[str, Any]]) -> bool:
    return any(e.get("event") == "bot" and knowledge_metadata(e).get("answer_mode") in ANSWERED_MODES
               for e in turn)


def handoff_reason(tracker: Tracker) -> str:
    """Why the conversation goes to a person, derived from the conversation itself."""
    intent = (tracker.latest_message.get("intent") or {}).get("name")
    if intent == "human_handoff":
        return "customer_request"
    if intent == "nlu_fallback":
        return "low_confidence"
    if intent == "affirm":
        turns = actions_after_user_turns(tracker.events)
        previous_reply = turns[1] if len(turns) > 1 else []
        topics = [OFFER_TOPICS[name] for name in previous_reply if name in OFFER_TOPICS]
        if topics:
            return f"accepted_offer:{topics[-1]}"
    return f"other:{intent}" if intent else "other"


def unclear_turns_in_a_row(tracker: Tracker) -> int:
    """The current message plus the directly preceding ones the fallback could not answer."""
    turns = events_after_user_turns(tracker.events)
    count = 1
    for turn in turns[1:]:
        ran_fallback = any(e.get("event") == "action" and e.get("name") == FALLBACK_ACTION for e in turn)
        if not ran_fallback or _answered_from_knowledge(turn):
            break
        count += 1
    return count


def trigger_enabled(reason: str, settings: HandoffSettings) -> bool:
    """Triggers decided in the dialogue can be switched off in handoff.yml (the policy checks its own)."""
    triggers = settings.triggers
    if reason == "customer_request":
        return triggers.customer_request
    if reason == "low_confidence":
        return triggers.low_confidence
    if reason == "accepted_offer:knowledge_miss":
        return triggers.knowledge_miss
    return True


def summarise(events: list[dict[str, Any]], reason: str, slots: dict[str, Any], settings: HandoffSettings) -> str:
    """The LLM's summary when one is configured and answers, else the extractive one."""
    fallback = extractive_summary(events, reason, slots, settings.summary_turns)
    from retrieval.llm import LLMAnswerer

    llm = LLMAnswerer.from_env()
    if llm is None:
        return fallback
    try:
        text = llm.complete(summary_prompt(transcript_lines(events, settings.summary_turns), reason)).strip()
    except Exception:  # the agent still gets the extractive summary
        logger.exception("LLM summary failed; using the extractive one")
        return fallback
    return text[:1000] if text else fallback


async def pause_for_person(dispatcher: CollectingDispatcher, tracker: Tracker, reason: str) -> list[EventType]:
    """Tell the customer what happens next, leave a summary for the agent and pause the bot."""
    settings = runtime.handoff_settings()
    now = runtime.now()
    opening = settings.office_hours.next_opening(now) if settings.office_hours else None
    if opening is None:
        dispatcher.utter_message(response="utter_handoff")
    else:
        language = tracker.get_slot("language")
        dispatcher.utter_message(response="utter_handoff_after_hours",
                                 next_opening=describe_opening(opening, now, language))
    summary = await asyncio.to_thread(summarise, tracker.events, reason, tracker.slots, settings)
    events: list[EventType] = [SlotSet("handoff_reason", reason), SlotSet(SUMMARY_SLOT, summary),
                               SlotSet(TRIGGER_SLOT, None)]
    if tracker.active_loop.get("name"):  # a form interrupted by an escalation is not resumed by itself
        events += [ActiveLoop(None), SlotSet("requested_slot", None)]
    return [*events, ConversationPaused()]


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        reason = tracker.get_slot(TRIGGER_SLOT) or handoff_reason(tracker)
        if not trigger_enabled(reason, runtime.handoff_settings()):
            dispatcher.utter_message(response="utter_handoff_unavailable")
            return [SlotSet(TRIGGER_SLOT, None)]
        return await pause_for_person(dispatcher, tracker, reason)


class ActionFallback(Action):
    """A message NLU could not place: answer it from the help centre when it is there; otherwise ask
    to rephrase, and after `low_confidence.turns` unclear messages in a row (handoff.yml), hand over."""

    def name(self) -> str:
        return FALLBACK_ACTION

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        reply = await knowledge_reply(tracker)
        if reply is not None and answered(reply):
            utter_reply(dispatcher, reply)
            return [SlotSet(ANSWER_MODE_SLOT, reply.answer.mode)]
        triggers = runtime.handoff_settings().triggers
        if triggers.low_confidence and unclear_turns_in_a_row(tracker) >= triggers.low_confidence_turns:
            return await pause_for_person(dispatcher, tracker, "low_confidence")
        dispatcher.utter_message(response="utter_ask_rephrase")
        # As Rasa's core fallback (no policy sure of the next action, e.g. a form that rejected the
        # message) no rule ends the turn: without this, RulePolicy predicts the fallback again and the
        # customer gets "Sorry…" up to 10 times. Listening ends the turn in every case.
        return [FollowupAction("action_listen")]
