"""Receiving one Cloud API webhook: verify, parse, store, answer. Shared by the Rasa route and the ingest server.

Framework-free: takes the raw body and headers, returns (HTTP status, JSON body, the messages that were new).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from connectors.inbox import Inbox, InboxItem
from connectors.whatsapp.signature import is_valid_signature
from connectors.whatsapp.to_rasa import to_inbox_item
from connectors.whatsapp.updates import (
    MAX_BODY_BYTES,
    MalformedWebhook,
    StatusUpdate,
    WebhookBatch,
    decode_body,
    parse_webhook,
)

logger = logging.getLogger(__name__)

# (HTTP status, JSON body, the messages that were new: their conversations' drains start at once and
# their read receipts go out; duplicates are not in it)
Answer = tuple[int, dict[str, Any], tuple[InboxItem, ...]]
T = TypeVar("T")


def status_rows(statuses: Sequence[StatusUpdate]) -> list[dict[str, Any]]:
    return [
        {
            "message_id": s.wamid,
            "status": s.status[:16],
            "sent_at": s.timestamp,
            "recipient_id": s.recipient_id,
            "business_id": s.phone_number_id,
            "errors": json.dumps(list(s.errors)) if s.errors else None,
        }
        for s in statuses
    ]


def verify_subscription(args: Mapping[str, str], verify_token: str) -> tuple[int, str]:
    """Meta's GET handshake: the challenge back when the token matches, else 403."""
    if args.get("hub.mode") == "subscribe" and verify_token and args.get("hub.verify_token") == verify_token:
        return 200, args.get("hub.challenge", "")
    return 403, "verification failed"


def parse_or_refuse(body: bytes, parse: Callable[[Any], T], source: str) -> tuple[T | None, Answer | None]:
    """(parsed, None), or (None, the 400 to answer) — shared by the Cloud and Evolution webhooks.

    Not 200 for a body we cannot read: the sender keeps the update and retries it, so nothing
    is lost while we fix the cause.
    """
    try:
        return parse(decode_body(body)), None
    except MalformedWebhook as error:
        logger.warning("refused a malformed %s webhook: %s", source, error)
        return None, (400, {"error": f"malformed webhook: {error}"}, ())
    except Exception:  # a shape our parser did not foresee: same answer, and a traceback for us
        logger.exception("could not read a %s webhook; refused it so it is retried later", source)
        return None, (400, {"error": "malformed webhook: unreadable message"}, ())


async def receive_webhook(body: bytes, signature: str | None, app_secret: str, inbox: Inbox) -> Answer:
    if len(body) > MAX_BODY_BYTES:
        return 413, {"error": "body larger than 3 MB"}, ()
    if not is_valid_signature(body, signature, app_secret):
        return 403, {"error": "missing or invalid X-Hub-Signature-256"}, ()

    def parse(payload: Any) -> tuple[WebhookBatch, list[InboxItem]]:
        batch = parse_webhook(payload)
        return batch, [to_inbox_item(message) for message in batch.messages]

    parsed, refusal = parse_or_refuse(body, parse, "Cloud API")
    if refusal is not None:
        return refusal
    batch, items = parsed  # one of the two is set
    for error in batch.errors:
        logger.warning("WhatsApp account error %s: %s", error.get("code"), error.get("title"))
    new = await inbox.call(inbox.add_safely, items, status_rows(batch.statuses))
    return 200, {"status": "ok"}, new_items(new, items)


def new_items(new_ids: list[str], items: list[InboxItem]) -> tuple[InboxItem, ...]:
    """The stored messages of `new_ids` (the inbox's answer, in the webhook's order), once each: as the
    inbox does, the first of a batch's repeats of an id."""
    first: dict[str, InboxItem] = {}
    for item in items:
        first.setdefault(item.message_id, item)
    return tuple(first[message_id] for message_id in new_ids if message_id in first)
