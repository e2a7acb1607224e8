"""The four languages in a running Rasa: the slot, answers in the customer's language, handoff in every
language, and bad input (empty, emoji-only, 4,096 characters, mixed, a language we do not serve)."""

from __future__ import annotations

import uuid

import pytest

from .harness import Stack, text_webhook, wait_for

pytestmark = pytest.mark.integration


def say(stack: Stack, user: str, text: str) -> str:
    """Send one message; the text of the last reply it got (buttons' body included)."""
    before = len(stack.sent_to(user))
    assert stack.post_webhook(text_webhook(user, f"wamid.{user}.{uuid.uuid4().hex[:12]}", text)) == 200
    wait_for(lambda: len(stack.sent_to(user)) > before, 60, what=f"reply to {text[:40]!r}")
    last = stack.sent_to(user)[-1]
    return (last.get("text") or {}).get("body") or ((last.get("interactive") or {}).get("body") or {}).get("text", "")


def language(stack: Stack, user: str) -> str | None:
    return stack.tracker(user)["slots"].get("language")


def test_the_bot_answers_in_the_customers_language_and_follows_a_switch(stack: Stack) -> None:
    user = "34633000001"
    assert "Volty" in say(stack, user, "hola buenas tardes") and language(stack, user) == "es"
    assert "Sin problema" in say(stack, user, "olvídalo") and language(stack, user) == "es"
    say(stack, user, "ok")
    assert language(stack, user) == "es"  # short: kept
    assert "Tschüss" in say(stack, user, "tschüss, bis morgen und danke für alles") and language(stack, user) == "de"
    say(stack, user, "in English please")
    assert language(stack, user) == "en"


@pytest.mark.parametrize(("user", "text", "said"), [
    ("34633000010", "Quero falar com um atendente, por favor", "Vou passá-lo a uma pessoa"),
    ("34633000011", "pásame con una persona por favor", "Te paso con una persona"),
    ("34633000012", "Ich möchte bitte mit einem Mitarbeiter sprechen", "Ich verbinde dich"),
    ("34633000013", "my bill is wrong again, get me a person", "passing you to a person"),
])
def test_a_request_for_a_person_hands_over_in_every_language(stack: Stack, user: str, text: str, said: str) -> None:
    assert said in say(stack, user, text)
    wait_for(lambda: stack.tracker(user)["paused"], 30, what="paused")


def test_a_language_we_do_not_serve_is_answered_in_english_with_an_offer(stack: Stack) -> None:
    user = "33633000020"
    reply = say(stack, user, "Bonjour, je voudrais savoir où en est ma commande, merci beaucoup")
    assert "English, Spanish, Portuguese and German" in reply and language(stack, user) == "en"


@pytest.mark.parametrize("text", ["   ", "👍🙏😂", "a" * 4096, "hola hello olá hallo, where is mi pedido bitte"])
def test_bad_input_gets_a_defined_answer(stack: Stack, text: str) -> None:
    user = f"3463300{uuid.uuid4().int % 10_000:04d}"
    reply = say(stack, user, text)
    assert reply  # some defined answer, never silence or a crash
    assert language(stack, user) in {"en", "es", "pt", "de"}
