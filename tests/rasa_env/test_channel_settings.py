"""Channel settings: credentials first, then environment, then defaults; the channel loads from credentials.yml."""

from __future__ import annotations

from pathlib import Path

import pytest
from rasa.core.run import create_http_input_channels

from connectors.queue_url import default_queue_url
from connectors.settings import (
    FALLBACK_INBOX_URL,
    WhatsAppSettings,
    parse_duration,
    tracker_store_db_url,
)
from connectors.whatsapp.channel import WhatsAppInput

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("value", "seconds"), [("86400", 86400), ("1d", 86400), ("12h", 43200), ("30m", 1800),
                                                 (" 45s ", 45), (60, 60)])
def test_parse_duration(value: str, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "a day", "-1d", "1w", "1.5h"])
def test_parse_duration_rejects_nonsense(value: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_credentials_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "from-env")
    monkeypatch.setenv("WHATSAPP_STALE_AFTER", "12h")
    monkeypatch.setenv("WHATSAPP_REENGAGE_TEMPLATE", "hello_again")
    monkeypatch.setenv("WHATSAPP_INBOX_DB_URL", "sqlite:////tmp/x.db")
    settings = WhatsAppSettings.load({"app_secret": "from-credentials"})
    assert settings.app_secret == "from-credentials"
    assert settings.stale_after_seconds == 43200
    assert settings.template == ("hello_again", "en")
    assert settings.graph_api_url == "https://graph.facebook.com"
    assert settings.run_worker is True
    monkeypatch.setenv("WHATSAPP_RUN_WORKER", "off")
    assert WhatsAppSettings.load({}).run_worker is False
    assert WhatsAppSettings.load({}).poll_interval_seconds == 0.05
    monkeypatch.setenv("WHATSAPP_POLL_INTERVAL", "0")
    with pytest.raises(ValueError, match="WHATSAPP_POLL_INTERVAL"):
        WhatsAppSettings.load({})


def test_the_queue_lives_beside_a_sqlite_tracker_and_in_a_servers_database() -> None:
    assert default_queue_url("sqlite:////srv/var/tracker.db") == "sqlite:////srv/var/channel.db"
    assert default_queue_url("sqlite:///var/tracker.db") == "sqlite:///var/channel.db"
    assert default_queue_url("postgresql://rasa@db/rasa") == "postgresql://rasa@db/rasa"
    assert default_queue_url("sqlite://") == "sqlite://"


def test_the_tracker_store_url_comes_from_endpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)
    url = tracker_store_db_url("endpoints.yml")
    assert url.startswith("sqlite:///") and url.endswith("/var/tracker.db")
    pg = tmp_path / "endpoints.yml"
    pg.write_text('tracker_store:\n  type: SQL\n  dialect: "postgresql"\n  url: "db.internal"\n  port: 5432\n'
                  '  db: "rasa"\n  username: "rasa"\n  password: "p@ss"\n')
    assert tracker_store_db_url(str(pg)) == "postgresql://rasa:p%40ss@db.internal:5432/rasa"
    assert tracker_store_db_url(str(tmp_path / "missing.yml")) == FALLBACK_INBOX_URL


def test_project_credentials_enable_the_whatsapp_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "s")
    channels = create_http_input_channels(None, str(ROOT / "credentials.yml"))
    (whatsapp,) = [c for c in channels if isinstance(c, WhatsAppInput)]
    assert whatsapp.name() == "whatsapp" and whatsapp.settings.app_secret == "s"
