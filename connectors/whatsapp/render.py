"""Rasa response dict → Cloud API message payloads. Pure: no I/O, stdlib only.

Limits (Meta's): text 4096; reply buttons ≤3, title ≤20 and unique, id ≤256,
body ≤1024; list ≤10 rows, row title ≤24, description ≤72, row id ≤200,
button label ≤20. More than 10 options become numbered text, and the
returned `menu` maps "1", "2"… (and over-long ids) back to the Rasa payloads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TEXT_LIMIT = 4096
BODY_LIMIT = 1024
BUTTON_TITLE_LIMIT = 20
BUTTON_ID_LIMIT = 256
MAX_REPLY_BUTTONS = 3
MAX_LIST_ROWS = 10
ROW_TITLE_LIMIT = 24
ROW_DESCRIPTION_LIMIT = 72
ROW_ID_LIMIT = 200
LIST_BUTTON_LABEL = "Choose"
CAPTION_LIMIT = 1024
MENU_ID_PREFIX = "opt:"

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True)
class Option:
    title: str
    payload: str


@dataclass(frozen=True)
class RenderedReply:
    payloads: list[dict[str, Any]]
    # reply token ("1", "opt:2") → Rasa payload, for the options just sent
    menu: dict[str, str] = field(default_factory=dict)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Chunks ≤ limit, cut at paragraph, line, sentence, then word boundaries."""
    text = text.strip()
    if not text:
        return []
    chunks: list[str] = []
    while len(text) > limit:
        window = text[: limit + 1]
        cut = -1
        for separator in ("\n\n", "\n"):
            cut = window.rfind(separator, 0, limit)
            if cut > limit // 4:
                break
        if cut <= limit // 4:
            ends = [m.start() for m in _SENTENCE_END.finditer(window) if m.start() <= limit]
            cut = ends[-1] if ends and ends[-1] > limit // 4 else window.rfind(" ", 0, limit)
        if cut <= 0:
            cut = limit
        chunks.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        chunks.append(text)
    return chunks


def _options(response: dict[str, Any]) -> list[Option]:
    raw = response.get("quick_replies") or response.get("buttons") or []
    options = []
    for button in raw:
        if not isinstance(button, dict):
            continue
        title = " ".join(str(button.get("title") or "").split())
        payload = str(button.get("payload") or title)
        if title or payload:
            options.append(Option(title or payload, payload))
    return options


def _unique_titles(titles: list[str], limit: int) -> list[str]:
    """Clip each title to `limit` and make them unique (Meta rejects duplicates)."""
    result: list[str] = []
    for title in titles:
        candidate = _clip(title, limit)
        n = 2
        while candidate in result:
            suffix = f" ({n})"
            candidate = _clip(title, limit - len(suffix)).rstrip("…") + suffix
            n += 1
        result.append(candidate)
    return result


def _option_ids(options: list[Option], limit: int, menu: dict[str, str]) -> list[str]:
    ids = []
    for n, option in enumerate(options, start=1):
        if len(option.payload) <= limit and not option.payload.startswith(MENU_ID_PREFIX):
            ids.append(option.payload)
        else:
            token = f"{MENU_ID_PREFIX}{n}"
            menu[token] = option.payload
            ids.append(token)
    return ids


