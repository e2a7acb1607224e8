"""Fuzz the webhook route with ≥10,000 malformed bodies: no 5xx, no unhandled error, nothing half-written.

The route runs in a real Sanic server (in a thread); each generated body is signed
(so it reaches the parser) unless the case is about signatures. A body answered
200 must have stored every message its parser keeps; any other answer must have stored none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.whatsapp.channel import WhatsAppInput
from connectors.whatsapp.signature import sign
from connectors.whatsapp.updates import parse_webhook

from .fuzzing import (
    FUZZ_SETTINGS,
    Server,
    assert_all_or_nothing,
    body_cases,
    encode_case,
    serve,
)
from .test_whatsapp_webhook import SECRET
from .test_whatsapp_webhook import settings as channel_settings

DATA = Path(__file__).parent / "data"
VALID = json.loads((DATA / "batch_two_entries.json").read_text())


def _with_unique_ids(payload: Any, tag: str) -> tuple[Any, list[str]]:
    """Give every message id a per-body prefix so the database can be checked body by body."""
    ids: list[str] = []
    try:
        for entry in payload["entry"]:
            for change in entry["changes"]:
                for message in change["value"]["messages"]:
                    if isinstance(message, dict) and isinstance(message.get("id"), str):
                        message["id"] = f"{tag}.{message['id']}"
                        ids.append(message["id"])
    except (KeyError, TypeError, AttributeError):
        pass
    return payload, ids


bodies = body_cases(VALID, ["object", "entry", "changes"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    running = serve(WhatsAppInput(channel_settings(tmp)), "/webhooks/whatsapp")
    yield running, tmp / "inbox.db"
    running.stop()


@FUZZ_SETTINGS
@given(case=bodies, signing=st.sampled_from(["good", "good", "good", "good", "bad", "none"]))
def test_fuzzed_webhooks(server: tuple[Server, Path], case: tuple[str, Any], signing: str) -> None:
    running, db = server
    body, ids = encode_case(case, _with_unique_ids)
    signature = {"good": sign(body, SECRET), "bad": sign(body, "wrong"), "none": None}[signing]
    status = running.post(body, signature)
    assert_all_or_nothing(status, signing == "good", db, ids, body,
                          lambda payload: [m.wamid for m in parse_webhook(payload).messages])
