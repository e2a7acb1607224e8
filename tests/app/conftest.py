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


def texts(dispatcher: CollectingDispatcher, language: str = "en") -> list[str]:
    """What the customer reads: a message's text, or its domain response rendered in `language`
    with the values the action passed (tests/app/responses.py, as Rasa's NLG renders it)."""
    from tests.app.responses import render

    return [render(m, language) for m in dispatcher.messages]


@pytest.fixture(scope="session")
def knowledge_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The shipped help centre, indexed with the test embedder (fast, deterministic)."""
    from retrieval.ingest import ingest_paths
    from retrieval.sqlite_store import SQLiteKnowledgeStore
    from tests.app.retrieval.helpers import HashingEmbedder

    store = SQLiteKnowledgeStore(tmp_path_factory.mktemp("kb") / "kb.db")
    ingest_paths(store, HashingEmbedder(), [Path(__file__).resolve().parents[2] / "knowledge"])
    yield store
    store.close()


@pytest.fixture(autouse=True)
def knowledge(knowledge_store: Any) -> Iterator[Any]:
    """Every action test gets the test knowledge base: no model loaded, nothing read from var/."""
    from retrieval.service import KnowledgeBase
    from retrieval.settings import KBSettings
    from tests.app.retrieval.helpers import HashingEmbedder

    settings = KBSettings(backend="embedded", path=Path("unused"), weaviate_url="", weaviate_api_key="",
                          collection="", tenant="", alpha=0.6, min_similarity=0.6,
                          min_relevance=None)
    kb = KnowledgeBase(knowledge_store, HashingEmbedder(), settings)
    runtime.override(knowledge=kb)
    yield kb
    runtime.reset()


@pytest.fixture(autouse=True)
def handoff_always_open() -> Iterator[None]:
    """Handoff settings without office hours and a fixed wall clock (tests of hours set their own)."""
    from datetime import datetime, timezone

    from handoff.config import HandoffSettings

    runtime.override(handoff=HandoffSettings(), wall_clock=lambda: datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc))
    yield
    runtime.reset()
