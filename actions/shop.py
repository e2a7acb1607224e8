"""The demo shop's rules as pure functions: order numbers, statuses, returns, warranty.

No I/O here: the actions load an `Order` from `shop_db` and ask these functions
what to say, so every branch is tested without a database or a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum

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


def _day(d: date) -> str:
    return d.strftime("%a %d %b").replace(" 0", " ")


def describe_status(order: Order) -> str:
    """A WhatsApp-sized sentence about where the order is."""
    items = ", ".join(order.items)
    head = f"Order {order.number} ({items})"
    if order.status is OrderStatus.PROCESSING:
        eta = f" Estimated delivery: {_day(order.estimated_delivery)}." if order.estimated_delivery else ""
        return f"{head} is being prepared in our warehouse and hasn't shipped yet.{eta}"
    if order.status in (OrderStatus.SHIPPED, OrderStatus.OUT_FOR_DELIVERY):
        where = "is out for delivery today 🚚" if order.status is OrderStatus.OUT_FOR_DELIVERY else "is on its way 🚚"
        eta = f" Estimated delivery: {_day(order.estimated_delivery)}." if order.estimated_delivery else ""
        track = f" Track it here: {order.tracking_url}" if order.tracking_url else ""
        return f"{head} {where}.{eta}{track}"
    if order.status is OrderStatus.DELIVERED:
        when = f" on {_day(order.delivered_on)}" if order.delivered_on else ""
        return f"{head} was delivered{when}. ✅"
    if order.status is OrderStatus.CANCELLED:
        return f"{head} was cancelled. Any payment is refunded within 5 working days."
    return f"{head} was returned and refunded."


@dataclass(frozen=True)
class Decision:
    """Whether something is allowed, and the sentence that explains it."""

    allowed: bool
    reason: str


def cancellation_decision(order: Order) -> Decision:
    if order.status is OrderStatus.PROCESSING:
        return Decision(True, f"Order {order.number} hasn't shipped yet, so it can still be cancelled.")
    if order.status is OrderStatus.CANCELLED:
        return Decision(False, f"Order {order.number} is already cancelled.")
    if order.status in (OrderStatus.SHIPPED, OrderStatus.OUT_FOR_DELIVERY):
        return Decision(
            False,
            f"Order {order.number} has already shipped, so I can't cancel it any more. "
            "You can refuse the delivery or return it for free within 30 days of delivery.",
        )
    return Decision(
        False,
        f"Order {order.number} was already delivered, so it can't be cancelled — but you can return it. "
        'Type "return" to start one.',
    )


def return_decision(order: Order, today: date, window_days: int) -> Decision:
    if order.status is OrderStatus.RETURNED:
        return Decision(False, f"Order {order.number} has already been returned.")
    if order.status is OrderStatus.CANCELLED:
        return Decision(False, f"Order {order.number} was cancelled, so there is nothing to return.")
    if order.status is not OrderStatus.DELIVERED or order.delivered_on is None:
        return Decision(
            False,
            f"Order {order.number} hasn't been delivered yet. You can start a return once it arrives, "
            "or cancel it while it's still in our warehouse.",
        )
    deadline = order.delivered_on + timedelta(days=window_days)
    if today > deadline:
        return Decision(
            False,
            f"Order {order.number} was delivered on {_day(order.delivered_on)}, more than {window_days} days ago, "
            "so it's outside the return window. If it's faulty, our 2-year warranty covers a free repair.",
        )
    return Decision(True, f"Order {order.number} can be returned until {_day(deadline)}.")


def warranty_until(order: Order, warranty_years: int) -> date | None:
    if order.delivered_on is None:
        return None
    try:
        return order.delivered_on.replace(year=order.delivered_on.year + warranty_years)
    except ValueError:  # delivered on 29 February
        return order.delivered_on + timedelta(days=365 * warranty_years + 1)


def repair_decision(order: Order, today: date, warranty_years: int) -> Decision:
    if order.status is not OrderStatus.DELIVERED:
        return Decision(False, f"Order {order.number} hasn't been delivered yet, so there's nothing to repair.")
    until = warranty_until(order, warranty_years)
    if until is not None and today <= until:
        return Decision(
            True, f"Good news: it's under warranty until {_day(until)} {until.year}, so the repair is free."
        )
    return Decision(
        True,
        "Its warranty has ended, so the repair is paid: diagnosis costs €19 (deducted if you go ahead) "
        "and we send you a quote before any work.",
    )


def clean_free_text(text: str | None) -> str | None:
    """Collapse whitespace and cap the length of a customer's free-text answer."""
    if text is None:
        return None
    cleaned = " ".join(text.split())
    return cleaned[:MAX_FREE_TEXT_CHARS] or None
