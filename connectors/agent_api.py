"""The channels' side of human handoff: an authenticated route that sends an agent's reply.

    POST /webhooks/<channel>/agent/send      Authorization: Bearer $CHANNEL_AGENT_TOKEN
    {"conversation_id": "...", "text": "...", "attachment": "https://…", "agent": "ana@voltbay.es"}

The console (or any tool) calls it; the channel that received the conversation sends the reply
with its own client, renderer, retry policy and send records (so no Graph/Evolution code is
duplicated outside connectors/), and the reply is appended to the tracker as a bot event with
`metadata.agent`, under the conversation's lock. The reply goes from the business number (or
instance) that last received a message from this customer.

Answers: 200 {"sent": [...]} | 400 bad body | 401 wrong/missing token | 403 API disabled (no
token configured) | 404 conversation unknown on this channel | 409 outside WhatsApp's 24 h
window (with `template_available`) | 502 the platform refused it (reason included).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any
from urllib.parse import urlparse

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.whatsapp.errors import OUTSIDE_WINDOW
from connectors.whatsapp.signature import secrets_match

logger = logging.getLogger(__name__)

TOKEN_ENV = "CHANNEL_AGENT_TOKEN"
MAX_TEXT = 4096
MAX_NAME = 100


def check_token(header: str | None, expected: str) -> int | None:
    """None when authorised, else the HTTP status to answer."""
    if not expected:
        return 403
    return None if secrets_match((header or "").removeprefix("Bearer ").strip(), expected) else 401


def parse_request(body: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(message for the output channel + fields, None) or (None, error). Pure."""
    if not isinstance(body, dict):
        return None, "send a JSON object"
    conversation = body.get("conversation_id")
    if not isinstance(conversation, str) or not conversation or len(conversation) > 128:
        return None, "conversation_id: a non-empty string of at most 128 characters"
    text = body.get("text") or ""
    attachment = body.get("attachment") or ""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return None, f"text: a string of at most {MAX_TEXT} characters"
    if not isinstance(attachment, str) or (attachment and urlparse(attachment).scheme != "https"):
        return None, "attachment: an https URL"
    if not text.strip() and not attachment:
        return None, "text or attachment is required"
    agent = body.get("agent") or "agent"
    if not isinstance(agent, str) or len(agent) > MAX_NAME:
        return None, f"agent: a name of at most {MAX_NAME} characters"
    message: dict[str, Any] = {"text": text.strip()} if text.strip() else {}
    if attachment:
        message["attachment" if not attachment.lower().endswith((".png", ".jpg", ".jpeg", ".webp")) else "image"] = \
            attachment
    return {"conversation_id": conversation, "agent": agent, "message": message}, None


async def record_agent_message(agent: Any, conversation_id: str, text: str, metadata: dict[str, Any]) -> None:
    """Append the agent's reply to the tracker as a bot event (the transcript shows it; Rasa ignores it)."""
    if agent is None or getattr(agent, "tracker_store", None) is None:
        return
    from rasa.shared.core.events import BotUttered

    async with agent.lock_store.lock(conversation_id):
        tracker = await agent.tracker_store.get_or_create_tracker(conversation_id)
        tracker.update(BotUttered(text, metadata=metadata, timestamp=time.time()))
        await agent.tracker_store.save(tracker)


def add_agent_routes(bp: Blueprint, channel: Any) -> None:
    """Registers POST <prefix>/agent/send for an InboxChannel."""

    @bp.route("/agent/send", methods=["POST"])
    async def agent_send(request: Request) -> HTTPResponse:
        refused = check_token(request.headers.get("Authorization"), os.environ.get(TOKEN_ENV, ""))
        if refused == 403:
            return response.json({"error": f"agent API disabled: set {TOKEN_ENV}"}, status=403)
        if refused:
            return response.json({"error": "missing or wrong bearer token"}, status=401)
        try:
            body = request.json
        except Exception:
            body = None
        parsed, error = parse_request(body)
        if parsed is None:
            return response.json({"error": error}, status=400)
        row = await asyncio.to_thread(channel.inbox.last_message_of, channel.name(), parsed["conversation_id"])
        if row is None:
            return response.json({"error": f"no {channel.name()} conversation {parsed['conversation_id']!r}"},
                                 status=404)
        output = channel.agent_output_for(row)
        await output.send_response(row.reply_to, parsed["message"])
        failed = [result for _row_id, result in output.results if not result.ok]
        sent = [result.message_id for _row_id, result in output.results if result.ok]
        if sent:
            metadata = {"agent": parsed["agent"], "source": "agent_api", "channel": channel.name(),
                        "message_ids": sent}
            await record_agent_message(getattr(request.app.ctx, "agent", None), parsed["conversation_id"],
                                       parsed["message"].get("text") or parsed["message"].get("attachment")
                                       or parsed["message"].get("image", ""), metadata)
        if not failed:
            return response.json({"sent": sent})
        first = failed[0].error
        if first is not None and first.code == OUTSIDE_WINDOW:
            return response.json({"error": "outside_24h_window", "sent": sent,
                                  "template_available": bool(getattr(channel.settings, "template", None))},
                                 status=409)
        return response.json({"error": str(first) if first else "send failed", "sent": sent}, status=502)
