"""A short summary of the conversation for the agent who takes it over. Pure: events in, text out.

The extractive summary is always available; the handoff action asks an LLM (when one is configured)
to write one from `summary_prompt`, and keeps the extractive one when that fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

REASONS = {
    "customer_request": "the customer asked for a person",
    "low_confidence": "the bot did not understand the customer twice in a row",
    "negative_sentiment": "the customer is upset",
    "repeated_question": "the customer asked the same question again and again",
    "accepted_offer:knowledge_miss": "the help centre had no answer and the customer accepted a person",
}
# Slots worth telling an agent about, with their label.
USEFUL_SLOTS = {"order_number": "order", "device": "device", "issue_description": "issue",
                "return_reason": "return reason"}
MAX_LINE = 200


def describe_reason(reason: str | None) -> str:
    if not reason:
        return "handed over"
    if reason in REASONS:
        return REASONS[reason]
    kind, _, detail = reason.partition(":")
    if kind == "escalation_phrase":
        return f"the customer wrote “{detail}”"
    if kind == "accepted_offer":
        return f"the customer accepted the offer of a person ({detail.replace('_', ' ')})"
    return reason.replace("_", " ")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"


def transcript_lines(events: Sequence[Mapping[str, Any]], last_turns: int) -> list[str]:
    """'Customer: …' / 'Bot: …' lines of the last `last_turns` customer messages and the replies."""
    lines: list[str] = []
    for event in events:
        kind = event.get("event")
        text = event.get("text")
        if kind == "user" and text:
            lines.append(f"Customer: {_clip(str(text))}")
        elif kind == "bot" and text:
            lines.append(f"{'Agent' if (event.get('metadata') or {}).get('agent') else 'Bot'}: {_clip(str(text))}")
    customer = [i for i, line in enumerate(lines) if line.startswith("Customer:")]
    start = customer[-last_turns] if len(customer) >= last_turns else 0
    return lines[start:]


def extractive_summary(events: Sequence[Mapping[str, Any]], reason: str | None,
                       slots: Mapping[str, Any], last_turns: int = 6) -> str:
    """Why, what the customer asked first and last, and what the bot already knows."""
    said = [_clip(str(e["text"])) for e in events if e.get("event") == "user" and e.get("text")]
    parts = [f"Handed over because {describe_reason(reason)}."]
    if said:
        parts.append(f"First message: “{said[0]}”.")
        later = said[1:][-min(3, last_turns):]
        if later:
            parts.append("Latest: " + " / ".join(f"“{s}”" for s in later) + ".")
    known = [f"{label} {slots[name]}" for name, label in USEFUL_SLOTS.items() if slots.get(name)]
    if known:
        parts.append("Known: " + ", ".join(known) + ".")
    return " ".join(parts)


def summary_prompt(lines: Sequence[str], reason: str | None) -> str:
    return ("You help a customer-support agent take over a WhatsApp conversation from a bot. In at most three "
            "short sentences, say what the customer wants, what they already said (order numbers, products, "
            "dates) and how they feel. No greeting, no advice.\n"
            f"Why the bot handed over: {describe_reason(reason)}.\nConversation:\n" + "\n".join(lines))
