"""Evolution API webhook JSON → the same typed messages as the Cloud API. Pure: no I/O, stdlib only.

Parsing into `InboundMessage` (connectors/whatsapp/updates.py) lets the inbox, the worker and
the Rasa mapping (to_rasa.py) serve both channels unchanged. Own echoes (`fromMe`), groups
(`@g.us`) and `status@broadcast` are dropped here. `@lid` senders have no phone number we may
derive: replies go to the JID received (or to `remoteJidAlt`/`senderPn` when Evolution gives one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.whatsapp.updates import (
    MAX_TIMESTAMP,
    InboundMessage,
    MalformedWebhook,
    MessageType,
    StatusUpdate,
    json_object,
)

UPSERT = "messages.upsert"
UPDATE = "messages.update"
DELETE = "messages.delete"
MEDIA_KINDS = {"imageMessage": MessageType.IMAGE, "videoMessage": MessageType.VIDEO,
               "audioMessage": MessageType.AUDIO, "documentMessage": MessageType.DOCUMENT,
               "stickerMessage": MessageType.STICKER}
WRAPPERS = ("ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2", "documentWithCaptionMessage")
# Baileys acknowledgement levels → the Cloud API's status names (what the console shows as ticks)
STATUS_NAMES = {"PENDING": "sent", "SERVER_ACK": "sent", "DELIVERY_ACK": "delivered", "READ": "read",
                "PLAYED": "read", "ERROR": "failed"}


@dataclass(frozen=True)
class EvolutionBatch:
    messages: tuple[InboundMessage, ...] = ()
    statuses: tuple[StatusUpdate, ...] = ()
    dropped: tuple[str, ...] = ()  # why messages were not stored: "fromMe", "group", "broadcast", event name
    revoked: tuple[tuple[str, str], ...] = ()  # (message id, conversation) the customer deleted (messages.delete)
    event: str = ""



def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _timestamp(value: Any, received_at: int) -> int:
    """The message's time, or when we received it if that is not a usable time."""
    if isinstance(value, dict):  # protobuf Long serialised as {"low", "high", "unsigned"}
        value = value.get("low")
    try:
        stamp = int(str(value))
    except (TypeError, ValueError):
        return received_at
    stamp = stamp // 1000 if stamp > 10**11 else stamp  # milliseconds from some versions
    return stamp if 0 <= stamp <= MAX_TIMESTAMP else received_at


def digits_of(jid: str | None) -> str | None:
    """The phone digits of a phone JID; None for @lid and anything else (never made up)."""
    if jid and jid.endswith("@s.whatsapp.net"):
        user = jid.split("@", 1)[0].split(":", 1)[0]
        return user if user.isdigit() else None
    return None


def _unwrap(message: dict[str, Any]) -> dict[str, Any]:
    for _ in range(3):
        for wrapper in WRAPPERS:
            inner = json_object(json_object(message.get(wrapper)).get("message"))
            if inner:
                message = inner
                break
        else:
            return message
    return message


def _content(message: dict[str, Any], key_id: str) -> tuple[MessageType, dict[str, Any], dict[str, Any]]:
    """(type, Cloud-shaped body, contextInfo) of a Baileys message object."""
    if _str(message.get("conversation")):
        return MessageType.TEXT, {"body": message["conversation"]}, {}
    extended = json_object(message.get("extendedTextMessage"))
    if extended:
        return MessageType.TEXT, {"body": str(extended.get("text") or "")}, json_object(extended.get("contextInfo"))
    for name, kind in MEDIA_KINDS.items():
        media = json_object(message.get(name))
        if media:
            body = {"id": key_id, "mime_type": _str(media.get("mimetype")), "caption": _str(media.get("caption")),
                    "filename": _str(media.get("fileName")), "voice": media.get("ptt") is True}
            kept = {k: v for k, v in body.items() if v not in (None, False)}
            return kind, kept, json_object(media.get("contextInfo"))
    location = json_object(message.get("locationMessage")) or json_object(message.get("liveLocationMessage"))
    if location:
        return MessageType.LOCATION, {"latitude": location.get("degreesLatitude"),
                                      "longitude": location.get("degreesLongitude"),
                                      **{k: location[k] for k in ("name", "address") if _str(location.get(k))}}, {}
    contact = json_object(message.get("contactMessage"))
    listed = json_object(message.get("contactsArrayMessage")).get("contacts") or []
    contacts = [contact] if contact else [c for c in listed if isinstance(c, dict)]
    if contacts:
        return MessageType.CONTACTS, {"contacts": [{"name": {"formatted_name": str(c.get("displayName") or "")},
                                                    "vcard": str(c.get("vcard") or "")[:2000]} for c in contacts]}, {}
    reaction = json_object(message.get("reactionMessage"))
    if reaction:
        return MessageType.REACTION, {"message_id": json_object(reaction.get("key")).get("id"),
                                      "emoji": reaction.get("text")}, {}
    buttons = (json_object(message.get("buttonsResponseMessage"))
               or json_object(message.get("templateButtonReplyMessage")))
    if buttons:
        reply = {"id": buttons.get("selectedButtonId") or buttons.get("selectedId"),
                 "title": buttons.get("selectedDisplayText")}
        return MessageType.INTERACTIVE, {"button_reply": reply}, {}
    selected = json_object(json_object(message.get("listResponseMessage")).get("singleSelectReply"))
    if selected:
        return MessageType.INTERACTIVE, {"list_reply": {"id": selected.get("selectedRowId")}}, {}
    return MessageType.UNSUPPORTED, {"errors": [{"title": f"unsupported Baileys message: {sorted(message)[:3]}"}]}, {}


