"""Fuzz the webhook route with ≥10,000 malformed bodies: no 5xx, no unhandled error, nothing half-written.

The route is the receiver's (connectors/receiver.py), the one `make run` serves; the Rasa input channel's
route calls the same receive_cloud and store_received. Each generated body is signed (so it reaches the
parser) unless the case is about signatures. A body answered
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

from connectors.receiver import CLOUD_ROUTE
from connectors.whatsapp.signature import sign
from connectors.whatsapp.updates import parse_webhook

from .fuzzing import CLOUD_SECRET, FUZZ_SETTINGS, Receiver, assert_all_or_nothing, body_cases, encode_case

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
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Receiver, Path]]:
    db = tmp_path_factory.mktemp("fuzz") / "inbox.db"
    running = Receiver(db)
    yield running, db
    running.close()


@FUZZ_SETTINGS
@given(case=bodies, signing=st.sampled_from(["good", "good", "good", "good", "bad", "none"]))
def test_fuzzed_webhooks(server: tuple[Receiver, Path], case: tuple[str, Any], signing: str) -> None:
    running, db = server
    body, ids = encode_case(case, _with_unique_ids)
    signature = {"good": sign(body, CLOUD_SECRET), "bad": sign(body, "wrong"), "none": None}[signing]
    status = running.post(CLOUD_ROUTE, body, {"X-Hub-Signature-256": signature} if signature else {})
    assert_all_or_nothing(status, signing == "good", db, ids, body,
                          lambda payload: [m.wamid for m in parse_webhook(payload).messages])
