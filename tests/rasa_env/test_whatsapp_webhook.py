"""The Cloud API webhook route of the Rasa channel (for `rasa run` by hand; connectors/receiver.py serves the
same functions in `make run`): verification, signature, limits, storage, ACK, the worker told at once."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from rasa.core.channels.channel import UserMessage
from sanic import Sanic

from connectors.settings import WhatsAppSettings
from connectors.whatsapp.channel import WhatsAppInput
from connectors.whatsapp.signature import sign
from connectors.whatsapp.updates import MAX_BODY_BYTES

from .conftest import queue_states

DATA = Path(__file__).parent / "data"
SECRET = "app-secret"
ROUTE = "/webhooks/whatsapp/webhook"


def settings(tmp_path: Path, graph_url: str = "http://127.0.0.1:9", run_worker: bool = False,
             **more: Any) -> WhatsAppSettings:
    return WhatsAppSettings(
        verify_token="verify-me", app_secret=SECRET, access_token="test-token", graph_api_url=graph_url,
        api_version="v23.0", phone_number_id="PNID-A", inbox_db_url=f"sqlite:///{tmp_path / 'inbox.db'}",
        stale_after_seconds=10 * 365 * 86400, concurrency=4, template=None,
        run_worker=run_worker,  # off: these tests look at what the webhook stored; the worker has its own tests
        poll_interval_seconds=0.02, **more,
    )


@pytest.fixture
async def channel_app(tmp_path: Path) -> AsyncIterator[tuple[Sanic, WhatsAppInput, Path]]:
    async def on_new_message(_message: UserMessage) -> None:
        raise AssertionError("the worker is off")

    channel = WhatsAppInput(settings(tmp_path))
    app = Sanic(f"wa_test_{uuid.uuid4().hex[:8]}")
    app.blueprint(channel.blueprint(on_new_message), url_prefix=f"/webhooks/{channel.url_prefix()}")
    yield app, channel, tmp_path / "inbox.db"


async def post(app: Sanic, body: bytes, signature: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    _, response = await app.asgi_client.post(ROUTE, content=body, headers=headers)
    return response


async def test_verification_handshake(channel_app: Any) -> None:
    app, _, _ = channel_app
    ok = {"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "1158201444"}
    _, response = await app.asgi_client.get(ROUTE, params=ok)
    assert response.status == 200 and response.text == "1158201444"
    _, response = await app.asgi_client.get(ROUTE, params={**ok, "hub.verify_token": "wrong"})
    assert response.status == 403


async def test_bad_signature_oversized_and_not_an_envelope_store_nothing(channel_app: Any) -> None:
    app, _, db = channel_app
    body = (DATA / "text_message.json").read_bytes()
    assert (await post(app, body)).status == 403
    assert (await post(app, body, sign(body, "wrong-secret"))).status == 403
    assert (await post(app, body, sign(body + b" ", SECRET))).status == 403
    big = b" " * (MAX_BODY_BYTES + 1)
    assert (await post(app, big, sign(big, SECRET))).status == 413
    for junk in (b"", b"null", b"[]", b'{"object": "page"}', "ü".encode("latin-1")):
        assert (await post(app, junk, sign(junk, SECRET))).status == 400
    assert queue_states(db) == {}


async def test_a_batch_is_stored_once_however_often_it_comes(channel_app: Any) -> None:
    app, channel, db = channel_app
    body = (DATA / "batch_two_entries.json").read_bytes()
    for _ in range(3):  # Meta delivers duplicates
        assert (await post(app, body, sign(body, SECRET))).status == 200
    assert queue_states(db) == {"pending": 4}
    row = await channel.queue.next_message("whatsapp", "US.13491208655302741918")
    assert row is not None and row.message_id == "wamid.C1" and row.message["text"] == "the damage"
    assert row.message["metadata"]["media"] == {"type": "image", "id": "MEDIA1", "mime_type": "image/jpeg",
                                                "sha256": "abc", "caption": "the damage"}
    assert (row.business_id, row.reply_to) == ("PNID-B", "44700000003")


async def test_a_message_that_cannot_be_stored_does_not_hold_back_the_batch(channel_app: Any) -> None:
    app, _, db = channel_app
    payload = json.loads((DATA / "batch_two_entries.json").read_text())
    payload["entry"][1]["changes"][0]["value"]["messages"][1]["id"] = None
    body = json.dumps(payload).encode()
    assert (await post(app, body, sign(body, SECRET))).status == 200
    assert queue_states(db) == {"pending": 3}


class RecordingWorker:
    def __init__(self) -> None:
        self.notified: list[str] = []

    def notify(self, conversation_id: str) -> None:
        self.notified.append(conversation_id)

    async def stop(self) -> None:
        """The channel stops its worker with the server."""


async def test_the_worker_hears_which_conversations_got_messages(channel_app: Any) -> None:
    app, channel, _ = channel_app
    body = (DATA / "batch_two_entries.json").read_bytes()
    assert (await post(app, b"{}", sign(b"{}", SECRET))).status == 400  # (starts the app)
    channel.worker = RecordingWorker()
    assert (await post(app, body, sign(body, SECRET))).status == 200
    assert "US.13491208655302741918" in channel.worker.notified
    assert len(channel.worker.notified) == len(set(channel.worker.notified))
    assert (await post(app, body, sign(body, "wrong"))).status == 403


async def test_statuses_are_stored_never_queued(channel_app: Any) -> None:
    app, _, db = channel_app
    body = (DATA / "statuses_only.json").read_bytes()
    assert (await post(app, body, sign(body, SECRET))).status == 200
    assert queue_states(db) == {}
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM wa_statuses WHERE message_id = 'wamid.OUT2'").fetchall() == \
            [("failed",)]


async def test_a_non_ascii_body_is_verified_on_its_raw_bytes(channel_app: Any) -> None:
    app, _, db = channel_app
    body = (DATA / "text_message.json").read_bytes()  # contains "¿dónde está?" unescaped
    assert "dónde".encode() in body
    assert (await post(app, body, sign(body, SECRET))).status == 200
    assert queue_states(db) == {"pending": 1}
