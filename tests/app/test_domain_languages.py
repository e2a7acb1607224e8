"""Every response in domain/ speaks the four languages and fits WhatsApp in each of them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from languages import SERVED
from tests.app.responses import responses

# Said in English on purpose: the customer wrote in a language we do not serve.
ENGLISH_ONLY = {"utter_unsupported_language"}
PLACEHOLDER = re.compile(r"{([^\n{}]+?)}")
BUTTON_TITLE, LIST_ROW_TITLE, INTERACTIVE_BODY, TEXT_BODY = 20, 24, 1024, 4096


def language_of(variation: dict[str, Any]) -> str:
    for condition in variation.get("condition") or []:
        if condition.get("name") == "language":
            return str(condition["value"])
    return "en"


def other_conditions(variation: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((c["name"], str(c["value"])) for c in variation.get("condition") or []
                        if c.get("name") != "language"))


def groups(name: str) -> dict[tuple[tuple[str, str], ...], dict[str, list[dict[str, Any]]]]:
    """The response's variations by their non-language conditions, then by language."""
    found: dict[tuple[tuple[str, str], ...], dict[str, list[dict[str, Any]]]] = {}
    for variation in responses()[name]:
        found.setdefault(other_conditions(variation), {}).setdefault(language_of(variation), []).append(variation)
    return found


@pytest.mark.parametrize("name", sorted(responses()))
def test_every_response_is_translated(name: str) -> None:
    for conditions, by_language in groups(name).items():
        expected = {"en"} if name in ENGLISH_ONLY else set(SERVED)
        assert set(by_language) == expected, (name, conditions)


@pytest.mark.parametrize("name", sorted(responses()))
def test_translations_keep_the_placeholders_and_buttons(name: str) -> None:
    for by_language in groups(name).values():
        english = by_language["en"][0]
        placeholders = set(PLACEHOLDER.findall(english.get("text") or ""))
        payloads = [b["payload"] for b in english.get("buttons") or []]
        for variations in by_language.values():
            for variation in variations:
                assert set(PLACEHOLDER.findall(variation.get("text") or "")) == placeholders, (name, variation)
                assert [b["payload"] for b in variation.get("buttons") or []] == payloads, (name, variation)


@pytest.mark.parametrize("name", sorted(responses()))
def test_every_language_fits_whatsapp(name: str) -> None:
    for variation in responses()[name]:
        buttons = variation.get("buttons") or []
        text = variation.get("text") or ""
        titles = [b["title"] for b in buttons]
        assert len(set(titles)) == len(titles), (name, titles)
        if buttons:
            assert len(text) <= INTERACTIVE_BODY, name
            limit = BUTTON_TITLE if len(buttons) <= 3 else LIST_ROW_TITLE
            assert len(buttons) <= 10 and all(len(t) <= limit for t in titles), (name, language_of(variation), titles)
        else:
            assert len(text) <= TEXT_BODY, name
