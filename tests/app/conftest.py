"""Fixtures for the action tests: a seeded shop database, a fixed clock, trackers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions import runtime
from actions.config import ActionSettings
from actions.shop_db import ShopDatabase

TODAY = date(2026, 11, 25)
DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[ShopDatabase]:
    db = ShopDatabase.from_url(f"sqlite:///{tmp_path / 'shop.db'}")
    db.create_and_seed(TODAY)
    runtime.override(
        db=db,
        clock=lambda: TODAY,
        action_settings=ActionSettings(shop_db_url="unused", return_window_days=30, warranty_years=2),
    )
    yield db
    runtime.reset()


@pytest.fixture
def dispatcher() -> CollectingDispatcher:
    return CollectingDispatcher()


@pytest.fixture
def domain() -> dict[str, Any]:
    return {
        "forms": {
            "order_status_form": {"required_slots": ["order_number"]},
            "repair_form": {"required_slots": ["order_number", "device", "issue_description"]},
            "return_form": {"required_slots": ["order_number", "return_reason"]},
        }
    }


def load_tracker(name: str, **overrides: Any) -> Tracker:
    """A tracker from tests/data/<name>.json, with top-level keys or slots overridden."""
    state = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    slots = overrides.pop("slots", {})
    state.update(overrides)
    state["slots"].update(slots)
    return Tracker.from_dict(state)


def texts(dispatcher: CollectingDispatcher) -> list[str]:
    return [m.get("text") or "" for m in dispatcher.messages]
