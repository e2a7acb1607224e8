"""The demo shop's rules as pure functions: order numbers, statuses, returns, warranty.

No I/O here: the actions load an `Order` from `shop_db` and ask these functions
what to say, so every branch is tested without a database or a clock. What they say is a
`Reply`: a response of domain/ (translated there) and the values it is filled with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import Enum

from languages.dates import short_day

# "VB-104233", "vb 104233", "#VB104233" and a bare "104233" all name the same order.
_ORDER_NUMBER = re.compile(r"(?<![\w-])#?(?:vb[\s-]?)?(\d{6})(?!\d)", re.IGNORECASE)

MIN_ISSUE_DESCRIPTION_CHARS = 8
MAX_FREE_TEXT_CHARS = 1000


class OrderStatus(str, Enum):
    PROCESSING = "processing"
    SHIPPED = "shipped"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    RETURNED = "returned"


class ReturnReason(str, Enum):
    DAMAGED = "damaged"
    WRONG_ITEM = "wrong_item"
    NOT_AS_DESCRIBED = "not_as_described"
    CHANGED_MIND = "changed_mind"
    OTHER = "other"


@dataclass(frozen=True)
class Order:
    number: str
    customer_name: str
    items: tuple[str, ...]
    status: OrderStatus
    placed_on: date
    shipped_on: date | None = None
    delivered_on: date | None = None
    estimated_delivery: date | None = None
    tracking_url: str | None = None


def parse_order_number(text: str | None) -> str | None:
    """The canonical order number ("VB-104233") found in `text`, or None."""
    if not text:
        return None
    match = _ORDER_NUMBER.search(text[:MAX_FREE_TEXT_CHARS])
    return f"VB-{match.group(1)}" if match else None


@dataclass(frozen=True)
class Reply:
    """A response of the domain and the values of its {placeholders}."""

    response: str
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """Whether something is allowed, and the reply that explains it."""

    allowed: bool
    reply: Reply


def _order(order: Order, **values: str) -> dict[str, str]:
    return {"order_number": order.number, "items": ", ".join(order.items), **values}


def describe_status(order: Order, language: str | None = "en") -> list[Reply]:
    """WhatsApp-sized messages about where the order is: the status, then its date and link if known."""
    values = _order(order)
    eta = [Reply("utter_order_eta", {"eta": short_day(order.estimated_delivery, language)})] \
        if order.estimated_delivery else []
    track = [Reply("utter_order_tracking", {"tracking_url": order.tracking_url})] if order.tracking_url else []
    if order.status is OrderStatus.PROCESSING:
        return [Reply("utter_order_processing", values), *eta]
    if order.status is OrderStatus.SHIPPED:
        return [Reply("utter_order_on_its_way", values), *eta, *track]
    if order.status is OrderStatus.OUT_FOR_DELIVERY:
        return [Reply("utter_order_out_for_delivery", values), *track]
    if order.status is OrderStatus.DELIVERED:
        if order.delivered_on is None:
            return [Reply("utter_order_delivered", {**values, "delivered_on": "—"})]
        return [Reply("utter_order_delivered", {**values, "delivered_on": short_day(order.delivered_on, language)})]
    if order.status is OrderStatus.CANCELLED:
        return [Reply("utter_order_cancelled", values)]
    return [Reply("utter_order_returned", values)]


def cancellation_decision(order: Order) -> Decision:
    if order.status is OrderStatus.PROCESSING:
        return Decision(True, Reply("utter_cancel_possible", _order(order)))
    if order.status is OrderStatus.CANCELLED:
        return Decision(False, Reply("utter_cancel_already_cancelled", _order(order)))
    if order.status in (OrderStatus.SHIPPED, OrderStatus.OUT_FOR_DELIVERY):
        return Decision(False, Reply("utter_cancel_shipped", _order(order)))
    return Decision(False, Reply("utter_cancel_delivered", _order(order)))


def return_decision(order: Order, today: date, window_days: int, language: str | None = "en") -> Decision:
    if order.status is OrderStatus.RETURNED:
        return Decision(False, Reply("utter_return_already_returned", _order(order)))
    if order.status is OrderStatus.CANCELLED:
        return Decision(False, Reply("utter_return_cancelled_order", _order(order)))
    if order.status is not OrderStatus.DELIVERED or order.delivered_on is None:
        return Decision(False, Reply("utter_return_not_delivered", _order(order)))
    deadline = order.delivered_on + timedelta(days=window_days)
    if today > deadline:
        return Decision(False, Reply("utter_return_window_over", _order(
            order, delivered_on=short_day(order.delivered_on, language), window_days=str(window_days))))
    return Decision(True, Reply("utter_return_possible", _order(order, deadline=short_day(deadline, language))))


def warranty_until(order: Order, warranty_years: int) -> date | None:
    if order.delivered_on is None:
        return None
    try:
        return order.delivered_on.replace(year=order.delivered_on.year + warranty_years)
    except ValueError:  # delivered on 29 February
        return order.delivered_on + timedelta(days=365 * warranty_years + 1)


def repair_decision(order: Order, today: date, warranty_years: int, language: str | None = "en") -> Decision:
    if order.status is not OrderStatus.DELIVERED:
        return Decision(False, Reply("utter_repair_not_delivered", _order(order)))
    until = warranty_until(order, warranty_years)
    if until is not None and today <= until:
        return Decision(True, Reply("utter_repair_under_warranty",
                                    _order(order, until=f"{short_day(until, language)} {until.year}")))
    return Decision(True, Reply("utter_repair_paid", _order(order)))


def clean_free_text(text: str | None) -> str | None:
    """Collapse whitespace and cap the length of a customer's free-text answer."""
    if text is None:
        return None
    cleaned = " ".join(text.split())
    return cleaned[:MAX_FREE_TEXT_CHARS] or None
