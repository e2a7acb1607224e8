"""What an agent can do, once, for both the HTML pages and the JSON API: every state change audited."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any
from urllib.parse import urlparse

from sqlalchemy.engine import Engine

from console import store
from console.auth import Agent, audit
from console.rasa_client import AGENT_CHANNELS, RasaClient
from console.readers import Readers
from console.store import ConsoleError
from console.tables import ASSIGNED, BOT, CLOSED, WAITING
from console.transcript import build_transcript

logger = logging.getLogger(__name__)

MAX_REPLY = 4096


def last_question(events: list[dict[str, Any]]) -> str | None:
    """The customer's latest typed message (tapped buttons are payloads, not questions)."""
    for event in reversed(events):
        text = str(event.get("text") or "")
        if event.get("event") == "user" and text.strip() and not text.startswith("/"):
            return text
    return None


def whatsapp_window_closed(row: dict[str, Any]) -> bool:
    """A WhatsApp conversation whose 24 h customer-service window is over (free text is refused)."""
    return row.get("channel") in AGENT_CHANNELS and store.outside_window(row)


@functools.cache
def _knowledge_base() -> Any:
    """Opened on the first suggestion (loading the embedder takes a moment), then shared."""
    from retrieval.service import KnowledgeBase

    return KnowledgeBase.from_env()


def suggest_from_kb(question: str) -> dict[str, Any]:
    """The knowledge base's answer to the question, with its sources (runs in a thread)."""
    reply = _knowledge_base().reply(question)
    return {"question": question, "mode": reply.answer.mode,
            "text": reply.answer.text if reply.answer.mode != "no_answer" else "",
            "sources": [{"doc_id": h.doc_id, "title": h.title, "section": h.title_path, "source": h.source}
                        for h in reply.answer.sources]}


