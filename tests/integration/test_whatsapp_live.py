"""The Cloud API channel inside a running Rasa server, against the Graph stand-in.

Needs a trained model in models/ (make train) and both envs; `make test-integration` runs it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness import Stack, text_webhook, wait_for

pytestmark = pytest.mark.integration


def inbox_states(stack: Stack) -> dict[str, int]:
    with sqlite3.connect(stack.workdir / "channel.db") as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM wa_inbox GROUP BY state").fetchall())


def test_a_conversation_over_the_channel(stack: Stack) -> None:
    user = "44711000001"
    assert stack.post_webhook(text_webhook(user, "wamid.conv.1", "hi")) == 200
    (greeting,) = wait_for(lambda: stack.sent_to(user), 60, what="greeting")
    assert greeting["type"] == "interactive" and greeting["interactive"]["type"] == "button"
    buttons = greeting["interactive"]["action"]["buttons"]
    assert buttons[0]["reply"] == {"id": "/check_order_status", "title": "Track my order"}

    # Tapping the button sends its id back: the payload drives the dialogue.
    assert stack.post_webhook(text_webhook(user, "wamid.conv.2", "Track my order",
                                           button_id="/check_order_status")) == 200
    wait_for(lambda: len(stack.sent_to(user)) >= 2, 60, what="order number question")
    assert "order number" in stack.sent_to(user)[1]["text"]["body"]

    assert stack.post_webhook(text_webhook(user, "wamid.conv.3", "its VB-310977")) == 200
    wait_for(lambda: len(stack.sent_to(user)) >= 3, 60, what="order status")
    assert "VB-310977" in stack.sent_to(user)[2]["text"]["body"]

    # The wamid and WhatsApp metadata are on the tracker's user events.
    tracker = stack.tracker(user)
    user_events = [e for e in tracker["events"] if e["event"] == "user"]
    assert [e["message_id"] for e in user_events] == ["wamid.conv.1", "wamid.conv.2", "wamid.conv.3"]
    assert user_events[0]["metadata"]["profile_name"] == "Test Customer"
    assert user_events[0]["input_channel"] == "whatsapp"
    # Read receipts with typing indicator went out for each message, from the receiving number.
    reads = [r for r in stack_received(stack) if r["payload"].get("status") == "read"
             and r["payload"]["message_id"].startswith("wamid.conv.")]
    assert len(reads) == 3 and all(r["phone_number_id"] == "PNID-1" for r in reads)


def stack_received(stack: Stack) -> list[dict]:
    from .harness import http

    return http("GET", f"{stack.graph_url}/_sandbox/requests")[1]


def test_numbered_reply_maps_back_to_the_button_payload(stack: Stack) -> None:
    user = "44711000002"
    stack.post_webhook(text_webhook(user, "wamid.num.1", "hello"))
    wait_for(lambda: stack.sent_to(user), 60, what="greeting")
    stack.post_webhook(text_webhook(user, "wamid.num.2", "1"))  # "1" = first button, Track my order
    wait_for(lambda: len(stack.sent_to(user)) >= 2, 60, what="reply to 1")
    assert "order number" in stack.sent_to(user)[1]["text"]["body"]


def test_duplicate_delivery_gets_exactly_one_reply(stack: Stack) -> None:
    user = "44711000003"
    body = text_webhook(user, "wamid.dup.1", "hi")
    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(stack.post_webhook, [body, body, body]))
    assert statuses == [200, 200, 200]
    wait_for(lambda: stack.sent_to(user), 60, what="reply")
    time.sleep(3)  # time for any (wrong) second or third reply to show up
    assert len(stack.sent_to(user)) == 1


def test_bad_signature_is_refused_and_not_answered(stack: Stack) -> None:
    user = "44711000004"
    assert stack.post_webhook(text_webhook(user, "wamid.sig.1", "hi"), secret="not-the-secret") == 403
    time.sleep(2)
    assert stack.sent_to(user, accepted_only=False) == []


def test_retryable_failures_are_all_delivered(stack: Stack) -> None:
    stack.configure_graph(fail_rate=0.2, codes=[130429, 500], max_failures_per_payload=2, seed=7)
    users = [f"3461200{n:04d}" for n in range(30)]
    try:
        for n, user in enumerate(users):
            assert stack.post_webhook(text_webhook(user, f"wamid.flaky.{n}", "hi")) == 200
        wait_for(lambda: all(stack.sent_to(u) for u in users), 180, what="every reply despite failures")
        failed_attempts = [r for r in stack_received(stack) if r["payload"].get("to") in users and r.get("error")]
        assert failed_attempts, "the stand-in should have failed some sends"
        assert all(len(stack.sent_to(u)) == 1 for u in users)
    finally:
        stack.configure_graph(fail_rate=0.0)


def test_outside_the_window_is_recorded_not_retried(stack: Stack) -> None:
    user = "44711000005"
    stack.configure_graph(window_closed_for=[user])
    try:
        stack.post_webhook(text_webhook(user, "wamid.window.1", "hi"))
        wait_for(lambda: stack.sent_to(user, accepted_only=False), 60, what="send attempt")
        time.sleep(2)
        attempts = stack.sent_to(user, accepted_only=False)
        assert len(attempts) == 1  # 131047 is never retried (no template configured)
        with sqlite3.connect(stack.workdir / "channel.db") as conn:
            rows = conn.execute("SELECT state, error_code FROM wa_outbound WHERE conversation_id = ?",
                                (user,)).fetchall()
        assert rows == [("failed", 131047)]
    finally:
        stack.configure_graph(window_closed_for=[])


def test_the_loaded_model_is_frozen_out_of_full_garbage_collections(stack: Stack) -> None:
    """In the real server the channel froze the model once Rasa had loaded it (RASA_GC_FREEZE)."""
    log = (stack.workdir / "rasa.log").read_text(errors="replace")  # every start of the server (kill -9 test)
    frozen = [line for line in log.splitlines() if "froze" in line and "garbage collector" in line]
    starts = log.count("Rasa server is up and running")
    assert starts >= 1 and len(frozen) == starts, frozen  # once per process, though two channels start
    assert all(int(line.split("froze ")[1].split()[0]) > 100_000 for line in frozen)


def test_action_answers_are_checked_against_a_schema_compiled_once(stack: Stack) -> None:
    """In the real server the channel compiled the action-answer schema once per process
    (RASA_ACTION_SCHEMA_CHECKED_ONCE); the conversations of the tests above ran custom actions through it."""
    log = (stack.workdir / "rasa.log").read_text(errors="replace")
    compiled = [line for line in log.splitlines() if "checked against a schema compiled once" in line]
    assert len(compiled) == log.count("Rasa server is up and running") >= 1, compiled
    assert "Failed to validate Action server response" not in log


def test_a_customer_who_changes_their_number_keeps_the_conversation(stack: Stack) -> None:
    """Meta's user_changed_number: the new number's messages continue the old conversation (its tracker
    and slots), the replies go to the new number, and the system message itself is never answered."""
    old, new = "44711000071", "44711000072"
    assert stack.post_webhook(text_webhook(old, "wamid.changed.1", "Track my order",
                                           button_id="/check_order_status")) == 200
    wait_for(lambda: stack.sent_to(old), 60, what="order number question")
    assert stack.post_webhook(text_webhook(old, "wamid.changed.2", "its VB-310977")) == 200
    wait_for(lambda: len(stack.sent_to(old)) >= 2, 60, what="order status")
    time.sleep(2)  # the answer's later parts
    answered_at_the_old_number = len(stack.sent_to(old))
    system = {"from": old, "id": "wamid.changed.sys", "timestamp": str(int(time.time())), "type": "system",
              "system": {"body": f"User changed from {old} to {new}", "wa_id": new, "type": "user_changed_number"}}
    value = {"messaging_product": "whatsapp", "messages": [system],
             "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PNID-1"}}
    change = {"object": "whatsapp_business_account",
              "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]}
    assert stack.post_webhook(json.dumps(change).encode()) == 200
    assert stack.post_webhook(text_webhook(new, "wamid.changed.3", "hi")) == 200
    wait_for(lambda: stack.sent_to(new), 60, what="the answer at the new number")
    # nothing answered the system message, nothing more went to the old number
    assert len(stack.sent_to(old)) == answered_at_the_old_number
    tracker = stack.tracker(old)
    assert [e["message_id"] for e in tracker["events"] if e["event"] == "user"] == [
        "wamid.changed.1", "wamid.changed.2", "wamid.changed.3"]
    assert tracker["slots"]["order_number"] == "VB-310977"  # the slots carried over
    assert not [e for e in stack.tracker(new)["events"] if e["event"] == "user"]  # no second conversation