def _upsert(data: dict[str, Any], instance: str, where: str, received_at: int) -> InboundMessage | str:
    key = json_object(data.get("key"))
    key_id = _str(key.get("id"))
    remote = _str(key.get("remoteJid"))
    if not key_id or len(key_id) > 200 or not remote or len(remote) > 128:
        raise MalformedWebhook(f"{where}: key.id and key.remoteJid are required")
    if key.get("fromMe") is True:
        return "fromMe"
    if remote.endswith("@g.us"):
        return "group"
    if remote == "status@broadcast" or remote.endswith("@broadcast") or remote.endswith("@newsletter"):
        return "broadcast"
    alternative = _str(key.get("remoteJidAlt")) or _str(key.get("senderPn")) or _str(data.get("senderPn"))
    reply_to = alternative if remote.endswith("@lid") and alternative else remote
    kind, body, context = _content(_unwrap(json_object(data.get("message"))), key_id)
    quoted = _str(context.get("stanzaId"))
    return InboundMessage(
        wamid=f"{instance}:{key_id}",
        conversation_id=remote,
        phone_number_id=instance,
        display_phone_number=None,
        wa_id=digits_of(reply_to) or digits_of(remote),
        user_id=remote if remote.endswith("@lid") else None,
        profile_name=_str(data.get("pushName")),
        timestamp=_timestamp(data.get("messageTimestamp"), received_at),
        type=kind,
        body=body,
        context={"id": f"{instance}:{quoted}", "from": context.get("participant")} if quoted else None,
        raw=data,
        reply_address=reply_to,
    )


def _update(data: dict[str, Any], instance: str, received_at: int) -> StatusUpdate | None:
    key = json_object(data.get("key"))
    key_id = _str(data.get("keyId")) or _str(key.get("id")) or _str(data.get("messageId"))
    status = STATUS_NAMES.get(str(data.get("status") or "").upper())
    if not key_id or not status or (data.get("fromMe", key.get("fromMe")) is False):
        return None  # only our own messages' progress matters
    stamp = data.get("messageTimestamp") or data.get("timestamp")
    return StatusUpdate(wamid=key_id[:256], status=status, timestamp=_timestamp(stamp, received_at),
                        recipient_id=_str(data.get("remoteJid")) or _str(key.get("remoteJid")),
                        phone_number_id=instance)


def parse_evolution(payload: Any, received_at: int = 0, path_event: str = "") -> EvolutionBatch:
    """Messages, statuses and deletions of one Evolution webhook (`data` one object or a list). Only a body
    that is not a JSON object raises; any event is accepted, and only messages are kept. `path_event`: the
    event named by the URL (Evolution's webhook_by_events appends it: /webhook/messages-upsert)."""
    if not isinstance(payload, dict):
        raise MalformedWebhook("body must be a JSON object")
    event = str(payload.get("event") or path_event or "").lower().replace("_", ".").replace("-", ".")[:64]
    instance = _str(payload.get("instance"))
    if event not in (UPSERT, UPDATE, DELETE):
        return EvolutionBatch(dropped=(event or "no event",), event=event)
    if not instance or len(instance) > 64:
        return EvolutionBatch(dropped=("no instance",), event=event)
    items = payload.get("data")
    items = items if isinstance(items, list) else [items] if items is not None else []
    messages: list[InboundMessage] = []
    statuses: list[StatusUpdate] = []
    revoked: list[tuple[str, str]] = []
    dropped: list[str] = [] if items else ["no data"]
    for n, data in enumerate(items[:1000]):
        if not isinstance(data, dict):
            dropped.append(f"data[{n}]: not an object")
        elif event == UPDATE:
            status = _update(data, instance, received_at)
            if status is not None:
                statuses.append(status)
        elif event == DELETE:
            key = json_object(data.get("key"))
            key_id = _str(key.get("id")) or _str(data.get("id"))
            remote = _str(key.get("remoteJid")) or _str(data.get("remoteJid"))
            if key_id and len(key_id) <= 200 and remote and len(remote) <= 128:
                revoked.append((f"{instance}:{key_id}", remote))
            else:
                dropped.append(f"data[{n}]: a deletion without key.id and remoteJid")
        else:
            try:
                parsed = _upsert(data, instance, f"data[{n}]", received_at)
            except MalformedWebhook as error:
                parsed = str(error)
            if isinstance(parsed, str):
                dropped.append(parsed)
            else:
                messages.append(parsed)
    return EvolutionBatch(tuple(messages), tuple(statuses), tuple(dropped), tuple(revoked), event)
