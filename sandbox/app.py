"""Sandbox server: Graph API stand-in for the channel, JSON API and page for the designer.

Graph side:  POST /<version>/<phone_number_id>/messages  (Bearer token), answered like Meta;
             accepted messages get "sent" and "delivered" status webhooks, signed like Meta's.
Page side:   GET / (chat page), GET /api/conversations, GET /api/messages?phone=&since=,
             POST /api/send {"phone", "name", "text"} or {"phone", "name", "reply": {"type","id","title"}}.
Test side:   GET /_sandbox/requests, POST /_sandbox/config, POST /_sandbox/reset (failure injection).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sanic import Request, Sanic, response
from sanic.exceptions import BadRequest
from sanic.response import HTTPResponse

from sandbox.delivery import WebhookPoster
from sandbox.evolution import EvolutionConfig, add_evolution_routes
from sandbox.store import ChatMessage, SandboxStore
from sandbox.webhooks import customer_message, status_update

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MAX_TEXT = 4096
MAX_PHONE_CHARS = 20
STATUS_RETRIES, STATUS_RETRY_SECONDS = 600, 0.5


@dataclass
class SandboxConfig:
    channel_url: str  # the channel's webhook, e.g. http://127.0.0.1:5005/webhooks/whatsapp/webhook
    app_secret: str
    access_token: str
    phone_number_id: str = "SANDBOX-PNID"
    display_number: str = "15550001234"
    evolution: EvolutionConfig | None = None  # also stand in for Evolution API (Baileys numbers)


@dataclass
class Faults:
    """Failure injection for tests: a share of sends answered with Graph errors."""

    fail_rate: float = 0.0
    codes: list[int] = field(default_factory=lambda: [130429])
    max_failures_per_payload: int = 2
    window_closed_for: set[str] = field(default_factory=set)
    random: random.Random = field(default_factory=lambda: random.Random(1))
    failures: dict[str, int] = field(default_factory=dict)


def graph_error(code: int) -> HTTPResponse:
    status = code if 500 <= code < 600 else 400  # "500" in the config means an HTTP 500
    body = {"error": {"message": f"sandbox error {code}", "type": "OAuthException", "code": code,
                      "error_data": {"details": "sandbox"}, "fbtrace_id": "Asandbox"}}
    return response.json(body, status=status)


def json_object(request: Request) -> dict[str, Any] | None:
    """The request's JSON object, or None for anything else (bad JSON included)."""
    try:
        data = request.json
    except BadRequest:
        return None
    return data if isinstance(data, dict) else None


