"""The lock stores of connectors/lock_store.py: a waiter whose ticket lapsed takes a new one instead of waiting
forever; everything else as Rasa's lock (order, clean-up, errors), in memory and in Redis.

The first test runs Rasa's own lock on the same scenario, so the others are known to test something."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
from rasa.core import lock_store as rasa_locks
from rasa.core.lock_store import LockError, LockStore
from rasa.utils.endpoints import EndpointConfig

from connectors.lock_store import InMemoryLockStore, RedisLockStore


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[LockStore]:
    if request.param == "memory":
        yield InMemoryLockStore()
        return
    prefix = f"locktest{uuid.uuid4().hex[:8]}"
    redis_store = RedisLockStore(host="127.0.0.1", port=6379, key_prefix=prefix)
    yield redis_store
    for key in redis_store.red.keys(f"{prefix}:lock:*"):
        redis_store.red.delete(key)


async def wait_behind_a_ticket_left_behind(store: LockStore) -> float:
    """A replica killed mid-turn leaves its ticket; another takes the conversation 0.2 s later. Seconds to the lock."""
    store.issue_ticket("c1", 1.0)  # never given back
    await asyncio.sleep(0.2)
    started = time.monotonic()
    async with store.lock("c1", lock_lifetime=1.0, wait_time_in_seconds=1.5):
        return time.monotonic() - started


async def test_rasas_own_lock_waits_forever_once_the_waiters_ticket_lapsed() -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(wait_behind_a_ticket_left_behind(rasa_locks.InMemoryLockStore()), 6)


async def test_a_waiter_whose_ticket_lapsed_takes_a_new_one_and_gets_the_lock(
        store: LockStore, caplog: pytest.LogCaptureFixture) -> None:
    waited = await asyncio.wait_for(wait_behind_a_ticket_left_behind(store), 6)
    assert 0.8 <= waited < 4  # after the ticket left behind lapsed (1 s), at the next look
    assert "lapsed while it waited" in caplog.text
    assert store.get_lock("c1") is None  # the new ticket was the one given back: nothing left


async def test_turns_are_served_in_ticket_order_and_the_lock_is_deleted_after_the_last(
        store: LockStore, caplog: pytest.LogCaptureFixture) -> None:
    order: list[str] = []
    release = asyncio.Event()

    async def turn(name: str, hold: bool = False) -> None:
        async with store.lock("c2", lock_lifetime=30, wait_time_in_seconds=0.02):
            order.append(name)
            if hold:
                await release.wait()

    first = asyncio.create_task(turn("first", hold=True))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(turn("second"))
    await asyncio.sleep(0.05)
    third = asyncio.create_task(turn("third"))
    await asyncio.sleep(0.1)
    assert order == ["first"]  # the others wait while it holds the lock
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second, third), 5)
    assert order == ["first", "second", "third"]
    assert store.get_lock("c2") is None
    assert "lapsed" not in caplog.text  # nothing lapsed: exactly Rasa's behaviour


async def test_a_waiter_cancelled_after_taking_a_new_ticket_gives_that_one_back(
        store: LockStore) -> None:
    store.issue_ticket("c3", 30)  # a holder that keeps the lock for the whole test

    async def waiter() -> None:
        async with store.lock("c3", lock_lifetime=1.0, wait_time_in_seconds=1.5):
            pytest.fail("the holder never lets go")

    task = asyncio.create_task(waiter())  # ticket 1
    await asyncio.sleep(0.5)
    store.issue_ticket("c3", 30)  # ticket 2: a turn queued behind it
    await asyncio.sleep(1.5)  # its ticket lapsed at 1 s; at the look at 1.5 s it took ticket 3, live until 2.5 s
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lock = store.get_lock("c3")
    assert lock is not None and [t.number for t in lock.tickets] == [0, 2]  # ticket 3 given back, the others kept


async def test_a_lifetime_shorter_than_a_look_never_spins_the_event_loop() -> None:
    store = InMemoryLockStore()
    store.issue_ticket("c4", 30)  # held throughout
    ticks = 0

    async def clock() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(clock())
    with pytest.raises(asyncio.TimeoutError):  # held throughout: the waiter never gets it, and says so by waiting
        await asyncio.wait_for(_enter(store, "c4", lifetime=0.001), 0.5)
    ticking.cancel()
    assert ticks >= 10  # the loop kept running while the waiter re-took tickets that lapsed at once


async def _enter(store: LockStore, conversation_id: str, lifetime: float) -> None:
    async with store.lock(conversation_id, lock_lifetime=lifetime, wait_time_in_seconds=0.05):
        pass


def test_a_store_that_is_away_raises_rasas_lock_error() -> None:
    away = RedisLockStore(host="127.0.0.1", port=1, key_prefix="away", socket_timeout=0.5)

    async def enter() -> None:
        async with away.lock("c5"):
            pass

    with pytest.raises(LockError):
        asyncio.run(enter())


def test_endpoints_yml_names_them_as_rasa_loads_custom_lock_stores() -> None:
    memory = LockStore.create(EndpointConfig(type="connectors.lock_store.InMemoryLockStore"))
    assert isinstance(memory, InMemoryLockStore)
    redis = LockStore.create(EndpointConfig(url="127.0.0.1", type="connectors.lock_store.RedisLockStore",
                                            port=6379, db=2, key_prefix="voltbay"))
    assert isinstance(redis, RedisLockStore) and redis.key_prefix.startswith("voltbay:")
    assert redis.red.connection_pool.connection_kwargs["db"] == 2


def test_nothing_is_patched_process_wide() -> None:
    assert rasa_locks.LockStore.lock is not InMemoryLockStore.lock
    assert not hasattr(rasa_locks.LockStore.lock, "rasa_original")
