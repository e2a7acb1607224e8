"""The domain's responses rendered the way Rasa's template NLG does, for the action tests.

An action sends `response="utter_x"` with values; Rasa picks the variation whose slot conditions
match (here: the `language` slot, and any other slot the message passes a value for) and fills its
{placeholders}. Tests read the result instead of a response name, in any of the four languages.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

DOMAIN = Path(__file__).resolve().parents[2] / "domain"
PLACEHOLDER = re.compile(r"{([^\n{}]+?)}")


@lru_cache(maxsize=1)
def responses() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(DOMAIN.glob("*.yml")):
        found.update((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("responses") or {})
    return found


def variation(name: str, slots: dict[str, Any]) -> dict[str, Any]:
    """The variation Rasa would choose: the first whose conditions all hold, else the first default."""
    variations = responses()[name]
    for candidate in variations:
        conditions = candidate.get("condition") or []
        if conditions and all(slots.get(c["name"]) == c["value"] for c in conditions):
            return candidate
    return next(v for v in variations if not v.get("condition"))


def render(message: dict[str, Any], language: str = "en") -> str:
    if not message.get("response"):
        return str(message.get("text") or "")
    values = {key: value for key, value in message.items() if value is not None}
    chosen = variation(message["response"], {**values, "language": language})
    return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), str(chosen.get("text") or ""))
