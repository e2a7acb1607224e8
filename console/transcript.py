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
    message_id: str | None = None  # the platform's id of a customer message
    revoked: bool = False  # the customer deleted it (shown struck through)
    edits: list[str] = field(default_factory=list)  # what the customer changed it to (or that an edit replaced it)
    edited: bool = False  # it is the customer's edit of an earlier message, answered as such
    referral: dict[str, Any] | None = None  # the click-to-WhatsApp ad it came from

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


def _referral(value: Any) -> dict[str, str] | None:
    """The ad a customer came from, as text; a link only when it is http(s) (it is shown as one)."""
    if not isinstance(value, Mapping):
        return None
    shown = {k: str(value[k])[:300] for k in ("headline", "body", "source_type", "source_id", "ctwa_clid")
             if isinstance(value.get(k), (str, int))}
    url = value.get("source_url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        shown["source_url"] = url[:2000]
    return shown or None


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
                 media=_media(metadata), message_id=event.get("message_id"), edited=bool(metadata.get("edits")),
                 referral=_referral(metadata.get("referral")))


def build_transcript(events: Sequence[Mapping[str, Any]], outbound: Sequence[Mapping[str, Any]] = (),
                     statuses: Sequence[Mapping[str, Any]] = (),
                     unanswered: Sequence[Mapping[str, Any]] = ()) -> list[Entry]:
    """`unanswered`: the channels' inbox rows the bot did not answer (skipped, revoked, edited), which the
    tracker never saw: deletions, edits, number changes."""
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
    return _with_unanswered(entries, unanswered)


def _system_line(system: Mapping[str, Any], links: Mapping[str, Any]) -> str:
    kind = system.get("type")
    if links.get("reply_to"):
        return f"The customer changed their number to {links['reply_to']}; replies go there now"
    if links:
        return "The customer's WhatsApp user id changed; this conversation continues"
    if kind in ("customer_identity_changed", "user_identity_changed"):
        return "The customer's security code changed (a new phone or a reinstall)"
    return f"WhatsApp notice: {system.get('body') or kind or 'system message'}"


def _with_unanswered(entries: list[Entry], rows: Sequence[Mapping[str, Any]]) -> list[Entry]:
    """Deletions strike their message through; an edit after the answer is shown on its message; a message
    deleted or replaced before the bot answered it, and a number change, become entries of their own."""
    by_id = {e.message_id: e for e in entries if e.kind == "customer" and e.message_id}
    added: list[Entry] = []
    for row in rows:
        message = row.get("message") if isinstance(row.get("message"), Mapping) else {}
        metadata = message.get("metadata") if isinstance(message.get("metadata"), Mapping) else {}
        at = float(row.get("received_at") or 0)
        target = by_id.get(str(message.get("revokes") or message.get("edits") or ""))
        if message.get("revokes"):
            if target is not None:
                target.revoked = True
        elif message.get("edits") and row.get("state") == "skipped":
            if target is not None:
                target.edits.append(str(message.get("text") or ""))
            else:
                added.append(Entry("customer", at, text=str(message.get("text") or ""), edited=True,
                                   message_id=row.get("message_id")))
        elif row.get("state") in ("revoked", "edited"):
            added.append(Entry("customer", at, text=str(message.get("text") or ""), message_id=row.get("message_id"),
                               revoked=row.get("state") == "revoked",
                               edits=["(replaced by the customer's edit before the bot answered)"]
                               if row.get("state") == "edited" else []))
        elif isinstance(metadata.get("system"), Mapping):
            links = message.get("links") if isinstance(message.get("links"), Mapping) else {}
            added.append(Entry("system", at, text=_system_line(metadata["system"], links)))
    return sorted(entries + added, key=lambda e: e.timestamp) if added else entries


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
