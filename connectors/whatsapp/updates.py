"""Cloud API webhook JSON → typed, frozen updates. Pure: no I/O, stdlib only.

Every `entry[].changes[].value` is read, every message and status in it;
anything malformed raises `MalformedWebhook` (the whole body is refused, so
nothing is half-stored), anything unknown becomes `MessageType.UNKNOWN`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024
# The inbox stores timestamps in INTEGER columns (int4 on PostgreSQL): larger ones (the fuzzer sent
# 2**63) are not a time we can answer, and would fail the insert with a 500 instead of a 400.
MAX_TIMESTAMP = 2**31 - 1


class MalformedWebhook(ValueError):
    """The body is not a WhatsApp Business Account webhook we can store."""


class MessageType(str, Enum):
    TEXT = "text"
    INTERACTIVE = "interactive"
    BUTTON = "button"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACTS = "contacts"
    REACTION = "reaction"
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: Any) -> MessageType:
        try:
            return cls(value)
        except ValueError:
            logger.warning("unknown WhatsApp message type %r", value)
            return cls.UNKNOWN


MEDIA_TYPES = frozenset(
    {MessageType.IMAGE, MessageType.VIDEO, MessageType.AUDIO, MessageType.DOCUMENT, MessageType.STICKER}
)


@dataclass(frozen=True)
class InboundMessage:
    wamid: str
    conversation_id: str  # user_id (BSUID) when present, else wa_id / from
    phone_number_id: str  # the business number that received it
    display_phone_number: str | None
    wa_id: str | None  # phone-based id, what we reply "to" when present
    user_id: str | None
    profile_name: str | None
    timestamp: int
    type: MessageType
    body: dict[str, Any]  # the type-specific object, e.g. {"body": "hi"} for text
    context: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    reply_address: str | None = None  # set by channels that must answer an exact address (Evolution JIDs)

    @property
    def reply_to(self) -> str:
        """Recipient for our replies: the channel's exact address, else the phone-based wa_id, else the BSUID."""
        return self.reply_address or self.wa_id or self.conversation_id


@dataclass(frozen=True)
class StatusUpdate:
    wamid: str  # id of *our* outbound message
    status: str  # sent | delivered | read | failed | played
    timestamp: int
    recipient_id: str | None
    phone_number_id: str
    errors: tuple[dict[str, Any], ...] = ()
    callback: str | None = None  # biz_opaque_callback_data of our send, repeated by Meta


