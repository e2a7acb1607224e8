"""Receiving one Evolution API webhook: check the secret header, parse, store, answer. Framework-free.

Evolution API signs nothing, so the webhook is registered with a secret header (X-Evolution-Secret,
see `make evolution-setup`); a request without it, or with another value, is refused with 403.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from connectors.evolution.updates import parse_evolution
from connectors.inbox import Inbox
from connectors.whatsapp.to_rasa import to_inbox_item
from connectors.whatsapp.updates import MAX_BODY_BYTES, MalformedWebhook, decode_body
from connectors.whatsapp.webhook import status_rows

logger = logging.getLogger(__name__)

CHANNEL = "evolution"
SECRET_HEADER = "X-Evolution-Secret"


def valid_secret(given: str | None, expected: str) -> bool:
    """Constant-time compare; no configured secret means every request is refused."""
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


async def receive_evolution(body: bytes, secret: str | None, expected_secret: str,
                            inbox: Inbox) -> tuple[int, dict[str, Any], int]:
    if len(body) > MAX_BODY_BYTES:
        return 413, {"error": "body larger than 3 MB"}, 0
    if not valid_secret(secret, expected_secret):
        return 403, {"error": f"missing or wrong {SECRET_HEADER}"}, 0
    try:
        batch = parse_evolution(decode_body(body))
        items = [to_inbox_item(message, CHANNEL) for message in batch.messages]
    except MalformedWebhook as error:
        logger.warning("refused a malformed Evolution webhook: %s", error)
        return 400, {"error": f"malformed webhook: {error}"}, 0
    except Exception:  # a shape the parser did not foresee: refused, with a traceback for us
        logger.exception("could not read an Evolution webhook")
        return 400, {"error": "malformed webhook: unreadable message"}, 0
    if batch.dropped:
        logger.debug("Evolution webhook: not answering %s", ", ".join(batch.dropped))
    new = await asyncio.to_thread(inbox.add_safely, items, status_rows(batch.statuses))
    return 200, {"status": "ok", "stored": len(new), "dropped": len(batch.dropped)}, len(new)
