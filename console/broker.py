"""Rasa's event broker (RabbitMQ) as a wake-up call for the projector.

Rasa's PikaEventBroker publishes every tracker event to a fanout exchange (`rasa-exchange`). The
console binds its own exclusive queue to it, so it takes nothing from other consumers, and wakes the
projector on every message; the tracker store stays the source of truth (a lost broker message only
delays the update to the next poll).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

RECONNECT_SECONDS = 5.0


async def consume_broker(url: str, exchange: str, wake: Callable[[], None]) -> None:
    import aio_pika

    while True:
        try:
            connection = await aio_pika.connect_robust(url)
            async with connection:
                channel = await connection.channel()
                fanout = await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
                queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
                await queue.bind(fanout)
                logger.info("console: listening to the event broker's %s exchange", exchange)
                async with queue.iterator(no_ack=True) as messages:
                    async for _message in messages:
                        wake()
        except asyncio.CancelledError:
            raise
        except Exception as failure:  # broker down: keep polling, try again later
            logger.warning("event broker unavailable (%s); polling only, retrying in %ss", failure, RECONNECT_SECONDS)
            await asyncio.sleep(RECONNECT_SECONDS)
