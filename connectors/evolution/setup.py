"""Connect a Baileys number: create/look up the Evolution instance, show its QR, register our webhook.

    make evolution-setup WEBHOOK_URL=https://bot.example.com/webhooks/evolution/webhook
    (= .venv/rasa/bin/python -m connectors.evolution.setup --webhook-url URL [--qr var/evolution_qr.png])

Reads EVOLUTION_API_URL, EVOLUTION_API_KEY, EVOLUTION_INSTANCE and EVOLUTION_WEBHOOK_SECRET.
The QR is saved as a PNG (open it and scan it with WhatsApp → Linked devices); the pairing
code, when Evolution gives one, is printed too. Run it again after scanning: it then only
checks the connection and (re)registers the webhook with the secret header.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from pathlib import Path

from connectors.evolution.api import EvolutionClient
from connectors.receiver import EVOLUTION_SECRET_HEADER as SECRET_HEADER
from connectors.settings import EvolutionSettings
from connectors.whatsapp.errors import GraphError


def save_qr(data_url: str, path: Path) -> bool:
    if not data_url:
        return False
    raw = data_url.split(",", 1)[1] if data_url.startswith("data:") else data_url
    try:
        png = base64.b64decode(raw, validate=True)
    except ValueError:
        return False
    if not png.startswith(b"\x89PNG"):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return True


async def setup(settings: EvolutionSettings, webhook_url: str, qr_path: Path) -> int:
    client = EvolutionClient(settings.api_url, settings.api_key)
    name = settings.instance
    try:
        try:
            state = await client.connection_state(name)
            print(f"instance {name!r}: {state}")
        except GraphError as error:
            if error.http_status != 404:
                raise
            await client.create_instance(name)
            state = None
            print(f"instance {name!r} created")
        if state != "open":
            qr = await client.connect(name)
            if save_qr(str(qr.get("base64") or ""), qr_path):
                print(f"scan the QR in {qr_path} with WhatsApp → Linked devices, then run this again")
            if qr.get("pairingCode"):
                print(f"or enter the pairing code on the phone: {qr['pairingCode']}")
        await client.set_webhook(name, webhook_url, settings.webhook_secret)
        print(f"webhook registered: {webhook_url} (header {SECRET_HEADER}), events MESSAGES_UPSERT, MESSAGES_UPDATE")
        return 0
    except GraphError as error:
        print(f"error: Evolution API at {settings.api_url} answered: {error}", file=sys.stderr)
        return 1
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--webhook-url", required=True, help="public URL of /webhooks/evolution/webhook")
    parser.add_argument("--qr", type=Path, default=Path("var/evolution_qr.png"))
    args = parser.parse_args(argv)
    settings = EvolutionSettings.load({})
    missing = [name for name, value in (("EVOLUTION_API_KEY", settings.api_key),
                                        ("EVOLUTION_WEBHOOK_SECRET", settings.webhook_secret)) if not value]
    if missing:
        print(f"error: set {' and '.join(missing)} first (see .env.example)", file=sys.stderr)
        return 2
    if not args.webhook_url.startswith(("http://", "https://")):
        print("error: --webhook-url must be an http(s) URL", file=sys.stderr)
        return 2
    return asyncio.run(setup(settings, args.webhook_url, args.qr))


if __name__ == "__main__":
    sys.exit(main())
