"""Which worker answers a conversation when several Rasa replicas drain one inbox: leases.

Before it claims a conversation's next message a worker takes the conversation's lease (a row of
`wa_leases`), keeps it while it works through the backlog and gives it back in the transaction
that finds nothing more to do, after locking the lease row: a message stored meanwhile is either
seen by that transaction or finds the lease free. So at most one worker handles a conversation at
a time, in order, and any number of replicas can run the worker.

A running worker renews its leases every third of their length. One that died keeps them until
they expire (`WHATSAPP_WORKER_LEASE`); then any replica takes the conversation over and re-runs
the message the dead one was handling (the tracker's message ids and the per-send turn keys keep
it from being answered twice). Expiry compares the replicas' clocks: they must agree to well
within a lease (NTP does). A process on the same host and in the same PID namespace does not wait:
an owner whose process is gone, or whose PID is now another live worker's, is dead for sure — so a
restarted single replica resumes at once.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from connectors import inbox_statements as sql
from connectors.inbox_tables import inbox, leases, retry_transient

DEFAULT_LEASE_SECONDS = 30.0
NO_CHANNEL = ""  # the lease key of a worker that drains every channel (tests)
_SEPARATOR = "|"


def _pid_namespace() -> str:
    """The PID namespace this process lives in ("" where /proc cannot tell): PIDs mean the same only inside it."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass(frozen=True)
class WorkerIdentity:
    host: str
    namespace: str
    pid: int
    nonce: str  # tells this run apart from an earlier process that had the same PID

    @classmethod
    def of_this_process(cls) -> WorkerIdentity:
        return cls(socket.gethostname(), _pid_namespace(), os.getpid(), uuid.uuid4().hex[:12])

    @property
    def owner(self) -> str:
        return _SEPARATOR.join((self.host, self.namespace, str(self.pid), self.nonce))

    def knows_is_gone(self, owner: str, alive: Callable[[int], bool] = pid_alive) -> bool:
        """True only when `owner` certainly runs no more: same host and PID namespace, and its PID
        is either ours now or no process's. Anything else (another host, container or unknown
        format) is left to the lease's expiry."""
        parts = owner.rsplit(_SEPARATOR, 3)
        if owner == self.owner or len(parts) != 4 or not self.namespace:
            return False
        host, namespace, pid_text, _nonce = parts
        if (host, namespace) != (self.host, self.namespace) or not pid_text.isdigit():
            return False
        pid = int(pid_text)
        return pid == self.pid or not alive(pid)


class LeaseRecords:
    """The lease rows of `connectors.inbox.Inbox` (its base class): taken with a claim, renewed, given back."""

    engine: Engine
    identity: WorkerIdentity
    owner: str
    lease_seconds: float
    _acquire_lease: Any  # the dialect's one-statement upsert, or None (portable UPDATE-then-INSERT)
    _one_statement: Callable[[], Any]

    def _leased_by_another(self, channel: str | None, now: float) -> ColumnElement[bool]:
        return (select(leases.c.owner)
                .where(and_(leases.c.channel == (channel or NO_CHANNEL),
                            leases.c.conversation_id == inbox.c.conversation_id,
                            leases.c.owner != self.owner, leases.c.expires_at >= now))
                .exists())

    def _lease(self, conversation_id: str, channel: str | None) -> dict[str, Any]:
        now = time.time()
        return {"lease_channel": channel or NO_CHANNEL, "conversation": conversation_id, "lease_owner": self.owner,
                "lease_now": now, "lease_until": now + self.lease_seconds}

    def _take_lease(self, conn: Connection, lease: dict[str, Any]) -> bool:
        if self._acquire_lease is not None:  # SQLite and PostgreSQL: one upsert
            return conn.execute(self._acquire_lease, lease).rowcount == 1
        if conn.execute(sql.TAKE_FREE_LEASE, lease).rowcount == 1:
            return True
        try:
            with conn.begin_nested():
                conn.execute(sql.INSERT_LEASE, lease)
        except IntegrityError:  # another worker took it first
            return False
        return True

    @retry_transient
    def renew_leases(self) -> int:
        """Push back the expiry of every lease this worker holds (its heartbeat)."""
        with self._one_statement() as conn:
            result = conn.execute(sql.RENEW_MY_LEASES, {"lease_owner": self.owner,
                                                        "lease_until": time.time() + self.lease_seconds})
        return result.rowcount or 0

    @retry_transient
    def expire_leases_of_gone_workers(self) -> list[str]:
        """Free at once the leases of workers known to be dead (same host, process gone); returns them."""
        with self.engine.begin() as conn:
            owners = conn.execute(select(leases.c.owner).where(leases.c.owner != self.owner).distinct()).scalars()
            gone = [owner for owner in owners if self.identity.knows_is_gone(owner)]
            if gone:
                conn.execute(leases.delete().where(leases.c.owner.in_(gone)))
        return gone

    @retry_transient
    def release_leases(self) -> int:
        """Give back every lease this worker holds (it stops)."""
        with self._one_statement() as conn:
            result = conn.execute(sql.DROP_MY_LEASES, {"lease_owner": self.owner})
        return result.rowcount or 0
