"""Receiving one Evolution API webhook: check the secret header, parse, store, answer. Framework-free.

Evolution API signs nothing, so the webhook is registered with a secret header (X-Evolution-Secret,
see `make evolution-setup`); a request without it, or with another value, is refused with 403.
"""

from __future__ import annotations

import logging
from typing import Any

from connectors.evolution.updates import EvolutionBatch, parse_evolution
from connectors.inbox import Inbox, InboxItem
from connectors.whatsapp.signature import secrets_match
from connectors.whatsapp.to_rasa import to_inbox_item
from connectors.whatsapp.updates import MAX_BODY_BYTES
from connectors.whatsapp.webhook import Answer, conversations_of, parse_or_refuse, status_rows

logger = logging.getLogger(__name__)

CHANNEL = "evolution"
SECRET_HEADER = "X-Evolution-Secret"


async def receive_evolution(body: bytes, secret: str | None, expected_secret: str,
                            inbox: Inbox) -> Answer:
    if len(body) > MAX_BODY_BYTES:
        return 413, {"error": "body larger than 3 MB"}, ()
    if not secrets_match(secret, expected_secret):
        return 403, {"error": f"missing or wrong {SECRET_HEADER}"}, ()

    def parse(payload: Any) -> tuple[EvolutionBatch, list[InboxItem]]:
        batch = parse_evolution(payload)
        return batch, [to_inbox_item(message, CHANNEL) for message in batch.messages]

    parsed, refusal = parse_or_refuse(body, parse, "Evolution")
    if refusal is not None:
        return refusal
    batch, items = parsed  # one of the two is set
    if batch.dropped:
        logger.debug("Evolution webhook: not answering %s", ", ".join(batch.dropped))
    new = await inbox.call(inbox.add_safely, items, status_rows(batch.statuses))
    return (200, {"status": "ok", "stored": len(new), "dropped": len(batch.dropped)},
            conversations_of(new, items))
