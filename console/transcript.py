"""A conversation's transcript for the agent, built from tracker events and the channels' send records.

Pure: events (Rasa's event dicts, oldest first), outbound send rows and delivery statuses in, a list
of entries out. Each customer message carries NLU's reading (intent, confidence, entities); each bot
message the action and policy that produced it and the knowledge sources it used; agent messages
who sent them; sends carry WhatsApp's ticks or the failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TICK_ORDER = {"sending": 0, "sent": 1, "delivered": 2, "read": 3}


@dataclass
class Delivery:
    message_id: str | None
    status: str  # sending | sent | delivered | read | failed | interrupted
    error: str | None = None


@dataclass
class Entry:
    kind: str  # customer | bot | agent | system
    timestamp: float
    text: str = ""
    intent: str | None = None
    confidence: float | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    action: str | None = None
    policy: str | None = None
    action_confidence: float | None = None
    knowledge: dict[str, Any] | None = None
    buttons: list[dict[str, Any]] = field(default_factory=list)
    image: str | None = None
    media: dict[str, Any] | None = None  # inbound media/location/contacts as the channel described them
    agent: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(d.status in ("failed", "interrupted") for d in self.deliveries)

    @property
    def ticks(self) -> str:
        """The least advanced status of this entry's sends (a message is read when all its parts are)."""
        statuses = [d.status for d in self.deliveries if d.status in TICK_ORDER]
        return min(statuses, key=TICK_ORDER.__getitem__) if statuses else ""


def latest_statuses(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """wamid → (most advanced status, error); failed wins over everything."""
    out: dict[str, tuple[str, str | None]] = {}
    for row in rows:
        wamid, status = str(row["message_id"]), str(row["status"])
        current = out.get(wamid)
        if status == "failed":
            out[wamid] = (status, row.get("errors"))
        elif current is None or (current[0] != "failed" and
                                 TICK_ORDER.get(status, -1) > TICK_ORDER.get(current[0], -1)):
            out[wamid] = (status, None)
    return out


def _media(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    for key in ("media", "location", "contacts", "reaction", "unsupported"):
        if metadata.get(key):
            return {"kind": key, "detail": metadata[key]}
    return None


def _customer(event: Mapping[str, Any]) -> Entry:
    parse = event.get("parse_data") or {}
    intent = parse.get("intent") or {}
    name = intent.get("name")
    selector = ((parse.get("response_selector") or {}).get(str(name)) or {}).get("response") or {}
    metadata = event.get("metadata") or {}
    return Entry("customer", float(event.get("timestamp") or 0), text=str(event.get("text") or ""),
                 intent=selector.get("intent_response_key") or name,
                 confidence=intent.get("confidence"),
                 entities=[{"entity": e.get("entity"), "value": e.get("value")} for e in parse.get("entities") or []],
                 media=_media(metadata))


def build_transcript(events: Sequence[Mapping[str, Any]], outbound: Sequence[Mapping[str, Any]] = (),
                     statuses: Sequence[Mapping[str, Any]] = ()) -> list[Entry]:
    ticks = latest_statuses(statuses)
    entries: list[Entry] = []
    last_action: Mapping[str, Any] = {}
    for event in events:
        kind = event.get("event")
        at = float(event.get("timestamp") or 0)
        if kind == "user":
            entries.append(_customer(event))
        elif kind == "action":
            last_action = event
        elif kind == "bot":
            metadata = event.get("metadata") or {}
            data = event.get("data") or {}
            agent = metadata.get("agent")
            entry = Entry("agent" if agent else "bot", at, text=str(event.get("text") or ""), agent=agent,
                          buttons=list(data.get("buttons") or metadata.get("buttons") or []),
                          image=data.get("image"), knowledge=metadata.get("knowledge"))
            if not agent:
                entry.action = last_action.get("name")
                entry.policy = last_action.get("policy")
                entry.action_confidence = last_action.get("confidence")
            else:
                for wamid in metadata.get("message_ids") or []:
                    status, error = ticks.get(str(wamid), ("sent", None))
                    entry.deliveries.append(Delivery(str(wamid), status, error))
            entries.append(entry)
        elif kind == "pause":
            entries.append(Entry("system", at, text="Handed over to a person"))
        elif kind == "resume":
            metadata = event.get("metadata") or {}
            who = metadata.get("agent") or "an agent"
            entries.append(Entry("system", at, text=f"Closed by {who}" if metadata.get("closed")
                                 else f"Handed back to the bot by {who}"))
        elif kind == "session_started":
            entries.append(Entry("system", at, text="New session"))
        elif kind == "slot" and event.get("name") == "handback_note" and event.get("value"):
            entries.append(Entry("system", at, text=f"Hand-back note: {event.get('value')}"))
    _attach_sends(entries, outbound, ticks)
    return entries


def _attach_sends(entries: list[Entry], outbound: Sequence[Mapping[str, Any]],
                  ticks: Mapping[str, tuple[str, str | None]]) -> None:
    """The bot's sends belong to the latest bot message written before them (Rasa records the message,
    then the channel sends it); agent sends are matched exactly by their message ids."""
    agent_ids = {d.message_id for e in entries if e.kind == "agent" for d in e.deliveries}
    bots = [e for e in entries if e.kind == "bot"]
    for row in sorted(outbound, key=lambda r: float(r["created_at"])):
        wamid = row.get("message_id")
        if wamid and wamid in agent_ids:
            continue
        owner = None
        for entry in bots:
            if entry.timestamp <= float(row["created_at"]) + 0.5:
                owner = entry
            else:
                break
        if owner is None:
            continue
        if row["state"] in ("failed", "interrupted"):
            owner.deliveries.append(Delivery(wamid, row["state"], row.get("error")))
        else:
            status, error = ticks.get(str(wamid), (row["state"], None)) if wamid else (row["state"], None)
            owner.deliveries.append(Delivery(wamid, status, error))
