"""The project's Rasa configuration, loaded by Rasa 3.6's own readers (rasa env)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rasa.core.channels.rest import RestInput
from rasa.core.run import create_http_input_channels
from rasa.core.utils import AvailableEndpoints
from rasa.shared.core.domain import Domain
from rasa.shared.importers.importer import TrainingDataImporter

ROOT = Path(__file__).resolve().parents[2]


def test_rest_channel_is_enabled() -> None:
    channels = create_http_input_channels(None, str(ROOT / "credentials.yml"))
    assert any(isinstance(channel, RestInput) for channel in channels)


def test_default_endpoints_need_no_service(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = AvailableEndpoints.read_endpoints(str(ROOT / "endpoints.yml"))
    assert endpoints.tracker_store.type == "SQL"
    assert endpoints.tracker_store.kwargs["dialect"] == "sqlite"
    assert endpoints.tracker_store.kwargs["db"].startswith("var/")
    assert endpoints.lock_store.type == "connectors.lock_store.InMemoryLockStore" and endpoints.event_broker is None
    assert endpoints.action.url == "http://localhost:5055/webhook"


def test_production_endpoints_take_every_value_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ACTION_ENDPOINT_URL": "http://actions:5055/webhook", "POSTGRES_HOST": "db", "POSTGRES_PORT": "5432",
        "POSTGRES_DB": "voltbay", "POSTGRES_USER": "rasa", "POSTGRES_PASSWORD": "s3cret", "REDIS_HOST": "redis",
        "REDIS_PORT": "6379", "REDIS_DB": "0", "RABBITMQ_HOST": "mq", "RABBITMQ_USER": "u", "RABBITMQ_PASSWORD": "p",
    }.items():
        monkeypatch.setenv(name, value)
    endpoints = AvailableEndpoints.read_endpoints(str(ROOT / "endpoints.production.yml"))
    assert endpoints.tracker_store.kwargs["dialect"] == "postgresql"
    assert endpoints.tracker_store.url == "db"
    assert endpoints.tracker_store.kwargs["password"] == "s3cret"
    assert endpoints.lock_store.type == "connectors.lock_store.RedisLockStore"
    assert endpoints.lock_store.url == "redis" and endpoints.lock_store.kwargs["key_prefix"] == "voltbay"
    assert endpoints.event_broker.type == "pika"
    assert endpoints.action.url == "http://actions:5055/webhook"


def test_domain_has_a_real_support_scope() -> None:
    domain = Domain.load(str(ROOT / "domain"))
    importer = TrainingDataImporter.load_from_dict(
        domain_path=str(ROOT / "domain"), training_data_paths=[str(ROOT / "data")], config_path=str(ROOT / "config.yml")
    )
    nlu = importer.get_nlu_data()
    intents = set(domain.intents) - {"nlu_fallback", "restart", "session_start", "back", "out_of_scope"}
    assert len(intents) >= 24
    for intent in ("greet", "goodbye", "thanks", "affirm", "deny", "bot_challenge", "human_handoff", "chitchat",
                   "faq"):
        assert intent in domain.intents
    assert {"order_status_form", "repair_form", "return_form"} <= set(domain.form_names)
    counts: dict[str, int] = {}
    for message in nlu.intent_examples:
        key = message.get("intent")
        full = message.get("intent_response_key") or key
        counts[full] = counts.get(full, 0) + 1
    too_few = {name: n for name, n in counts.items() if n < 15}
    assert not too_few, f"intents with fewer than 15 examples: {too_few}"
