"""Typed WhatsApp message → what Rasa receives (text + metadata). Pure, stdlib only.

Text goes to NLU; replies to our buttons/lists carry the Rasa payload as their id,
so `/intent{...}` works; media, locations and contacts become intents with
entities (a caption, when there is one, goes to NLU instead); reactions are
recorded but not answered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from connectors.whatsapp.updates import MEDIA_TYPES, InboundMessage, MessageType, json_object

CHANNEL = "whatsapp"
# Intents only the channel sets, no NLU examples (scripts/validate_data.py reads these constants).
FLOW_REPLY_INTENT = "flow_reply"
CALL_PERMISSION_INTENT = "call_permission_reply"
MAX_TEXT_CHARS = 4096
_NUMBER_REPLY = re.compile(r"^\s*#?(\d{1,2})\s*[.)]?\s*$")
# system.type of a changed phone number (customer_changed_number before Graph API v12), and of a changed BSUID
NUMBER_CHANGES = frozenset({"user_changed_number", "customer_changed_number"})
USER_ID_CHANGES = frozenset({"user_changed_user_id"})


@dataclass(frozen=True)
class InboxItem:
    """One customer message as the inbox stores it."""

    message_id: str
    channel: str
    conversation_id: str
    reply_to: str
    business_id: str
    sent_at: int
    message: dict[str, Any]  # {"text": ..., "metadata": {...}} or {"skip": reason}


def _scalar(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != "" else None


def intent_payload(intent: str, entities: dict[str, Any] | None = None) -> str:
    return f"/{intent}" + (json.dumps(entities, ensure_ascii=False, separators=(",", ":")) if entities else "")


def _media_metadata(message: InboundMessage) -> dict[str, Any]:
    body = message.body
    keep = ("id", "mime_type", "sha256", "caption", "filename", "voice", "animated")
    return {"type": message.type.value, **{k: body[k] for k in keep if k in body}}


def rasa_text(message: InboundMessage) -> tuple[str | None, dict[str, Any]]:
    """(text for Rasa, extra metadata); text None means "record, do not answer"."""
    body = message.body
    kind = message.type
    if kind is MessageType.TEXT:
        return (_scalar(body.get("body")) or "")[:MAX_TEXT_CHARS], {}
    if kind is MessageType.INTERACTIVE:
        return _interactive(body)
    if kind is MessageType.BUTTON:
        return (_scalar(body.get("payload")) or _scalar(body.get("text")) or "")[:MAX_TEXT_CHARS], {}
    if kind in MEDIA_TYPES:
        media = _media_metadata(message)
        caption = (_scalar(body.get("caption")) or "").strip()
        text = caption[:MAX_TEXT_CHARS] if caption else intent_payload("share_media", {"media_type": kind.value})
        return text, {"media": media}
    if kind is MessageType.LOCATION:
        entities = {k: v if isinstance(v := body.get(k), (int, float)) else None for k in ("latitude", "longitude")}
        extra = {k: body[k] for k in ("name", "address", "url") if k in body}
        return intent_payload("share_location", entities), {"location": {**entities, **extra}}
    if kind is MessageType.CONTACTS:
        contacts = body.get("contacts")
        return intent_payload("share_contact"), {"contacts": contacts[:10] if isinstance(contacts, list) else []}
    if kind is MessageType.REACTION:
        return None, {"reaction": {"message_id": _scalar(body.get("message_id")), "emoji": _scalar(body.get("emoji"))}}
    if kind is MessageType.ORDER:
        return _order(body)
    if kind is MessageType.REVOKE:
        return None, {"revokes": _scalar(body.get("original_message_id"))}
    if kind is MessageType.EDIT:
        edited = json_object(body.get("message"))
        new_text = _scalar(json_object(edited.get("text")).get("body")) or _scalar(
            json_object(edited.get(str(edited.get("type") or ""))).get("caption")) or ""
        return new_text[:MAX_TEXT_CHARS], {"edits": _scalar(body.get("original_message_id"))}
    if kind is MessageType.SYSTEM:
        # A changed number or identity key: recorded for the conversation, never answered (above all not as media).
        keep = ("type", "body", "wa_id", "new_wa_id", "customer", "identity", "user_id", "new_user_id",
                "previous_user_id")
        change = identity_change(message)
        return None, {"system": {k: body[k] for k in keep if _scalar(body.get(k))},
                      **({"links": change} if change else {})}
    # unsupported (e.g. polls, view-once) and types we do not know yet
    errors = body.get("errors")
    return intent_payload("share_media", {"media_type": "unsupported"}), {
        "unsupported": errors if isinstance(errors, list) else []
    }


def identity_change(message: InboundMessage) -> dict[str, Any] | None:
    """A system message that gives the customer new ids: {"from": ids they wrote from, "to": their new ids,
    "reply_to": their new number or None}, for the inbox to link (Queue.store). Meta's user_changed_number
    names the new number (system.wa_id; new_wa_id before v12) and, since 2026, the new and previous BSUIDs;
    user_changed_user_id only the BSUIDs. None when it names no new id (e.g. an identity key change)."""
    body = message.body
    kind = _scalar(body.get("type")) or ""
    if kind not in NUMBER_CHANGES and kind not in USER_ID_CHANGES:
        return None
    new_number = (_scalar(body.get("wa_id")) or _scalar(body.get("new_wa_id"))) if kind in NUMBER_CHANGES else None
    old = [i for i in (message.conversation_id, message.wa_id, message.user_id,
                       _scalar(body.get("previous_user_id"))) if i]
    new = [i for i in dict.fromkeys((new_number, _scalar(body.get("user_id")), _scalar(body.get("new_user_id"))))
           if i and i not in old and len(i) <= 128]
    if not new:
        return None
    return {"kind": kind, "from": list(dict.fromkeys(old)), "to": new, "reply_to": new_number}


def _interactive(body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Replies to our buttons and lists carry the Rasa payload as their id; a WhatsApp Flow's answer and a call
    permission become intents of their own; an interactive message with nothing we know is recorded only."""
    kind = body.get("type")
    if kind == "nfm_reply":
        reply = json_object(body.get("nfm_reply"))
        try:
            answer = json.loads(str(reply.get("response_json") or ""))
        except ValueError:
            answer = None
        if not isinstance(answer, dict):  # a Flow reply whose JSON is not an object: the intent, no fields
            return intent_payload(FLOW_REPLY_INTENT), {"flow_reply": {"name": _scalar(reply.get("name")),
                                                                       "valid": False}}
        fields = {k[:64]: v for k, v in list(answer.items())[:50] if _scalar(v) is not None}
        return intent_payload(FLOW_REPLY_INTENT, fields), {"flow_reply": {"name": _scalar(reply.get("name")),
                                                                     "response": answer, "valid": True}}
    if kind == "call_permission_reply":
        reply = json_object(body.get("call_permission_reply"))
        # Meta answers accept or reject; anything else did not allow a call.
        allowed = "accept" if reply.get("response") == "accept" else "reject"
        return intent_payload(CALL_PERMISSION_INTENT, {"call_permission": allowed}), {
            "call_permission": {k: reply[k] for k in ("response", "is_permanent", "expiration_timestamp")
                                if k in reply}}
    reply = json_object(body.get("button_reply")) or json_object(body.get("list_reply"))
    payload = _scalar(reply.get("id")) or _scalar(reply.get("title"))
    if payload:
        return payload[:MAX_TEXT_CHARS], {"reply_title": _scalar(reply.get("title"))}
    return None, {"interactive": body}


