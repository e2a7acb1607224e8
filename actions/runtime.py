"""Lazily built dependencies of the actions, replaceable in tests.

Nothing connects at import time: the database is opened on first use, and
seeded on first use when its orders table is empty.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from actions.config import ActionSettings, load_settings
from actions.shop_db import ShopDatabase

_settings: ActionSettings | None = None
_shop_db: ShopDatabase | None = None
_today: Callable[[], date] = date.today


def settings() -> ActionSettings:
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def shop_db() -> ShopDatabase:
    global _shop_db
    if _shop_db is None:
        db = ShopDatabase.from_url(settings().shop_db_url)
        db.create_and_seed(today())
        _shop_db = db
    return _shop_db


def today() -> date:
    return _today()


def override(
    *,
    db: ShopDatabase | None = None,
    clock: Callable[[], date] | None = None,
    action_settings: ActionSettings | None = None,
) -> None:
    """Replace dependencies (tests); `reset()` restores the defaults."""
    global _shop_db, _today, _settings
    if db is not None:
        _shop_db = db
    if clock is not None:
        _today = clock
    if action_settings is not None:
        _settings = action_settings


def reset() -> None:
    global _shop_db, _today, _settings
    _shop_db, _today, _settings = None, date.today, None
