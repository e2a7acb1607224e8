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
}


def actions_after_user_turns(events: list[dict[str, Any]]) -> list[list[str]]:
    """For each user message, newest first, the actions the bot ran in reply to it."""
    turns: list[list[str]] = []
    current: list[str] = []
    for event in reversed(events):
        kind = event.get("event")
        if kind == "action" and event.get("name") != "action_listen":
            current.insert(0, str(event.get("name")))
        elif kind == "user":
            turns.append(current)
            current = []
    return turns


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
    """The current message plus the directly preceding ones the fallback answered."""
    turns = actions_after_user_turns(tracker.events)
    count = 1
    for actions in turns[1:]:
        if FALLBACK_ACTION not in actions:
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
    """Ask to rephrase; after UNCLEAR_TURNS_BEFORE_HANDOFF unclear messages in a row, hand over."""

    def name(self) -> str:
        return FALLBACK_ACTION

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        if unclear_turns_in_a_row(tracker) >= UNCLEAR_TURNS_BEFORE_HANDOFF:
            dispatcher.utter_message(response="utter_handoff")
            return pause_for_person("low_confidence")
        dispatcher.utter_message(response="utter_ask_rephrase")
        return []
