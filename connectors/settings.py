"""Channel settings: credentials.yml values first, then environment variables, then defaults.

Secrets (tokens, app secret) should come from the environment; credentials.yml
may reference them as ${VAR} when every deployment sets them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.queue_url import default_queue_url
from connectors.whatsapp.graph_api import DEFAULT_API_VERSION, DEFAULT_GRAPH_URL

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FALLBACK_INBOX_URL = f"sqlite:///{PROJECT_ROOT / 'var' / 'tracker.db'}"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_OFF = {"0", "false", "no", "off"}


def parse_duration(value: str | int | float) -> float:
    """"86400", "1d", "12h", "30m" → seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 86400, 1d, 12h, 30m)")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def tracker_store_db_url(endpoints_file: str | None = None) -> str:
    """SQLAlchemy URL of the SQL tracker store in the endpoints file, else a SQLite file under var/."""
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.core.utils import AvailableEndpoints

    path = endpoints_file or os.environ.get("RASA_ENDPOINTS", "endpoints.yml")
    if not Path(path).is_file():
        return FALLBACK_INBOX_URL
    store = AvailableEndpoints.read_endpoints(path).tracker_store
    if store is None or str(store.type).upper() != "SQL":
        return FALLBACK_INBOX_URL
    kwargs = store.kwargs
    dialect = kwargs.get("dialect", "sqlite")
    db = kwargs.get("db", "rasa.db")
    if dialect == "sqlite" and not Path(db).is_absolute():
        db = str(Path.cwd() / db)
    url = SQLTrackerStore.get_db_url(dialect, store.url, kwargs.get("port"), db, kwargs.get("username"),
                                     kwargs.get("password"), query=kwargs.get("query"))
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def _positive_float(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}: not a number of seconds: {value!r}") from None
    if not 0 < number <= 60:
        raise ValueError(f"{name}: must be between 0 and 60 seconds, got {value!r}")
    return number


def switched_on(value: str) -> bool:
    """A yes/no setting: anything but 0, false, no or off (any case, surrounding spaces ignored) is on."""
    return value.strip().lower() not in _OFF


def _pick(credentials: Mapping[str, Any], key: str, env: str, default: str = "") -> str:
    value = credentials.get(key)
    if value is None or value == "":
        value = os.environ.get(env, default)
    return str(value)


def worker_fields(credentials: Mapping[str, Any]) -> dict[str, Any]:
    """Inbox and worker settings; the same variables for both channels (they share the inbox)."""
    return {
        "inbox_db_url": _pick(credentials, "inbox_db_url", "WHATSAPP_INBOX_DB_URL")
        or default_queue_url(tracker_store_db_url()),
        "stale_after_seconds": parse_duration(_pick(credentials, "stale_after", "WHATSAPP_STALE_AFTER", "1d")),
        "concurrency": int(_pick(credentials, "concurrency", "WHATSAPP_WORKER_CONCURRENCY", "16")),
        "run_worker": switched_on(_pick(credentials, "run_worker", "WHATSAPP_RUN_WORKER", "true")),
        "poll_interval_seconds": _positive_float(
            _pick(credentials, "poll_interval", "WHATSAPP_POLL_INTERVAL", "0.05"), "WHATSAPP_POLL_INTERVAL"),
    }


@dataclass(frozen=True)
class WhatsAppSettings:
    verify_token: str
    app_secret: str
    access_token: str
    graph_api_url: str
    api_version: str
    phone_number_id: str  # default sender for reminders / trigger_intent
    inbox_db_url: str
    stale_after_seconds: float
    concurrency: int
    template: tuple[str, str] | None  # sent instead when outside the 24 h window
    # off: this replica only stores and ACKs webhooks; another one answers them
    run_worker: bool = True
    # how often the worker looks for rows stored by another process (connectors/receiver.py)
    poll_interval_seconds: float = 0.05

    @classmethod
    def load(cls, credentials: Mapping[str, Any]) -> WhatsAppSettings:
        template_name = _pick(credentials, "reengage_template", "WHATSAPP_REENGAGE_TEMPLATE")
        template_lang = _pick(credentials, "reengage_template_language", "WHATSAPP_TEMPLATE_LANGUAGE", "en")
        return cls(
            verify_token=_pick(credentials, "verify_token", "WHATSAPP_VERIFY_TOKEN"),
            app_secret=_pick(credentials, "app_secret", "WHATSAPP_APP_SECRET"),
            access_token=_pick(credentials, "access_token", "WHATSAPP_ACCESS_TOKEN"),
            graph_api_url=_pick(credentials, "graph_api_url", "WHATSAPP_GRAPH_API_URL", DEFAULT_GRAPH_URL),
            api_version=_pick(credentials, "api_version", "WHATSAPP_API_VERSION", DEFAULT_API_VERSION),
            phone_number_id=_pick(credentials, "phone_number_id", "WHATSAPP_PHONE_NUMBER_ID"),
            template=(template_name, template_lang) if template_name else None,
            **worker_fields(credentials),
        )


@dataclass(frozen=True)
class EvolutionSettings:
    api_url: str  # the Evolution API server, e.g. http://evolution:8080
    api_key: str  # global key or the instance token (header `apikey`)
    instance: str  # default instance (reminders / trigger_intent); replies use the receiving one
    webhook_secret: str  # expected in the X-Evolution-Secret header of every webhook
    inbox_db_url: str
    stale_after_seconds: float
    concurrency: int
    run_worker: bool = True
    poll_interval_seconds: float = 0.05

    @classmethod
    def load(cls, credentials: Mapping[str, Any]) -> EvolutionSettings:
        return cls(
            api_url=_pick(credentials, "api_url", "EVOLUTION_API_URL", "http://127.0.0.1:8080"),
            api_key=_pick(credentials, "api_key", "EVOLUTION_API_KEY"),
            instance=_pick(credentials, "instance", "EVOLUTION_INSTANCE", "voltbay"),
            webhook_secret=_pick(credentials, "webhook_secret", "EVOLUTION_WEBHOOK_SECRET"),
            **worker_fields(credentials),
        )
