"""The channels' side of human handoff: authenticated routes that send an agent's reply and give
the conversation back to the bot.

    POST /webhooks/<channel>/agent/send      Authorization: Bearer $CHANNEL_AGENT_TOKEN
    {"conversation_id": "...", "text": "...", "attachment": "https://…", "agent": "ana@voltbay.es"}
    {"conversation_id": "...", "template": true, "agent": "…"}   the re-engagement template (outside 24 h)
    POST /webhooks/<channel>/agent/handback  {"conversation_id", "agent", "note"?}
    POST /webhooks/<channel>/agent/close     {"conversation_id", "agent", "csat": true|false}

handback and close append `resume` (and the note as slot `handback_note`) to the tracker, so the bot
continues with its slots intact, then send `utter_handed_back` / `utter_ask_csat` (a 1–5 list) through
the channel; the resume stays even when that send fails (the answer says so: "notified": false).

The console (or any tool) calls it; the reply goes into the conversation's outbox, behind the bot's replies,
and the channel's sender sends it with its own client, renderer, retry policy and send records (so no
Graph/Evolution code is duplicated outside connectors/). Once sent it is appended to the tracker as a bot
event with `metadata.agent`, under the conversation's lock. It goes from the business number (or instance)
that last received a message from this customer.

Answers: 200 {"sent": [...]} | 202 queued, no answer from the platform within 30 s | 400 bad body
| 401 wrong/missing token | 403 API disabled (no
token configured) | 404 conversation unknown on this channel | 409 outside WhatsApp's 24 h
window (with `template_available`) | 502 the platform refused it (reason included).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.sender import MediaTooLarge
from connectors.whatsapp.errors import OUTSIDE_WINDOW, GraphError
from connectors.whatsapp.render import template_message
from connectors.whatsapp.signature import secrets_match

logger = logging.getLogger(__name__)

TOKEN_ENV = "CHANNEL_AGENT_TOKEN"
MAX_TEXT = 4096
MAX_NAME = 100
HANDBACK_RESPONSE = "utter_handed_back"
CSAT_RESPONSE = "utter_ask_csat"


def check_token(header: str | None, expected: str) -> int | None:
    """None when authorised, else the HTTP status to answer."""
    if not expected:
        return 403
    return None if secrets_match((header or "").removeprefix("Bearer ").strip(), expected) else 401


def _conversation_and_agent(body: Any) -> tuple[tuple[str, str] | None, str | None]:
    """The fields every agent request carries: ((conversation_id, agent), None) or (None, error)."""
    if not isinstance(body, dict):
        return None, "send a JSON object"
    conversation = body.get("conversation_id")
    if not isinstance(conversation, str) or not conversation or len(conversation) > 128:
        return None, "conversation_id: a non-empty string of at most 128 characters"
    agent = body.get("agent") or "agent"
    if not isinstance(agent, str) or len(agent) > MAX_NAME:
        return None, f"agent: a name of at most {MAX_NAME} characters"
    return (conversation, agent), None


def parse_request(body: Any) -> tuple[dict[str, Any] | None, str | None]:
    """(message for the output channel + fields, None) or (None, error). Pure."""
    who, error = _conversation_and_agent(body)
    if who is None:
        return None, error
    conversation, agent = who
    template = body.get("template", False)
    if not isinstance(template, bool):
        return None, "template: true or false"
    text = body.get("text") or ""
    attachment = body.get("attachment") or ""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return None, f"text: a string of at most {MAX_TEXT} characters"
    if not isinstance(attachment, str) or (attachment and urlparse(attachment).scheme != "https"):
        return None, "attachment: an https URL"
    if not text.strip() and not attachment and not template:
        return None, "text, attachment or template is required"
    message: dict[str, Any] = {"text": text.strip()} if text.strip() else {}
    if attachment:
        message["attachment" if not attachment.lower().endswith((".png", ".jpg", ".jpeg", ".webp")) else "image"] = \
            attachment
    return {"conversation_id": conversation, "agent": agent, "message": message, "template": template}, None


def parse_resume_request(body: Any, *, with_note: bool) -> tuple[dict[str, Any] | None, str | None]:
    """Fields of a handback/close request, or the error. Pure."""
    who, error = _conversation_and_agent(body)
    if who is None:
        return None, error
    conversation, agent = who
    note = body.get("note") or ""
    if not isinstance(note, str) or len(note) > MAX_TEXT:
        return None, f"note: a string of at most {MAX_TEXT} characters"
    csat = body.get("csat", True)
    if not isinstance(csat, bool):
        return None, "csat: true or false"
    return {"conversation_id": conversation, "agent": agent, "note": note.strip() if with_note else "",
            "csat": csat}, None


async def append_events(agent: Any, conversation_id: str, events: list[Any]) -> Any:
    """Append events to the tracker under the conversation's lock; returns the tracker (None without Rasa)."""
    if agent is None or getattr(agent, "tracker_store", None) is None:
        return None
    async with agent.lock_store.lock(conversation_id):
        tracker = await agent.tracker_store.get_or_create_tracker(conversation_id)
        for event in events:
            tracker.update(event)
        await agent.tracker_store.save(tracker)
    return tracker


