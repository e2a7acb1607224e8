"""The stand-alone ingest server answers like the Rasa route and stores into the same inbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.inbox import ON_EVENTS, PENDING, Inbox, create_inbox_engine
from connectors.ingest import ROUTE, create_app
from connectors.whatsapp.signature import sign
from connectors.whatsapp.updates import MAX_BODY_BYTES

from .test_whatsapp_webhook import SECRET, settings

DATA = Path(__file__).parent / "data"


async def test_ingest_verifies_stores_once_and_acks(tmp_path: Path) -> None:
    config = settings(tmp_path)
    inbox = Inbox(create_inbox_engine(config.inbox_db_url))
    async with TestClient(TestServer(create_app(config, inbox))) as client:
        body = (DATA / "batch_two_entries.json").read_bytes()
        for _ in range(2):
            answer = await client.post(ROUTE, data=body, headers={"X-Hub-Signature-256": sign(body, SECRET)})
            assert answer.status == 200
        assert sum(inbox.states().values()) == 4
        assert (await client.post(ROUTE, data=body, headers={"X-Hub-Signature-256": sign(body, "x")})).status == 403
        big = b" " * (MAX_BODY_BYTES + 1)
        assert (await client.post(ROUTE, data=big, headers={"X-Hub-Signature-256": sign(big, SECRET)})).status == 413
        junk = b"{}"
        assert (await client.post(ROUTE, data=junk, headers={"X-Hub-Signature-256": sign(junk, SECRET)})).status == 400
        handshake = {"hub.mode": "subscribe", "hub.verify_token": "verify-me", "hub.challenge": "42"}
        answer = await client.get(ROUTE, params=handshake)
        assert answer.status == 200 and await answer.text() == "42"
        assert (await client.get(ROUTE, params={**handshake, "hub.verify_token": "no"})).status == 403


async def test_ingest_through_asyncpg_stores_concurrent_deliveries_once(inbox: Inbox, tmp_path: Path) -> None:
    """PostgreSQL, WHATSAPP_INBOX_CALLS=async (as connectors.ingest runs by default): webhooks stored side by
    side on the event loop; Meta's repeats of the same webhook, racing each other, stored once."""
    if inbox.engine.dialect.name == "sqlite":
        pytest.skip("SQLite's statements always run inline")
    on_events = Inbox(inbox.engine, calls=ON_EVENTS)
    template = (DATA / "text_message.json").read_text()
    bodies = [template.replace("wamid.", f"wamid.n{n}.").encode() for n in range(10)]
    async with TestClient(TestServer(create_app(settings(tmp_path), on_events))) as client:
        answers = await asyncio.gather(*(client.post(ROUTE, data=body,
                                                     headers={"X-Hub-Signature-256": sign(body, SECRET)})
                                         for body in bodies * 3))
        assert [answer.status for answer in answers] == [200] * 30
    assert inbox.states() == {PENDING: 10}
    await on_events.close()
