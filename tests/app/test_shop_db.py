"""The shop database on SQLite (default) and PostgreSQL (production), same code."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.shop import OrderStatus
from actions.shop_db import SEED_FILE, ServiceRequest, ShopDatabase
from tests.postgres import temporary_database

from .conftest import TODAY

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ShopDatabase]:
    if request.param == "sqlite":
        yield ShopDatabase.from_url(f"sqlite:///{tmp_path / 'shop.db'}")
        return
    with temporary_database(POSTGRES_ADMIN_URL, "voltbay_test") as url:
        db = ShopDatabase.from_url(url)
        yield db
        db._engine.dispose()


def test_seed_once_with_dates_relative_to_today(database: ShopDatabase) -> None:
    seeded = database.create_and_seed(TODAY)
    assert seeded == len(json.loads(SEED_FILE.read_text()))
    assert database.create_and_seed(TODAY) == 0  # a second start seeds nothing
    order = database.get_order("VB-104233")
    assert order is not None
    assert order.status is OrderStatus.DELIVERED
    assert (TODAY - order.delivered_on).days == 9  # type: ignore[operator]
    assert order.items == ("Sony WH-1000XM5 headphones",)
    assert database.get_order("VB-000000") is None


def test_cancel_only_while_processing(database: ShopDatabase) -> None:
    database.create_and_seed(TODAY)
    assert database.cancel_order("VB-412650") is True
    assert database.get_order("VB-412650").status is OrderStatus.CANCELLED  # type: ignore[union-attr]
    assert database.cancel_order("VB-412650") is False  # a second confirmation changes nothing
    assert database.cancel_order("VB-310977") is False  # shipped
    assert database.cancel_order("VB-999999") is False  # unknown


def test_a_retried_request_gets_the_same_reference(database: ShopDatabase) -> None:
    database.create_and_seed(TODAY)
    request = ServiceRequest(kind="repair", order_number="VB-208415", sender_id="34600111222",
                             request_key="34600111222:wamid.A", device="laptop", issue="no power")
    first = database.create_service_request(request)
    again = database.create_service_request(request)
    other = database.create_service_request(
        ServiceRequest(kind="return", order_number="VB-104233", sender_id="34600111222",
                       request_key="34600111222:wamid.A", return_reason="damaged")
    )
    assert first == again and first.startswith("RP-")
    assert other.startswith("RT-")
    assert len(database.service_requests_for("VB-208415")) == 1


def test_hostile_text_is_stored_verbatim_not_executed(database: ShopDatabase) -> None:
    database.create_and_seed(TODAY)
    nasty = "'); DROP TABLE orders; --"
    database.create_service_request(ServiceRequest(kind="repair", order_number="VB-208415", sender_id="x",
                                                   request_key="x:1", device=nasty, issue=nasty))
    assert database.get_order("VB-208415") is not None
    assert database.service_requests_for("VB-208415")[0]["issue"] == nasty
