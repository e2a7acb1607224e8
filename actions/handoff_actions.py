"""Passing a conversation to a person, and the fallback that decides when to.

Both pause the bot with `ConversationPaused` and record why in `handoff_reason`;
the console (a later issue) lists paused conversations with that reason.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.knowledge_actions import (
    ANSWER_MODE_SLOT,
    ANSWERED_MODES,
    answered,
    knowledge_metadata,
    knowledge_reply,
    utter_reply,
)

FALLBACK_ACTION = "action_fallback"
# Unclear messages in a row after which a person takes over.
UNCLEAR_TURNS_BEFORE_HANDOFF = 2

# The bot's offer that an "affirm" accepted, by the response that made it.
OFFER_TOPICS = {
    "utter_payment_problem": "payment_problem",
    "utter_account_problem": "account_problem",
    "utter_change_address": "change_delivery_address",
    "utter_missing_package": "missing_package",
    "utter_complain": "complaint",
    "action_answer_question": "knowledge_miss",  # its offer of a person comes only with "I couldn't find that"
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


def pause_for_person(reason: str) -> list[EventType]:
    return [SlotSet("handoff_reason", reason), ConversationPaused()]


class ActionHandoff(Action):
    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        # The customer was told by utter_handoff (in the rules/stories) what happens next.
        return pause_for_person(handoff_reason(tracker))


class ActionFallback(Action):
    """A message NLU could not place: answer it from the help centre when it is there; otherwise ask
    to rephrase, and after UNCLEAR_TURNS_BEFORE_HANDOFF unclear messages in a row, hand over."""

    def name(self) -> str:
        return FALLBACK_ACTION

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        reply = await knowledge_reply(tracker)
        if reply is not None and answered(reply):
            utter_reply(dispatcher, reply)
            return [SlotSet(ANSWER_MODE_SLOT, reply.answer.mode)]
        if unclear_turns_in_a_row(tracker) >= UNCLEAR_TURNS_BEFORE_HANDOFF:
            dispatcher.utter_message(response="utter_handoff")
            return pause_for_person("low_confidence")
        dispatcher.utter_message(response="utter_ask_rephrase")
        return []
