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
    Reply,
    ReturnReason,
    clean_free_text,
    repair_decision,
    return_decision,
)
from actions.shop_db import ServiceRequest
from languages.text import plain_words

# Typed reasons in en, es, pt and de, compared without accents; the first match wins, so the more
# specific phrases ("not as described") come before the words they contain.
RETURN_REASON_WORDS = {
    ReturnReason.NOT_AS_DESCRIBED: ("not as described", "different from", "description", "photos",
                                    "como se describe", "como en las fotos", "descripcion", "como descrito",
                                    "como nas fotos", "descricao", "nicht wie beschrieben", "beschreibung", "fotos"),
    ReturnReason.DAMAGED: ("damaged", "broken", "cracked", "smashed", "scratched", "dented",
                           "danado", "roto", "rota", "golpe", "rayado", "danificado", "partido", "partida",
                           "estragado", "riscado", "kaputt", "beschadigt", "zerbrochen", "gesprungen", "zerkratzt"),
    ReturnReason.WRONG_ITEM: ("wrong", "not what i ordered", "different item", "equivocado", "otro producto",
                              "no es lo que pedi", "errado", "outro artigo", "nao e o que", "falsch",
                              "anderer artikel"),
    ReturnReason.CHANGED_MIND: ("changed my mind", "don't need", "dont need", "don't want", "dont want", "no longer",
                                "cambiado de idea", "ya no lo", "no lo necesito", "no me gusta", "mudei de ideia",
                                "ja nao", "nao preciso", "nao gostei", "anders uberlegt", "brauche es nicht",
                                "gefallt mir nicht"),
}
OTHER_REASON_WORDS = ("other", "other reason", "something else", "otro", "otro motivo", "outro", "outro motivo",
                      "anderer grund", "anderer", "sonstiges", "andere")


def return_reason_from_text(text: Any) -> ReturnReason | None:
    """Map a typed reason (or a button payload's value) to a ReturnReason."""
    if not isinstance(text, str) or not text.strip():
        return None
    lowered = text.strip().lower()
    try:
        return ReturnReason(lowered)
    except ValueError:
        pass
    plain = plain_words(lowered)
    for reason, words in RETURN_REASON_WORDS.items():
        if any(plain_words(word) in plain for word in words):
            return reason
    return ReturnReason.OTHER if plain in {plain_words(word) for word in OTHER_REASON_WORDS} else None


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

    def order_check(self, order: Order, language: str) -> Decision:
        return repair_decision(order, runtime.today(), runtime.settings().warranty_years, language)

    async def validate_device(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        device = clean_free_text(value if isinstance(value, str) else None)
        if device is None or len(device) > 200:
            dispatcher.utter_message(response="utter_ask_device_again")
            return {"device": None}
        return {"device": device}

    async def validate_issue_description(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        issue = clean_free_text(value if isinstance(value, str) else None)
        if issue is None or len(issue) < MIN_ISSUE_DESCRIPTION_CHARS:
            dispatcher.utter_message(response="utter_ask_issue_description_again")
            return {"issue_description": None}
        return {"issue_description": issue}


class ValidateReturnForm(OrderFormValidation):
    def name(self) -> str:
        return "validate_return_form"

    def order_check(self, order: Order, language: str) -> Decision:
        return return_decision(order, runtime.today(), runtime.settings().return_window_days, language)

    async def validate_return_reason(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        reason = return_reason_from_text(value)
        if reason is None:
            dispatcher.utter_message(response="utter_ask_return_reason_again")
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
    def confirmation(self, reference: str, request: ServiceRequest) -> Reply: ...

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
        confirmation = self.confirmation(reference, request)
        dispatcher.utter_message(response=confirmation.response, **confirmation.values)
        return [SlotSet(slot, None) for slot in self.filled_slots]


class ActionSubmitRepair(SubmitServiceRequest):
    kind = "repair"
    filled_slots = ("device", "issue_description")

    def name(self) -> str:
        return "action_submit_repair"

    def details(self, tracker: Tracker) -> dict[str, Any]:
        return {"device": tracker.get_slot("device"), "issue": tracker.get_slot("issue_description")}

    def confirmation(self, reference: str, request: ServiceRequest) -> Reply:
        return Reply("utter_repair_booked", {"reference": reference, "device": request.device or ""})


class ActionSubmitReturn(SubmitServiceRequest):
    kind = "return"
    filled_slots = ("return_reason",)

    def name(self) -> str:
        return "action_submit_return"

    def details(self, tracker: Tracker) -> dict[str, Any]:
        return {"return_reason": tracker.get_slot("return_reason")}

    def confirmation(self, reference: str, request: ServiceRequest) -> Reply:
        return Reply("utter_return_registered", {"reference": reference})
