"""Cloud API webhook bodies as Meta sends them (pure, stdlib only; imported by both envs)."""

from __future__ import annotations

from typing import Any

SANDBOX_WABA_ID = "SANDBOX-WABA"


def _envelope(phone_number_id: str, display_number: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": SANDBOX_WABA_ID, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": display_number, "phone_number_id": phone_number_id},
            **value,
        }}]}],
    }


def customer_message(
    *,
    phone_number_id: str,
    display_number: str,
    wa_id: str,
    name: str,
    wamid: str,
    timestamp: int,
    text: str | None = None,
    reply: dict[str, str] | None = None,  # {"type": "button_reply"|"list_reply", "id": ..., "title": ...}
    context_id: str | None = None,
) -> dict[str, Any]:
    """A customer's text or tap on one of our buttons/list rows."""
    message: dict[str, Any] = {"from": wa_id, "id": wamid, "timestamp": str(timestamp)}
    if reply is not None:
        kind = reply.get("type", "button_reply")
        message.update(type="interactive",
                       interactive={"type": kind, kind: {"id": reply["id"], "title": reply.get("title", "")}})
    else:
        message.update(type="text", text={"body": text or ""})
    if context_id:
        message["context"] = {"from": display_number, "id": context_id}
    value = {"contacts": [{"profile": {"name": name}, "wa_id": wa_id}], "messages": [message]}
    return _envelope(phone_number_id, display_number, value)


def status_update(*, phone_number_id: str, display_number: str, wamid: str, status: str, recipient: str,
                  timestamp: int, callback: str | None = None) -> dict[str, Any]:
    """A delivery status of one of our outbound messages; like Meta's, it repeats the send's
    `biz_opaque_callback_data` when the send carried one."""
    update: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(timestamp), "recipient_id": recipient}
    if callback:
        update["biz_opaque_callback_data"] = callback
    value = {"statuses": [update]}
    return _envelope(phone_number_id, display_number, value)
