"""python -m sandbox --port 5006 --channel-url http://127.0.0.1:5007/webhooks/whatsapp/webhook

Secrets come from the environment it shares with the channel: WHATSAPP_APP_SECRET,
WHATSAPP_ACCESS_TOKEN, WHATSAPP_PHONE_NUMBER_ID.
"""

from __future__ import annotations

import argparse
import os
import sys

from sandbox.app import SandboxConfig, create_app
from sandbox.evolution import EvolutionConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SANDBOX_PORT", "5006")))
    parser.add_argument("--channel-url", default=os.environ.get(
        "SANDBOX_CHANNEL_URL",
        f"http://127.0.0.1:{os.environ.get('WHATSAPP_INGEST_PORT', '5007')}/webhooks/whatsapp/webhook"))
    parser.add_argument("--evolution-channel-url", default=os.environ.get(
        "SANDBOX_EVOLUTION_CHANNEL_URL",
        f"http://127.0.0.1:{os.environ.get('WHATSAPP_INGEST_PORT', '5007')}/webhooks/evolution/webhook"))
    args = parser.parse_args()
    secret, token = os.environ.get("WHATSAPP_APP_SECRET", ""), os.environ.get("WHATSAPP_ACCESS_TOKEN", "")
    if not secret or not token:
        print("error: WHATSAPP_APP_SECRET and WHATSAPP_ACCESS_TOKEN must be set (make run sets them)",
              file=sys.stderr)
        return 2
    evolution_key, evolution_secret = os.environ.get("EVOLUTION_API_KEY", ""), os.environ.get(
        "EVOLUTION_WEBHOOK_SECRET", "")
    evolution = (EvolutionConfig(evolution_key, args.evolution_channel_url, evolution_secret,
                                 os.environ.get("EVOLUTION_INSTANCE") or "voltbay")
                 if evolution_key and evolution_secret else None)
    config = SandboxConfig(channel_url=args.channel_url, app_secret=secret, access_token=token,
                           phone_number_id=os.environ.get("WHATSAPP_PHONE_NUMBER_ID") or "SANDBOX-PNID",
                           evolution=evolution)
    app = create_app(config)
    app.run(host=args.host, port=args.port, single_process=True, access_log=False, motd=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
