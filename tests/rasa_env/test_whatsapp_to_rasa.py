"""Every WhatsApp message type → something useful for Rasa (text or intent payload + metadata)."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.whatsapp.to_rasa import apply_menu, rasa_text, to_inbox_item
from connectors.whatsapp.updates import InboundMessage, MessageType


def message(kind: str, body: dict[str, Any], **extra: Any) -> InboundMessage:
    return InboundMessage(wamid="wamid.X", conversation_id="US.1", phone_number_id="PNID", display_phone_number="1555",
                          wa_id="34600111222", user_id="US.1", profile_name="Ana", timestamp=1764072000,
                          type=MessageType(kind), body=body, **extra)


@pytest.mark.parametrize(
    ("kind", "body", "text"),
    [
        ("text", {"body": "where is my order"}, "where is my order"),
        ("interactive", {"type": "button_reply", "button_reply": {"id": "/affirm", "title": "Yes"}}, "/affirm"),
        ("interactive", {"type": "list_reply", "list_reply": {"id": '/inform{"return_reason":"damaged"}',
                                                               "title": "Arrived damaged"}},
         '/inform{"return_reason":"damaged"}'),
        ("button", {"payload": "/check_order_status", "text": "Track"}, "/check_order_status"),
        ("button", {"text": "Track"}, "Track"),
        ("image", {"id": "M1", "mime_type": "image/jpeg"}, '/share_media{"media_type":"image"}'),
        ("image", {"id": "M1", "mime_type": "image/jpeg", "caption": "screen is cracked"}, "screen is cracked"),
        ("audio", {"id": "M2", "mime_type": "audio/ogg", "voice": True}, '/share_media{"media_type":"audio"}'),
        ("document", {"id": "M3", "filename": "invoice.pdf"}, '/share_media{"media_type":"document"}'),
        ("sticker", {"id": "M4", "animated": False}, '/share_media{"media_type":"sticker"}'),
        ("video", {"id": "M5"}, '/share_media{"media_type":"video"}'),
        ("location", {"latitude": 40.4, "longitude": -3.7, "name": "Sol"},
         '/share_location{"latitude":40.4,"longitude":-3.7}'),
        ("contacts", {"contacts": [{"name": {"formatted_name": "Bo"}}]}, "/share_contact"),
        ("unsupported", {"errors": [{"code": 131051}]}, '/share_media{"media_type":"unsupported"}'),
        ("unknown", {"errors": []}, '/share_media{"media_type":"unsupported"}'),
    ],
)
def test_each_type_becomes_text_or_an_intent(kind: str, body: dict[str, Any], text: str) -> None:
    assert rasa_text(message(kind, body))[0] == text


def test_media_metadata_keeps_ids_not_bytes() -> None:
    _, extra = rasa_text(message("image", {"id": "M1", "mime_type": "image/jpeg", "sha256": "x", "caption": "c"}))
    assert extra == {"media": {"type": "image", "id": "M1", "mime_type": "image/jpeg", "sha256": "x", "caption": "c"}}


def test_reactions_are_recorded_not_answered() -> None:
    item = to_inbox_item(message("reaction", {"message_id": "wamid.OUT", "emoji": "👍"}))
    assert item.message["skip"] == "reaction"
    assert item.message["metadata"]["reaction"] == {"message_id": "wamid.OUT", "emoji": "👍"}


def test_inbox_item_carries_context_profile_and_ids() -> None:
    item = to_inbox_item(message("text", {"body": "yes"}, context={"from": "1555", "id": "wamid.OUR"}))
    meta = item.message["metadata"]
    assert (item.conversation_id, item.reply_to, item.business_id) == ("US.1", "34600111222", "PNID")
    assert meta["context"] == {"from": "1555", "id": "wamid.OUR"}
    assert meta["profile_name"] == "Ana" and meta["wamid"] == "wamid.X" and meta["channel"] == "whatsapp"


def test_oversized_text_is_capped() -> None:
    assert len(rasa_text(message("text", {"body": "x" * 10_000}))[0] or "") == 4096


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("2", "/deny"), (" 2 ", "/deny"), ("2.", "/deny"), ("#1", "/affirm"), ("3", "3"), ("22", "22"),
     ("opt:1", "/long"), ("2 please", "2 please"), ("hello", "hello")],
)
def test_apply_menu(typed: str, expected: str) -> None:
    assert apply_menu(typed, {"1": "/affirm", "2": "/deny", "opt:1": "/long"}) == expected


def test_without_a_menu_numbers_stay_text() -> None:
    assert apply_menu("1", {}) == "1"


def _message(kind: str, body: dict[str, Any] | None, **raw: Any) -> Any:
    from connectors.whatsapp.updates import InboundMessage, MessageType

    return InboundMessage(wamid="wamid.X", conversation_id="4477", phone_number_id="PNID", display_phone_number=None,
                          wa_id="4477", user_id=None, profile_name=None, timestamp=1, type=MessageType(kind),
                          body=body or {}, raw=raw)


def test_system_messages_are_recorded_never_answered() -> None:
    from connectors.whatsapp.to_rasa import rasa_text

    for body in ({"type": "user_changed_number", "body": "changed", "new_wa_id": "4478"},
                 {"type": "customer_identity_changed", "identity": "abc"},
                 {"type": "user_changed_number", "new_wa_id": "nobody-ever-wrote-from-this"}, {}):
        text, extra = rasa_text(_message("system", body))
        assert text is None and "system" in extra


def test_a_flow_reply_becomes_an_intent_with_its_fields() -> None:
    from connectors.whatsapp.to_rasa import rasa_text

    reply = {"type": "nfm_reply", "nfm_reply": {"name": "flow", "response_json": '{"order_id": "VB-1", "n": 2}'}}
    text, extra = rasa_text(_message("interactive", reply))
    assert text == '/flow_reply{"order_id":"VB-1","n":2}' and extra["flow_reply"]["valid"] is True
    for bad in ("[1, 2]", "not json", "", '"text"'):
        text, extra = rasa_text(_message("interactive", {"type": "nfm_reply", "nfm_reply": {"response_json": bad}}))
        assert text == "/flow_reply" and extra["flow_reply"]["valid"] is False


def test_call_permission_order_and_referral() -> None:
    from connectors.whatsapp.to_rasa import rasa_text, to_inbox_item

    permission = {"type": "call_permission_reply", "call_permission_reply": {"response": "accept"}}
    assert rasa_text(_message("interactive", permission))[0] == '/call_permission_reply{"call_permission":"accept"}'
    for answer in ({"response": "reject"}, {"response": "maybe"}, {}):  # anything but accept allowed no call
        declined = {"type": "call_permission_reply", "call_permission_reply": answer}
        assert rasa_text(_message("interactive", declined))[0] == '/call_permission_reply{"call_permission":"reject"}'
    order = {"catalog_id": "C1", "text": "asap", "product_items": [
        {"product_retailer_id": "SKU-1", "quantity": 2}, {"product_retailer_id": "SKU-2", "quantity": "1"}]}
    assert rasa_text(_message("order", order))[0] == "order: 2 × SKU-1, 1 × SKU-2. asap"
    assert rasa_text(_message("order", {"product_items": "junk"}))[0] == "order: no items"
    referral = {"source_url": "https://fb.me/ad", "source_type": "ad", "headline": "Sale"}
    item = to_inbox_item(_message("text", {"body": "hi"}, referral=referral))
    assert item.message["metadata"]["referral"] == referral


def test_an_interactive_message_without_its_object_is_recorded_only() -> None:
    from connectors.whatsapp.to_rasa import rasa_text

    assert rasa_text(_message("interactive", {}))[0] is None