def _base(recipient: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": recipient}


def _text(recipient: str, body: str) -> dict[str, Any]:
    return {**_base(recipient), "type": "text", "text": {"body": body, "preview_url": "http" in body}}


def _with_options(recipient: str, text: str, options: list[Option], numbered: bool = False) -> RenderedReply:
    menu: dict[str, str] = {}
    if numbered or len(options) > MAX_LIST_ROWS:
        lines = [f"{n}. {option.title}" for n, option in enumerate(options, start=1)]
        menu.update({str(n): option.payload for n, option in enumerate(options, start=1)})
        numbered = (text + "\n\n" if text else "") + "\n".join(lines) + "\n\nReply with a number."
        return RenderedReply([_text(recipient, chunk) for chunk in split_text(numbered)], menu)

    chunks = split_text(text, TEXT_LIMIT) or [""]
    # The interactive body holds ≤1024 chars: earlier text goes first as plain messages.
    lead, body = chunks[:-1], chunks[-1]
    if len(body) > BODY_LIMIT:
        parts = split_text(body, BODY_LIMIT)
        lead, body = [*lead, " ".join(parts[:-1])], parts[-1]
        lead = [c for chunk in lead for c in split_text(chunk)]
    payloads = [_text(recipient, chunk) for chunk in lead]
    body = body or "Please choose:"
    # Numbers work for buttons and lists too: "2" picks the second option.
    menu.update({str(n): option.payload for n, option in enumerate(options, start=1)})

    if len(options) <= MAX_REPLY_BUTTONS:
        titles = _unique_titles([o.title for o in options], BUTTON_TITLE_LIMIT)
        ids = _option_ids(options, BUTTON_ID_LIMIT, menu)
        buttons = [{"type": "reply", "reply": {"id": i, "title": t}} for i, t in zip(ids, titles, strict=True)]
        interactive = {"type": "button", "body": {"text": body}, "action": {"buttons": buttons}}
    else:
        titles = _unique_titles([o.title for o in options], ROW_TITLE_LIMIT)
        ids = _option_ids(options, ROW_ID_LIMIT, menu)
        rows = []
        for option, title, row_id in zip(options, titles, ids, strict=True):
            row: dict[str, Any] = {"id": row_id, "title": title}
            if title != option.title:
                row["description"] = _clip(option.title, ROW_DESCRIPTION_LIMIT)
            rows.append(row)
        interactive = {
            "type": "list",
            "body": {"text": body},
            "action": {"button": LIST_BUTTON_LABEL, "sections": [{"title": "Options", "rows": rows}]},
        }
    payloads.append({**_base(recipient), "type": "interactive", "interactive": interactive})
    return RenderedReply(payloads, menu)


def _media(recipient: str, kind: str, url: str, caption: str | None = None) -> dict[str, Any]:
    media: dict[str, Any] = {"link": url}
    if caption:
        media["caption"] = _clip(caption, CAPTION_LIMIT)
    if kind == "document":
        media["filename"] = url.rsplit("/", 1)[-1].split("?", 1)[0][:240] or "document"
    return {**_base(recipient), "type": kind, kind: media}


def _custom(recipient: str, custom: Any) -> list[dict[str, Any]]:
    """`custom` JSON: a Graph message object (or a list of them) sent as it is."""
    items = custom if isinstance(custom, list) else [custom]
    payloads = []
    for item in items:
        if isinstance(item, dict) and item:
            payloads.append({**_base(recipient), **item, "to": recipient})
    return payloads


def render_response(recipient: str, response: dict[str, Any], numbered_options: bool = False) -> RenderedReply:
    """All payloads for one Rasa bot response, in the order the customer should see them.

    `numbered_options`: buttons and lists as numbered text whatever their number (channels
    whose interactive messages are unreliable, e.g. Baileys numbers through Evolution API).
    """
    text = str(response.get("text") or "")
    options = _options(response)
    if options:
        reply = _with_options(recipient, text, options, numbered_options)
    else:
        reply = RenderedReply([_text(recipient, chunk) for chunk in split_text(text)])
    payloads = list(reply.payloads)
    if response.get("custom"):
        payloads.extend(_custom(recipient, response["custom"]))
    if response.get("image"):
        payloads.append(_media(recipient, "image", str(response["image"])))
    if response.get("attachment"):
        attachment = response["attachment"]
        url = attachment.get("payload", {}).get("src") if isinstance(attachment, dict) else attachment
        if isinstance(url, str) and url:
            payloads.append(_media(recipient, "document", url))
    for element in response.get("elements") or []:
        if isinstance(element, dict):
            lines = [str(element.get(k)) for k in ("title", "subtitle") if element.get(k)]
            payloads.extend(_text(recipient, chunk) for chunk in split_text("\n".join(lines)))
    return RenderedReply(payloads, reply.menu)


def template_message(recipient: str, name: str, language: str) -> dict[str, Any]:
    """The template sent when a free-form message is refused outside the 24 h window."""
    return {**_base(recipient), "type": "template", "template": {"name": name, "language": {"code": language}}}
