"""Which language a conversation is in after the customer's latest message.

- A customer who asks for a language ("in English please", "¿puedes hablar en español?") gets it.
- A message long and clear enough in a served language switches to it.
- A short or unclear one ("ok", "VB-310977", "hola?", "👍") keeps the current language.
- The first message of a conversation has no current language: what it shows if clear, else the
  WhatsApp number's country code as a hint, else English.
- A message clearly in a language we do not serve keeps the current language (English for a first
  message); rasa_components/language_detector.py decides "clearly" and what the customer is told.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from languages.text import plain_words
from languages.text import word_set as _words

SERVED = ("en", "es", "pt", "de")
DEFAULT_LANGUAGE = "en"
# Each language in its own words (what the console shows), and in English (what an LLM prompt says).
LANGUAGE_NAMES = {"en": "English", "es": "Español", "pt": "Português", "de": "Deutsch"}
ENGLISH_NAMES = {"en": "English", "es": "Spanish", "pt": "Portuguese", "de": "German"}

# Below these a message is "short or unclear": it keeps the conversation's language.
MIN_LETTERS = 12
MIN_WORDS = 2
MIN_CONFIDENCE = 0.70
# With no current language (the first message), a weaker guess still beats the default.
FIRST_MESSAGE_CONFIDENCE = 0.45

# Calling codes → the served language most of their customers write in. Switzerland, Belgium and
# Luxembourg are left out: their customers write in several languages.
COUNTRY_CODES = {
    "34": "es", "52": "es", "54": "es", "56": "es", "57": "es", "51": "es", "58": "es", "593": "es", "591": "es",
    "595": "es", "598": "es", "506": "es", "507": "es", "502": "es", "503": "es", "504": "es", "505": "es",
    "53": "es", "1809": "es",
    "351": "pt", "55": "pt", "244": "pt", "258": "pt", "238": "pt",
    "49": "de", "43": "de", "423": "de",
    "44": "en", "353": "en", "1": "en", "61": "en", "64": "en", "27": "en", "356": "en",
}

# Language names as customers type them, in the four languages, without accents.
_NAMES = {
    "en": "english ingles englisch inglesa ingl",
    "es": "spanish espanol espanhol spanisch castellano espanola",
    "pt": "portuguese portugues portugiesisch portuguesa",
    "de": "german aleman alemao deutsch alema alemana",
}
NAME_TO_LANGUAGE = {name: code for code, names in _NAMES.items() for name in names.split()}
# The only other words a language request may contain ("can you speak german", "auf deutsch bitte").
_REQUEST_WORDS = _words("""
    in into please pls plz can could you u we speak talk write reply answer respond switch change to me us
    language do the chat continue let s lets only is it possible
    en por favor porfa puedes puede podemos hablar habla hablas hablamos escribir escribe responde contestar
    cambiar idioma lengua sabes me en el seguir si
    em por favor pode podes podemos falar fala falas escrever escreve responder mudar lingua idioma sabe
    continuar no na
    auf bitte kannst konnen konnten sie du wir sprechen sprichst sprecht reden schreiben antworten wechseln
    sprache gerne mal weiter mit mir uns
""")
_ORDER_NUMBER = re.compile(r"#?\bvb[-\s]?\d{6}\b", re.IGNORECASE)
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)


@dataclass(frozen=True)
class Detection:
    """What a language detector reports: the most likely language and its relative confidence."""
    language: str  # ISO 639-1, served or not
    confidence: float  # 0 … 1


def letters_only(text: str) -> str:
    """The words a detector should see: no order numbers, links, digits, emoji or punctuation."""
    text = _URL.sub(" ", _ORDER_NUMBER.sub(" ", text))
    return " ".join("".join(c if c.isalpha() else " " for c in text).split())


def asked_language(text: str) -> str | None:
    """The served language a customer asks for ("in English please"), else None."""
    words = plain_words(text).split()
    if not words or len(words) > 10:
        return None
    named = {NAME_TO_LANGUAGE[w] for w in words if w in NAME_TO_LANGUAGE}
    if len(named) != 1:
        return None
    if all(w in NAME_TO_LANGUAGE or w in _REQUEST_WORDS for w in words):
        return named.pop()
    return None


def country_hint(wa_id: str | None) -> str | None:
    """The served language of the country whose calling code starts a WhatsApp id (digits)."""
    digits = "".join(c for c in str(wa_id or "") if c.isdigit())
    for length in (4, 3, 2, 1):
        language = COUNTRY_CODES.get(digits[:length])
        if language and len(digits) > length + 5:
            return language
    return None


def clear_enough(text: str) -> bool:
    words = letters_only(text)
    return len(words.replace(" ", "")) >= MIN_LETTERS and len(words.split()) >= MIN_WORDS


def choose_language(text: str, detection: Detection | None, current: str | None, hint: str | None = None,
                    unserved: bool = False) -> str:
    """The conversation's language after this message. `detection`: the detector's verdict among the
    served languages, or None; `unserved`: the message is clearly in a language we do not serve."""
    asked = asked_language(text)
    if asked:
        return asked
    if unserved:
        return current or DEFAULT_LANGUAGE
    if current is None:
        # The first message: a clear one says its language even with a weak detector score
        # ("Quero falar com um atendente" scores 0.59); a short one ("hola", "hi") is a guess, which
        # the WhatsApp number's country beats unless the detector is sure.
        if detection is not None and detection.confidence >= FIRST_MESSAGE_CONFIDENCE and clear_enough(text):
            return detection.language
        if detection is not None and detection.confidence >= MIN_CONFIDENCE:
            return detection.language
        if hint:
            return hint
        if detection is not None and detection.confidence >= FIRST_MESSAGE_CONFIDENCE:
            return detection.language
        return DEFAULT_LANGUAGE
    if detection is not None and detection.confidence >= MIN_CONFIDENCE and clear_enough(text):
        return detection.language
    return current
