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
from actions.shop import Decision, Order, Reply, cancellation_decision, describe_status, parse_order_number


def utter(dispatcher: CollectingDispatcher, reply: Reply) -> None:
    """Send a domain response; Rasa picks the variation in the conversation's language."""
    dispatcher.utter_message(response=reply.response, **reply.values)


def unknown_order(number: str) -> Reply:
    return Reply("utter_unknown_order", {"order_number": number})


def language_of(tracker: Tracker) -> str:
    return str(tracker.get_slot("language") or "en")


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
        dispatcher.utter_message(response="utter_not_an_order_number")
        return {"order_number": None}
    order = await asyncio.to_thread(runtime.shop_db().get_order, number)
    if order is None:
        utter(dispatcher, unknown_order(number))
        return {"order_number": None}
    decision = check(order) if check is not None else None
    if decision is not None:
        utter(dispatcher, decision.reply)
        if not decision.allowed:
            dispatcher.utter_message(response="utter_another_order")
            return {"order_number": None}
    return {"order_number": number}


class OrderFormValidation(FormValidationAction):
    """Validation shared by every form that asks for an order number.

    Subclasses name their form and may refuse orders in `order_check` (return
    window, delivery state, …); the refusal reason is told to the customer.
    """

    @abstractmethod
    def name(self) -> str:
        """Each form's validation action has its own name (abstract, so the action server skips this class)."""

    def order_check(self, order: Order, language: str) -> Decision | None:
        return None

    async def extract_order_number(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return extract_order_number_from_text(tracker)

    async def validate_order_number(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        language = language_of(tracker)
        return await validate_order_number(value, dispatcher, check=lambda order: self.order_check(order, language))


class ValidateOrderStatusForm(OrderFormValidation):
    def name(self) -> str:
        return "validate_order_status_form"


async def _load_order(tracker: Tracker, dispatcher: CollectingDispatcher) -> Order | None:
    number = tracker.get_slot("order_number")
    order = await asyncio.to_thread(runtime.shop_db().get_order, number) if number else None
    if order is None:
        # The form validated the number; a missing row means the database changed under us.
        utter(dispatcher, unknown_order(number or "?"))
    return order


class ActionOrderStatus(Action):
    def name(self) -> str:
        return "action_order_status"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        order = await _load_order(tracker, dispatcher)
        if order is not None:
            for reply in describe_status(order, language_of(tracker)):
                utter(dispatcher, reply)
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
            utter(dispatcher, decision.reply)
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
            dispatcher.utter_message(response="utter_cancel_done", order_number=number)
        else:
            # It shipped (or was cancelled) between the check and the confirmation.
            order = await asyncio.to_thread(runtime.shop_db().get_order, number) if number else None
            dispatcher.utter_message(response="utter_cancel_failed")
            utter(dispatcher, cancellation_decision(order).reply if order else unknown_order(number or "?"))
        return []
