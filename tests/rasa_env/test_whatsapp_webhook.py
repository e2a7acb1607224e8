"""The webhook route on a throwaway Sanic app: verification, signature, limits, storage, ACK."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from rasa.core.channels.channel import UserMessage
from sanic import Sanic
from sanic_testing import TestManager

from connectors.settings import WhatsAppSettings
from connectors.whatsapp.channel import WhatsAppInput
from connectors.whatsapp.signature import sign
from connectors.whatsapp.updates import MAX_BODY_BYTES

DATA = Path(__file__).parent / "data"
SECRET = "app-secret"
ROUTE = "/webhooks/whatsapp/webhook"


def settings(tmp_path: Path, graph_url: str = "http://127.0.0.1:9") -> WhatsAppSettings:
    return WhatsAppSettings(
        verify_token="verify-me", app_secret=SECRET, access_token="test-token", graph_api_url=graph_url,
        api_version="v23.0", phone_number_id="PNID-A", inbox_db_url=f"sqlite:///{tmp_path / 'inbox.db'}",
        stale_after_seconds=10 * 365 * 86400, concurrency=4, template=None,
        run_worker=False,  # these tests look at what the webhook stored; the worker has its own tests
    )


@pytest.fixture
def channel_app(tmp_path: Path) -> tuple[Sanic, WhatsAppInput, list[UserMessage]]:
    received: list[UserMessage] = []

    async def on_new_message(message: UserMessage) -> None:
        received.append(message)

    channel = WhatsAppInput(settings(tmp_path))
    app = Sanic(f"wa_test_{uuid.uuid4().hex[:8]}")
    app.blueprint(channel.blueprint(on_new_message), url_prefix=f"/webhooks/{channel.url_prefix()}")
    TestManager(app)
    return app, channel, received


def post(app: Sanic, body: bytes, signature: str | None = None, **headers: str) -> Any:
    all_headers = {"Content-Type": "application/json", **headers}
    if signature is not None:
        all_headers["X-Hub-Signature-256"] = signature
    _, response = app.test_client.post(ROUTE, content=body, headers=all_headers)
    return response


def test_verification_handshake(channel_app: Any) -> None:
    app, _, _ = channel_app
    ok = {"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "1158201444"}
    _, response = app.test_client.get(ROUTE, params=ok)
    assert response.status == 200 and response.text == "1158201444"
    _, response = app.test_client.get(ROUTE, params={**ok, "hub.verify_token": "wrong"})
    assert response.status == 403
    _, response = app.test_client.get(ROUTE)
    assert response.status == 403


def test_bad_or_missing_signature_is_403_and_stores_nothing(channel_app: Any) -> None:
    app, channel, _ = channel_app
    body = (DATA / "text_message.json").read_bytes()
    assert post(app, body).status == 403
    assert post(app, body, sign(body, "wrong-secret")).status == 403
    assert post(app, body, sign(body + b" ", SECRET)).status == 403
    assert channel.inbox.states() == {}


def test_oversized_body_is_413(channel_app: Any) -> None:
    app, channel, _ = channel_app
    body = b" " * (MAX_BODY_BYTES + 1)
    assert post(app, body, sign(body, SECRET)).status == 413
    assert channel.inbox.states() == {}


def test_only_a_body_that_is_no_business_account_envelope_is_400(channel_app: Any) -> None:
    app, channel, _ = channel_app
    payload = json.loads((DATA / "batch_two_entries.json").read_text())
    payload["entry"][1]["changes"][0]["value"]["messages"][1]["id"] = None  # cannot be stored: dropped, logged
    body = json.dumps(payload).encode()
    assert post(app, body, sign(body, SECRET)).status == 200
    assert channel.inbox.states() == {"pending": 3}
    for junk in (b"", b"null", b"[]", b'{"object": "page"}', "ü".encode("latin-1")):
        assert post(app, junk, sign(junk, SECRET)).status == 400


def test_batch_is_stored_once_and_acked(channel_app: Any) -> None:
    app, channel, _ = channel_app
    body = (DATA / "batch_two_entries.json").read_bytes()
    for _ in range(3):  # Meta delivers duplicates
        response = post(app, body, sign(body, SECRET))
        assert response.status == 200
    assert sum(channel.inbox.states().values()) == 4
    row = channel.inbox.claim_next("US.13491208655302741918")
    assert row is not None and row.message_id == "wamid.C1"
    assert row.message["text"] == "the damage"
    assert row.message["metadata"]["media"] == {"type": "image", "id": "MEDIA1", "mime_type": "image/jpeg",
                                                "sha256": "abc", "caption": "the damage"}
    assert (row.business_id, row.reply_to) == ("PNID-B", "44700000003")


class RecordingWorker:
    def __init__(self) -> None:
        self.notified: list[str | None] = []

    def notify(self, conversation_id: str | None = None) -> None:
        self.notified.append(conversation_id)

    async def stop(self) -> None:
        """The channel stops its worker with the server."""


def test_the_worker_hears_which_conversations_got_new_messages(channel_app: Any) -> None:
    """Named, so their drains start without a look over the whole inbox; duplicates and refusals: nothing."""
    app, channel, _ = channel_app
    channel.worker = RecordingWorker()
    body = (DATA / "batch_two_entries.json").read_bytes()
    assert post(app, body, sign(body, SECRET)).status == 200
    stored = channel.worker.notified
    assert len(stored) == len(set(stored)) >= 2 and None not in stored
    assert "US.13491208655302741918" in stored
    assert post(app, body, sign(body, SECRET)).status == 200  # a duplicate delivery
    assert post(app, body, sign(body, "wrong")).status == 403
    assert channel.worker.notified == stored


def test_statuses_are_stored_not_queued(channel_app: Any) -> None:
    app, channel, _ = channel_app
    body = (DATA / "statuses_only.json").read_bytes()
    assert post(app, body, sign(body, SECRET)).status == 200
    assert channel.inbox.states() == {}
    assert channel.inbox.statuses_for("wamid.OUT2") == ["failed"]


def test_non_ascii_body_is_verified_on_raw_bytes(channel_app: Any) -> None:
    app, channel, _ = channel_app
    body = (DATA / "text_message.json").read_bytes()  # contains "¿dónde está?" unescaped
    assert "dónde".encode() in body
    assert post(app, body, sign(body, SECRET)).status == 200
    assert channel.inbox.states() == {"pending": 1}
