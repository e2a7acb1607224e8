"""The Evolution (Baileys) channel inside a running Rasa server, against the Evolution stand-in.

The same scenarios as the Cloud API channel: a conversation, numbered options mapped back,
duplicate delivery, a refused secret, failing sends; kill -9 is in test_crash_recovery.py.
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .harness import EVOLUTION_INSTANCE, Stack, wait_for

pytestmark = pytest.mark.integration


def upsert(jid: str, key_id: str, text: str, **key: Any) -> dict[str, Any]:
    return {"event": "messages.upsert", "instance": EVOLUTION_INSTANCE, "data": {
        "key": {"remoteJid": jid, "fromMe": False, "id": key_id, **key}, "pushName": "Baileys Customer",
        "message": {"conversation": text}, "messageType": "conversation", "messageTimestamp": int(time.time())}}


def texts(stack: Stack, jid: str) -> list[str]:
    return [p.get("text", "") for p in stack.evolution_sent_to(jid)]


def test_a_conversation_with_numbered_options(stack: Stack) -> None:
    jid = "44722000001@s.whatsapp.net"
    assert stack.post_evolution(upsert(jid, "EVO.CONV.1", "hi")) == 200
    (greeting,) = wait_for(lambda: texts(stack, jid), 60, what="greeting")
    assert "1. Track my order" in greeting and "Reply with a number." in greeting  # no Baileys buttons
    assert stack.post_evolution(upsert(jid, "EVO.CONV.2", "1")) == 200  # "1" = Track my order
    wait_for(lambda: len(texts(stack, jid)) >= 2, 60, what="order number question")
    assert "order number" in texts(stack, jid)[1]
    tracker = stack.tracker(jid)
    user_events = [e for e in tracker["events"] if e["event"] == "user"]
    assert [e["message_id"] for e in user_events] == ["voltbay:EVO.CONV.1", "voltbay:EVO.CONV.2"]
    assert user_events[0]["input_channel"] == "evolution" and user_events[1]["text"] == "/check_order_status"
    with sqlite3.connect(stack.workdir / "channel.db") as conn:
        channels = {row[0] for row in conn.execute("SELECT channel FROM wa_outbound WHERE conversation_id = ?",
                                                     (jid,))}
    assert channels == {"evolution"}
    # messages.update webhooks (SERVER_ACK, DELIVERY_ACK) arrive after the sends: ticks for the console.
    wait_for(lambda: _ticks(stack, jid) >= 2, 30, what="delivery updates stored")


def _ticks(stack: Stack, jid: str) -> int:
    with sqlite3.connect(stack.workdir / "channel.db") as conn:
        return conn.execute("SELECT COUNT(*) FROM wa_statuses s JOIN wa_outbound o ON s.message_id = o.message_id "
                            "WHERE o.conversation_id = ?", (jid,)).fetchone()[0]


def test_lid_sender_is_answered_on_its_jid(stack: Stack) -> None:
    jid = "998877665544332@lid"
    stack.post_evolution(upsert(jid, "EVO.LID.1", "hi"))
    wait_for(lambda: texts(stack, jid), 60, what="reply to the @lid JID")


def test_duplicates_echoes_and_a_wrong_secret(stack: Stack) -> None:
    jid = "44722000003@s.whatsapp.net"
    body = upsert(jid, "EVO.DUP.1", "hi")
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(stack.post_evolution, [body, body, body])) == [200, 200, 200]
    assert stack.post_evolution(upsert(jid, "EVO.ECHO.1", "hi", fromMe=True)) == 200
    assert stack.post_evolution(upsert("44722000004@s.whatsapp.net", "EVO.SECRET.1", "hi"), secret="nope") == 403
    wait_for(lambda: texts(stack, jid), 60, what="reply")
    time.sleep(3)
    assert len(texts(stack, jid)) == 1
    assert stack.evolution_sent_to("44722000004@s.whatsapp.net", accepted_only=False) == []


def test_failing_sends_are_all_delivered_once(stack: Stack) -> None:
    stack.configure_graph(fail_rate=0.2, max_failures_per_payload=2, seed=11)
    jids = [f"3462300{n:04d}@s.whatsapp.net" for n in range(20)]
    try:
        for n, jid in enumerate(jids):
            assert stack.post_evolution(upsert(jid, f"EVO.FLAKY.{n}", "hi")) == 200
        wait_for(lambda: all(texts(stack, j) for j in jids), 180, what="every reply despite failures")
        failed = [p for j in jids for p in stack.evolution_sent_to(j, accepted_only=False)]
        assert len(failed) > len(jids), "the stand-in should have failed some sends"
        assert all(len(texts(stack, j)) == 1 for j in jids)
    finally:
        stack.configure_graph(fail_rate=0.0)
