"""A drain's rows whose replies are still going out: what the worker keeps of them and how it settles them.

A handler may answer while its sends still go out (`Answered`); the row is marked done by the drain's next
statement once they were recorded, and a row whose sends were not is handled again (Rasa knows it, its
sends still "sending" are settled).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass

from connectors.inbox import InboxRow

logger = logging.getLogger("connectors.worker")


@dataclass
class StillReplying:
    """`_handle` found nothing new after `last`, whose replies are still going out."""

    last: InboxRow


@dataclass
class Answered:
    """A handler's answer whose sends are still going out: `menu` as below, `sends` ends when they did."""

    menu: dict[str, str] | None
    sends: Awaitable[None]


# (row id, the task that ends with its sends: True once they were recorded) of a drain's rows still replying.
Replying = list[tuple[int, "asyncio.Task[bool]"]]


def rows_to_skip(row: InboxRow, replying: Replying) -> list[int]:
    """`row` and the drain's rows still replying: the next claim skips them."""
    return [row.id, *(row_id for row_id, _sending in replying)]


def take_recorded(replying: Replying) -> list[int]:
    """Drop the rows whose sends ended from `replying`; returns those whose sends were recorded (sent or
    failed for good), to be marked done. The others stay "processing" and are handled again: Rasa
    knows them, their sends still "sending" are settled."""
    done = [(row_id, sending) for row_id, sending in replying if sending.done()]
    replying[:] = [(row_id, sending) for row_id, sending in replying if not sending.done()]
    return [row_id for row_id, sending in done
            if not sending.cancelled() and sending.exception() is None and sending.result()]


async def sends_recorded(row: InboxRow, sends: Awaitable[None]) -> bool:
    try:
        await sends
    except Exception:
        logger.exception("the replies to inbox message %s were not all recorded; it is taken up again",
                         row.message_id)
        return False
    return True
