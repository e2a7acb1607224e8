"""The conversation's language, chosen from what a detector reports (languages/): pure, no model."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from languages import Detection, asked_language, choose_language, country_hint, letters_only
from languages.dates import describe_opening, short_day

SURE_ES = Detection("es", 0.95)


@pytest.mark.parametrize(("text", "language"), [
    ("in English please", "en"), ("English?", "en"), ("can you speak german", "de"),
    ("¿puedes hablar en español?", "es"), ("em português por favor", "pt"), ("auf Deutsch bitte", "de"),
    ("hablas ingles?", "en"), ("Portugues", "pt"),
    ("is the manual in german?", None), ("do you ship to germany", None), ("english and spanish", None),
    ("", None),
])
def test_a_customer_can_ask_for_a_language(text: str, language: str | None) -> None:
    assert asked_language(text) == language


@pytest.mark.parametrize("text", ["ok", "VB-310977", "hola?", "👍", "", "   ", "🙏🙏🙏", "#VB 310977 ??"])
def test_short_or_unclear_messages_keep_the_language(text: str) -> None:
    assert choose_language(text, SURE_ES, "de") == "de"


def test_a_clear_message_in_another_served_language_switches() -> None:
    assert choose_language("necesito cambiar la direccion de entrega", SURE_ES, "en") == "es"
    assert choose_language("necesito cambiar la direccion de entrega", Detection("es", 0.55), "en") == "en"


def test_an_explicit_request_wins_over_the_detector() -> None:
    assert choose_language("in English please", Detection("de", 0.99), "de") == "en"


def test_the_first_message_uses_its_detection_then_the_country_then_english() -> None:
    assert choose_language("hola", Detection("es", 0.8), None) == "es"  # short is fine with nothing to keep
    assert choose_language("ok", Detection("en", 0.4), None, hint="pt") == "pt"
    assert choose_language("obrigado", Detection("pt", 0.5), None) == "pt"
    assert choose_language("ok", None, None) == "en"
    # a clear first message keeps its language against the country's
    assert choose_language("Quero falar com um atendente", Detection("pt", 0.59), None, hint="es") == "pt"
    assert choose_language("hola", Detection("es", 0.41), None, hint="de") == "de"


def test_a_language_we_do_not_serve_keeps_the_current_one_or_english() -> None:
    assert choose_language("Bonjour, où est ma commande ?", Detection("en", 0.5), "es", unserved=True) == "es"
    assert choose_language("Bonjour, où est ma commande ?", Detection("en", 0.5), None, unserved=True) == "en"


@pytest.mark.parametrize(("wa_id", "language"), [
    ("34612345678", "es"), ("351912345678", "pt"), ("5511987654321", "pt"), ("4915112345678", "de"),
    ("436641234567", "de"), ("447700900123", "en"), ("41791234567", None), ("33612345678", None),
    ("", None), (None, None), ("34", None), ("+34 612 34 56 78", "es"),
])
def test_country_hint_from_the_calling_code(wa_id: str | None, language: str | None) -> None:
    assert country_hint(wa_id) == language


def test_letters_only_drops_what_says_nothing_about_a_language() -> None:
    assert letters_only("my order VB-310977 see https://x.example/a?b=1 👍 2x") == "my order see x"
    assert letters_only("a" * 5000) == "a" * 5000  # the caller caps the length


def test_dates_in_the_four_languages() -> None:
    day = date(2026, 12, 7)
    assert [short_day(day, lang) for lang in ("en", "es", "pt", "de", None, "fr")] == [
        "Mon 7 Dec", "lunes 7 dic", "segunda-feira 7 dez", "Montag, 7. Dez.", "Mon 7 Dec", "Mon 7 Dec"]
    now = datetime(2026, 12, 4, 20, 0, tzinfo=timezone.utc)  # a Friday evening
    monday = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
    assert describe_opening(monday, now, "es") == "el lunes a las 09:00"
    assert describe_opening(monday, now, "de") == "am Montag um 09:00 Uhr"
    assert describe_opening(datetime(2026, 12, 5, 10, 0, tzinfo=timezone.utc), now, "pt") == "amanhã às 10:00"
    assert describe_opening(datetime(2026, 12, 12, 10, 0, tzinfo=timezone.utc), now, "pt") == "no sábado às 10:00"
    assert describe_opening(datetime(2026, 12, 4, 21, 0, tzinfo=timezone.utc), now, "en") == "today at 21:00"
