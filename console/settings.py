"""Console settings from the environment (documented in .env.example), with working local defaults."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from connectors.queue_url import default_queue_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR = PROJECT_ROOT / "var"
_ENV_REF = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class ConsoleSettings:
    db_url: str  # the console's tables
    tracker_db_url: str  # Rasa's SQL tracker store (read only)
    inbox_db_url: str  # the channels' inbox: delivery statuses and failed sends
    rasa_url: str
    rasa_token: str
    channel_token: str  # CHANNEL_AGENT_TOKEN of the channels' agent routes
    secret_key: str
    admin_email: str
    admin_password: str
    secure_cookie: bool | None  # None: Secure when the request came over https (directly or via a proxy)
    session_hours: float
    poll_interval: float
    broker_url: str  # amqp://… when Rasa publishes events to RabbitMQ; empty: polling only
    broker_exchange: str
    host: str
    port: int


def _substitute(value: Any, env: Mapping[str, str]) -> str:
    return _ENV_REF.sub(lambda m: env.get(m.group(1), ""), str(value)) if value is not None else ""


def tracker_db_url_from_endpoints(path: Path, env: Mapping[str, str]) -> str | None:
    """SQLAlchemy URL of the SQL tracker store in Rasa's endpoints file (None: not a SQL store)."""
    import yaml

    if not path.is_file():
        return None
    store = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("tracker_store") or {}
    if str(store.get("type", "")).upper() != "SQL":
        return None
    dialect = _substitute(store.get("dialect") or "sqlite", env)
    db = _substitute(store.get("db") or "rasa.db", env)
    if dialect == "sqlite":
        return f"sqlite:///{db if Path(db).is_absolute() else PROJECT_ROOT / db}"
    user = _substitute(store.get("username"), env)
    password = _substitute(store.get("password"), env)
    credentials = f"{quote(user)}:{quote(password)}@" if password else (f"{quote(user)}@" if user else "")
    host = _substitute(store.get("url") or "localhost", env)
    port = _substitute(store.get("port"), env)
    driver = "postgresql+psycopg" if dialect.startswith("postgres") else dialect
    return f"{driver}://{credentials}{host}{':' + port if port else ''}/{db}"


def _normalise_pg(url: str) -> str:
    # psycopg 3 is what the app env has; a plain postgresql:// URL would ask for psycopg2.
    return "postgresql+psycopg://" + url.split("://", 1)[1] if url.startswith(("postgresql://", "postgres://")) else url


def kept_secret(env: Mapping[str, str], name: str, file: Path) -> str:
    """`name` from the environment, else a secret generated once and kept (0600) in `file`."""
    if env.get(name):
        return env[name]
    if file.is_file() and file.read_text().strip():
        return file.read_text().strip()
    file.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    file.write_text(token + "\n")
    file.chmod(0o600)
    return token


def secret_key(env: Mapping[str, str], path: Path = VAR / "console_secret") -> str:
    return kept_secret(env, "CONSOLE_SECRET_KEY", path)


def _rasa_token(env: Mapping[str, str]) -> str:
    if env.get("RASA_TOKEN"):
        return env["RASA_TOKEN"]
    file = VAR / "rasa_token"
    return file.read_text().strip() if file.is_file() else ""


def _tri_state(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in ("", "auto"):
        return None
    return lowered not in ("0", "false", "no", "off")


def load_settings(env: Mapping[str, str] | None = None) -> ConsoleSettings:
    env = dict(os.environ if env is None else env)
    endpoints = PROJECT_ROOT / env.get("RASA_ENDPOINTS", "endpoints.yml")
    tracker = env.get("CONSOLE_TRACKER_DB_URL") or tracker_db_url_from_endpoints(endpoints, env) \
        or f"sqlite:///{VAR / 'tracker.db'}"
    broker = env.get("CONSOLE_BROKER_URL", "")
    if not broker and "endpoints.production" in str(endpoints) and env.get("RABBITMQ_HOST"):
        broker = (f"amqp://{quote(env.get('RABBITMQ_USER', 'guest'))}:{quote(env.get('RABBITMQ_PASSWORD', 'guest'))}"
                  f"@{env['RABBITMQ_HOST']}:{env.get('RABBITMQ_PORT', '5672')}/")
    return ConsoleSettings(
        db_url=_normalise_pg(env.get("CONSOLE_DB_URL") or f"sqlite:///{VAR / 'console.db'}"),
        tracker_db_url=_normalise_pg(tracker),
        inbox_db_url=_normalise_pg(env.get("WHATSAPP_INBOX_DB_URL") or default_queue_url(tracker)),
        rasa_url=env.get("CONSOLE_RASA_URL") or f"http://127.0.0.1:{env.get('RASA_PORT', '5005')}",
        rasa_token=_rasa_token(env),
        channel_token=env.get("CHANNEL_AGENT_TOKEN", ""),
        secret_key=secret_key(env),
        admin_email=env.get("CONSOLE_ADMIN_EMAIL", "").strip().lower(),
        admin_password=env.get("CONSOLE_ADMIN_PASSWORD", ""),
        secure_cookie=_tri_state(env.get("CONSOLE_SECURE_COOKIE", "auto")),
        session_hours=float(env.get("CONSOLE_SESSION_HOURS", "12")),
        poll_interval=float(env.get("CONSOLE_POLL_INTERVAL", "0.3")),
        broker_url=broker,
        broker_exchange=env.get("CONSOLE_BROKER_EXCHANGE", "rasa-exchange"),
        host=env.get("CONSOLE_HOST", "127.0.0.1"),
        port=int(env.get("CONSOLE_PORT", "8080")),
    )
