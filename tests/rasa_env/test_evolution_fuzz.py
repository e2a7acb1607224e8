"""Fuzz the receiver's Evolution webhook route with ≥10,000 malformed bodies: no 5xx, nothing half-written.

Same harness and strategies as the Cloud API fuzz (test_whatsapp_fuzz.py), mutating a valid
messages.upsert body; the secret header is right in most cases so bodies reach the parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.evolution.updates import parse_evolution
from connectors.receiver import EVOLUTION_ROUTE, EVOLUTION_SECRET_HEADER

from .fuzzing import EVOLUTION_SECRET, FUZZ_SETTINGS, Receiver, assert_all_or_nothing, body_cases, encode_case

DATA = Path(__file__).parent / "data"
VALID = json.loads((DATA / "evolution_upsert_text.json").read_text())
VALID_LIST = {**VALID, "data": [VALID["data"], {**VALID["data"], "key": {**VALID["data"]["key"], "id": "SECOND"}}]}


def _unique(payload: Any, tag: str) -> tuple[Any, list[str]]:
    """Prefix every key id per body; returns the inbox ids an accepted body must have stored.

    Stored = every item of a messages.upsert event whose key has a string id and sender and is
    not one of ours (fromMe), a group, a broadcast or a newsletter.
    """
    ids: list[str] = []
    if not isinstance(payload, dict):
        return payload, ids
    event = str(payload.get("event") or "").lower().replace("_", ".")
    items = payload.get("data") if isinstance(payload.get("data"), list) else [payload.get("data")]
    for data in items:
        key = data.get("key") if isinstance(data, dict) else None
        if not isinstance(key, dict) or not isinstance(key.get("id"), str) or not key["id"]:
            continue
        key["id"] = f"{tag}{key['id']}"
        jid = key.get("remoteJid")
        if (event == "messages.upsert" and key.get("fromMe") is not True and isinstance(jid, str)
                and not jid.endswith(("@g.us", "@broadcast", "@newsletter"))):
            ids.append(f"{payload.get('instance')}:{key['id']}")
    return payload, ids


bodies = body_cases(VALID_LIST, ["event", "instance", "data"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, Path]]:
    db = tmp_path_factory.mktemp("evo_fuzz") / "inbox.db"
    running = Receiver(db)
    yield running, db
    running.close()


@FUZZ_SETTINGS
@given(case=bodies, secret=st.sampled_from(["good", "good", "good", "good", "bad", "none"]))
def test_fuzzed_evolution_webhooks(server: tuple[Receiver, Path], case: tuple[str, Any], secret: str) -> None:
    running, db = server
    body, ids = encode_case(case, _unique)  # ids: messages of an accepted body that are ours to answer
    header = {"good": EVOLUTION_SECRET, "bad": "nope", "none": None}[secret]
    status = running.post(EVOLUTION_ROUTE, body, {EVOLUTION_SECRET_HEADER: header} if header else {})
    assert_all_or_nothing(status, secret == "good", db, ids, body,
                          lambda payload: [m.wamid for m in parse_evolution(payload).messages])
