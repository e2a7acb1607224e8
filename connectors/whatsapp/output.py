"""The Rasa OutputChannel of the WhatsApp channels: render, send with the retry policy, record every result.

The Cloud API uses it as it is; the Evolution channel (connectors/evolution/) subclasses it with
its own client and numbered options — one copy of the crash-safe send bookkeeping for both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Any

from rasa.core.channels.channel import OutputChannel

from connectors.delivery import Sent, send_recorded, with_payload
from connectors.inbox import ON_LOOP, SENDING, SENT, Inbox
from connectors.send_chains import SendChains
from connectors.sending import RetryingSender, SendResult
from connectors.whatsapp.render import render_response, template_message

logger = logging.getLogger(__name__)

CHANNEL = "whatsapp"
STATUS_GRACE_SECONDS = 5.0


class WhatsAppOutput(OutputChannel):
    """Sends one conversation's replies from the business number that received its message."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL

    numbered_options = False  # True: options as numbered text, never interactive messages

    def __init__(
        self,
        client: RetryingSender,
        inbox: Inbox,
        phone_number_id: str,
        reply_to: str,
        conversation_id: str,
        turn_id: str | None = None,
        rerun: bool = False,  # the message was claimed before: earlier sends of this reply may exist
        template: tuple[str, str] | None = None,  # (name, language) for 131047
    ) -> None:
        self.client = client
        self.inbox = inbox
        self.phone_number_id = phone_number_id
        self.reply_to = reply_to
        self.conversation_id = conversation_id
        self.turn_id = turn_id
        self.template = template
        # Statuses of a send accepted just before a crash arrive within seconds (Meta retries them).
        self.status_grace_seconds = STATUS_GRACE_SECONDS
        self.menu: dict[str, str] = {}  # options of this turn, saved by the worker afterwards
        self.results: list[tuple[int, SendResult]] = []  # (wa_outbound id, result) of every send
        self._count = 0
        # A first attempt has sent nothing yet: no look-up on the normal path.
        self._earlier: dict[str, str] | None = None if rerun else {}
        # Set by the worker's turn: sends queue there and the turn goes on (None: each send awaited here).
        self.send_chains: SendChains | None = None
        self._queued: list[asyncio.Task[None]] = []

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        rendered = render_response(self.reply_to, message, self.numbered_options)
        if rendered.menu:
            self.menu = dict(rendered.menu)
        for payload in rendered.payloads:
            await self._deliver(payload)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        self._count += 1
        turn_key = self._turn_key(self._count) if self.turn_id else None
        if turn_key:
            earlier = (await self._earlier_sends()).get(turn_key)
            if earlier == SENT:
                logger.info("not re-sending %s: it went out before a restart", turn_key)
                return
            if earlier == SENDING and await self._went_out_before_cut_off(turn_key):
                return
        if self.send_chains is not None and turn_key is not None:
            # A worker's turn: recorded and sent off the turn, in the conversation's chain. Awaited here, the
            # record cost the turn an event-loop iteration per reply on a database server (~70 ms each under
            # load, measured with bench/latency_parts.py), and the customer's next message waited for the
            # turn's end. A crash after Rasa saved the turn and before this record is repaired from the
            # tracker, which holds every reply the turn made (`resend_unfinished`).
            idle = self.send_chains.idle(self.conversation_id)
            record = self._record(turn_key)
            # Nothing ahead of it on SQLite: recorded and on its way before the turn goes on. Begun in the
            # chain's task, it waited for that task's first step: an event-loop iteration behind every other
            # turn's ready step (~80 ms a reply under load, bench/latency_parts.py: the bot's reply event to
            # the Graph stand-in 92 ms, REST's 11). Handed to the inbox helper process when one sends.
            started = self.inbox.start_record_and_send(self.client, record, payload, self._template()) \
                if idle else None
            if started is not None:
                self._queued.append(self.send_chains.then(self.conversation_id, lambda: self._collect(started)))
            elif idle and self.inbox.runs == ON_LOOP:  # here when the record costs no round trip (SQLite)
                row_id = self.inbox.begin_outbound(with_payload(record, payload))
                first = self.client.start_post(self.phone_number_id, payload)
                self._queued.append(self.send_chains.then(
                    self.conversation_id, lambda: self._transmit(row_id, payload, turn_key, first)))
            else:
                self._queued.append(self.send_chains.then(
                    self.conversation_id, lambda: self._record_and_transmit(payload, turn_key)))
            return
        if self.send_chains is None:
            await self._record_and_transmit(payload, turn_key)
            return
        row_id = await self._begin(payload, turn_key)  # recorded before the caller goes on: a crash cannot lose it
        # An agent's reply (no turn in the tracker to repair it from): recorded first, sent in the chain.
        self._queued.append(self.send_chains.then(
            self.conversation_id, lambda: self._transmit(row_id, payload, turn_key)))

    def _turn_key(self, n: int) -> str:
        """The key of the turn's n-th send (from 1), the same when a restart renders the turn's replies again."""
        return f"{self.turn_id}#{n}"

    async def _record_and_transmit(self, payload: dict[str, Any], turn_key: str | None) -> None:
        """Recorded, sent, recorded again: in the inbox helper process when it sends for this client."""
        self.results.extend(await self.inbox.record_and_send(self.client, self._record(turn_key), payload,
                                                             self._template()))

    async def _collect(self, started: Awaitable[Sent]) -> None:
        self.results.extend(await started)

    async def _transmit(self, row_id: int, payload: dict[str, Any], turn_key: str | None,
                        first: Awaitable[dict[str, Any]] | None = None) -> None:
        self.results.extend(await send_recorded(self.inbox.call, self.inbox, self.client, self._record(turn_key),
                                                row_id, payload, self._template(), first))

    def _template(self) -> dict[str, Any] | None:
        """What goes instead of a reply refused outside the 24-hour window (131047), if anything."""
        return template_message(self.reply_to, *self.template) if self.template else None

    async def sends_finished(self) -> None:
        """Wait until every send this output queued went out or failed for good, each recorded;
        raises when one was not (its row stays "sending", settled when the message is taken up again)."""
        outcomes = await asyncio.gather(*self._queued, return_exceptions=True)
        cut = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if cut:
            raise RuntimeError(f"{len(cut)} of {len(outcomes)} send(s) were not recorded") from cut[0]

    async def resend_unfinished(self, replies: Sequence[dict[str, Any]] = ()) -> None:
        """The turn was handled before a restart, some of its queued sends maybe not: each one still
        "sending" is settled by the platform's status webhook when one came, else sent again; then the
        sends never recorded (the chain records each just before it goes out, so they are the last ones)
        go out, rendered from `replies`, what the turn said (its messages in Rasa's tracker)."""
        if not self.turn_id:
            return
        for turn_key, payload in await self.inbox.call(self.inbox.unfinished_sends, self.turn_id):
            if not await self._went_out_before_cut_off(turn_key):
                await self._record_and_transmit(payload, turn_key)
        recorded = await self.inbox.call(self.inbox.outbound_states, self.turn_id) if replies else {}
        count = 0
        for reply in replies:
            for payload in render_response(self.reply_to, reply, self.numbered_options).payloads:
                count += 1
                turn_key = self._turn_key(count)
                if turn_key not in recorded:
                    logger.warning("send %s was never recorded before a restart; sending it now", turn_key)
                    await self._record_and_transmit(payload, turn_key)

    async def _went_out_before_cut_off(self, turn_key: str) -> bool:
        """A send a restart cut off: True when the platform's status webhook proves it went out;
        otherwise it is kept as interrupted and the caller sends it again."""
        if await self._delivered_before_crash(turn_key):
            return True
        # No evidence either way: sending again may duplicate, not sending may lose it.
        logger.warning("send %s was cut off by a restart; sending it again", turn_key)
        await self.inbox.call(self.inbox.mark_interrupted, turn_key)
        return False

    async def _delivered_before_crash(self, turn_key: str) -> bool:
        """Wait briefly for the platform's status webhook that proves a cut-off send went out."""
        deadline = asyncio.get_running_loop().time() + self.status_grace_seconds
        while True:
            wamid = await self.inbox.call(self.inbox.adopt_delivered, turn_key, self.reply_to)
            if wamid is not None:
                logger.info("send %s went out before the restart (%s): not sending it again", turn_key, wamid)
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.25)

    async def _earlier_sends(self) -> dict[str, str]:
        if self._earlier is None:
            self._earlier = await self.inbox.call(self.inbox.outbound_states, self.turn_id or "")
        return self._earlier

    async def _begin(self, payload: dict[str, Any], turn_key: str | None) -> int:
        return await self.inbox.call(self.inbox.begin_outbound, with_payload(self._record(turn_key), payload))

    def _record(self, turn_key: str | None) -> dict[str, Any]:
        """A send's `wa_outbound` row but its payload (`connectors.delivery.with_payload`)."""
        return {"channel": self.name(), "conversation_id": self.conversation_id, "business_id": self.phone_number_id,
                "turn_key": turn_key}

    # Rasa calls these for reminders, trigger_intent and anything not using send_response.
    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"text": text})

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"image": image})

    async def send_attachment(self, recipient_id: str, attachment: str, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"attachment": attachment})

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self.send_response(recipient_id, {"text": text, "buttons": buttons})

    async def send_quick_replies(
        self, recipient_id: str, text: str, quick_replies: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self.send_response(recipient_id, {"text": text, "quick_replies": quick_replies})

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"custom": json_message})

    async def send_elements(self, recipient_id: str, elements: Any, **kwargs: Any) -> None:
        await self.send_response(recipient_id, {"elements": elements})
