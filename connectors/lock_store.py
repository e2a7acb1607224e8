"""Rasa lock stores whose waiters never wait forever on a ticket that expired: name them in endpoints.yml.

    lock_store:
      type: connectors.lock_store.InMemoryLockStore       # one Rasa process (endpoints.yml)
      type: connectors.lock_store.RedisLockStore          # several replicas (endpoints.production.yml)
      url: ...; port, db, key_prefix, ... as Rasa's `redis` lock store takes them

Rasa 3.6 serialises a conversation's turns with a ticket lock (rasa/core/lock_store.py): each turn
takes a numbered ticket that expires after TICKET_LOCK_LIFETIME (60 s by default) and waits until
its number is the lowest live one, looking again every second. When a waiter's own ticket expires
before it is served, the lock holds no ticket of its, the lowest live number is never its own and
`LockStore.lock` waits forever: the turn never runs, and our worker keeps holding the conversation,
so that customer is never answered again.

It happens whenever a holder's ticket lapses less than about a second (one look) before the
waiter's: a replica killed mid-turn whose conversation another replica took over within a second of
the turn's start (its Redis ticket is never given back), or an agent's reply from the console
queued behind a turn that outlives the lifetime. Measured: Rasa's own lock, a ticket left behind,
a waiter 0.2 s later with a 1 s lifetime — still waiting after 10 s; with this lock, served at once.

This lock does what Rasa's does, with one difference: a waiter whose ticket has lapsed takes a
new one (its place is then behind tickets issued since, which were queued behind it anyway) and goes
on waiting, instead of waiting on a ticket nobody holds. The ticket released at the end is the one
it holds then. The classes below are Rasa's own stores with this `lock`; nothing is patched process-wide.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from rasa.core import lock_store as rasa_locks
from rasa.core.lock_store import LOCK_LIFETIME, TicketLock
from rasa.utils.endpoints import EndpointConfig

logger = logging.getLogger(__name__)


def _holds(lock: Any, ticket: int) -> bool:
    """Whether `ticket` is still one of the lock's live tickets."""
    lock.remove_expired_tickets()
    return any(held.number == ticket for held in lock.tickets)


class TicketSafeLocks:
    """`lock` as Rasa's `LockStore.lock`, but a waiter whose ticket lapsed takes a new one (mixed in first)."""

    @asynccontextmanager
    async def lock(self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME,
                   wait_time_in_seconds: float = 1) -> AsyncGenerator[TicketLock, None]:
        store: Any = self
        ticket = store.issue_ticket(conversation_id, lock_lifetime)  # LockError when the store is away, as Rasa's
        try:
            while True:
                current = store.get_lock(conversation_id)
                if current is None or not _holds(current, ticket):
                    # Lapsed while waiting (or deleted with the last live ticket by someone else's clean-up).
                    logger.warning("the lock ticket of conversation %s lapsed while it waited (lifetime %ss): "
                                   "taking a new one", conversation_id, lock_lifetime)
                    ticket = store.issue_ticket(conversation_id, lock_lifetime)
                    current = store.get_lock(conversation_id)
                # Its ticket is the lowest live one (checked to be live: Rasa's check alone lets ticket 0 in
                # when the lock holds none). Otherwise look again later, also after a new ticket that lapsed
                # at once (a lifetime shorter than a look): never a loop that does not wait.
                if current is not None and _holds(current, ticket) and not current.is_locked(ticket):
                    break
                await asyncio.sleep(wait_time_in_seconds)
                store.update_lock(conversation_id)
            yield current
        finally:  # the ticket held now, also when a cancellation or an error came while it waited
            store.cleanup(conversation_id, ticket)


class InMemoryLockStore(TicketSafeLocks, rasa_locks.InMemoryLockStore):
    def __init__(self, endpoint_config: EndpointConfig | None = None) -> None:
        super().__init__()


class RedisLockStore(TicketSafeLocks, rasa_locks.RedisLockStore):
    """Rasa's `redis` lock store: `url` is the host, the other keys are its arguments."""

    def __init__(self, endpoint_config: EndpointConfig | None = None, **kwargs: Any) -> None:
        if endpoint_config is not None:
            kwargs = {"host": endpoint_config.url or "localhost", **endpoint_config.kwargs, **kwargs}
        super().__init__(**kwargs)
