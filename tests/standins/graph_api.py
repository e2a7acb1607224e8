"""A local stand-in of the Cloud API's /messages endpoint, answering in Meta's documented format.

Test-only (never on the production path). Control routes under /_standin/:
  GET  /_standin/sent             every payload received, in order
  POST /_standin/config           {"fail_rate": 0.2, "codes": [130429, 500], "max_failures_per_payload": 2,
                                   "window_closed_for": ["34600..."], "seed": 1}
  POST /_standin/reset
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from aiohttp import web

TOKEN = "test-token"


class GraphStandIn:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.accepted = 0
        self.fail_rate = 0.0
        self.codes: list[int] = [130429]
        self.max_failures_per_payload = 2
        self.window_closed_for: set[str] = set()
        self.failures_by_payload: dict[str, int] = {}
        self.random = random.Random(1)

    def error(self, code: int) -> web.Response:
        status = code if 500 <= code < 600 else 400  # "500" in the config means an HTTP 500
        body = {"error": {"message": f"stand-in error {code}", "type": "OAuthException", "code": code,
                          "error_data": {"details": "stand-in"}, "fbtrace_id": "AstandIn"}}
        return web.json_response(body, status=status)

    async def messages(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.error(190)
        payload = await request.json()
        record = {"phone_number_id": request.match_info["phone_number_id"], "payload": payload, "accepted": False}
        self.received.append(record)
        if payload.get("status") == "read":
            return web.json_response({"success": True})
        if payload.get("to") in self.window_closed_for and payload.get("type") != "template":
            record["error"] = 131047
            return self.error(131047)
        key = json.dumps(payload, sort_keys=True)
        failed = self.failures_by_payload.get(key, 0)
        if failed < self.max_failures_per_payload and self.random.random() < self.fail_rate:
            self.failures_by_payload[key] = failed + 1
            record["error"] = self.random.choice(self.codes)
            return self.error(record["error"])
        record["accepted"] = True
        self.accepted += 1
        return web.json_response({"messaging_product": "whatsapp",
                                  "contacts": [{"input": payload.get("to"), "wa_id": payload.get("to")}],
                                  "messages": [{"id": f"wamid.standin.{self.accepted}"}]})

    async def sent(self, _: web.Request) -> web.Response:
        return web.json_response(self.received)

    async def configure(self, request: web.Request) -> web.Response:
        config = await request.json()
        self.fail_rate = float(config.get("fail_rate", self.fail_rate))
        self.codes = [int(c) for c in config.get("codes", self.codes)]
        self.max_failures_per_payload = int(config.get("max_failures_per_payload", self.max_failures_per_payload))
        self.window_closed_for = set(config.get("window_closed_for", self.window_closed_for))
        self.random = random.Random(int(config.get("seed", 1)))
        return web.json_response({"ok": True})

    async def reset_route(self, _: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def create_app() -> web.Application:
    stand_in = GraphStandIn()
    app = web.Application()
    app.router.add_post("/{version}/{phone_number_id}/messages", stand_in.messages)
    app.router.add_get("/_standin/sent", stand_in.sent)
    app.router.add_post("/_standin/config", stand_in.configure)
    app.router.add_post("/_standin/reset", stand_in.reset_route)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None)