def _order(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A cart sent from the catalogue: its items as text for NLU ("order: 2 × SKU-1, 1 × SKU-2"), all in metadata."""
    items = body.get("product_items")
    lines = []
    for product in items[:30] if isinstance(items, list) else []:
        product = json_object(product)
        name = _scalar(product.get("product_retailer_id"))
        if name:
            lines.append(f"{_scalar(product.get('quantity')) or 1} × {name}")
    note = (_scalar(body.get("text")) or "").strip()
    summary = "order: " + (", ".join(lines) or "no items") + (f". {note}" if note else "")
    return summary[:MAX_TEXT_CHARS], {"order": {"catalog_id": _scalar(body.get("catalog_id")),
                                                "product_items": items[:30] if isinstance(items, list) else []}}


def to_inbox_item(message: InboundMessage, channel: str = CHANNEL) -> InboxItem:
    """`channel`: whatsapp (Cloud API) or evolution (Baileys); both parse into InboundMessage."""
    text, extra = rasa_text(message)
    metadata: dict[str, Any] = {
        "channel": channel,
        "wamid": message.wamid,
        "phone_number_id": message.phone_number_id,
        "display_phone_number": message.display_phone_number,
        "wa_id": message.wa_id,
        "user_id": message.user_id,
        "profile_name": message.profile_name,
        "message_type": message.type.value,
        "timestamp": message.timestamp,
        **({"context": message.context} if message.context else {}),
        **({"referral": json_object(message.raw.get("referral"))} if json_object(message.raw.get("referral")) else {}),
        **extra,
    }
    content: dict[str, Any] = {"metadata": metadata}
    for change in ("revokes", "edits", "links"):  # what the inbox does with other rows (Queue.store)
        if extra.get(change):
            content[change] = extra[change]
    if text is None:
        content["skip"] = message.type.value
    else:
        content["text"] = text
    return InboxItem(
        message_id=message.wamid,
        channel=channel,
        conversation_id=message.conversation_id,
        reply_to=message.reply_to,
        business_id=message.phone_number_id,
        sent_at=message.timestamp,
        message=content,
    )


def apply_menu(text: str, menu: dict[str, str]) -> str:
    """A bare "2" (or a short id we minted) answers the options the bot sent last."""
    if text in menu:
        return menu[text]
    match = _NUMBER_REPLY.match(text)
    if match and match.group(1) in menu:
        return menu[match.group(1)]
    return text
