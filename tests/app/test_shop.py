"""The shop's rules as pure functions: no database, fixed dates."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from actions.shop import (
    MAX_FREE_TEXT_CHARS,
    Order,
    OrderStatus,
    Reply,
    cancellation_decision,
    clean_free_text,
    describe_status,
    parse_order_number,
    repair_decision,
    return_decision,
    warranty_until,
)
from tests.app.responses import render

TODAY = date(2026, 11, 25)


def order(status: OrderStatus, **kwargs: object) -> Order:
    defaults: dict[str, object] = {
        "number": "VB-104233",
        "customer_name": "Lucía",
        "items": ("Pixel 8",),
        "placed_on": TODAY - timedelta(days=3),
    }
    defaults.update(kwargs)
    return Order(status=status, **defaults)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("VB-104233", "VB-104233"),
        ("vb104233", "VB-104233"),
        ("its vb 104233 thanks", "VB-104233"),
        ("#VB-104233", "VB-104233"),
        ("104233", "VB-104233"),
        ("order number: 104233.", "VB-104233"),
        ("VB-1042", None),  # too short
        ("1042334", None),  # seven digits is not an order number
        ("call me on +34 600 111 222", None),
        ("", None),
        (None, None),
        ("VB-" + "9" * 5000, None),  # hostile length: no number and no catastrophic regex
    ],
)
def test_parse_order_number(text: str | None, expected: str | None) -> None:
    assert parse_order_number(text) == expected


def test_parse_order_number_only_looks_at_a_bounded_prefix() -> None:
    assert parse_order_number("x" * (MAX_FREE_TEXT_CHARS + 10) + " VB-104233") is None


def said(*replies: Reply, language: str = "en") -> str:
    """The replies as the customer reads them (domain/ rendered in `language`)."""
    return " ".join(render({"response": r.response, **r.values}, language) for r in replies)


def test_describe_status_covers_every_status() -> None:
    texts = {
        status: said(*describe_status(
            order(status, delivered_on=TODAY, estimated_delivery=TODAY, tracking_url="https://t.example/1")
        ))
        for status in OrderStatus
    }
    assert "hasn't shipped" in texts[OrderStatus.PROCESSING]
    assert "on its way" in texts[OrderStatus.SHIPPED] and "https://t.example/1" in texts[OrderStatus.SHIPPED]
    assert "out for delivery" in texts[OrderStatus.OUT_FOR_DELIVERY]
    assert "was delivered on Wed 25 Nov" in texts[OrderStatus.DELIVERED]
    assert "cancelled" in texts[OrderStatus.CANCELLED]
    assert "returned" in texts[OrderStatus.RETURNED]
    assert "Estimated delivery: Wed 25 Nov." in texts[OrderStatus.SHIPPED]
    assert all(text.startswith("Order VB-104233 (Pixel 8)") for text in texts.values())


def test_describe_status_in_the_customers_language() -> None:
    shipped = order(OrderStatus.SHIPPED, estimated_delivery=TODAY, tracking_url="https://t.example/1")
    assert said(*describe_status(shipped, "es"), language="es") == (
        "El pedido VB-104233 (Pixel 8) está en camino 🚚 Entrega estimada: miércoles 25 nov. "
        "Síguelo aquí: https://t.example/1")
    delivered = order(OrderStatus.DELIVERED, delivered_on=TODAY)
    assert "am Mittwoch, 25. Nov. zugestellt" in said(*describe_status(delivered, "de"), language="de")
    assert "entregue a quarta-feira 25 nov" in said(*describe_status(delivered, "pt"), language="pt")


def test_only_processing_orders_can_be_cancelled() -> None:
    allowed = {status for status in OrderStatus if cancellation_decision(order(status)).allowed}
    assert allowed == {OrderStatus.PROCESSING}
    assert "already shipped" in said(cancellation_decision(order(OrderStatus.SHIPPED)).reply)


def test_return_window_is_inclusive_of_the_last_day() -> None:
    last_day = order(OrderStatus.DELIVERED, delivered_on=TODAY - timedelta(days=30))
    too_late = order(OrderStatus.DELIVERED, delivered_on=TODAY - timedelta(days=31))
    assert return_decision(last_day, TODAY, 30).allowed
    decision = return_decision(too_late, TODAY, 30)
    assert not decision.allowed and "outside the return window" in said(decision.reply)


@pytest.mark.parametrize("status", [OrderStatus.PROCESSING, OrderStatus.SHIPPED, OrderStatus.CANCELLED,
                                    OrderStatus.RETURNED])
def test_undelivered_cancelled_or_returned_orders_cannot_be_returned(status: OrderStatus) -> None:
    assert not return_decision(order(status), TODAY, 30).allowed


def test_repair_is_free_under_warranty_and_paid_after() -> None:
    fresh = order(OrderStatus.DELIVERED, delivered_on=TODAY - timedelta(days=100))
    old = order(OrderStatus.DELIVERED, delivered_on=TODAY - timedelta(days=800))
    assert "free" in said(repair_decision(fresh, TODAY, 2).reply)
    assert "€19" in said(repair_decision(old, TODAY, 2).reply)
    assert not repair_decision(order(OrderStatus.SHIPPED), TODAY, 2).allowed


def test_warranty_of_a_leap_day_delivery() -> None:
    leap = order(OrderStatus.DELIVERED, delivered_on=date(2024, 2, 29))
    assert warranty_until(leap, 2) == date(2026, 3, 1)


def test_clean_free_text() -> None:
    assert clean_free_text("  screen\n\tflickers  ") == "screen flickers"
    assert clean_free_text("   ") is None
    assert clean_free_text(None) is None
    assert len(clean_free_text("a" * 5000) or "") == MAX_FREE_TEXT_CHARS
