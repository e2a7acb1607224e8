"""Webhook JSON → typed updates: every entry, change, message and status; hostile bodies refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from connectors.whatsapp.signature import is_valid_signature, sign
from connectors.whatsapp.updates import (
    MAX_BODY_BYTES,
    MalformedWebhook,
    MessageType,
    decode_body,
    parse_webhook,
)

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def test_text_message_with_profile_name() -> None:
    batch = parse_webhook(load("text_message"))
    (message,) = batch.messages
    assert message.type is MessageType.TEXT
    assert message.body["body"].startswith("where is my order")
    assert message.conversation_id == "34600111222" == message.reply_to
    assert message.profile_name == "Lucía Fernández"
    assert message.phone_number_id == "106540352242922"
    assert message.timestamp == 1764072000
    assert batch.statuses == () and batch.errors == ()


def test_batch_of_two_entries_with_two_messages_each() -> None:
    batch = parse_webhook(load("batch_two_entries"))
    assert [m.wamid for m in batch.messages] == ["wamid.A1", "wamid.B1", "wamid.C1", "wamid.C2"]
    a1, b1, c1, c2 = batch.messages
    assert a1.profile_name == "Ana" and b1.profile_name == "Ben"
    assert (a1.phone_number_id, c1.phone_number_id) == ("PNID-A", "PNID-B")
    assert b1.context == {"from": "15550783881", "id": "wamid.OUR1"}
    assert b1.body["button_reply"]["id"] == "/check_order_status"
    # BSUID is the conversation key when present; replies still go to the phone-based id.
    assert c1.conversation_id == c2.conversation_id == "US.13491208655302741918"
    assert c1.reply_to == "44700000003"
    assert c1.type is MessageType.IMAGE and c1.body["caption"] == "the damage"
    assert c2.type is MessageType.LOCATION and c2.body["latitude"] == 40.4168


def test_status_only_payload_has_no_messages() -> None:
    batch = parse_webhook(load("statuses_only"))
    assert batch.messages == ()
    assert [(s.wamid, s.status) for s in batch.statuses] == [("wamid.OUT1", "delivered"), ("wamid.OUT2", "failed")]
    assert batch.statuses[1].errors[0]["code"] == 131047
    assert batch.errors == ({"code": 130429, "title": "Rate limit hit"},)


def test_bsuid_only_user() -> None:
    (message,) = parse_webhook(load("bsuid_only")).messages
    assert message.wa_id is None
    assert message.conversation_id == message.reply_to == "US.99887766554433221100"
    assert message.type is MessageType.REACTION


def test_unknown_types_are_kept_as_unknown() -> None:
    payload = load("text_message")
    raw = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    raw["type"] = "hologram"
    (message,) = parse_webhook(payload).messages
    assert message.type is MessageType.UNKNOWN


def test_other_fields_are_ignored() -> None:
    payload = {"object": "whatsapp_business_account",
               "entry": [{"id": "1", "changes": [{"field": "account_update", "value": {"event": "x"}}]}]}
    assert parse_webhook(payload).messages == ()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.update(object="page"),
        lambda p: p.update(entry="nope"),
        lambda p: p.pop("entry"),
    ],
)
def test_only_a_body_that_is_not_a_business_account_envelope_is_refused(mutate: Any) -> None:
    payload = load("text_message")
    mutate(payload)
    with pytest.raises(MalformedWebhook):
        parse_webhook(payload)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p["entry"][0].update(changes=[1]),
        lambda p: p["entry"][0]["changes"][0]["value"].pop("metadata"),
        lambda p: p["entry"][0]["changes"][0]["value"]["metadata"].pop("phone_number_id"),
        lambda p: p["entry"][0]["changes"][0]["value"]["messages"][0].pop("id"),
        lambda p: p["entry"][0]["changes"][0]["value"]["messages"][0].update(id="x" * 300),
        lambda p: (p["entry"][0]["changes"][0]["value"]["messages"][0].pop("from"),
                   p["entry"][0]["changes"][0]["value"].pop("contacts")),
        lambda p: p["entry"][0]["changes"][0]["value"].update(messages="nope"),
    ],
)
def test_a_message_that_cannot_be_stored_is_dropped_with_its_reason(mutate: Any) -> None:
    payload = load("text_message")
    mutate(payload)
    batch = parse_webhook(payload, received_at=1_700_000_000)
    assert batch.messages == ()
    assert batch.dropped and all(isinstance(reason, str) and reason for reason in batch.dropped)


def test_an_unusable_timestamp_becomes_the_time_it_was_received() -> None:
    for stamp in ("yesterday", 2**63, -5, None):
        payload = load("text_message")
        payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = stamp
        (message,) = parse_webhook(payload, received_at=1_700_000_000).messages
        assert message.timestamp == 1_700_000_000


def test_a_message_without_its_type_object_is_kept_without_content() -> None:
    payload = load("text_message")
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    message.pop("text")
    message["type"] = "interactive"
    (parsed,) = parse_webhook(payload).messages
    assert parsed.type is MessageType.INTERACTIVE and parsed.body == {}


def test_one_bad_message_in_a_batch_does_not_hold_back_the_others() -> None:
    payload = load("batch_two_entries")
    payload["entry"][1]["changes"][0]["value"]["messages"][1]["id"] = None
    batch = parse_webhook(payload)
    assert len(batch.messages) == 3 and len(batch.dropped) == 1


@pytest.mark.parametrize("field_name", ["calls", "account_update", "message_template_status_update",
                                        "user_preferences", "history", "smb_message_echoes", "smb_app_state_sync",
                                        "something_new_from_meta"])
def test_other_fields_are_named_and_never_refused(field_name: str) -> None:
    payload = load("statuses_only")
    payload["entry"][0]["changes"][0]["field"] = field_name  # call statuses under `calls` included
    batch = parse_webhook(payload)
    assert batch.fields == (field_name,) and batch.statuses == () and batch.dropped == ()


def test_decode_body() -> None:
    assert decode_body(b'{"a": 1}') == {"a": 1}
    for bad in (b"\xff\xfe", b"{not json", b"[" * 100_000):
        with pytest.raises(MalformedWebhook):
            decode_body(bad)
    with pytest.raises(MalformedWebhook):
        decode_body(b" " * (MAX_BODY_BYTES + 1))


def test_signature_over_raw_bytes() -> None:
    body = (DATA / "text_message.json").read_bytes()
    header = sign(body, "app-secret")
    assert is_valid_signature(body, header, "app-secret")
    assert is_valid_signature(body, header.upper().replace("SHA256=", "sha256="), "app-secret")
    # Re-serialised JSON (e.g. \u-escaped accents) is not the body Meta signed.
    reserialised = json.dumps(json.loads(body)).encode()
    assert not is_valid_signature(reserialised, header, "app-secret")
    assert not is_valid_signature(body, header, "other-secret")
    assert not is_valid_signature(body, None, "app-secret")
    assert not is_valid_signature(body, "", "app-secret")
    assert not is_valid_signature(body, header[7:], "app-secret")  # no "sha256=" prefix
    assert not is_valid_signature(body, "sha1=" + header[7:], "app-secret")
    assert not is_valid_signature(body, header + "00", "app-secret")
    assert not is_valid_signature(body, "sha256=" + "é" * 64, "app-secret")
    assert not is_valid_signature(body, header, "")  # no secret configured: nothing is trusted
