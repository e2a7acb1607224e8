"""handoff/: trigger rules, handoff.yml parsing (clear errors), office hours, summaries. Pure."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from handoff.config import ConfigError, TriggerSettings, load_settings, parse_settings
from handoff.summary import describe_reason, extractive_summary, transcript_lines
from handoff.triggers import UserTurn, matched_phrase, negative_streak, repeated_question, triggered

ROOT = Path(__file__).resolve().parents[2]


def test_phrases_match_whole_words_ignoring_case_accents_and_punctuation() -> None:
    phrases = ["cancel my contract", "lawyer", "demanda"]
    assert matched_phrase("Please, CANCEL my   contract!!!", phrases) == "cancel my contract"
    assert matched_phrase("my lawyers will call", phrases) is None  # whole words only
    assert matched_phrase("pondré una DEMANDA", phrases) == "demanda"
    assert matched_phrase("pondre una demandá", ["demanda"]) == "demanda"
    assert matched_phrase("", phrases) is None


def test_repeated_question_needs_the_same_topic_not_the_same_small_talk() -> None:
    ask = UserTurn("where is my parcel", "check_order_status")
    assert not repeated_question([ask, ask], 3)
    assert repeated_question([ask, UserTurn("where's my parcel??", "check_order_status"), ask], 3)
    assert repeated_question([UserTurn("a", "faq/delivery_time"), UserTurn("b", "faq/delivery_time"),
                              UserTurn("c", "faq/delivery_time")], 3)  # the same FAQ in other words
    thanks = UserTurn("thanks", "thanks")
    assert not repeated_question([thanks] * 5, 3)
    button = UserTurn("/affirm", "affirm")
    assert not repeated_question([button] * 5, 3)


def test_negative_streak() -> None:
    angry, calm = UserTurn("x", sentiment=-0.8), UserTurn("y", sentiment=0.3)
    assert not negative_streak([angry], -0.5, 2)  # one message is not a streak
    assert negative_streak([calm, angry, angry], -0.5, 2)
    assert not negative_streak([angry, calm], -0.5, 2)  # calmed down
    assert not negative_streak([angry, UserTurn("z", sentiment=-0.1)], -0.5, 2)  # mean -0.45


def test_triggered_checks_in_order_and_respects_switches() -> None:
    settings = TriggerSettings(escalation_phrases=("lawyer",))
    turns = [UserTurn("awful", sentiment=-0.9), UserTurn("my lawyer will call", sentiment=-0.9)]
    assert triggered(turns, settings) == "escalation_phrase:lawyer"
    off = TriggerSettings(escalation=False, escalation_phrases=("lawyer",))
    assert triggered(turns, off) == "negative_sentiment"
    assert triggered(turns, TriggerSettings(escalation=False, negative_sentiment=False)) is None
    assert triggered([], settings) is None


def test_the_shipped_handoff_yml_loads() -> None:
    settings = load_settings(ROOT / "handoff.yml")
    assert "cancel my contract" in settings.triggers.escalation_phrases
    assert settings.office_hours is not None and settings.office_hours.timezone == "Europe/Madrid"
    assert load_settings(ROOT / "missing.yml") == parse_settings(None)


@pytest.mark.parametrize(("raw", "message"), [
    ([], "must be a mapping"),
    ({"triggers": {"negative_sentiment": {"threshold": 3}}}, "negative_sentiment.threshold"),
    ({"triggers": {"low_confidence": {"turns": "two"}}}, "low_confidence.turns"),
    ({"triggers": {"escalation_phrases": {"phrases": "lawyer"}}}, "list of phrases"),
    ({"triggers": {"repeated_failure": "often"}}, "true/false or a mapping"),
    ({"office_hours": {"timezone": "Mars/Olympus"}}, "timezone"),
    ({"office_hours": {"hours": {"funday": "09:00-10:00"}}}, "unknown day"),
    ({"office_hours": {"hours": {"mon": "9-18"}}}, "HH:MM"),
    ({"office_hours": {"hours": {"mon": "18:00-09:00"}}}, "closes before it opens"),
    ({"office_hours": {"closed": ["christmas"]}}, "not a date"),
])
def test_handoff_yml_errors_say_which_key(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw)


def test_office_hours_open_and_next_opening() -> None:
    hours = load_settings(ROOT / "handoff.yml").office_hours
    assert hours is not None
    wednesday_noon = datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)
    assert hours.is_open(wednesday_noon) and hours.next_opening(wednesday_noon) is None
    sunday = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    opening = hours.next_opening(sunday)
    assert opening is not None and opening.strftime("%a %H:%M") == "Mon 09:00"


def test_summary_lines_and_reasons() -> None:
    events = [{"event": "user", "text": "hi"}, {"event": "bot", "text": "Hello!"},
              {"event": "user", "text": "where is VB-123456"}, {"event": "bot", "text": "On its way",
                                                                  "metadata": {"agent": "Ana"}}]
    assert transcript_lines(events, 1) == ["Customer: where is VB-123456", "Agent: On its way"]
    text = extractive_summary(events, "escalation_phrase:lawyer", {"order_number": "VB-123456"})
    assert text == ("Handed over because the customer wrote “lawyer”. First message: “hi”. "
                    "Latest: “where is VB-123456”. Known: order VB-123456.")
    assert describe_reason(None) == "handed over" and describe_reason("weird_thing") == "weird thing"
