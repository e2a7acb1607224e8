"""Voltbay Care: the repair and return forms and the requests they create."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions import runtime
from actions.order_actions import OrderFormValidation
from actions.shop import (
    MIN_ISSUE_DESCRIPTION_CHARS,
    Decision,
    Order,
    ReturnReason,
    clean_free_text,
    repair_decision,
    return_decision,
)
from actions.shop_db import ServiceRequest

RETURN_REASON_WORDS = {
    ReturnReason.DAMAGED: ("damaged", "broken", "cracked", "smashed", "scratched", "dented"),
    ReturnReason.WRONG_ITEM: ("wrong", "not what i ordered", "different item"),
    ReturnReason.NOT_AS_DESCRIBED: ("not as described", "different from", "description", "photos"),
    ReturnReason.CHANGED_MIND: ("changed my mind", "don't need", "dont need", "don't want", "dont want", "no longer"),
}


def return_reason_from_text(text: Any) -> ReturnReason | None:
    """Map a typed reason (or a button payload's value) to a ReturnReason."""
    if not isinstance(text, str) or not text.strip():
        return None
    lowered = text.strip().lower()
    try:
        return ReturnReason(lowered)
    except ValueError:
        pass
    for reason, words in RETURN_REASON_WORDS.items():
        if any(word in lowered for word in words):
            return reason
    return ReturnReason.OTHER if lowered in ("other", "other reason", "something else") else None


def request_key(tracker: Tracker) -> str:
    """Identifies the user message that completed the form (stable across action retries)."""
    latest = tracker.latest_message or {}
    marker = latest.get("message_id")
    if not marker:
        user_events = [e for e in tracker.events if e.get("event") == "user"]
        marker = str(user_events[-1].get("timestamp")) if user_events else "start"
    return f"{tracker.sender_id}:{marker}"[:200]


class ValidateRepairForm(OrderFormValidation):
    def name(self) -> str:
        return "validate_repair_form"

    def order_check(self, order: Order) -> Decision:
        return repair_decision(order, runtime.today(), runtime.settings().warranty_years)

    async def validate_device(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        device = clean_free_text(value if isinstance(value, str) else None)
        if device is None or len(device) > 200:
            dispatcher.utter_message(text="Please tell me the product in a few words, e.g. \"Pixel 8\".")
            return {"device": None}
        return {"device": device}

    async def validate_issue_description(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        issue = clean_free_text(value if isinstance(value, str) else None)
        if issue is None or len(issue) < MIN_ISSUE_DESCRIPTION_CHARS:
            dispatcher.utter_message(
                text="Could you describe the problem in a bit more detail? e.g. \"it doesn't charge any more\"."
            )
            return {"issue_description": None}
        return {"issue_description": issue}


class ValidateReturnForm(OrderFormValidation):
    def name(self) -> str:
        return "validate_return_form"

    def order_check(self, order: Order) -> Decision:
        return return_decision(order, runtime.today(), runtime.settings().return_window_days)

    async def validate_return_reason(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        reason = return_reason_from_text(value)
        if reason is None:
            dispatcher.utter_message(text="Please pick one of the reasons below, or type \"other\".")
            return {"return_reason": None}
        return {"return_reason": reason.value}


class SubmitServiceRequest(Action):
    """Store the request a form collected (once, even when Rasa retries), confirm it, clear its slots."""

    kind: str
    filled_slots: tuple[str, ...]

    @abstractmethod
    def name(self) -> str: ...

    @abstractmethod
    def details(self, tracker: Tracker) -> dict[str, Any]:
        """The kind-specific fields of the ServiceRequest."""

    @abstractmethod
    def confirmation(self, reference: str, request: ServiceRequest) -> str: ...

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        request = ServiceRequest(
            kind=self.kind,
            order_number=tracker.get_slot("order_number"),
            sender_id=tracker.sender_id,
            request_key=request_key(tracker),
            **self.details(tracker),
        )
        reference = await asyncio.to_thread(runtime.shop_db().create_service_request, request)
        dispatcher.utter_message(text=self.confirmation(reference, request))
        return [SlotSet(slot, None) for slot in self.filled_slots]


class ActionSubmitRepair(SubmitServiceRequest):
    kind = "repair"
    filled_slots = ("device", "issue_description")

    def name(self) -> str:
        return "action_submit_repair"

    def details(self, tracker: Tracker) -> dict[str, Any]:
        return {"device": tracker.get_slot("device"), "issue": tracker.get_slot("issue_description")}

    def confirmation(self, reference: str, request: ServiceRequest) -> str:
        return (
            f"Your repair is booked ✅ Reference: {reference}.\n"
            f"Our courier will collect the {request.device} within 2 working days — we'll message you the "
            "pickup slot. Repairs usually take 5–7 working days."
        )


class ActionSubmitReturn(SubmitServiceRequest):
    kind = "return"
    filled_slots = ("return_reason",)

    def name(self) -> str:
        return "action_submit_return"

    def details(self, tracker: Tracker) -> dict[str, Any]:
        return {"return_reason": tracker.get_slot("return_reason")}

    def confirmation(self, reference: str, request: ServiceRequest) -> str:
        return (
            f"Your return is registered ✅ Reference: {reference}.\n"
            "We've emailed you a free prepaid label. Drop the parcel at any Voltbay Express point within "
            "14 days; your refund follows within 5 working days of it reaching us."
        )
