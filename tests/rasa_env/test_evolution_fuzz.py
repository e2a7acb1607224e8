"""Fuzz the Evolution webhook route with ≥10,000 malformed bodies: no 5xx, nothing half-written.

Same harness and strategies as the Cloud API fuzz (test_whatsapp_fuzz.py), mutating a valid
messages.upsert body; the secret header is right in most cases so bodies reach the parser.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.evolution.channel import EvolutionInput

from .fuzzing import FUZZ_SETTINGS, Server, json_values, mutations, serve, stored
from .test_evolution_channel import SECRET, evo_settings

DATA = Path(__file__).parent / "data"
VALID = json.loads((DATA / "evolution_upsert_text.json").read_text())
VALID_LIST = {**VALID, "data": [VALID["data"], {**VALID["data"], "key": {**VALID["data"]["key"], "id": "SECOND"}}]}
ROUTE = "/webhooks/evolution/webhook"


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


bodies = st.one_of(
    mutations(VALID_LIST).map(lambda p: ("json", p)),
    json_values.map(lambda p: ("json", p)),
    st.dictionaries(st.sampled_from(["event", "instance", "data"]), json_values).map(lambda p: ("json", p)),
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("evo_fuzz")
    running = serve(EvolutionInput(evo_settings(tmp)), "/webhooks/evolution")
    yield running, tmp / "inbox.db"
    running.stop()


@FUZZ_SETTINGS
@given(case=bodies, secret=st.sampled_from(["good", "good", "good", "good", "bad", "none"]))
def test_fuzzed_evolution_webhooks(server: tuple[Server, Path], case: tuple[str, Any], secret: str) -> None:
    running, db = server
    kind, value = case
    ids: list[str] = []
    if kind == "json":
        value, ids = _unique(value, uuid.uuid4().hex[:12])
        body = json.dumps(value).encode()
    else:
        body = value
    header = {"good": SECRET, "bad": "nope", "none": None}[secret]
    status = running.post(body, header, ROUTE, "X-Evolution-Secret")
    assert status < 500, (status, body[:300])
    if secret != "good":
        assert status == 403
    count = stored(db, ids)
    if status == 200:
        assert count == len(set(ids))  # every message of an accepted body that is ours to answer
    else:
        assert count == 0  # nothing of a refused body