class Console:
    def __init__(self, engine: Engine, readers: Readers, rasa: RasaClient,
                 suggest: Callable[[str], dict[str, Any]] = suggest_from_kb) -> None:
        self.engine = engine
        self.readers = readers
        self.rasa = rasa
        self.suggest_answer = suggest

    # --- reading ------------------------------------------------------------------------
    def queue(self, agent: Agent, view: str, offset: int = 0) -> dict[str, Any]:
        with self.engine.connect() as conn:
            items = store.queue(conn, view, agent.id, offset=offset)
            counts = store.queue_counts(conn, agent.id)
        now = time.time()
        for item in items:
            item["waiting_seconds"] = int(now - item["waiting_since"]) if item.get("waiting_since") else None
        return {"filter": view, "counts": counts, "conversations": items}

    def view(self, sender_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = store.conversation(conn, sender_id)
            notes = store.list_notes(conn, sender_id)
            canned = store.canned(conn)
        events = store.tracker_events(self.readers, sender_id)
        sends, statuses = store.sends_and_statuses(self.readers, sender_id)
        entries = build_transcript(events, sends, statuses, store.unanswered_messages(self.readers, sender_id))
        return {"conversation": row, "transcript": entries, "notes": notes, "canned": canned,
                "outside_window": whatsapp_window_closed(row), "can_message": row.get("channel") in AGENT_CHANNELS}

    @staticmethod
    def transcript_json(entries: list[Any]) -> list[dict[str, Any]]:
        return [{**asdict(e), "failed": e.failed, "ticks": e.ticks} for e in entries]

    # --- state changes ----------------------------------------------------------------------
    def _row_for_action(self, agent: Agent, sender_id: str) -> dict[str, Any]:
        """The conversation, claimed for `agent` when it is waiting; refused when the bot or someone else has it."""
        with self.engine.begin() as conn:
            row = store.conversation(conn, sender_id)
            if row["status"] == WAITING:
                store.claim(conn, sender_id, agent.id, agent.id)
                row = store.conversation(conn, sender_id)
            elif row["status"] != ASSIGNED:
                raise ConsoleError("this conversation is not handed over to a person", 409)
            elif row["assigned_to"] != agent.id and not agent.is_admin:
                raise ConsoleError(f"{row.get('agent_name') or 'another agent'} has this conversation", 409)
        return row

    def claim(self, agent: Agent, sender_id: str, assignee: int | None = None) -> None:
        if assignee is not None and assignee != agent.id and not agent.is_admin:
            raise ConsoleError("only admins assign conversations to others", 403)
        with self.engine.begin() as conn:
            store.claim(conn, sender_id, assignee or agent.id, agent.id)

    def add_note(self, agent: Agent, sender_id: str, text: str) -> int:
        with self.engine.begin() as conn:
            store.conversation(conn, sender_id)
            return store.add_note(conn, sender_id, agent.id, text)

    async def reply(self, agent: Agent, sender_id: str, text: str = "", attachment: str = "",
                    template: bool = False) -> dict[str, Any]:
        text = (text or "").strip()
        attachment = (attachment or "").strip()
        if len(text) > MAX_REPLY:
            raise ConsoleError(f"reply: at most {MAX_REPLY} characters")
        if attachment and urlparse(attachment).scheme != "https":
            raise ConsoleError("attachment: an https URL")
        if not text and not attachment and not template:
            raise ConsoleError("write a reply, add an attachment URL or send the template")
        row = self._row_for_action(agent, sender_id)
        if not template and whatsapp_window_closed(row):
            raise ConsoleError("outside_24h_window: WhatsApp delivers free text only within 24 h of the "
                               "customer's last message; send the template instead", 409)
        body: dict[str, Any] = {"conversation_id": sender_id, "agent": agent.name, "template": template}
        if text:
            body["text"] = text
        if attachment:
            body["attachment"] = attachment
        answer = await self.rasa.channel_call(row.get("channel") or "", "send", body)
        with self.engine.begin() as conn:
            audit(conn, agent.id, "reply" if answer.ok else "reply_failed", sender_id, chars=len(text),
                  attachment=bool(attachment), template=template, status=answer.status,
                  error=None if answer.ok else answer.error)
        if not answer.ok:
            raise ConsoleError(answer.error, 409 if answer.status in (404, 409) else 502)
        return answer.body

    async def _resume(self, agent: Agent, sender_id: str, action: str, body: dict[str, Any],
                      closing: bool) -> dict[str, Any]:
        row = self._row_for_action(agent, sender_id)
        channel = row.get("channel") or ""
        if channel in AGENT_CHANNELS:
            answer = await self.rasa.channel_call(channel, action, {"conversation_id": sender_id,
                                                                    "agent": agent.name, **body})
            resumed = answer.ok or bool(answer.body.get("resumed"))
        else:
            events: list[dict[str, Any]] = [{"event": "resume", "timestamp": time.time(),
                                             "metadata": {"agent": agent.name, "closed": closing}}]
            if body.get("note"):
                events.append({"event": "slot", "name": "handback_note", "value": body["note"]})
            events.append({"event": "action", "name": "action_listen"})  # see connectors/agent_api.py
            answer = await self.rasa.append_events(sender_id, events)
            resumed = answer.ok
        with self.engine.begin() as conn:
            if resumed:
                values = {"closed_at": time.time(), "closed_by": agent.id} if closing else {}
                store.mark(conn, sender_id, CLOSED if closing else BOT, agent.id, **values)
            audit(conn, agent.id, action if resumed else f"{action}_failed", sender_id, status=answer.status,
                  notified=answer.body.get("notified"), error=None if answer.ok else answer.error, **body)
        if not resumed:
            raise ConsoleError(answer.error, 502)
        return {"resumed": True, "notified": bool(answer.body.get("notified")),
                "warning": None if answer.ok else answer.error}

    async def handback(self, agent: Agent, sender_id: str, note: str = "") -> dict[str, Any]:
        note = (note or "").strip()
        if len(note) > store.MAX_NOTE:
            raise ConsoleError(f"note: at most {store.MAX_NOTE} characters")
        return await self._resume(agent, sender_id, "handback", {"note": note}, closing=False)

    async def close(self, agent: Agent, sender_id: str, csat: bool = True) -> dict[str, Any]:
        return await self._resume(agent, sender_id, "close", {"csat": bool(csat)}, closing=True)

    async def suggest(self, sender_id: str) -> dict[str, Any]:
        events = store.tracker_events(self.readers, sender_id)
        question = last_question(events)
        if question is None:
            raise ConsoleError("the customer has not asked anything yet", 404)
        try:
            return await asyncio.to_thread(self.suggest_answer, question)
        except Exception as error:  # the knowledge base being down must not break the console
            logger.exception("agent assist failed")
            raise ConsoleError(f"the knowledge base is unavailable ({error.__class__.__name__})", 503) from error

    async def media(self, sender_id: str, media_id: str) -> tuple[bytes, str]:
        """A customer's media file of this conversation (only ids the conversation's messages carry)."""
        with self.engine.connect() as conn:
            row = store.conversation(conn, sender_id)
        events = store.tracker_events(self.readers, sender_id)
        known = {str(((e.get("metadata") or {}).get("media") or {}).get("id")) for e in events
                 if e.get("event") == "user"}
        if media_id not in known:
            raise ConsoleError("no such media in this conversation", 404)
        status, content, mime = await self.rasa.channel_media(row.get("channel") or "", sender_id, media_id)
        if status != 200:
            raise ConsoleError(f"the channel could not fetch the media (HTTP {status})", 404 if status == 404 else 502)
        return content, mime

    def canned_for(self, agent: Agent, sender_id: str, canned_id: int) -> str:
        with self.engine.connect() as conn:
            row = store.conversation(conn, sender_id)
            item = next((c for c in store.canned(conn) if c["id"] == canned_id), None)
        if item is None:
            raise ConsoleError("no such canned response", 404)
        events = store.tracker_events(self.readers, sender_id, limit=500)
        order = next((e.get("value") for e in reversed(events)
                      if e.get("event") == "slot" and e.get("name") == "order_number" and e.get("value")), "")
        return store.fill_placeholders(item["text"], {"customer_name": row.get("customer_name") or "",
                                                      "agent_name": agent.name, "order_number": str(order or "")})
