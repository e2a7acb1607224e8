"""The sandbox's phones: what each fake customer sent and received, in memory."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any

TYPING_SECONDS = 25.0  # WhatsApp clears the indicator after 25 s or on reply
STATUS_ORDER = {"pending": 0, "failed": 0, "sent": 1, "delivered": 2, "read": 3}


@dataclass
class ChatMessage:
    id: str  # wamid
    phone: str  # the customer's wa_id
    direction: str  # "in": customer → bot, "out": bot → customer
    payload: dict[str, Any]  # Graph message object (out) or what the customer did (in)
    status: str = "pending"
    error: str | None = None
    seq: int = 0
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Phone:
    number: str
    name: str
    messages: list[ChatMessage] = field(default_factory=list)
    typing_until: float = 0.0


class SandboxStore:
    def __init__(self) -> None:
        self.phones: dict[str, Phone] = {}
        self.by_id: dict[str, ChatMessage] = {}
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)
        # {phone: the event its long-polls wait on}, only while someone waits: a change wakes the page
        # (or bench client) of that phone, not every phone's. A page per phone polls, so one change woke
        # them all before, each to find nothing and ask again (~40 empty requests a reply with 20 phones).
        self._changes: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}

    def new_id(self, prefix: str) -> str:
        return f"wamid.sandbox.{prefix}.{next(self._ids)}.{int(time.time() * 1000)}"

    def phone(self, number: str, name: str | None = None) -> Phone:
        phone = self.phones.get(number)
        if phone is None:
            phone = self.phones[number] = Phone(number, name or number)
        elif name:
            phone.name = name
        return phone

    def add(self, message: ChatMessage) -> ChatMessage:
        message.seq = next(self._seq)
        phone = self.phone(message.phone)
        phone.messages.append(message)
        self.by_id[message.id] = message
        if message.direction == "out":
            phone.typing_until = 0.0
        self._touch(message.phone)
        return message

    def set_status(self, wamid: str, status: str, error: str | None = None) -> ChatMessage | None:
        """Move a message's ticks forward (never back), or mark it failed."""
        message = self.by_id.get(wamid)
        if message is None:
            return None
        if status == "failed" or STATUS_ORDER.get(status, 0) > STATUS_ORDER.get(message.status, 0):
            message.status = status
            message.error = error
            message.seq = next(self._seq)
            self._touch(message.phone)
        return message

    def typing(self, number: str) -> None:
        self.phone(number).typing_until = time.time() + TYPING_SECONDS
        self._touch(number)

    def since(self, number: str, seq: int) -> dict[str, Any]:
        phone = self.phones.get(number)
        if phone is None:
            return {"messages": [], "typing": False, "seq": seq}
        changed = [m.as_dict() for m in phone.messages if m.seq > seq]
        latest = max([seq, *(m.seq for m in phone.messages)])
        return {"messages": changed, "typing": phone.typing_until > time.time(), "seq": latest}

    def conversations(self) -> list[dict[str, Any]]:
        return [
            {"phone": p.number, "name": p.name, "count": len(p.messages)}
            for p in sorted(self.phones.values(), key=lambda p: -(p.messages[-1].at if p.messages else 0))
        ]

    async def wait_for_change(self, number: str, timeout: float) -> None:
        """Until something of this phone changes (a message, its ticks, "typing…") or `timeout` s passed."""
        event = self._changes.setdefault(number, asyncio.Event())
        self._waiting[number] = self._waiting.get(number, 0) + 1
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            self._waiting[number] -= 1
            if not self._waiting[number]:  # nobody waits for this phone: nothing kept for it
                del self._waiting[number]
                if self._changes.get(number) is event:
                    del self._changes[number]

    def _touch(self, number: str) -> None:
        event = self._changes.pop(number, None)  # the next long-poll waits on a new one
        if event is not None:
            event.set()
