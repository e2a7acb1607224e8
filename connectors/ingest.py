"""Stand-alone webhook receiver: verify, store and ACK Cloud API webhooks outside the Rasa process.

    .venv/rasa/bin/python -m connectors.ingest --port 5007

Rasa runs its model inference on its event loop, so a webhook answered by the Rasa
process waits behind predictions when Rasa is busy. This process serves the same
route (/webhooks/whatsapp/webhook, GET handshake and POST) with the same code into
the same inbox database; the worker inside Rasa picks the rows up. Point Meta here
when ACK latency under load matters. Settings: the WHATSAPP_* environment variables; on PostgreSQL
WHATSAPP_INBOX_CALLS=async (the default) stores webhooks side by side through asyncpg on this
process's event loop, no thread per webhook.
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
from connectors.inbox_calls import on_this_loop
from connectors.settings import WhatsAppSettings
from connectors.whatsapp.updates import MAX_BODY_BYTES
from connectors.whatsapp.webhook import receive_webhook, verify_subscription

ROUTE = "/webhooks/whatsapp/webhook"


def create_app(settings: WhatsAppSettings, inbox: Inbox) -> web.Application:
    # Bodies a little over the limit must reach our 413, not aiohttp's own.
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1024 * 1024)

    async def verify(request: web.Request) -> web.Response:
        status, text = verify_subscription(request.query, settings.verify_token)
        return web.Response(text=text, status=status)

    async def receive(request: web.Request) -> web.Response:
        status, body, _ = await receive_webhook(
            await request.read(), request.headers.get("X-Hub-Signature-256"), settings.app_secret, inbox
        )
        return web.json_response(body, status=status)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def background_checkpoints(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(inbox.checkpoint_forever())
        yield
        task.cancel()
        await inbox.close()

    app.cleanup_ctx.append(background_checkpoints)
    app.router.add_get(ROUTE, verify)
    app.router.add_post(ROUTE, receive)
    app.router.add_get("/health", health)
    return app


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
    # A helper process (WHATSAPP_INBOX_CALLS=process) takes statements off Rasa's loop; this process has no Rasa.
    inbox = Inbox(create_inbox_engine(settings.inbox_db_url), calls=on_this_loop(settings.inbox_calls))
    web.run_app(create_app(settings, inbox), host=args.host, port=args.port, print=None, access_log=None,
                loop=asyncio.new_event_loop())
    return 0


if __name__ == "__main__":
    sys.exit(main())
