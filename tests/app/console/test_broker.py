"""With an event broker, Rasa's published events wake the console's projector at once (RabbitMQ here)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import pytest

from console.broker import consume_broker

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def test_a_published_event_wakes_the_projector() -> None:
    aio_pika = pytest.importorskip("aio_pika")
    exchange_name = f"rasa-exchange-test-{os.getpid()}"
    try:
        connection = await aio_pika.connect_robust(AMQP_URL, timeout=5)
    except Exception as error:  # any connection failure means "no broker here"
        if os.environ.get("CI"):
            raise
        pytest.skip(f"RabbitMQ not reachable at {AMQP_URL}: {error}")
    woken = asyncio.Event()
    consumer = asyncio.create_task(consume_broker(AMQP_URL, exchange_name, woken.set))
    try:
        async with connection:
            channel = await connection.channel()
            # Declared like Rasa's PikaEventBroker declares it: fanout, durable.
            exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.FANOUT, durable=True)
            for _ in range(50):  # until the console's queue is bound
                await exchange.publish(aio_pika.Message(json.dumps({"sender_id": "x", "event": "user"}).encode()),
                                       routing_key="")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(woken.wait(), 0.2)
                if woken.is_set():
                    break
            assert woken.is_set()
            await exchange.delete()
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