async def record_agent_message(agent: Any, conversation_id: str, text: str, metadata: dict[str, Any]) -> None:
    """Append the agent's reply to the tracker as a bot event (the transcript shows it; Rasa ignores it)."""
    from rasa.shared.core.events import BotUttered

    await append_events(agent, conversation_id, [BotUttered(text, metadata=metadata, timestamp=time.time())])


def _refusal(request: Request) -> HTTPResponse | None:
    refused = check_token(request.headers.get("Authorization"), os.environ.get(TOKEN_ENV, ""))
    if refused == 403:
        return response.json({"error": f"agent API disabled: set {TOKEN_ENV}"}, status=403)
    if refused:
        return response.json({"error": "missing or wrong bearer token"}, status=401)
    return None


def _json_body(request: Request) -> Any:
    try:
        return request.json
    except Exception:  # malformed JSON: the parser answers 400
        return None


@dataclass(frozen=True)
class SendOutcome:
    sent: list[str]  # message ids the platform accepted
    error: dict[str, Any] | None = None  # the answer's body when a send failed for good
    status: int = 200


SEND_WAIT_SECONDS = 30.0  # how long the agent's request waits for the platform's answer


async def _settled(channel: Any, row_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The outbox rows' records once each is sent or failed (or as they are when the wait runs out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SEND_WAIT_SECONDS
    while True:
        states = await channel.queue.send_states(row_ids)
        if all(state["state"] in ("sent", "failed") for state in states.values()) or loop.time() >= deadline:
            return states
        await asyncio.sleep(0.05)


async def _send(request: Request, channel: Any, row: Any, message: dict[str, Any], agent_name: str,
                source: str) -> SendOutcome:
    """An agent's message into the conversation's outbox, behind the bot's replies still going out; answered
    with what the platform said, and recorded in the tracker once it went out."""
    outgoing = {k: v for k, v in message.items() if not (k == "text" and "custom" in message)}  # (the template)
    ids = await channel.queue_outside_a_turn(row.conversation_id, [outgoing])
    states = await _settled(channel, ids)
    sent = [state["message_id"] for state in states.values() if state["state"] == "sent"]
    failed = [state for state in states.values() if state["state"] != "sent"]
    if sent:
        metadata = {"agent": agent_name, "source": source, "channel": channel.name(), "message_ids": sent}
        if message.get("buttons"):
            metadata["buttons"] = message["buttons"]
        await record_agent_message(getattr(request.app.ctx, "agent", None), row.conversation_id,
                                   message.get("text") or message.get("attachment") or message.get("image", ""),
                                   metadata)
    if not failed:
        return SendOutcome(sent)
    first = failed[0]
    if first["error_code"] == OUTSIDE_WINDOW:
        return SendOutcome(sent, {"error": "outside_24h_window", "sent": sent,
                                  "template_available": bool(getattr(channel.settings, "template", None))}, 409)
    if first["state"] != "failed":
        return SendOutcome(sent, {"error": "queued; the platform has not answered yet", "sent": sent}, 202)
    return SendOutcome(sent, {"error": first["error"] or "send failed", "sent": sent}, 502)


async def _conversation_row(channel: Any, conversation_id: str) -> Any:
    return await channel.queue.last_message_of(channel.name(), conversation_id)


def _unknown(channel: Any, conversation_id: str) -> HTTPResponse:
    return response.json({"error": f"no {channel.name()} conversation {conversation_id!r}"}, status=404)


MEDIA_ID = re.compile(r"^[A-Za-z0-9_:-]{1,256}$")  # Graph ids are digits, Baileys key ids hex
MIME = re.compile(r"^[a-z]+/[a-z0-9.+-]{1,100}$")


def add_agent_routes(bp: Blueprint, channel: Any) -> None:
    """Registers POST <prefix>/agent/send|handback|close and GET <prefix>/agent/media for an InboxChannel."""

    @bp.route("/agent/media", methods=["GET"])
    async def agent_media(request: Request) -> HTTPResponse:
        """A customer's media file (?conversation_id=&media_id=), fetched with the channel's own client."""
        refused = _refusal(request)
        if refused:
            return refused
        conversation = request.args.get("conversation_id") or ""
        media_id = request.args.get("media_id") or ""
        if not conversation or len(conversation) > 128 or not MEDIA_ID.match(media_id):
            return response.json({"error": "conversation_id and media_id are required"}, status=400)
        row = await _conversation_row(channel, conversation)
        if row is None:
            return _unknown(channel, conversation)
        try:
            content, mime = await channel.client.download_media(row.business_id, media_id)
        except MediaTooLarge as error:
            return response.json({"error": f"media too large ({error})"}, status=413)
        except GraphError as error:
            return response.json({"error": str(error)}, status=404 if error.http_status == 404 else 502)
        mime = mime.split(";")[0].strip().lower()
        return response.raw(content, content_type=mime if MIME.match(mime) else "application/octet-stream")

    @bp.route("/agent/send", methods=["POST"])
    async def agent_send(request: Request) -> HTTPResponse:
        refused = _refusal(request)
        if refused:
            return refused
        parsed, error = parse_request(_json_body(request))
        if parsed is None:
            return response.json({"error": error}, status=400)
        row = await _conversation_row(channel, parsed["conversation_id"])
        if row is None:
            return _unknown(channel, parsed["conversation_id"])
        message = parsed["message"]
        if parsed["template"]:  # re-open the 24 h window with the approved template (Cloud API)
            template = getattr(channel.settings, "template", None)
            if not template:
                return response.json({"error": "no_template_configured"}, status=409)
            message = {"custom": template_message(row.reply_to, *template), "text": f"[template {template[0]}]"}
        outcome = await _send(request, channel, row, message, parsed["agent"], "agent_api")
        return response.json(outcome.error or {"sent": outcome.sent}, status=outcome.status)

    async def resume(request: Request, *, close: bool) -> HTTPResponse:
        refused = _refusal(request)
        if refused:
            return refused
        parsed, error = parse_resume_request(_json_body(request), with_note=not close)
        if parsed is None:
            return response.json({"error": error}, status=400)
        row = await _conversation_row(channel, parsed["conversation_id"])
        if row is None:
            return _unknown(channel, parsed["conversation_id"])
        from rasa.shared.core.constants import ACTION_LISTEN_NAME
        from rasa.shared.core.events import ActionExecuted, ConversationResumed, SlotSet

        rasa_agent = getattr(request.app.ctx, "agent", None)
        events: list[Any] = [ConversationResumed(metadata={"agent": parsed["agent"], "closed": close})]
        if parsed["note"]:
            events.append(SlotSet("handback_note", parsed["note"]))
        # Messages received while paused were logged without a turn: the bot listens again from here,
        # so the next message starts a normal turn (rules and stories match again).
        events.append(ActionExecuted(ACTION_LISTEN_NAME))
        tracker = await append_events(rasa_agent, parsed["conversation_id"], events)
        utterance = (CSAT_RESPONSE if parsed["csat"] else None) if close else HANDBACK_RESPONSE
        if utterance is None or tracker is None:
            return response.json({"resumed": True, "notified": False, "sent": []})
        message = await rasa_agent.nlg.generate(utterance, tracker, channel.name())
        if not message:
            return response.json({"resumed": True, "notified": False, "sent": [],
                                  "error": f"the domain has no response {utterance}"})
        message = {key: value for key, value in message.items() if value}
        outcome = await _send(request, channel, row, message, parsed["agent"], f"agent_api:{utterance}")
        return response.json({"resumed": True, "notified": outcome.error is None,
                              **(outcome.error or {"sent": outcome.sent})}, status=outcome.status)

    @bp.route("/agent/handback", methods=["POST"])
    async def agent_handback(request: Request) -> HTTPResponse:
        return await resume(request, close=False)

    @bp.route("/agent/close", methods=["POST"])
    async def agent_close(request: Request) -> HTTPResponse:
        return await resume(request, close=True)
