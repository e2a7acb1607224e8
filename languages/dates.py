"""Dates and opening times as customers read them, in the four languages. Pure, stdlib only.

strftime's names follow the process locale, which a server leaves at C (English); these tables do not.
"""

from __future__ import annotations

from datetime import date, datetime

WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "es": ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
    "pt": ("segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira", "sábado", "domingo"),
    "de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
}
MONTHS = {
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    "es": ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sept", "oct", "nov", "dic"),
    "pt": ("jan", "fev", "mar", "abr", "mai", "jun", "jul", "ago", "set", "out", "nov", "dez"),
    "de": ("Jan.", "Feb.", "März", "Apr.", "Mai", "Juni", "Juli", "Aug.", "Sept.", "Okt.", "Nov.", "Dez."),
}
# today / tomorrow / on <weekday>, each "at HH:MM".
_OPENING = {
    "en": ("today at {at}", "tomorrow at {at}", "on {day} at {at}"),
    "es": ("hoy a las {at}", "mañana a las {at}", "el {day} a las {at}"),
    "pt": ("hoje às {at}", "amanhã às {at}", "na {day} às {at}"),
    "de": ("heute um {at} Uhr", "morgen um {at} Uhr", "am {day} um {at} Uhr"),
}


def _language(language: str | None) -> str:
    return language if language in WEEKDAYS else "en"


def short_day(day: date, language: str | None = "en") -> str:
    """'Mon 7 Dec', 'lunes 7 dic', 'segunda-feira 7 dez', 'Montag, 7. Dez.'."""
    lang = _language(language)
    weekday, month = WEEKDAYS[lang][day.weekday()], MONTHS[lang][day.month - 1]
    if lang == "en":
        return f"{weekday[:3]} {day.day} {month}"
    if lang == "de":
        return f"{weekday}, {day.day}. {month}"
    return f"{weekday} {day.day} {month}"


def describe_opening(opening: datetime, now: datetime, language: str | None = "en") -> str:
    """When a person will answer: 'tomorrow at 09:00', 'el lunes a las 09:00', 'am Montag um 09:00 Uhr'."""
    lang = _language(language)
    today_text, tomorrow_text, later_text = _OPENING[lang]
    days = (opening.date() - now.astimezone(opening.tzinfo).date()).days
    at = opening.strftime("%H:%M")
    if days == 0:
        return today_text.format(at=at)
    if days == 1:
        return tomorrow_text.format(at=at)
    day = WEEKDAYS[lang][opening.weekday()]
    if lang == "pt" and opening.weekday() >= 5:  # o sábado, o domingo
        return f"no {day} às {at}"
    return later_text.format(day=day, at=at)
