"""Evolution API webhooks → typed messages (pure), Evolution request mapping and error policy."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from connectors.evolution.api import EvolutionClient, UnsupportedOnEvolution, evolution_request
from connectors.evolution.channel import CHANNEL
from connectors.evolution.updates import digits_of, parse_evolution
from connectors.whatsapp.errors import GraphError, Verdict
from connectors.whatsapp.render import render_response
from connectors.whatsapp.to_rasa import to_inbox_item
from connectors.whatsapp.updates import MalformedWebhook, MessageType

DATA = Path(__file__).parent / "data"
TEXT = json.loads((DATA / "evolution_upsert_text.json").read_text())


def upsert(message: dict[str, Any] | None = None, **key: Any) -> dict[str, Any]:
    body = copy.deepcopy(TEXT)
    if message is not None:
        body["data"]["message"] = message
    body["data"]["key"].update(key)
    return body


def test_text_message_becomes_the_same_inbox_item_shape_as_cloud() -> None:
    batch = parse_evolution(TEXT)
    [message] = batch.messages
    assert message.type is MessageType.TEXT and message.body == {"body": "where is my order VB-310977"}
    assert message.conversation_id == "34600111222@s.whatsapp.net"
    assert message.reply_to == "34600111222@s.whatsapp.net" and message.wa_id == "34600111222"
    assert message.wamid == "voltbay:3EB0C767D26A1D8E9F01" and message.phone_number_id == "voltbay"
    item = to_inbox_item(message, CHANNEL)
    assert item.channel == "evolution" and item.business_id == "voltbay"
    assert item.message["text"] == "where is my order VB-310977"
    assert item.message["metadata"]["profile_name"] == "Ana" and item.message["metadata"]["channel"] == "evolution"


def test_extended_text_with_a_quoted_reply_goes_into_metadata() -> None:
    [message] = parse_evolution(upsert({"extendedTextMessage": {
        "text": "this one", "contextInfo": {"stanzaId": "ABC123", "participant": "34600111222@s.whatsapp.net",
                                            "quotedMessage": {"conversation": "earlier"}}}})).messages
    assert message.body == {"body": "this one"}
    assert message.context == {"id": "voltbay:ABC123", "from": "34600111222@s.whatsapp.net"}
    assert to_inbox_item(message, CHANNEL).message["metadata"]["context"]["id"] == "voltbay:ABC123"


@pytest.mark.parametrize(("payload", "kind", "text"), [
    ({"imageMessage": {"mimetype": "image/jpeg", "caption": "broken screen"}}, MessageType.IMAGE, "broken screen"),
    ({"imageMessage": {"mimetype": "image/jpeg"}}, MessageType.IMAGE, '/share_media{"media_type":"image"}'),
    ({"documentWithCaptionMessage": {"message": {"documentMessage": {"fileName": "invoice.pdf",
                                                                     "caption": "my invoice"}}}},
     MessageType.DOCUMENT, "my invoice"),
    ({"audioMessage": {"mimetype": "audio/ogg", "ptt": True}}, MessageType.AUDIO, '/share_media{"media_type":"audio"}'),
    ({"locationMessage": {"degreesLatitude": 40.42, "degreesLongitude": -3.67, "name": "Home"}},
     MessageType.LOCATION, '/share_location{"latitude":40.42,"longitude":-3.67}'),
    ({"contactMessage": {"displayName": "Luis", "vcard": "BEGIN:VCARD"}}, MessageType.CONTACTS, "/share_contact"),
    ({"buttonsResponseMessage": {"selectedButtonId": "/affirm", "selectedDisplayText": "Yes"}},
     MessageType.INTERACTIVE, "/affirm"),
    ({"listResponseMessage": {"singleSelectReply": {"selectedRowId": "/deny"}}}, MessageType.INTERACTIVE, "/deny"),
    ({"ephemeralMessage": {"message": {"conversation": "disappearing hi"}}}, MessageType.TEXT, "disappearing hi"),
    ({"pollCreationMessage": {"name": "?"}}, MessageType.UNSUPPORTED, '/share_media{"media_type":"unsupported"}'),
])
def test_every_message_kind_maps_to_something_useful(payload: dict[str, Any], kind: MessageType, text: str) -> None:
    [message] = parse_evolution(upsert(payload)).messages
    assert message.type is kind
    assert to_inbox_item(message, CHANNEL).message["text"] == text


def test_reactions_are_recorded_not_answered() -> None:
    [message] = parse_evolution(upsert({"reactionMessage": {"key": {"id": "OUT1"}, "text": "👍"}})).messages
    item = to_inbox_item(message, CHANNEL)
    assert item.message["skip"] == "reaction" and item.message["metadata"]["reaction"]["emoji"] == "👍"


@pytest.mark.parametrize(("key", "reason"), [
    ({"fromMe": True}, "fromMe"),
    ({"remoteJid": "120363025246125486@g.us"}, "group"),
    ({"remoteJid": "status@broadcast"}, "broadcast"),
])
def test_echoes_groups_and_status_broadcasts_are_dropped(key: dict[str, Any], reason: str) -> None:
    batch = parse_evolution(upsert(**key))
    assert batch.messages == () and batch.dropped == (reason,)


def test_lid_senders_are_answered_on_the_jid_received_or_the_alternative_given() -> None:
    [lid] = parse_evolution(upsert(remoteJid="123456789012345@lid")).messages
    assert lid.reply_to == "123456789012345@lid" and lid.wa_id is None  # no digits made up
    assert lid.conversation_id == "123456789012345@lid"
    [alt] = parse_evolution(upsert(remoteJid="123456789012345@lid",
                                   remoteJidAlt="34600999888@s.whatsapp.net")).messages
    assert alt.reply_to == "34600999888@s.whatsapp.net" and alt.conversation_id == "123456789012345@lid"
    assert digits_of("34600111222:12@s.whatsapp.net") == "34600111222" and digits_of("x@lid") is None


@pytest.mark.parametrize("stamp, expected", [(1764072000, 1764072000), ("1764072000", 1764072000),
                                              ({"low": 1764072000, "high": 0, "unsigned": True}, 1764072000),
                                              (1764072000123, 1764072000)])
def test_timestamp_shapes(stamp: Any, expected: int) -> None:
    body = copy.deepcopy(TEXT)
    body["data"]["messageTimestamp"] = stamp
    assert parse_evolution(body).messages[0].timestamp == expected


@pytest.mark.parametrize("mutate", [
    lambda b: b["data"]["key"].pop("id"),
    lambda b: b["data"]["key"].pop("remoteJid"),
    lambda b: b["data"].update(key="not an object"),
    lambda b: b.update(data=["not an object"]),
    lambda b: b.pop("instance"),
    lambda b: b.pop("data"),
    lambda b: b["data"]["key"].update(id="x" * 500),
])
def test_a_message_that_cannot_be_stored_is_dropped_never_refused(mutate: Any) -> None:
    body = copy.deepcopy(TEXT)
    mutate(body)
    batch = parse_evolution(body, received_at=1_700_000_000)
    assert batch.messages == () and batch.dropped


def test_only_a_body_that_is_not_an_object_is_refused() -> None:
    for junk in (None, [], "text", 3):
        with pytest.raises(MalformedWebhook):
            parse_evolution(junk)


@pytest.mark.parametrize("stamp", ["yesterday", 2**63, -1])
def test_an_unusable_timestamp_becomes_the_time_it_was_received(stamp: Any) -> None:
    body = copy.deepcopy(TEXT)
    body["data"]["messageTimestamp"] = stamp
    assert parse_evolution(body, received_at=1_700_000_000).messages[0].timestamp == 1_700_000_000


def test_any_event_is_accepted_and_only_messages_kept() -> None:
    for event in ("connection.update", "qrcode.updated", "contacts.upsert", "chats.update", "presence.update",
                  "send.message", "CONNECTION_UPDATE", "something.new"):
        batch = parse_evolution({"event": event, "instance": "voltbay", "data": {"state": "open"}})
        assert batch.messages == () and batch.statuses == ()


def test_a_deletion_names_the_message_and_its_conversation() -> None:
    batch = parse_evolution({"event": "messages.delete", "instance": "voltbay",
                             "data": {"key": {"id": "ABC", "remoteJid": "447700900001@s.whatsapp.net"}}})
    assert batch.revoked == (("voltbay:ABC", "447700900001@s.whatsapp.net"),)
    assert parse_evolution({"event": "messages.delete", "instance": "voltbay", "data": {}}).dropped


def test_the_event_may_come_from_the_url() -> None:
    body = copy.deepcopy(TEXT)
    body.pop("event")
    assert len(parse_evolution(body, path_event="messages-upsert").messages) == 1


def test_other_events_are_ignored_and_status_updates_become_statuses() -> None:
    assert parse_evolution({"event": "connection.update", "instance": "voltbay", "data": {"state": "open"}}).dropped
    batch = parse_evolution({"event": "messages.update", "instance": "voltbay", "data": [
        {"keyId": "OUT1", "remoteJid": "34600111222@s.whatsapp.net", "fromMe": True, "status": "DELIVERY_ACK"},
        {"keyId": "OUT1", "fromMe": True, "status": "READ", "messageTimestamp": 1764072001},
        {"keyId": "IN1", "fromMe": False, "status": "READ"},
        {"keyId": "OUT2", "fromMe": True, "status": "WHATEVER"}]})
    assert [(s.wamid, s.status) for s in batch.statuses] == [("OUT1", "delivered"), ("OUT1", "read")]
    with pytest.raises(MalformedWebhook):
        parse_evolution([1, 2])


def test_rendered_replies_map_to_evolution_requests() -> None:
    reply = render_response("34600111222@s.whatsapp.net", {"text": "Shall I cancel it?", "buttons": [
        {"title": "Yes", "payload": "/affirm"}, {"title": "No", "payload": "/deny"}]}, numbered_options=True)
    assert reply.menu == {"1": "/affirm", "2": "/deny"}
    [(path, body)] = [evolution_request(p) for p in reply.payloads]
    assert path == "message/sendText" and body["number"] == "34600111222@s.whatsapp.net"
    assert body["text"] == "Shall I cancel it?\n\n1. Yes\n2. No\n\nReply with a number."
    image = render_response("346", {"image": "https://cdn.example/a.png"}).payloads[0]
    assert evolution_request(image) == ("message/sendMedia", {"number": "346", "mediatype": "image",
                                                              "media": "https://cdn.example/a.png"})
    with pytest.raises(UnsupportedOnEvolution):
        evolution_request({"to": "346", "type": "template", "template": {"name": "x"}})


@pytest.mark.parametrize(("status", "server_errors", "expected"), [
    (429, 0, Verdict.RETRY), (500, 0, Verdict.RETRY), (0, 1, Verdict.RETRY), (502, 2, Verdict.FAIL),
    (400, 0, Verdict.FAIL), (401, 0, Verdict.FAIL), (404, 0, Verdict.FAIL)])
def test_evolution_error_policy(status: int, server_errors: int, expected: Verdict) -> None:
    assert EvolutionClient("http://x", "k").decide(GraphError(status, None, "e"), server_errors) is expected
