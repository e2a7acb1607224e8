"""The sender: drains each conversation's outbox in order and records what the platform answered.

One holder per conversation's sends (connectors/claims.py, its own key: a conversation's next turn
runs while the last one's replies go out). Every row is marked `sending` before its request
leaves; a row a crash left `sending` is settled from status evidence before it is sent again
(docs/architecture.md, "Sender"). `RetryingSender` is the base of the platform clients: a client says how
to POST one message and how to judge an error; the retry loop (only what can succeed later, exponential
backoff with full jitter, a cap on attempts) lives here once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection

from connectors.claims import Claims
from connectors.queue import OutboxRow, Queue, Reply
from connectors.queue_schema import (
    DELIVERED,
    FAILED_SEND,
    SENDING,
    SENT,
    TO_SEND,
    Database,
    callback_key,
    outbox,
    statuses,
)
from connectors.turns import ConversationDrains
from connectors.whatsapp.errors import OUTSIDE_WINDOW, GraphError, Verdict, backoff_seconds

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
MAX_MEDIA_BYTES = 16 * 1024 * 1024  # WhatsApp's own limit for audio/video; images are 5 MB


class MediaTooLarge(Exception):
    """A customer's media file over the size the agent route passes on."""


@dataclass(frozen=True)
class SendResult:
    message_id: str | None
    error: GraphError | None = None
    verdict: Verdict | None = None  # set when it failed for good
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.message_id is not None


