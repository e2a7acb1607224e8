"""Office hours: is someone there now, and if not, when will someone answer. Pure; the clock is passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class OfficeHours:
    timezone: str
    # weekday (0 = Monday) → (opens, closes); days missing are closed
    hours: dict[int, tuple[time, time]]
    closed_dates: frozenset[date] = frozenset()

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(self.zone())
        span = self.hours.get(local.weekday())
        return (span is not None and local.date() not in self.closed_dates
                and span[0] <= local.time().replace(tzinfo=None) < span[1])

    def next_opening(self, now: datetime) -> datetime | None:
        """When someone is next there (local time), None if open now or never open."""
        if self.is_open(now):
            return None
        local = now.astimezone(self.zone())
        for offset in range(0, 15):
            day = local.date() + timedelta(days=offset)
            span = self.hours.get(day.weekday())
            if span is None or day in self.closed_dates:
                continue
            opening = datetime.combine(day, span[0], tzinfo=self.zone())
            if opening > local:
                return opening
        return None


def _parse_time(value: str, where: str) -> time:
    try:
        hour, minute = value.strip().split(":")
        return time(int(hour), int(minute))
    except (ValueError, TypeError) as error:
        raise ValueError(f"office_hours.{where}: {value!r} is not HH:MM") from error


def parse_office_hours(raw: Any) -> OfficeHours:
    """`{timezone: Europe/Madrid, hours: {mon: "09:00-18:00", …}, closed: [2026-12-25]}`."""
    from handoff.config import ConfigError

    if not isinstance(raw, dict):
        raise ConfigError("handoff.yml: office_hours must be a mapping")
    zone = str(raw.get("timezone") or "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ConfigError(f"handoff.yml: office_hours.timezone {zone!r} is unknown") from error
    hours: dict[int, tuple[time, time]] = {}
    for day, span in (raw.get("hours") or {}).items():
        key = str(day).lower()[:3]
        if key not in DAYS:
            raise ConfigError(f"handoff.yml: office_hours.hours: unknown day {day!r}")
        if span in (None, "closed"):
            continue
        try:
            opens, closes = (_parse_time(part, key) for part in str(span).split("-"))
        except ValueError as error:
            raise ConfigError(f"handoff.yml: {error}") from error
        if closes <= opens:
            raise ConfigError(f"handoff.yml: office_hours.hours.{key}: closes before it opens")
        hours[DAYS.index(key)] = (opens, closes)
    closed = set()
    for value in raw.get("closed") or []:
        try:
            closed.add(value if isinstance(value, date) else date.fromisoformat(str(value)))
        except ValueError as error:
            raise ConfigError(f"handoff.yml: office_hours.closed: {value!r} is not a date") from error
    return OfficeHours(zone, hours, frozenset(closed))
