"""Agents, passwords (argon2id), sessions, CSRF tokens and the login rate limit."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from console.tables import ROLES, agents, audit_log, login_attempts, sessions

HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
MIN_PASSWORD = 10
MAX_PASSWORD = 200
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$")
# Failed logins within the window after which further tries are refused (per email, per address).
MAX_FAILURES_PER_EMAIL = 5
MAX_FAILURES_PER_ADDRESS = 20
FAILURE_WINDOW_SECONDS = 15 * 60
# Verifying against this keeps the time of "unknown email" equal to "wrong password".
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Agent:
    id: int
    email: str
    name: str
    role: str
    active: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AuthError(ValueError):
    pass


def _agent(row: object) -> Agent:
    return Agent(row.id, row.email, row.name, row.role, bool(row.active))  # type: ignore[attr-defined]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def audit(conn: Connection, actor: int | None, action: str, sender_id: str | None = None,
          **detail: object) -> None:
    """One audit entry: who (None: the system) did what to which conversation, and the details."""
    conn.execute(insert(audit_log).values(at=time.time(), agent_id=actor, action=action, sender_id=sender_id,
                                          detail=json.dumps(detail, default=str)))


def validate_agent_fields(email: str, name: str, password: str | None, role: str) -> tuple[str, str]:
    email = (email or "").strip().lower()
    name = " ".join((name or "").split())
    if not EMAIL.match(email):
        raise AuthError("email: not an email address")
    if not 1 <= len(name) <= 100:
        raise AuthError("name: 1 to 100 characters")
    if role not in ROLES:
        raise AuthError(f"role: one of {', '.join(ROLES)}")
    if password is not None and not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return email, name


def create_agent(conn: Connection, email: str, name: str, password: str, role: str,
                 by: int | None) -> Agent:
    email, name = validate_agent_fields(email, name, password, role)
    if conn.execute(select(agents.c.id).where(agents.c.email == email)).first():
        raise AuthError("email: an agent with this email exists")
    agent_id = conn.execute(insert(agents).values(email=email, name=name, password_hash=HASHER.hash(password),
                                                  role=role, active=True, created_at=time.time())
                            ).inserted_primary_key[0]
    audit(conn, by, "agent_created", None, agent_id=agent_id, email=email, role=role)
    return Agent(int(agent_id), email, name, role, True)


def update_agent(conn: Connection, agent_id: int, *, by: int, role: str | None = None, active: bool | None = None,
                 password: str | None = None) -> None:
    values: dict[str, object] = {}
    if role is not None:
        if role not in ROLES:
            raise AuthError(f"role: one of {', '.join(ROLES)}")
        values["role"] = role
    if active is not None:
        values["active"] = active
    if password is not None:
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise AuthError(f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        values["password_hash"] = HASHER.hash(password)
    if not values:
        raise AuthError("nothing to change")
    if agent_id == by and (values.get("role") == "agent" or values.get("active") is False):
        raise AuthError("admins cannot demote or deactivate themselves")
    if not conn.execute(update(agents).where(agents.c.id == agent_id).values(**values)).rowcount:
        raise AuthError("no such agent")
    if values.get("active") is False or "password_hash" in values:
        conn.execute(delete(sessions).where(sessions.c.agent_id == agent_id))
    audit(conn, by, "agent_updated", None, agent_id=agent_id,
          **{k: v for k, v in values.items() if k != "password_hash"}, password_changed="password_hash" in values)


def ensure_first_admin(engine: Engine, email: str, password: str) -> str:
    """Create the admin from CONSOLE_ADMIN_EMAIL/PASSWORD when the console has no admin yet."""
    with engine.begin() as conn:
        if conn.execute(select(agents.c.id).where(agents.c.role == "admin")).first():
            return "an admin exists"
        if not email or not password:
            return "no admin yet: set CONSOLE_ADMIN_EMAIL and CONSOLE_ADMIN_PASSWORD"
        create_agent(conn, email, "Administrator", password, "admin", by=None)
        return f"created the first admin {email}"


def list_agents(conn: Connection) -> list[Agent]:
    return [_agent(r) for r in conn.execute(select(agents).order_by(agents.c.name))]


def _failures(conn: Connection, key: str, since: float) -> int:
    return int(conn.execute(select(func.count()).select_from(login_attempts)
                            .where(and_(login_attempts.c.key == key, login_attempts.c.at > since))).scalar() or 0)


def login(engine: Engine, email: str, password: str, address: str, now: float | None = None) -> Agent:
    """The agent, or AuthError (same message for unknown email and wrong password; rate limited)."""
    now = time.time() if now is None else now
    email = (email or "").strip().lower()[:254]
    keys = (f"email:{email}", f"ip:{address}")
    since = now - FAILURE_WINDOW_SECONDS
    # Failures are committed before the error is raised: they count even though the login failed.
    with engine.begin() as conn:
        if _failures(conn, keys[0], since) >= MAX_FAILURES_PER_EMAIL or \
                _failures(conn, keys[1], since) >= MAX_FAILURES_PER_ADDRESS:
            audit(conn, None, "login_throttled", None, email=email, address=address)
            outcome: Agent | str = "too many failed logins; try again in 15 minutes"
        else:
            row = conn.execute(select(agents).where(agents.c.email == email)).first()
            try:
                HASHER.verify(row.password_hash if row else _DUMMY_HASH, (password or "")[:MAX_PASSWORD])
                ok = row is not None and bool(row.active)
            except (VerificationError, InvalidHashError):
                ok = False
            if ok:
                conn.execute(delete(login_attempts).where(login_attempts.c.key == keys[0]))
                conn.execute(delete(login_attempts).where(login_attempts.c.at < since))
                audit(conn, row.id, "login", None, address=address)
                outcome = _agent(row)
            else:
                for key in keys:
                    conn.execute(insert(login_attempts).values(key=key, at=now))
                audit(conn, None, "login_failed", None, email=email, address=address)
                outcome = "wrong email or password"
    if isinstance(outcome, str):
        raise AuthError(outcome)
    return outcome


def start_session(engine: Engine, agent: Agent, hours: float) -> tuple[str, str]:
    """(cookie token, CSRF token); only the token's hash is stored."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(insert(sessions).values(token_hash=_token_hash(token), agent_id=agent.id, csrf_token=csrf,
                                             expires_at=time.time() + hours * 3600))
    return token, csrf


def session_agent(engine: Engine, token: str | None) -> tuple[Agent, str] | None:
    """(agent, CSRF token) of a live session of an active agent."""
    if not token or len(token) > 100:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(agents, sessions.c.csrf_token).join(sessions, sessions.c.agent_id == agents.c.id)
            .where(and_(sessions.c.token_hash == _token_hash(token), sessions.c.expires_at > time.time()))
        ).first()
    if row is None or not row.active:
        return None
    return _agent(row), row.csrf_token


def end_session(engine: Engine, token: str, agent_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(delete(sessions).where(sessions.c.token_hash == _token_hash(token)))
        audit(conn, agent_id, "logout")


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and secrets.compare_digest(expected.encode(), str(given).encode())
