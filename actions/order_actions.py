"""Order status and cancellation: the order form's validation and what follows it."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions import runtime
from actions.shop import Decision, Order, cancellation_decision, describe_status, parse_order_number

NOT_AN_ORDER_NUMBER = (
    "Hmm, that doesn't look like an order number. It's \"VB-\" followed by 6 digits, e.g. VB-104233 — "
    "you'll find it in your confirmation email."
)


def unknown_order_message(number: str) -> str:
    return f"I couldn't find order {number} 🤔 Could you double-check the number in your confirmation email?"


def extract_order_number_from_text(tracker: Tracker) -> dict[str, Any]:
    """Take an order number typed in any shape while the form asks for one."""
    if tracker.get_slot("requested_slot") != "order_number":
        return {}
    number = parse_order_number(tracker.latest_message.get("text"))
    return {"order_number": number} if number else {}


async def validate_order_number(
    value: Any,
    dispatcher: CollectingDispatcher,
    check: Callable[[Order], Decision | None] | None = None,
) -> dict[str, Any]:
    """Canonical number of an existing order that `check` (if any) allows; else None.

    The customer is told why a number was refused, and what `check` decided when it passed
    (a check returning None has nothing to say).
    """
    number = parse_order_number(value if isinstance(value, str) else None)
    if number is None:
        dispatcher.utter_message(text=NOT_AN_ORDER_NUMBER)
        return {"order_number": None}
    order = await asyncio.to_thread(runtime.shop_db().get_order, number)
    if order is None:
        dispatcher.utter_message(text=unknown_order_message(number))
        return {"order_number": None}
    decision = check(order) if check is not None else None
    if decision is not None:
        if not decision.allowed:
            dispatcher.utter_message(text=decision.reason + " Is there another order I can help with?")
            return {"order_number": None}
        dispatcher.utter_message(text=decision.reason)
    return {"order_number": number}


class OrderFormValidation(FormValidationAction):
    """Validation shared by every form that asks for an order number.

    Subclasses name their form and may refuse orders in `order_check` (return
    window, delivery state, …); the refusal reason is told to the customer.
    """

    @abstractmethod
    def name(self) -> str:
        """Each form's validation action has its own name (abstract, so the action server skips this class)."""

    def order_check(self, order: Order) -> Decision | None:
        return None

    async def extract_order_number(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return extract_order_number_from_text(tracker)

    async def validate_order_number(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return await validate_order_number(value, dispatcher, check=self.order_check)


class ValidateOrderStatusForm(OrderFormValidation):
    def name(self) -> str:
        return "validate_order_status_form"


async def _load_order(tracker: Tracker, dispatcher: CollectingDispatcher) -> Order | None:
    number = tracker.get_slot("order_number")
    order = await asyncio.to_thread(runtime.shop_db().get_order, number) if number else None
    if order is None:
        # The form validated the number; a missing row means the database changed under us.
        dispatcher.utter_message(text=unknown_order_message(number or "?"))
    return order


class ActionOrderStatus(Action):
    def name(self) -> str:
        return "action_order_status"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        order = await _load_order(tracker, dispatcher)
        if order is not None:
            dispatcher.utter_message(text=describe_status(order))
        return []


class ActionCheckCancellation(Action):
    def name(self) -> str:
        return "action_check_cancellation"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        order = await _load_order(tracker, dispatcher)
        if order is None:
            return [SlotSet("order_cancellable", False)]
        decision = cancellation_decision(order)
        if not decision.allowed:
            dispatcher.utter_message(text=decision.reason)
        return [SlotSet("order_cancellable", decision.allowed)]


class ActionCancelOrder(Action):
    def name(self) -> str:
        return "action_cancel_order"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        number = tracker.get_slot("order_number")
        cancelled = bool(number) and await asyncio.to_thread(runtime.shop_db().cancel_order, number)
        if cancelled:
            dispatcher.utter_message(
                text=f"Done ✅ Order {number} is cancelled. Your refund reaches your account within 5 working days."
            )
        else:
            # It shipped (or was cancelled) between the check and the confirmation.
            order = await asyncio.to_thread(runtime.shop_db().get_order, number) if number else None
            reason = cancellation_decision(order).reason if order else unknown_order_message(number or "?")
            dispatcher.utter_message(text=f"Sorry, I couldn't cancel it. {reason}")
        return []
