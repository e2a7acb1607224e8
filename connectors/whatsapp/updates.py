"""Cloud API webhook JSON → typed, frozen updates. Pure: no I/O, stdlib only.

Every `entry[].changes[].value` is read, every message and status in it. Only a body that is not a
WhatsApp Business Account envelope raises `MalformedWebhook` (answered 400). Inside one, a message or
status we cannot store (no id, no sender) is dropped with its reason, fields other than `messages`
are named for the log, and unknown message types become `MessageType.UNKNOWN`: Meta retries a refused
delivery for days, and refusing a whole batch for one odd item would hold back the good ones.
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
    ORDER = "order"
    EDIT = "edit"  # the customer edited an earlier message: edit.original_message_id, edit.message
    REVOKE = "revoke"  # the customer deleted an earlier message: revoke.original_message_id
    SYSTEM = "system"  # the customer changed their number or their identity key
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
    fields: tuple[str, ...] = ()  # the other fields of the body (account, template, calls updates, …)
    dropped: tuple[str, ...] = ()  # why items were not kept: "entry[0].changes[0].messages[1]: no id"


def json_object(value: Any) -> dict[str, Any]:
    """The value when it is a JSON object, else an empty one (for optional nested fields)."""
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _timestamp(value: Any, received_at: int) -> int:
    """The platform's time, or when we received it if that is not a usable time."""
    try:
        stamp = int(str(value))
    except (TypeError, ValueError):
        return received_at
    return stamp if 0 <= stamp <= MAX_TIMESTAMP else received_at


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
             contacts: dict[str, dict[str, Any]], received_at: int) -> InboundMessage:
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
        contacts_list = raw.get("contacts")
        body = {"contacts": contacts_list if isinstance(contacts_list, list) else []}
    elif msg_type in (MessageType.UNSUPPORTED, MessageType.UNKNOWN):
        body = {"errors": raw.get("errors") or []}
    if not isinstance(body, dict):  # e.g. an `interactive` message without its object: kept, with no content
        logger.warning("%s: a %s message without its %r object", where, msg_type.value, msg_type.value)
        body = {}
    if raw.get("errors") and msg_type not in (MessageType.UNSUPPORTED, MessageType.UNKNOWN):
        body = {**body, "errors": raw.get("errors")}
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
        timestamp=_timestamp(raw.get("timestamp"), received_at),
        type=msg_type,
        body=body,
        context=context if isinstance(context, dict) else None,
        raw=raw,
    )


def _status(raw: Any, where: str, phone_number_id: str, received_at: int) -> StatusUpdate:
    raw = _dict(raw, where)
    wamid = _str(raw.get("id"))
    status = _str(raw.get("status"))
    if not wamid or not status:
        raise MalformedWebhook(f"{where}: status without id or status")
    found = raw.get("errors")
    errors = tuple(e for e in found if isinstance(e, dict)) if isinstance(found, list) else ()
    return StatusUpdate(
        wamid=wamid[:256],
        status=status,
        timestamp=_timestamp(raw.get("timestamp"), received_at),
        recipient_id=_str(raw.get("recipient_id")) or _str(raw.get("recipient_user_id")),
        phone_number_id=phone_number_id,
        errors=errors,
        callback=(_str(raw.get("biz_opaque_callback_data")) or "")[:512] or None,
    )


def parse_webhook(payload: Any, received_at: int = 0) -> WebhookBatch:
    """Every message, status and error of a webhook body (already JSON-decoded). `received_at` (epoch s)
    stands in for a timestamp that is not a usable time."""
    payload = _dict(payload, "body")
    if payload.get("object") != "whatsapp_business_account":
        raise MalformedWebhook("object is not 'whatsapp_business_account'")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise MalformedWebhook("entry must be a list")
    found = _Found()
    for e, entry in enumerate(entries):
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            found.dropped.append(f"entry[{e}]: no list of changes")
            continue
        for c, change in enumerate(changes):
            where = f"entry[{e}].changes[{c}]"
            field_name = change.get("field") if isinstance(change, dict) else None
            if not isinstance(change, dict) or not isinstance(field_name, (str, type(None))):
                found.dropped.append(f"{where}: not a change object")
            elif field_name in (None, "messages"):
                _read_messages(change.get("value"), where, received_at, found)
            else:
                found.fields.append(field_name[:64])  # account, template and call updates: logged, not ours to answer
    return WebhookBatch(tuple(found.messages), tuple(found.statuses), tuple(found.errors), tuple(found.fields),
                        tuple(found.dropped))


@dataclass
class _Found:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _read_messages(value: Any, where: str, received_at: int, found: _Found) -> None:
    """The messages, statuses and errors of one `messages` change; what cannot be kept is dropped."""
    metadata = json_object(json_object(value).get("metadata"))
    phone_number_id = _str(metadata.get("phone_number_id"))
    if not isinstance(value, dict) or not phone_number_id or len(phone_number_id) > 64:
        found.dropped.append(f"{where}: no value.metadata.phone_number_id (the business number)")
        return
    display = _str(metadata.get("display_phone_number"))
    try:
        contacts = _contacts_by_id(value)
    except MalformedWebhook:
        contacts = {}
    for kind, parse in (("messages", _message), ("statuses", _status)):
        items = value.get(kind)
        if items is not None and not isinstance(items, list):
            found.dropped.append(f"{where}.value.{kind}: not a list")
            continue
        for n, raw in enumerate(items or []):
            try:
                if parse is _message:
                    found.messages.append(_message(raw, f"{where}.messages[{n}]", phone_number_id, display, contacts,
                                                   received_at))
                else:
                    found.statuses.append(_status(raw, f"{where}.statuses[{n}]", phone_number_id, received_at))
            except MalformedWebhook as error:
                found.dropped.append(str(error))
    errors = value.get("errors")
    if isinstance(errors, list):
        found.errors.extend(error for error in errors if isinstance(error, dict))


def decode_body(raw: bytes) -> Any:
    """JSON of a webhook body; MalformedWebhook for anything else."""
    if len(raw) > MAX_BODY_BYTES:
        raise MalformedWebhook("body larger than 3 MB")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MalformedWebhook(f"body is not JSON: {type(error).__name__}") from None
