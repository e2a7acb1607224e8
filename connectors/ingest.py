"""Stand-alone webhook receiver: verify, store and ACK Cloud API webhooks outside the Rasa process.

    .venv/rasa/bin/python -m connectors.ingest --port 5007

Rasa runs its model inference on its event loop, so a webhook answered by the Rasa
process waits behind predictions when Rasa is busy. This process serves the same
route (/webhooks/whatsapp/webhook, GET handshake and POST) with the same code into
the same inbox database; the worker inside Rasa picks the rows up. Point Meta here
when ACK latency under load matters. Settings: the WHATSAPP_* environment variables; on PostgreSQL
WHATSAPP_INBOX_CALLS=async (the default) stores webhooks side by side through asyncpg on this
process's event loop, no thread per webhook.

It also sends the read receipt ("typing…" unless a person has the conversation, asked of the
tracker store named in RASA_ENDPOINTS / endpoints.yml) of every message it stored, after the ACK,
so Rasa's event loop spends nothing on them. Without WHATSAPP_ACCESS_TOKEN it sends none.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from connectors.inbox import Inbox, create_inbox_engine
from connectors.paused import paused_in_database
from connectors.receipts import Receipts
from connectors.settings import WhatsAppSettings, sql_tracker_store_url
from connectors.whatsapp.graph_api import GraphClient
from connectors.whatsapp.updates import MAX_BODY_BYTES
from connectors.whatsapp.webhook import receive_webhook, verify_subscription

ROUTE = "/webhooks/whatsapp/webhook"


def create_app(settings: WhatsAppSettings, inbox: Inbox, receipts: Receipts | None = None) -> web.Application:
    """`receipts`: None sends none (no access token: the Graph API would refuse them)."""
    # Bodies a little over the limit must reach our 413, not aiohttp's own.
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1024 * 1024)

    async def verify(request: web.Request) -> web.Response:
        status, text = verify_subscription(request.query, settings.verify_token)
        return web.Response(text=text, status=status)

    storing = 0  # webhooks being read and stored right now: receipts wait for a moment without any

    async def receive(request: web.Request) -> web.Response:
        nonlocal storing
        storing += 1
        try:
            status, body, new = await receive_webhook(
                await request.read(), request.headers.get("X-Hub-Signature-256"), settings.app_secret, inbox
            )
        finally:
            storing -= 1
        if receipts is not None:
            receipts.after_store(new)  # queued: the 200 does not wait for them
        return web.json_response(body, status=status)

    if receipts is not None:
        receipts.busy = lambda: storing > 0

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def background_checkpoints(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(inbox.checkpoint_forever())
        yield
        task.cancel()
        if receipts is not None:
            await receipts.idle()
            await receipts.client.close()
        await inbox.close()

    app.cleanup_ctx.append(background_checkpoints)
    app.router.add_get(ROUTE, verify)
    app.router.add_post(ROUTE, receive)
    app.router.add_get("/health", health)
    return app


def receipts_for(settings: WhatsAppSettings) -> Receipts | None:
    if not settings.access_token:
        logging.getLogger(__name__).warning("WHATSAPP_ACCESS_TOKEN is not set: no read receipts are sent")
        return None
    tracker_url = sql_tracker_store_url()
    if tracker_url is None:
        logging.getLogger(__name__).warning(
            "no SQL tracker store in %s: receipts show \"typing…\" also while a person has the conversation",
            os.environ.get("RASA_ENDPOINTS", "endpoints.yml"))
    client = GraphClient(settings.access_token, settings.graph_api_url, settings.api_version)
    return Receipts(client, paused_in_database(tracker_url, settings.inbox_calls), settings.stale_after_seconds,
                    coalesce=True)  # the Cloud API marks a conversation's earlier messages read with a later one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("WHATSAPP_INGEST_PORT", "5007")))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s - %(message)s")
    settings = WhatsAppSettings.load({})
    if not settings.app_secret:
        print("error: WHATSAPP_APP_SECRET is not set; every webhook would be refused", file=sys.stderr)
        return 2
    inbox = Inbox(create_inbox_engine(settings.inbox_db_url), calls=settings.inbox_calls)
    web.run_app(create_app(settings, inbox, receipts_for(settings)), host=args.host, port=args.port, print=None,
                access_log=None, loop=asyncio.new_event_loop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
