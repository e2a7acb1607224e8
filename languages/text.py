"""Text as the matching rules compare it, in every language. Pure, stdlib only."""

from __future__ import annotations

import re
import unicodedata


def plain_words(text: str) -> str:
    """Lower case, accents and punctuation removed, single spaces: 'Pásame con ALGUIEN!' → 'pasame con alguien'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w\s]|_", " ", letters).split())


def word_set(text: str) -> frozenset[str]:
    """The words of a whitespace-separated list, for the word tables of the matching rules."""
    return frozenset(text.split())
