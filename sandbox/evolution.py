"""Evolution API v2 stand-in: the endpoints the `evolution` channel and `make evolution-setup` call.

Answers in Evolution's documented shapes (sendText → 201 {key:{id}, status:"PENDING"}), checks the
`apikey` header, shares the Graph side's failure injection (a failing send answers HTTP 500 or
429), and sends `messages.update` webhooks (SERVER_ACK, DELIVERY_ACK) back to the channel with
the secret header, retried like Evolution's own webhook delivery. Sent messages show on the
sandbox page under the customer's number.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any

from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

from sandbox.delivery import WebhookPoster
from sandbox.store import ChatMessage, SandboxStore

WEBHOOK_RETRIES, WEBHOOK_RETRY_SECONDS = 600, 0.5
# A 1×1 PNG: what /instance/connect returns as the QR in the stand-in.
TINY_PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f6e0000000049454e44ae426082")).decode()


@dataclass
class EvolutionConfig:
    api_key: str
    channel_url: str  # e.g. http://127.0.0.1:5005/webhooks/evolution/webhook
    secret: str
    instance: str = "voltbay"


def customer_upsert(instance: str, jid: str, key_id: str, text: str, name: str = "Sandbox customer",
                    **key_extra: Any) -> dict[str, Any]:
    """A messages.upsert webhook as Evolution sends it for an incoming text."""
    return {"event": "messages.upsert", "instance": instance, "data": {
        "key": {"remoteJid": jid, "fromMe": False, "id": key_id, **key_extra}, "pushName": name,
        "message": {"conversation": text}, "messageType": "conversation", "messageTimestamp": int(time.time())},
        "date_time": time.strftime("%Y-%m-%dT%H:%M:%S"), "sender": jid}


def add_evolution_routes(app: Sanic, config: EvolutionConfig, store: SandboxStore, faults: Any,
                         requests_log: list[dict[str, Any]], poster: WebhookPoster) -> None:
    async def deliver_updates(message: ChatMessage, jid: str, instance: str) -> None:
        for status, name in (("SERVER_ACK", "sent"), ("DELIVERY_ACK", "delivered")):
            payload = {"event": "messages.update", "instance": instance, "data": {
                "keyId": message.id, "remoteJid": jid, "fromMe": True, "status": status,
                "messageTimestamp": int(message.at)}}
            body = json.dumps(payload).encode()
            for _ in range(WEBHOOK_RETRIES):
                code, _ = await poster.post(config.channel_url, body, {"X-Evolution-Secret": config.secret})
                if code == 200:
                    store.set_status(message.id, name)
                    break
                await asyncio.sleep(WEBHOOK_RETRY_SECONDS)

    def refused(request: Request) -> HTTPResponse | None:
        if request.headers.get("apikey") != config.api_key:
            return response.json({"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}},
                                 status=401)
        return None

    def body_of(request: Request) -> dict[str, Any]:
        try:
            data = request.json
        except Exception:
            return {}
        return data if isinstance(data, dict) else {}

    async def send(request: Request, instance: str, kind: str) -> HTTPResponse:
        if (denied := refused(request)) is not None:
            return denied
        payload = body_of(request)
        record: dict[str, Any] = {"api": "evolution", "instance": instance, "endpoint": kind, "payload": payload,
                                  "accepted": False}
        requests_log.append(record)
        number = str(payload.get("number") or "")
        if not number or (kind == "sendText" and not payload.get("text")) or (kind == "sendMedia" and
                                                                          not payload.get("media")):
            return response.json({"status": 400, "error": "Bad Request",
                                  "response": {"message": ["number and text/media are required"]}}, status=400)
        key = json.dumps(payload, sort_keys=True)
        failed = faults.failures.get(key, 0)
        if failed < faults.max_failures_per_payload and faults.random.random() < faults.fail_rate:
            faults.failures[key] = failed + 1
            status = faults.random.choice([500, 429])
            record["error"] = status
            return response.json({"status": status, "error": "stand-in failure", "response": {"message": ["busy"]}},
                                 status=status)
        record["accepted"] = True
        digits = number.split("@", 1)[0]
        media_type = str(payload.get("mediatype") or "document")
        shown = ({"type": "text", "text": {"body": payload["text"]}} if kind == "sendText" else
                 {"type": media_type, media_type: {"link": payload.get("media"), "caption": payload.get("caption")}})
        message = store.add(ChatMessage(id=store.new_id("evo"), phone=digits, direction="out", payload=shown,
                                        status="sent"))
        jid = number if "@" in number else f"{number}@s.whatsapp.net"
        app.add_task(deliver_updates(message, jid, instance))
        return response.json({"key": {"remoteJid": jid, "fromMe": True, "id": message.id},
                              "messageTimestamp": int(message.at), "status": "PENDING"}, status=201)

    @app.post("/message/sendText/<instance>")
    async def send_text(request: Request, instance: str) -> HTTPResponse:
        return await send(request, instance, "sendText")

    @app.post("/message/sendMedia/<instance>")
    async def send_media(request: Request, instance: str) -> HTTPResponse:
        return await send(request, instance, "sendMedia")

    @app.post("/chat/sendPresence/<instance>")
    async def presence(request: Request, instance: str) -> HTTPResponse:
        requests_log.append({"api": "evolution", "instance": instance, "endpoint": "sendPresence",
                             "payload": body_of(request), "accepted": True})
        return refused(request) or response.json({"presence": body_of(request).get("presence")}, status=201)

    @app.post("/chat/markMessageAsRead/<instance>")
    async def mark_read(request: Request, instance: str) -> HTTPResponse:
        requests_log.append({"api": "evolution", "instance": instance, "endpoint": "markMessageAsRead",
                             "payload": body_of(request), "accepted": True})
        return refused(request) or response.json({"message": "Read messages", "read": "success"}, status=201)

    instances: dict[str, dict[str, Any]] = {}

    @app.post("/instance/create")
    async def create(request: Request) -> HTTPResponse:
        if (denied := refused(request)) is not None:
            return denied
        name = str(body_of(request).get("instanceName") or "")
        instances[name] = {"state": "connecting", "webhook": None}
        return response.json({"instance": {"instanceName": name, "status": "created"},
                              "qrcode": {"base64": f"data:image/png;base64,{TINY_PNG}"}}, status=201)

    @app.get("/instance/connectionState/<name>")
    async def state(request: Request, name: str) -> HTTPResponse:
        if (denied := refused(request)) is not None:
            return denied
        if name not in instances:
            return response.json({"status": 404, "error": "Not Found",
                                  "response": {"message": [f'The "{name}" instance does not exist']}}, status=404)
        return response.json({"instance": {"instanceName": name, "state": instances[name]["state"]}})

    @app.get("/instance/connect/<name>")
    async def connect(request: Request, name: str) -> HTTPResponse:
        return refused(request) or response.json({"pairingCode": "WZYEH1YY", "code": "2@sandbox",
                                                  "base64": f"data:image/png;base64,{TINY_PNG}", "count": 1})

    @app.post("/webhook/set/<name>")
    async def set_webhook(request: Request, name: str) -> HTTPResponse:
        if (denied := refused(request)) is not None:
            return denied
        instances.setdefault(name, {"state": "connecting"})["webhook"] = body_of(request).get("webhook")
        return response.json({"webhook": {"instanceName": name, **(body_of(request).get("webhook") or {})}},
                             status=201)

    @app.get("/_sandbox/evolution/instances")
    async def list_instances(_: Request) -> HTTPResponse:
        return response.json(instances)
