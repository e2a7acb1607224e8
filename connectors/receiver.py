"""The webhook receiver of both channels: verify, parse, store in one commit, then 200.

    .venv/rasa/bin/python -m connectors.receiver        # port WHATSAPP_INGEST_PORT (5007)

Its own process, outside Rasa's event loop, so an acknowledgement never waits behind model inference
(`make run` starts it; Meta and Evolution point here). The Rasa input channels serve the same routes
with the same functions for `rasa run` started by hand. What each answer means:

- 200: a well-formed body of any field or event; every message we can store is stored (a redelivered one
  is dropped by its unique id), items we cannot store are dropped with a warning, others are logged.
- 400: the body is not JSON, not a JSON object, or (Cloud API) not a WhatsApp Business Account envelope.
- 403: signature (Cloud API) or secret header (Evolution) missing or wrong; nothing is parsed.
- 413: over 3 MB. 503: the database could not take it; the platform retries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from connectors.evolution.updates import parse_evolution
from connectors.queue import Queue
from connectors.queue_schema import Database
from connectors.whatsapp.signature import is_valid_signature, secrets_match
from connectors.whatsapp.to_rasa import InboxItem, to_inbox_item
from connectors.whatsapp.updates import MAX_BODY_BYTES, MalformedWebhook, StatusUpdate, decode_body, parse_webhook

logger = logging.getLogger(__name__)

CLOUD_ROUTE = "/webhooks/whatsapp/webhook"
EVOLUTION_ROUTE = "/webhooks/evolution/webhook"
EVOLUTION_SECRET_HEADER = "X-Evolution-Secret"
# Fields Meta documents for a WhatsApp Business Account: logged at INFO. Any other is logged at WARNING.
KNOWN_FIELDS = frozenset({
    "calls", "account_update", "account_alerts", "account_review_update", "business_capability_update",
    "message_template_status_update", "message_template_category_update", "message_template_quality_update",
    "template_category_update", "phone_number_name_update", "phone_number_quality_update", "security",
    "user_preferences", "history", "smb_message_echoes", "smb_app_state_sync", "flows", "payment_configuration_update",
})


@dataclass(frozen=True)
class Received:
    """What to answer, and what to store before answering."""

    status: int
    body: dict[str, Any]
    items: list[InboxItem] = field(default_factory=list)
    status_rows: list[dict[str, Any]] = field(default_factory=list)


def verify_subscription(args: Mapping[str, str], verify_token: str) -> tuple[int, str]:
    """Meta's GET handshake: the challenge back when the token matches, else 403."""
    if args.get("hub.mode") == "subscribe" and verify_token and args.get("hub.verify_token") == verify_token:
        return 200, args.get("hub.challenge", "")
    return 403, "verification failed"


def status_rows(updates: Sequence[StatusUpdate]) -> list[dict[str, Any]]:
    return [{"message_id": s.wamid, "status": s.status[:16], "sent_at": s.timestamp, "recipient_id": s.recipient_id,
             "business_id": s.phone_number_id, "errors": json.dumps(list(s.errors)) if s.errors else None,
             "callback": s.callback} for s in updates]


def _decoded(body: bytes, source: str) -> tuple[Any, Received | None]:
    try:
        return decode_body(body), None
    except MalformedWebhook as error:
        logger.warning("refused a %s webhook: %s", source, error)
        return None, Received(400, {"error": f"malformed webhook: {error}"})


def receive_cloud(body: bytes, signature: str | None, app_secret: str, now: int) -> Received:
    """A Cloud API POST, verified and parsed. Pure: `now` stands in for an unusable timestamp."""
    if len(body) > MAX_BODY_BYTES:
        return Received(413, {"error": "body larger than 3 MB"})
    if not is_valid_signature(body, signature, app_secret):
        return Received(403, {"error": "missing or invalid X-Hub-Signature-256"})
    payload, refused = _decoded(body, "Cloud API")
    if refused is not None:
        return refused
    try:
        batch = parse_webhook(payload, now)
    except MalformedWebhook as error:
        logger.warning("refused a Cloud API webhook: %s", error)
        return Received(400, {"error": f"malformed webhook: {error}"})
    for name in batch.fields:
        logger.log(logging.INFO if name in KNOWN_FIELDS else logging.WARNING,
                   "Cloud API webhook field %r acknowledged; nothing to answer", name)
    for reason in batch.dropped:
        logger.warning("Cloud API webhook: not stored: %s", reason)
    for error in batch.errors:
        logger.warning("WhatsApp account error %s: %s", error.get("code"), error.get("title"))
    return Received(200, {"status": "ok"}, [to_inbox_item(message) for message in batch.messages],
                    status_rows(batch.statuses))


