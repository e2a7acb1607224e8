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
MAX_TEXT_CHARS = 4096
_NUMBER_REPLY = re.compile(r"^\s*#?(\d{1,2})\s*[.)]?\s*$")


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
        reply = json_object(body.get("button_reply")) or json_object(body.get("list_reply"))
        payload = _scalar(reply.get("id")) or _scalar(reply.get("title"))
        if payload:
            return payload[:MAX_TEXT_CHARS], {"reply_title": _scalar(reply.get("title"))}
        return None, {"interactive": body}
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
    # unsupported (e.g. polls, view-once) and types we do not know yet
    errors = body.get("errors")
    return intent_payload("share_media", {"media_type": "unsupported"}), {
        "unsupported": errors if isinstance(errors, list) else []
    }


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
        **extra,
    }
    content: dict[str, Any] = {"metadata": metadata}
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