@dataclass(frozen=True)
class WebhookBatch:
    messages: tuple[InboundMessage, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()
    errors: tuple[dict[str, Any], ...] = ()


def json_object(value: Any) -> dict[str, Any]:
    """The value when it is a JSON object, else an empty one (for optional nested fields)."""
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _timestamp(value: Any, where: str) -> int:
    try:
        stamp = int(str(value))
    except (TypeError, ValueError):
        raise MalformedWebhook(f"{where}: timestamp {value!r} is not an integer") from None
    if not 0 <= stamp <= MAX_TIMESTAMP:
        raise MalformedWebhook(f"{where}: timestamp {stamp} out of range")
    return stamp


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedWebhook(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedWebhook(f"{where} must be a list")
    return value


def _contacts_by_id(value: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Contacts of a change, findable by wa_id and by user_id."""
    found: dict[str, dict[str, Any]] = {}
    for i, contact in enumerate(_list(value.get("contacts"), "contacts")):
        contact = _dict(contact, f"contacts[{i}]")
        for key in ("wa_id", "user_id"):
            ident = _str(contact.get(key))
            if ident:
                found[ident] = contact
    return found


def _message(raw: Any, where: str, phone_number_id: str, display: str | None,
             contacts: dict[str, dict[str, Any]]) -> InboundMessage:
    raw = _dict(raw, where)
    wamid = _str(raw.get("id"))
    if not wamid or len(wamid) > 256:
        raise MalformedWebhook(f"{where}: missing or oversized id")
    sender_wa_id = _str(raw.get("from"))
    sender_user_id = _str(raw.get("from_user_id")) or _str(raw.get("user_id"))
    contact = contacts.get(sender_user_id or "") or contacts.get(sender_wa_id or "") or {}
    if len(contacts) == 1 and not contact:
        contact = next(iter(contacts.values()))
    wa_id = sender_wa_id or _str(contact.get("wa_id"))
    user_id = sender_user_id or _str(contact.get("user_id"))
    conversation_id = user_id or wa_id
    if not conversation_id or len(conversation_id) > 128:
        raise MalformedWebhook(f"{where}: no sender id (from / user_id)")
    msg_type = MessageType.parse(raw.get("type"))
    body = raw.get(msg_type.value) if msg_type is not MessageType.UNKNOWN else None
    if msg_type is MessageType.CONTACTS:
        body = {"contacts": _list(raw.get("contacts"), f"{where}.contacts")}
    elif msg_type in (MessageType.UNSUPPORTED, MessageType.UNKNOWN):
        body = {"errors": raw.get("errors") or []}
    if not isinstance(body, dict):
        raise MalformedWebhook(f"{where}: '{msg_type.value}' object missing")
    context = raw.get("context")
    profile = contact.get("profile") if isinstance(contact.get("profile"), dict) else {}
    return InboundMessage(
        wamid=wamid,
        conversation_id=conversation_id,
        phone_number_id=phone_number_id,
        display_phone_number=display,
        wa_id=wa_id,
        user_id=user_id,
        profile_name=_str(profile.get("name")),
        timestamp=_timestamp(raw.get("timestamp"), where),
        type=msg_type,
        body=body,
        context=context if isinstance(context, dict) else None,
        raw=raw,
    )


def _status(raw: Any, where: str, phone_number_id: str) -> StatusUpdate:
    raw = _dict(raw, where)
    wamid = _str(raw.get("id"))
    status = _str(raw.get("status"))
    if not wamid or not status:
        raise MalformedWebhook(f"{where}: status without id or status")
    errors = tuple(e for e in _list(raw.get("errors"), f"{where}.errors") if isinstance(e, dict))
    return StatusUpdate(
        wamid=wamid,
        status=status,
        timestamp=_timestamp(raw.get("timestamp"), where),
        recipient_id=_str(raw.get("recipient_id")) or _str(raw.get("recipient_user_id")),
        phone_number_id=phone_number_id,
        errors=errors,
        callback=(_str(raw.get("biz_opaque_callback_data")) or "")[:512] or None,
    )


def parse_webhook(payload: Any) -> WebhookBatch:
    """Every message, status and error of a webhook body (already JSON-decoded)."""
    payload = _dict(payload, "body")
    if payload.get("object") != "whatsapp_business_account":
        raise MalformedWebhook("object is not 'whatsapp_business_account'")
    messages: list[InboundMessage] = []
    statuses: list[StatusUpdate] = []
    errors: list[dict[str, Any]] = []
    for e, entry in enumerate(_list(payload.get("entry"), "entry")):
        entry = _dict(entry, f"entry[{e}]")
        for c, change in enumerate(_list(entry.get("changes"), f"entry[{e}].changes")):
            where = f"entry[{e}].changes[{c}]"
            change = _dict(change, where)
            field_name = change.get("field")
            if field_name is not None and not isinstance(field_name, str):
                raise MalformedWebhook(f"{where}.field must be a string")
            if field_name not in (None, "messages"):
                value = change.get("value")
                if isinstance(value, dict) and (value.get("messages") or value.get("statuses")):
                    raise MalformedWebhook(f"{where}: messages under field {field_name!r}")
                continue  # account updates, templates, …: not ours to answer
            value = _dict(change.get("value"), f"{where}.value")
            metadata = _dict(value.get("metadata"), f"{where}.value.metadata")
            phone_number_id = _str(metadata.get("phone_number_id"))
            if not phone_number_id:
                raise MalformedWebhook(f"{where}: metadata.phone_number_id missing")
            display = _str(metadata.get("display_phone_number"))
            contacts = _contacts_by_id(value)
            for m, raw in enumerate(_list(value.get("messages"), f"{where}.value.messages")):
                messages.append(_message(raw, f"{where}.messages[{m}]", phone_number_id, display, contacts))
            for s, raw in enumerate(_list(value.get("statuses"), f"{where}.value.statuses")):
                statuses.append(_status(raw, f"{where}.statuses[{s}]", phone_number_id))
            errors.extend(err for err in _list(value.get("errors"), f"{where}.value.errors") if isinstance(err, dict))
    return WebhookBatch(tuple(messages), tuple(statuses), tuple(errors))


def decode_body(raw: bytes) -> Any:
    """JSON of a webhook body; MalformedWebhook for anything else."""
    if len(raw) > MAX_BODY_BYTES:
        raise MalformedWebhook("body larger than 3 MB")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MalformedWebhook(f"body is not JSON: {type(error).__name__}") from None
