"""One reply's send and its records: the platform's answer, and the 24-hour window's template when the
platform refuses a free-form message. Shared by the output channel (connectors/whatsapp/output.py, on
Rasa's loop) and the inbox helper process (connectors/inbox_helper.py), which runs it for Rasa. No Rasa
imports: the helper does not load Rasa.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from connectors.inbox_tables import FAILED_SEND, SENT
from connectors.sending import RetryingSender, SendResult
from connectors.whatsapp.errors import Verdict

logger = logging.getLogger(__name__)

# Runs one of the inbox's methods from async code: `Inbox.call`.
InboxCall = Callable[..., Awaitable[Any]]
Sent = list[tuple[int, SendResult]]  # (wa_outbound id, result) of every send made


def with_payload(record: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A send's `wa_outbound` row: what `record` says, with this payload."""
    return {**record, "payload": json.dumps(payload, ensure_ascii=False)}


async def record_and_send(call: InboxCall, inbox: Any, client: RetryingSender, record: dict[str, Any],
                          payload: dict[str, Any], template: dict[str, Any] | None) -> Sent:
    """Record the send (before its request leaves: a crash cannot lose it), then `send_recorded`."""
    row_id = await call(inbox.begin_outbound, with_payload(record, payload))
    return await send_recorded(call, inbox, client, record, row_id, payload, template)


async def send_recorded(call: InboxCall, inbox: Any, client: RetryingSender, record: dict[str, Any], row_id: int,
                        payload: dict[str, Any], template: dict[str, Any] | None,
                        first: Awaitable[dict[str, Any]] | None = None) -> Sent:
    """Send a recorded payload with the client's retry policy and record how it ended. Refused as outside the
    24-hour window (131047), the template goes instead when there is one: the refused send is kept (failed,
    no longer the turn's) and the template recorded under the turn's key. `first`: the first attempt, begun."""
    business_id = record["business_id"]
    result = await client.send(business_id, payload, first)
    sent: Sent = []
    if not result.ok and result.verdict is Verdict.TEMPLATE and template is not None:
        await _finish(call, inbox, row_id, result, keep_turn_key=False)
        sent.append((row_id, result))
        row_id = await call(inbox.begin_outbound, with_payload(record, template))
        result = await client.send(business_id, template)
    await _finish(call, inbox, row_id, result)
    sent.append((row_id, result))
    return sent


async def _finish(call: InboxCall, inbox: Any, row_id: int, result: SendResult, keep_turn_key: bool = True) -> None:
    error = None if result.ok else result.error
    if error is not None:
        logger.warning("WhatsApp send to conversation failed for good: %s", error)
    await call(inbox.finish_outbound, row_id, SENT if result.ok else FAILED_SEND, result.message_id,
               error.code if error else None, str(error)[:1000] if error else None, not keep_turn_key)