def create_app(config: SandboxConfig, name: str = "voltbay_sandbox") -> Sanic:
    app = Sanic(name)
    app.config.REQUEST_MAX_SIZE = 1_000_000
    store = SandboxStore()
    faults = Faults()
    requests_log: list[dict[str, Any]] = []
    poster = WebhookPoster()
    app.ctx.store = store
    app.static("/static", str(STATIC), name="static")
    if config.evolution is not None:
        add_evolution_routes(app, config.evolution, store, faults, requests_log, poster)

    async def deliver_statuses(message: ChatMessage) -> None:
        """Like Meta: each status webhook is retried until the channel takes it (here for up to 5 min)."""
        for status in ("sent", "delivered"):
            payload = status_update(phone_number_id=config.phone_number_id, display_number=config.display_number,
                                    wamid=message.id, status=status, recipient=message.phone,
                                    timestamp=int(message.at),
                                    callback=message.payload.get("biz_opaque_callback_data"))
            for _ in range(STATUS_RETRIES):
                code, _ = await poster.post_signed(config.channel_url, payload, config.app_secret)
                if code == 200:
                    store.set_status(message.id, status)
                    break
                await asyncio.sleep(STATUS_RETRY_SECONDS)

    @app.after_server_stop
    async def close_poster(*_: Any) -> None:
        await poster.close()

    # --- Graph API stand-in -------------------------------------------------
    @app.post("/<version>/<phone_number_id>/messages")
    async def graph_messages(request: Request, version: str, phone_number_id: str) -> HTTPResponse:
        if request.headers.get("authorization") != f"Bearer {config.access_token}":
            return graph_error(190)
        payload = json_object(request) or {}
        record: dict[str, Any] = {"phone_number_id": phone_number_id, "payload": payload, "accepted": False}
        requests_log.append(record)
        if payload.get("status") == "read":
            read = store.set_status(str(payload.get("message_id")), "read")
            if read is not None and payload.get("typing_indicator"):
                store.typing(read.phone)
            return response.json({"success": True})
        to = str(payload.get("to") or "")
        if not to or payload.get("type") is None:
            record["error"] = 100
            return graph_error(100)
        if to in faults.window_closed_for and payload.get("type") != "template":
            record["error"] = 131047
            return graph_error(131047)
        key = json.dumps(payload, sort_keys=True)
        failed = faults.failures.get(key, 0)
        if failed < faults.max_failures_per_payload and faults.random.random() < faults.fail_rate:
            faults.failures[key] = failed + 1
            record["error"] = faults.random.choice(faults.codes)
            return graph_error(record["error"])
        record["accepted"] = True
        message = store.add(ChatMessage(id=store.new_id("out"), phone=to, direction="out", payload=payload,
                                        status="sent"))
        app.add_task(deliver_statuses(message))
        return response.json({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                              "messages": [{"id": message.id}]})

    # --- the designer's page ------------------------------------------------
    @app.get("/")
    async def page(_: Request) -> HTTPResponse:
        return await response.file(STATIC / "index.html")

    @app.get("/api/conversations")
    async def conversations(_: Request) -> HTTPResponse:
        return response.json(store.conversations())

    @app.get("/api/messages")
    async def messages(request: Request) -> HTTPResponse:
        phone = request.args.get("phone", "")
        try:
            since = int(request.args.get("since", "0"))
            wait = min(float(request.args.get("wait", "0")), 25.0)
        except ValueError:
            return response.json({"error": "since and wait must be numbers"}, status=400)
        result = store.since(phone, since)
        if not result["messages"] and wait > 0:
            await store.wait_for_change(phone, wait)
            result = store.since(phone, since)
        return response.json(result)

    @app.post("/api/send")
    async def send(request: Request) -> HTTPResponse:
        data = json_object(request)
        if data is None:
            return response.json({"error": "send a JSON object"}, status=400)
        phone = "".join(ch for ch in str(data.get("phone", "")) if ch.isdigit())
        if not 6 <= len(phone) <= MAX_PHONE_CHARS:
            return response.json({"error": "phone: 6 to 20 digits"}, status=400)
        name = str(data.get("name") or "Sandbox customer")[:60]
        reply = data.get("reply")
        text = data.get("text")
        if reply is not None:
            if not isinstance(reply, dict) or not reply.get("id") or reply.get("type") not in ("button_reply",
                                                                                               "list_reply"):
                return response.json({"error": "reply: {type: button_reply|list_reply, id, title}"}, status=400)
            reply = {"type": reply["type"], "id": str(reply["id"])[:256], "title": str(reply.get("title", ""))[:72]}
        elif not isinstance(text, str) or not text.strip():
            return response.json({"error": "text: a non-empty message"}, status=400)
        elif len(text) > MAX_TEXT:
            return response.json({"error": f"text: at most {MAX_TEXT} characters"}, status=400)
        store.phone(phone, name)
        wamid = store.new_id("in")
        payload = customer_message(phone_number_id=config.phone_number_id, display_number=config.display_number,
                                   wa_id=phone, name=name, wamid=wamid, timestamp=int(time.time()),
                                   text=text, reply=reply)
        shown = {"text": text} if reply is None else {"reply": reply}
        message = store.add(ChatMessage(id=wamid, phone=phone, direction="in", payload=shown))
        code, answer = await poster.post_signed(config.channel_url, payload, config.app_secret)
        if code == 200:
            store.set_status(wamid, "delivered")
        else:
            store.set_status(wamid, "failed", f"channel answered {code}: {answer}")
        return response.json(message.as_dict(), status=200 if code == 200 else 502)

    # --- failure injection for tests ----------------------------------------
    @app.get("/_sandbox/requests")
    async def graph_requests(request: Request) -> HTTPResponse:
        """Every request the Graph stand-in got, in order; `?since=N` skips the first N."""
        try:
            since = max(0, int(request.args.get("since", "0")))
        except ValueError:
            return response.json({"error": "since must be a number"}, status=400)
        return response.json(requests_log[since:])

    @app.post("/_sandbox/config")
    async def configure(request: Request) -> HTTPResponse:
        data = json_object(request) or {}
        faults.fail_rate = float(data.get("fail_rate", faults.fail_rate))
        faults.codes = [int(c) for c in data.get("codes", faults.codes)]
        faults.max_failures_per_payload = int(data.get("max_failures_per_payload", faults.max_failures_per_payload))
        faults.window_closed_for = set(data.get("window_closed_for", faults.window_closed_for))
        faults.random = random.Random(int(data.get("seed", 1)))
        return response.json({"ok": True})

    return app
