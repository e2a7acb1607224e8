"""bench/inbox_statements.py measures what it says: every case ran its statement, and the advance loop
really advanced (each call marked the previous row done and claimed the next)."""

from __future__ import annotations

import asyncio

import pytest

from bench.inbox_statements import measure
from connectors.inbox import DONE, PROCESSING, Inbox


def test_every_case_is_measured_on_rows_that_move(inbox: Inbox) -> None:
    if inbox.engine.dialect.name != "postgresql":
        pytest.skip("the bench measures PostgreSQL's round trips")
    url = inbox.engine.url.render_as_string(hide_password=False)
    figures = asyncio.run(measure(url, calls=5, repeats=2))
    assert len(figures) == 5 and all(len(runs) == 2 for runs in figures.values())
    assert all(cpu > 0 and wall > 0 for runs in figures.values() for cpu, wall in runs)
    states = inbox.states()
    # Per repeat: 26 messages, a claim and 25 advances (20 to warm up, 5 measured), each claiming the next
    # and marking the one before the row it handled done: 24 done, the last two still processing.
    assert states == {DONE: 2 * 24, PROCESSING: 2 * 2}, states
