"""Rasa responses → Graph payloads, at and past every WhatsApp limit."""

from __future__ import annotations

from connectors.whatsapp.render import (
    BODY_LIMIT,
    TEXT_LIMIT,
    render_response,
    split_text,
    template_message,
)

TO = "34600111222"


def buttons(n: int, title: str = "Option", payload: str = "/choose") -> list[dict[str, str]]:
    return [{"title": f"{title} {i}", "payload": f"{payload}{{\"n\":{i}}}"} for i in range(1, n + 1)]


def test_plain_text() -> None:
    (payload,) = render_response(TO, {"text": "Hi there"}).payloads
    assert payload == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": TO,
                       "type": "text", "text": {"body": "Hi there", "preview_url": False}}


def test_links_get_a_preview() -> None:
    (payload,) = render_response(TO, {"text": "Track: https://t.example/1"}).payloads
    assert payload["text"]["preview_url"] is True


def test_long_text_splits_at_sentences_and_lines_within_the_limit() -> None:
    sentence = "This sentence is exactly fifty characters long ok. "
    text = sentence * 200  # 10,000 chars
    chunks = split_text(text)
    assert all(len(c) <= TEXT_LIMIT for c in chunks) and len(chunks) == 3
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks) == text.strip()
    lines = "\n".join(["line of text"] * 1000)
    assert all(len(c) <= TEXT_LIMIT and not c.startswith("\n") for c in split_text(lines))
    unbroken = "x" * 9000
    assert [len(c) for c in split_text(unbroken)] == [4096, 4096, 808]
    assert split_text("   ") == []


def test_exactly_the_limit_is_one_message() -> None:
    assert len(split_text("a" * TEXT_LIMIT)) == 1
    assert len(split_text("a" * (TEXT_LIMIT + 1))) == 2


def test_up_to_three_buttons_are_reply_buttons() -> None:
    reply = render_response(TO, {"text": "Pick one", "buttons": buttons(3)})
    (payload,) = reply.payloads
    interactive = payload["interactive"]
    assert interactive["type"] == "button"
    assert interactive["body"]["text"] == "Pick one"
    assert [b["reply"]["title"] for b in interactive["action"]["buttons"]] == ["Option 1", "Option 2", "Option 3"]
    assert interactive["action"]["buttons"][0]["reply"]["id"] == '/choose{"n":1}'
    assert reply.menu["2"] == '/choose{"n":2}'  # typing "2" works too


def test_button_titles_are_clipped_and_unique() -> None:
    long = [{"title": "Arrived damaged in the box", "payload": "/a"}, {"title": "Arrived damaged in the bag",
                                                                        "payload": "/b"}]
    (payload,) = render_response(TO, {"text": "Why?", "buttons": long}).payloads
    titles = [b["reply"]["title"] for b in payload["interactive"]["action"]["buttons"]]
    assert all(len(t) <= 20 for t in titles)
    assert len(set(titles)) == 2


def test_overlong_payloads_get_short_ids_mapped_back() -> None:
    payload = "/inform" + "{" + '"x":"' + "y" * 300 + '"}'
    reply = render_response(TO, {"text": "?", "buttons": [{"title": "A", "payload": payload}]})
    button = reply.payloads[0]["interactive"]["action"]["buttons"][0]["reply"]
    assert button["id"] == "opt:1" and reply.menu["opt:1"] == payload


def test_four_to_ten_options_are_a_list() -> None:
    for n in (4, 10):
        reply = render_response(TO, {"text": "Pick", "buttons": buttons(n, title="A rather long option title")})
        (payload,) = reply.payloads
        interactive = payload["interactive"]
        assert interactive["type"] == "list"
        rows = interactive["action"]["sections"][0]["rows"]
        assert len(rows) == n
        assert all(len(r["title"]) <= 24 and len(r["id"]) <= 200 for r in rows)
        assert all(len(r.get("description", "")) <= 72 for r in rows)
        assert rows[0]["description"] == "A rather long option title 1"
        assert len(interactive["action"]["button"]) <= 20
        assert len(interactive["action"]["sections"][0]["title"]) <= 24


def test_more_than_ten_options_are_numbered_text() -> None:
    reply = render_response(TO, {"text": "Pick", "buttons": buttons(12)})
    (payload,) = reply.payloads
    assert payload["type"] == "text"
    assert "1. Option 1" in payload["text"]["body"] and "12. Option 12" in payload["text"]["body"]
    assert reply.menu["12"] == '/choose{"n":12}' and len(reply.menu) == 12


def test_long_text_before_buttons_goes_first_as_text() -> None:
    text = "Intro sentence. " * 100  # 1600 chars > body limit
    reply = render_response(TO, {"text": text, "buttons": buttons(2)})
    *lead, interactive = reply.payloads
    assert lead and all(p["type"] == "text" for p in lead)
    assert interactive["type"] == "interactive"
    assert len(interactive["interactive"]["body"]["text"]) <= BODY_LIMIT


def test_buttons_without_text_still_have_a_body() -> None:
    (payload,) = render_response(TO, {"buttons": buttons(2)}).payloads
    assert payload["interactive"]["body"]["text"]


def test_quick_replies_render_like_buttons() -> None:
    (payload,) = render_response(TO, {"text": "?", "quick_replies": buttons(2)}).payloads
    assert payload["interactive"]["type"] == "button"


def test_image_attachment_and_custom() -> None:
    reply = render_response(TO, {
        "text": "Here you go",
        "image": "https://cdn.example/p.png",
        "attachment": "https://cdn.example/invoice.pdf?sig=1",
        "custom": {"type": "location_request_message", "interactive": {"type": "location_request_message"}},
    })
    kinds = [p["type"] for p in reply.payloads]
    assert kinds == ["text", "location_request_message", "image", "document"]
    assert reply.payloads[2]["image"] == {"link": "https://cdn.example/p.png"}
    assert reply.payloads[3]["document"]["filename"] == "invoice.pdf"
    assert all(p["to"] == TO and p["messaging_product"] == "whatsapp" for p in reply.payloads)


def test_custom_cannot_redirect_the_recipient() -> None:
    (payload,) = render_response(TO, {"custom": {"type": "text", "to": "someone-else", "text": {"body": "x"}}}).payloads
    assert payload["to"] == TO


def test_empty_response_sends_nothing() -> None:
    assert render_response(TO, {}).payloads == []
    assert render_response(TO, {"text": "   "}).payloads == []


def test_template() -> None:
    payload = template_message(TO, "reengage_customer", "en")
    assert payload["template"] == {"name": "reengage_customer", "language": {"code": "en"}}
