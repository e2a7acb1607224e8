"""A customer who changes their number or BSUID keeps their conversation (connectors/queue.py, Queue.store):
the system message links the new ids to it, later messages continue it, replies go to the new number.
From real-format webhook bodies, through the pure parser, into the queue on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

from connectors.queue import Queue
from connectors.queue_schema import DONE
from connectors.whatsapp.to_rasa import identity_change, rasa_text, to_inbox_item
from connectors.whatsapp.updates import parse_webhook

OLD, NEW = "4915100000001", "4915200000002"


def webhook(message: dict[str, Any], contacts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PNID"},
                             "messages": [message]}
    if contacts is not None:
        value["contacts"] = contacts
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]}


def text_from(number: str, wamid: str, body: str = "hello") -> dict[str, Any]:
    return webhook({"from": number, "id": wamid, "timestamp": str(int(time.time())), "type": "text",
                    "text": {"body": body}}, contacts=[{"profile": {"name": "Ana"}, "wa_id": number}])


def number_changed(old: str, new: str, wamid: str = "wamid.SYS1", **system: Any) -> dict[str, Any]:
    # Meta's system message: no contacts array; `from` is the old number, system.wa_id the new one.
    return webhook({"from": old, "id": wamid, "timestamp": str(int(time.time())), "type": "system",
                    "system": {"body": f"User Ana changed from {old} to {new}", "wa_id": new,
                               "type": "user_changed_number", **system}})


def items(payload: dict[str, Any]) -> list[Any]:
    return [to_inbox_item(message) for message in parse_webhook(payload).messages]


async def answer_all(queue: Queue, conversation: str) -> list[Any]:
    answered = []
    while (row := await queue.next_message("whatsapp", conversation)) is not None:
        answered.append(row)
        await queue.finish(row, DONE)
    return answered


def test_the_parser_names_the_old_and_new_ids_and_never_answers() -> None:
    (message,) = parse_webhook(number_changed(OLD, NEW)).messages
    assert rasa_text(message)[0] is None
    assert identity_change(message) == {"kind": "user_changed_number", "from": [OLD], "to": [NEW], "reply_to": NEW}
    (legacy,) = parse_webhook(webhook({"from": OLD, "id": "w", "type": "system", "system": {
        "type": "customer_changed_number", "new_wa_id": NEW}})).messages
    assert identity_change(legacy)["to"] == [NEW]  # type: ignore[index]
    (bsuid,) = parse_webhook(webhook({"from": OLD, "id": "w2", "type": "system", "system": {
        "type": "user_changed_user_id", "previous_user_id": "DE.111", "user_id": "DE.222"}})).messages
    assert identity_change(bsuid) == {"kind": "user_changed_user_id", "from": [OLD, "DE.111"], "to": ["DE.222"],
                                      "reply_to": None}
    for system in ({"type": "customer_identity_changed", "identity": "abc"}, {"type": "user_changed_number"},
                   {"type": "user_changed_number", "wa_id": OLD}, {}):  # no new id: nothing to link
        (other,) = parse_webhook(webhook({"from": OLD, "id": "w3", "type": "system", "system": system})).messages
        assert identity_change(other) is None and rasa_text(other)[0] is None


async def test_after_a_number_change_the_conversation_continues_and_replies_go_to_the_new_number(
        queue: Queue) -> None:
    await queue.store(items(text_from(OLD, "wamid.A1")))
    await answer_all(queue, OLD)
    await queue.store(items(number_changed(OLD, NEW)))
    await queue.store(items(number_changed(OLD, NEW)))  # redelivered: one row, one link
    last = await queue.last_message_of("whatsapp", OLD)
    assert last is not None and last.message_id == "wamid.SYS1" and last.reply_to == NEW  # an agent's reply
    await queue.store(items(text_from(NEW, "wamid.B1", "is my order here?")))
    assert await queue.next_message("whatsapp", NEW) is None  # no second conversation
    (row,) = await answer_all(queue, OLD)
    assert row.message_id == "wamid.B1" and row.reply_to == NEW and row.conversation_id == OLD
    assert (await queue.counts())["inbox"] == {DONE: 2, "skipped": 1}


async def test_changes_chain_and_a_bsuid_change_is_followed_too(queue: Queue) -> None:
    third = "4915300000003"
    await queue.store(items(text_from(OLD, "wamid.A1")))
    await queue.store(items(number_changed(OLD, NEW)))
    await queue.store(items(number_changed(NEW, third, wamid="wamid.SYS2")))  # from the already linked number
    bsuid = webhook({"from": third, "id": "wamid.SYS3", "type": "system",
                     "system": {"type": "user_changed_user_id", "user_id": "DE.NEW"}})
    await queue.store(items(bsuid))
    await queue.store(items(webhook({"from_user_id": "DE.NEW", "id": "wamid.C1", "type": "text",
                                     "text": {"body": "still me"}})))
    await queue.store(items(text_from(third, "wamid.D1")))
    assert [r.message_id for r in await answer_all(queue, OLD)] == ["wamid.A1", "wamid.C1", "wamid.D1"]
    assert (await queue.last_message_of("whatsapp", OLD)).reply_to == third  # type: ignore[union-attr]


async def test_a_change_from_a_number_nobody_wrote_from_links_nothing(queue: Queue) -> None:
    """Bad input: the system message names ids we never saw. It is recorded (not answered) and links nothing:
    the new number's first message starts its own conversation."""
    await queue.store(items(number_changed("4900000000000", NEW)))
    await queue.store(items(text_from(NEW, "wamid.B1")))
    (row,) = await answer_all(queue, NEW)
    assert row.conversation_id == NEW
    assert await queue.next_message("whatsapp", "4900000000000") is None


async def test_two_existing_conversations_are_never_merged(queue: Queue) -> None:
    """Bad input: the 'new' number wrote to us before the change arrived. Both keep their own conversation."""
    await queue.store(items(text_from(OLD, "wamid.A1")))
    await queue.store(items(text_from(NEW, "wamid.B1")))
    await queue.store(items(number_changed(OLD, NEW)))
    await queue.store(items(text_from(NEW, "wamid.B2")))
    assert [r.message_id for r in await answer_all(queue, NEW)] == ["wamid.B1", "wamid.B2"]
    assert [r.message_id for r in await answer_all(queue, OLD)] == ["wamid.A1"]


async def test_a_change_and_the_new_numbers_message_in_one_webhook(queue: Queue) -> None:
    await queue.store(items(text_from(OLD, "wamid.A1")))
    batch = number_changed(OLD, NEW)
    batch["entry"][0]["changes"].append(text_from(NEW, "wamid.B1")["entry"][0]["changes"][0])
    await queue.store(items(batch))
    assert [r.message_id for r in await answer_all(queue, OLD)] == ["wamid.A1", "wamid.B1"]
