"""A tracker store with Rasa's `events` table, and a Rasa stand-in for the console's calls."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, insert
from sqlalchemy.engine import Engine

tracker_metadata = MetaData()
# The columns of Rasa 3.6's SQLTrackerStore.SQLEvent.
events_table = Table(
    "events", tracker_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sender_id", String(255), nullable=False, index=True),
    Column("type_name", String(255), nullable=False),
    Column("timestamp", Float),
    Column("intent_name", String(255)),
    Column("action_name", String(255)),
    Column("data", Text),
)


def add_events(engine: Engine, sender_id: str, events: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        for event in events:
            event.setdefault("timestamp", time.time())
            conn.execute(insert(events_table).values(
                sender_id=sender_id, type_name=event["event"], timestamp=event["timestamp"],
                intent_name=((event.get("parse_data") or {}).get("intent") or {}).get("name"),
                action_name=event.get("name") if event["event"] == "action" else None, data=json.dumps(event)))


def user(text: str, intent: str = "faq", confidence: float = 0.9, channel: str = "whatsapp", at: float | None = None,
         name: str = "Maria", wa_id: str = "34600000001", entities: list[dict[str, Any]] | None = None
         ) -> dict[str, Any]:
    return {"event": "user", "text": text, "timestamp": at or time.time(), "input_channel": channel,
            "parse_data": {"intent": {"name": intent, "confidence": confidence}, "entities": entities or []},
            "metadata": {"channel": channel, "profile_name": name, "wa_id": wa_id, "display_phone_number": "15550001",
                         "message_type": "text"}}


def handoff_events(reason: str = "customer_request", summary: str = "Wants a person.",
                   at: float | None = None) -> list[dict[str, Any]]:
    events = [{"event": "action", "name": "action_handoff", "policy": "RulePolicy", "confidence": 1.0},
            {"event": "bot", "text": "I'm passing you to a person", "metadata": {}},
            {"event": "slot", "name": "handoff_reason", "value": reason},
            {"event": "slot", "name": "handoff_summary", "value": summary},
            {"event": "pause"}]
    for event in events:
        event["timestamp"] = at or time.time()
    return events


@dataclass
class RasaStandIn:
    """Answers the channels' agent routes and Rasa's events API like Rasa does, and records the calls.
    handback/close append `resume` to the tracker, as the real route does."""

    tracker: Engine
    calls: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    send_status: int = 200
    send_body: dict[str, Any] = field(default_factory=lambda: {"sent": ["wamid.agent.1"]})

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"null") if request.method == "POST" else None
        path = request.url.path
        self.calls.append((path, body, dict(request.headers)))
        if path.endswith("/agent/media"):
            if request.url.params.get("media_id") == "MEDIA1":
                return httpx.Response(200, content=b"\x89PNG fake", headers={"content-type": "image/png"})
            if request.url.params.get("media_id") == "DOC1":
                return httpx.Response(200, content=b"<html><script>x</script>", headers={"content-type": "text/html"})
            return httpx.Response(502, json={"error": "Graph API error"})
        if path.endswith("/agent/send"):
            return httpx.Response(self.send_status, json=self.send_body)
        if path.endswith(("/agent/handback", "/agent/close")):
            add_events(self.tracker, body["conversation_id"],
                       [{"event": "resume", "metadata": {"agent": body["agent"], "closed": path.endswith("close")}}])
            return httpx.Response(200, json={"resumed": True, "notified": True, "sent": ["wamid.x"]})
        if path.endswith("/tracker/events"):
            sender = path.split("/")[2]
            add_events(self.tracker, sender, [dict(e) for e in body])
            return httpx.Response(200, json={"sender_id": sender})
        return httpx.Response(404, json={"error": "unknown"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)
