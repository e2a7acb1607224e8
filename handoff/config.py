"""handoff.yml: which triggers are on and their thresholds, office hours. Read by policy, actions, console."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handoff.office_hours import OfficeHours, parse_office_hours

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = PROJECT_ROOT / "handoff.yml"


@dataclass(frozen=True)
class TriggerSettings:
    customer_request: bool = True
    low_confidence: bool = True
    low_confidence_turns: int = 2
    knowledge_miss: bool = True
    escalation: bool = True
    escalation_phrases: tuple[str, ...] = ()
    negative_sentiment: bool = True
    sentiment_threshold: float = -0.5  # mean VADER compound of the last `sentiment_turns` messages
    sentiment_turns: int = 2
    repeated_failure: bool = True
    repeated_times: int = 3  # the same question asked this many times


@dataclass(frozen=True)
class HandoffSettings:
    triggers: TriggerSettings = field(default_factory=TriggerSettings)
    office_hours: OfficeHours | None = None
    summary_turns: int = 6


class ConfigError(ValueError):
    pass


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"enabled": value}
    if not isinstance(value, dict):
        raise ConfigError(f"handoff.yml: triggers.{name} must be true/false or a mapping")
    return value


def _number(section: dict[str, Any], key: str, default: float, lo: float, hi: float, where: str) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"handoff.yml: {where}.{key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def parse_settings(raw: Any) -> HandoffSettings:
    """The settings from handoff.yml's parsed YAML; ConfigError says which key is wrong."""
    if raw is None:
        return HandoffSettings()
    if not isinstance(raw, dict):
        raise ConfigError("handoff.yml must be a mapping")
    triggers = raw.get("triggers") or {}
    if not isinstance(triggers, dict):
        raise ConfigError("handoff.yml: triggers must be a mapping")
    low = _section(triggers, "low_confidence")
    esc = _section(triggers, "escalation_phrases")
    neg = _section(triggers, "negative_sentiment")
    rep = _section(triggers, "repeated_failure")
    phrases = esc.get("phrases") or []
    if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
        raise ConfigError("handoff.yml: triggers.escalation_phrases.phrases must be a list of phrases")
    settings = TriggerSettings(
        customer_request=bool(_section(triggers, "customer_request").get("enabled", True)),
        low_confidence=bool(low.get("enabled", True)),
        low_confidence_turns=int(_number(low, "turns", 2, 1, 10, "triggers.low_confidence")),
        knowledge_miss=bool(_section(triggers, "knowledge_miss").get("enabled", True)),
        escalation=bool(esc.get("enabled", True)),
        escalation_phrases=tuple(p.strip() for p in phrases),
        negative_sentiment=bool(neg.get("enabled", True)),
        sentiment_threshold=_number(neg, "threshold", -0.5, -1.0, 0.0, "triggers.negative_sentiment"),
        sentiment_turns=int(_number(neg, "turns", 2, 1, 10, "triggers.negative_sentiment")),
        repeated_failure=bool(rep.get("enabled", True)),
        repeated_times=int(_number(rep, "times", 3, 2, 10, "triggers.repeated_failure")),
    )
    hours = raw.get("office_hours")
    summary = raw.get("summary") or {}
    return HandoffSettings(
        triggers=settings,
        office_hours=parse_office_hours(hours) if hours else None,
        summary_turns=int(_number(summary if isinstance(summary, dict) else {}, "turns", 6, 1, 50, "summary")),
    )


def load_settings(path: Path | str | None = None) -> HandoffSettings:
    import yaml  # both environments ship PyYAML (Rasa and the app env)

    file = Path(path) if path else DEFAULT_PATH
    if not file.is_file():
        return HandoffSettings()
    return parse_settings(yaml.safe_load(file.read_text(encoding="utf-8")))