def receive_evolution(body: bytes, secret: str | None, expected_secret: str, now: int,
                      path_event: str = "") -> Received:
    """An Evolution API POST (any event), checked and parsed. Pure."""
    if len(body) > MAX_BODY_BYTES:
        return Received(413, {"error": "body larger than 3 MB"})
    if not secrets_match(secret, expected_secret):
        return Received(403, {"error": f"missing or wrong {EVOLUTION_SECRET_HEADER}"})
    payload, refused = _decoded(body, "Evolution")
    if refused is not None:
        return refused
    try:
        batch = parse_evolution(payload, now, path_event)
    except MalformedWebhook as error:
        logger.warning("refused an Evolution webhook: %s", error)
        return Received(400, {"error": f"malformed webhook: {error}"})
    if batch.dropped:
        logger.info("Evolution event %r: not stored: %s", batch.event, ", ".join(batch.dropped[:10]))
    items = [to_inbox_item(message, "evolution") for message in batch.messages]
    # A deletion is stored like a message of its own, so the inbox marks the original (Queue.store).
    items += [InboxItem(message_id=f"{revoked}#deleted", channel="evolution", conversation_id=conversation,
                        reply_to=conversation, business_id=str(payload.get("instance")), sent_at=now,
                        message={"skip": "revoke", "revokes": revoked, "metadata": {"channel": "evolution"}})
              for revoked, conversation in batch.revoked]
    return Received(200, {"status": "ok", "stored": len(batch.messages), "dropped": len(batch.dropped)},
                    items, status_rows(batch.statuses))


async def store_received(queue: Queue, received: Received) -> Received:
    """Store what a 200 promises; a database that cannot take it turns the answer into a 503."""
    if received.status != 200 or not (received.items or received.status_rows):
        return received
    try:
        await queue.store(received.items, received.status_rows)
    except Exception:
        logger.exception("could not store a webhook; answered 503 so that it is delivered again")
        return Received(503, {"error": "storage unavailable, retry later"})
    return received


def create_app(queue: Queue, cloud_secret: str, verify_token: str, evolution_secret: str,
               on_stored: Callable[[Received], None] = lambda _received: None) -> web.Application:
    """Both channels' webhook routes on one aiohttp app (bodies a little over the limit reach our 413)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1024 * 1024)

    async def answer(received: Received) -> web.Response:
        received = await store_received(queue, received)
        if received.status == 200:
            on_stored(received)
        return web.json_response(received.body, status=received.status)

    async def verify(request: web.Request) -> web.Response:
        status, text = verify_subscription(request.query, verify_token)
        return web.Response(text=text, status=status)

    async def cloud(request: web.Request) -> web.Response:
        return await answer(receive_cloud(await request.read(), request.headers.get("X-Hub-Signature-256"),
                                          cloud_secret, int(time.time())))

    async def evolution(request: web.Request) -> web.Response:
        return await answer(receive_evolution(await request.read(), request.headers.get(EVOLUTION_SECRET_HEADER),
                                              evolution_secret, int(time.time()), request.match_info.get("event", "")))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def close_queue(_: web.Application) -> None:
        await queue.close()

    app.on_cleanup.append(close_queue)
    app.router.add_get(CLOUD_ROUTE, verify)
    app.router.add_post(CLOUD_ROUTE, cloud)
    app.router.add_post(EVOLUTION_ROUTE, evolution)
    app.router.add_post(EVOLUTION_ROUTE + "/{event}", evolution)  # Evolution's webhook_by_events
    app.router.add_get("/health", health)
    return app


def main() -> int:
    from connectors.settings import EvolutionSettings, WhatsAppSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("WHATSAPP_INGEST_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("WHATSAPP_INGEST_PORT", "5007")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s - %(message)s")
    cloud, evolution = WhatsAppSettings.load({}), EvolutionSettings.load({})
    if not cloud.app_secret:
        logger.warning("WHATSAPP_APP_SECRET is not set: every Cloud API webhook will be refused with 403")
    loop = asyncio.new_event_loop()
    queue = Queue(Database(cloud.inbox_db_url))
    loop.run_until_complete(queue.create_tables())
    web.run_app(create_app(queue, cloud.app_secret, cloud.verify_token, evolution.webhook_secret),
                host=args.host, port=args.port, print=None, access_log=None, loop=loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
