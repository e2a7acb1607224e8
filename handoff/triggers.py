"""Trigger rules that watch the conversation (the trigger policy applies them on every message).

Low NLU confidence and an accepted offer after a knowledge miss are decided in the dialogue (rules +
action_handoff / action_fallback). A customer's request for a person is decided in both places: NLU's
`human_handoff` intent through the rules, and here the deterministic net of handoff/person_request.py,
which holds when NLU is unsure or a topic outweighs the request. The other three here need the
customer's recent messages: escalation phrases, strongly negative sentiment, the same question asked
again and again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from handoff.config import TriggerSettings
from handoff.person_request import asks_for_person
from languages.text import plain_words

# The slot in which the trigger policy hands its reason to action_handoff.
TRIGGER_SLOT = "handoff_trigger"
ESCALATION = "escalation_phrase"
NEGATIVE_SENTIMENT = "negative_sentiment"
REPEATED_QUESTION = "repeated_question"
CUSTOMER_REQUEST = "customer_request"

# Words that carry no topic; two messages are the same question when their other words mostly agree.
_STOPWORDS = """
    a an the i me my we our you your it is are was be been am do does did to of in on for at by with and or but
    so not no yes please can could would will just still again why what when where how this that there any
    some hi hello hey ok okay"""
STOPWORDS = frozenset(_STOPWORDS.split())
SAME_QUESTION_SIMILARITY = 0.6
# Saying these again is not asking the same question again (intent, or retrieval intent's group).
NOT_QUESTIONS = frozenset({"greet", "goodbye", "thanks", "affirm", "deny", "stop", "help", "inform", "csat",
                           "chitchat", "human_handoff", "share_media", "share_location", "share_contact"})


@dataclass(frozen=True)
class UserTurn:
    text: str
    intent: str | None = None  # full intent (faq/delivery_time for retrieval intents)
    sentiment: float = 0.0  # VADER compound, -1 … 1


def matched_phrase(text: str, phrases: Sequence[str]) -> str | None:
    """The first escalation phrase in `text`, matched on whole words."""
    padded = f" {plain_words(text)} "
    for phrase in phrases:
        if f" {plain_words(phrase)} " in padded:
            return phrase
    return None


def _topic_words(text: str) -> frozenset[str]:
    return frozenset(w for w in plain_words(text).split() if w not in STOPWORDS and len(w) > 1)


def same_question(a: UserTurn, b: UserTurn) -> bool:
    if a.intent and a.intent == b.intent and "/" in a.intent:
        return True  # the same FAQ, in other words
    words_a, words_b = _topic_words(a.text), _topic_words(b.text)
    if not words_a or not words_b:
        return False
    return len(words_a & words_b) / len(words_a | words_b) >= SAME_QUESTION_SIMILARITY


def _is_question(turn: UserTurn) -> bool:
    if turn.text.startswith("/"):  # a tapped button
        return False
    return (turn.intent or "").split("/")[0] not in NOT_QUESTIONS


def repeated_question(turns: Sequence[UserTurn], times: int) -> bool:
    """The last message is the `times`-th asking of the same question (the bot did not help the first times)."""
    if not turns or not _is_question(turns[-1]):
        return False
    current = turns[-1]
    return 1 + sum(_is_question(t) and same_question(current, t) for t in turns[:-1]) >= times


def negative_streak(turns: Sequence[UserTurn], threshold: float, window: int) -> bool:
    """The last `window` messages are on average at or below `threshold`, and the last one is negative
    too (an apology after a rant does not escalate). A single angry message gets the complaint flow first."""
    if len(turns) < window or turns[-1].sentiment >= 0:
        return False
    recent = [t.sentiment for t in turns[-window:]]
    return sum(recent) / len(recent) <= threshold


def triggered(turns: Sequence[UserTurn], settings: TriggerSettings) -> str | None:
    """The reason to hand over now, or None. `turns`: the customer's messages since the bot last took
    over (session start or hand-back), oldest first, the current one last."""
    if not turns:
        return None
    if settings.customer_request and asks_for_person(turns[-1].text):
        return CUSTOMER_REQUEST
    if settings.escalation and settings.escalation_phrases:
        phrase = matched_phrase(turns[-1].text, settings.escalation_phrases)
        if phrase:
            return f"{ESCALATION}:{phrase}"
    if settings.negative_sentiment and negative_streak(turns, settings.sentiment_threshold,
                                                       settings.sentiment_turns):
        return NEGATIVE_SENTIMENT
    if settings.repeated_failure and repeated_question(turns, settings.repeated_times):
        return REPEATED_QUESTION
    return None
