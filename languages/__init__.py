"""The languages the assistant serves, and how a conversation's language is chosen. Pure, stdlib only.

Imported by the NLU component that detects the language (rasa_components/language_detector.py, env
rasa), by the actions and by the console (env app). The detector itself (lingua) stays in the Rasa
process; what it reports is turned into a decision here, so the rules are testable without it.
"""

from languages.choice import (
    DEFAULT_LANGUAGE,
    ENGLISH_NAMES,
    LANGUAGE_NAMES,
    SERVED,
    Detection,
    asked_language,
    choose_language,
    country_hint,
    letters_only,
)

__all__ = ["DEFAULT_LANGUAGE", "ENGLISH_NAMES", "LANGUAGE_NAMES", "SERVED", "Detection", "asked_language",
           "choose_language", "country_hint", "letters_only"]
