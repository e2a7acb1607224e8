"""Receiving one Cloud API webhook: verify, parse, store, answer. Shared by the Rasa route and the ingest server.

Framework-free: takes the raw body and headers, returns (HTTP status, JSON body, number of new messages).
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

# (HTTP status, JSON body, conversations that got a new message: the worker starts on them at once)
Answer = tuple[int, dict[str, Any], tuple[str, ...]]
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
            "callback": s.callback,
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
    return 200, {"status": "ok"}, conversations_of(new, items)


def conversations_of(new_ids: list[str], items: list[InboxItem]) -> tuple[str, ...]:
    """The conversations (in order, once each) of the messages that were new."""
    new = set(new_ids)
    return tuple(dict.fromkeys(item.conversation_id for item in items if item.message_id in new))