class RetryingSender:
    """Subclasses implement `post` (one request; GraphError on failure), `message_id_of` and `decide`."""

    def __init__(self, max_attempts: int = MAX_ATTEMPTS,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._rand = rand

    async def post(self, business_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def message_id_of(self, body: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def tagged(self, payload: dict[str, Any], key: str) -> dict[str, Any]:
        """The payload carrying our key where the platform repeats it on its statuses (if it does)."""
        return payload

    def decide(self, error: GraphError, server_errors: int) -> Verdict:
        raise NotImplementedError

    async def send(self, business_id: str, payload: dict[str, Any]) -> SendResult:
        """Send one message, retrying only what the error policy calls retryable."""
        server_errors = 0
        last: GraphError | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                body = await self.post(business_id, payload)
            except GraphError as error:
                last = error
                decision = self.decide(error, server_errors)
                if error.http_status >= 500 or error.http_status == 0:
                    server_errors += 1
                if decision is not Verdict.RETRY or attempt == self._max_attempts:
                    final = decision if decision is not Verdict.RETRY else Verdict.FAIL
                    return SendResult(None, error, final, attempt)
                delay = backoff_seconds(attempt, self._rand())
                logger.info("send error %s, retry %d in %.2fs", error.code or error.http_status, attempt, delay)
                await self._sleep(delay)
                continue
            return SendResult(self.message_id_of(body) or "", None, None, attempt)
        return SendResult(None, last, Verdict.FAIL, self._max_attempts)

    async def mark_read_and_typing(self, business_id: str, message_id: str, reply_to: str,
                                   typing: bool = True) -> None:
        """Read receipt (+ typing indicator while the bot works); best effort."""

    async def download_media(self, business_id: str, media_id: str,
                             max_bytes: int = MAX_MEDIA_BYTES) -> tuple[bytes, str]:
        """(content, mime type) of a customer's media; GraphError or MediaTooLarge."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections."""


STATUS_GRACE_SECONDS = 5.0  # Meta repeats a status webhook within seconds; Evolution sends them at once
EVIDENCE_POLL_SECONDS = 0.25
SAFETY_POLL_SECONDS = 0.5  # a look for rows nobody announced (another process's, a crash's)



class Outbox:
    """The sender's statements on the outbox (the rows are written by `Queue.finish` and `Queue.queue_replies`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def conversations_to_send(self, channel: str, exclude: Iterable[str] = (), limit: int = 64) -> list[str]:
        query = (select(outbox.c.conversation_id)
                 .where(and_(outbox.c.state.in_(TO_SEND), outbox.c.channel == channel))
                 .group_by(outbox.c.conversation_id).order_by(func.min(outbox.c.id)).limit(limit))
        excluded = list(exclude)
        if excluded:
            query = query.where(outbox.c.conversation_id.not_in(excluded))
        return await self.db.read(lambda conn: list(conn.execute(query).scalars()))

    async def next_send(self, channel: str, conversation_id: str) -> OutboxRow | None:
        """The conversation's oldest reply not yet sent (the caller holds the conversation's sends)."""
        query = select(outbox).where(and_(outbox.c.channel == channel, outbox.c.conversation_id == conversation_id,
                                          outbox.c.state.in_(TO_SEND))).order_by(outbox.c.id).limit(1)
        row = await self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            return None
        return OutboxRow(id=row.id, channel=row.channel, conversation_id=row.conversation_id,
                         business_id=row.business_id, state=row.state, payload=json.loads(row.payload),
                         template=json.loads(row.template) if row.template else None,
                         attempts=row.attempts or 0, created_at=row.created_at)

    async def mark_sending(self, row_id: int) -> None:
        """Recorded before the request leaves: a crash leaves the row `sending`, to be settled."""
        statement = update(outbox).where(outbox.c.id == row_id).values(
            state=SENDING, attempts=func.coalesce(outbox.c.attempts, 0) + 1, updated_at=time.time())
        await self.db.write(lambda conn: conn.execute(statement))

    async def record_send(self, row_id: int, state: str, message_id: str | None = None,
                          error_code: int | None = None, error: str | None = None,
                          payload: dict[str, Any] | None = None) -> None:
        """How a send ended; `payload`: what went instead (the template)."""
        values: dict[str, Any] = {"state": state, "message_id": message_id, "error_code": error_code,
                                  "error": error[:1000] if error else None, "updated_at": time.time()}
        if payload is not None:
            values["payload"] = json.dumps(payload, ensure_ascii=False)
        statement = update(outbox).where(outbox.c.id == row_id).values(**values)
        await self.db.write(lambda conn: conn.execute(statement))

    async def delivery_evidence(self, row: OutboxRow, recipient: str) -> str | None:
        """The platform's id of a send a crash cut off, when a status webhook proves it went out: one
        that repeats the row's callback key (Cloud API), else one to the same recipient, not older
        than the send, for a message id none of our sends knows (Evolution, which has no such key)."""
        def evidence(conn: Connection) -> Any:
            found = conn.execute(select(statuses.c.message_id).where(and_(
                statuses.c.callback == callback_key(row.id), statuses.c.status.in_(DELIVERED))).limit(1)).scalar()
            if found is None and row.channel != "whatsapp":
                known = select(outbox.c.message_id).where(outbox.c.message_id.is_not(None))
                found = conn.execute(select(statuses.c.message_id).where(and_(
                    statuses.c.recipient_id == recipient, statuses.c.sent_at >= int(row.created_at),
                    statuses.c.status.in_(DELIVERED), statuses.c.message_id.not_in(known)))
                    .order_by(statuses.c.id).limit(1)).scalar()
            return found

        found = await self.db.read(evidence)
        return None if found is None else str(found)


class Sender(ConversationDrains):
    what = "replies to send"

    def __init__(self, queue: Queue, claims: Claims, channel: str, client: RetryingSender, *,
                 concurrency: int = 16, poll_interval: float = SAFETY_POLL_SECONDS,
                 status_grace: float = STATUS_GRACE_SECONDS,
                 on_sent: Callable[[OutboxRow, SendResult], None] = lambda _row, _result: None) -> None:
        super().__init__(channel, concurrency, poll_interval)
        self.queue = queue
        self.outbox = Outbox(queue.db)
        self.claims = claims
        self.client = client
        self.status_grace = status_grace
        self.on_sent = on_sent

    async def dispatch_once(self) -> int:
        """Start a drain for each conversation with replies to send and none running here."""
        room = self.max_drains - len(self._active)
        if room <= 0:
            return 0
        found = await self.outbox.conversations_to_send(self.channel, list(self._active), room)
        started = [conversation for conversation in found if conversation not in self._active]
        for conversation_id in started:
            self._start(conversation_id)
        return len(started)

    async def _drain(self, conversation_id: str) -> None:
        template_sent = False  # one re-engagement template per drain, however many replies were refused
        try:
            async with self.claims.hold(f"send:{self.channel}:{conversation_id}") as held:
                if not held:
                    return
                while not self._stopped.is_set():
                    self._again.discard(conversation_id)
                    row = await self.outbox.next_send(self.channel, conversation_id)
                    if row is None:
                        return
                    async with self._slots:
                        template_sent = await self._send(row, template_sent)
        except Exception:
            logger.exception("%s sender: a conversation's sends stopped; they are taken up again", self.channel)

    async def _send(self, row: OutboxRow, template_sent: bool) -> bool:
        """Send one row and record the outcome; returns whether a template has been sent in this drain."""
        recipient = str(row.payload.get("to") or "")
        if row.state == SENDING:
            wamid = await self._evidence(row, recipient)
            if wamid is not None:
                logger.info("outbox row %d went out before a restart (%s): not sending it again", row.id, wamid)
                await self.outbox.record_send(row.id, SENT, wamid)
                return template_sent
            logger.warning("outbox row %d was cut off by a restart with no status to prove it went out; "
                           "sending it again", row.id)
        await self.outbox.mark_sending(row.id)
        result = await self.client.send(row.business_id, self.client.tagged(row.payload, callback_key(row.id)))
        if not result.ok and result.verdict is Verdict.TEMPLATE and row.template is not None and not template_sent:
            await self._record(row, result)
            return await self._send_template(row)
        await self._record(row, result)
        return template_sent

    async def _send_template(self, row: OutboxRow) -> bool:
        """Outside the 24-hour window: the approved template goes instead, recorded as a send of its own."""
        template = row.template or {}
        (template_id,) = await self.queue.queue_replies(self.channel, row.conversation_id, row.business_id,
                                                        [Reply(template)], turn_key=f"template-for-{row.id}")
        await self.outbox.mark_sending(template_id)
        result = await self.client.send(row.business_id, self.client.tagged(template, callback_key(template_id)))
        await self._record(dataclasses.replace(row, id=template_id, payload=template), result)
        return True

    async def _record(self, row: OutboxRow, result: SendResult) -> None:
        if result.ok:
            await self.outbox.record_send(row.id, SENT, result.message_id)
        else:
            error = result.error
            level = logging.INFO if error is not None and error.code == OUTSIDE_WINDOW else logging.WARNING
            logger.log(level, "%s send %d failed for good: %s", self.channel, row.id, error)
            await self.outbox.record_send(row.id, FAILED_SEND, None, error.code if error else None,
                                         str(error) if error else "send failed")
        self.on_sent(row, result)

    async def _evidence(self, row: OutboxRow, recipient: str) -> str | None:
        """Wait briefly for a status webhook that proves a cut-off send went out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.status_grace
        while True:
            found = await self.outbox.delivery_evidence(row, recipient)
            if found is not None or loop.time() >= deadline:
                return found
            await asyncio.sleep(EVIDENCE_POLL_SECONDS)
