"""Lazily built dependencies of the actions, replaceable in tests.

Nothing connects at import time: the database is opened on first use, and
seeded on first use when its orders table is empty.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

from actions.config import ActionSettings, load_settings
from actions.shop_db import ShopDatabase
from handoff.config import HandoffSettings
from handoff.config import load_settings as load_handoff_settings

if TYPE_CHECKING:
    from retrieval.service import KnowledgeBase

_settings: ActionSettings | None = None
_shop_db: ShopDatabase | None = None
_today: Callable[[], date] = date.today
_knowledge_base: KnowledgeBase | None = None
_handoff: HandoffSettings | None = None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


_now: Callable[[], datetime] = utc_now


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


def knowledge_base() -> KnowledgeBase:
    """Opened on the first question (loading the embedder takes a moment), then shared."""
    global _knowledge_base
    if _knowledge_base is None:
        from retrieval.service import KnowledgeBase

        _knowledge_base = KnowledgeBase.from_env()
    return _knowledge_base


def handoff_settings() -> HandoffSettings:
    """handoff.yml (HANDOFF_CONFIG overrides the path), read once; a broken file fails the first handoff loudly."""
    global _handoff
    if _handoff is None:
        import os

        _handoff = load_handoff_settings(os.environ.get("HANDOFF_CONFIG") or None)
    return _handoff


def now() -> datetime:
    return _now()


def today() -> date:
    return _today()


def override(
    *,
    db: ShopDatabase | None = None,
    clock: Callable[[], date] | None = None,
    action_settings: ActionSettings | None = None,
    knowledge: KnowledgeBase | None = None,
    handoff: HandoffSettings | None = None,
    wall_clock: Callable[[], datetime] | None = None,
) -> None:
    """Replace dependencies (tests); `reset()` restores the defaults."""
    global _shop_db, _today, _settings, _knowledge_base, _handoff, _now
    if handoff is not None:
        _handoff = handoff
    if wall_clock is not None:
        _now = wall_clock
    if knowledge is not None:
        _knowledge_base = knowledge
    if db is not None:
        _shop_db = db
    if clock is not None:
        _today = clock
    if action_settings is not None:
        _settings = action_settings


def reset() -> None:
    global _shop_db, _today, _settings, _knowledge_base, _handoff, _now
    _shop_db, _today, _settings, _knowledge_base, _handoff = None, date.today, None, None, None
    _now = utc_now
