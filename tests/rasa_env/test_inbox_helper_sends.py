"""WHATSAPP_INBOX_CALLS=process: replies and read receipts sent by the inbox helper process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.evolution.api import EvolutionClient
from connectors.evolution.channel import EvolutionOutput
from connectors.inbox import IN_PROCESS, Inbox, create_inbox_engine
from connectors.send_chains import SendChains
from connectors.sender import SendResult
from connectors.whatsapp.errors import GraphError, Verdict
from connectors.whatsapp.graph_api import GraphClient
from connectors.whatsapp.output import WhatsAppOutput
from tests.postgres import temporary_database

from .conftest import POSTGRES_ADMIN_URL, GraphStandIn, graph_error
from .test_evolution_channel import EvolutionStandIn
from .test_evolution_channel import evolution as evolution  # the stand-in's fixture


@pytest.fixture(params=["postgresql", "sqlite"])
async def helped(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Inbox]:
    """An inbox in process mode: on PostgreSQL the child runs its statements and sends, on a SQLite file it
    only sends (the statements stay in this process)."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(temporary_database(POSTGRES_ADMIN_URL, "voltbay_helper")) \
            if request.param == "postgresql" else f"sqlite:///{tmp_path / 'inbox.db'}"
        box = Inbox(create_inbox_engine(url), calls=IN_PROCESS)
        yield box
        await box.close()


def output(client: GraphClient, inbox: Inbox, template: tuple[str, str] | None = None,
           turn_id: str = "wamid.IN1") -> WhatsAppOutput:
    return WhatsAppOutput(client, inbox, "PNID-B", "34600111222", "US.123", turn_id=turn_id, template=template)


def not_here(client: Any) -> Any:
    """The client's own requests fail: whatever reaches the stand-in was sent by the helper process."""
    async def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("sent from Rasa's loop")

    client.send = refuse  # type: ignore[method-assign]
    client.mark_read_and_typing = refuse  # type: ignore[method-assign]
    return client


def test_a_send_result_survives_the_pipe() -> None:
    error = GraphError(400, 131047, "Re-engagement message", "details", "Atrace")
    result = SendResult(None, error, Verdict.TEMPLATE, 1)
    copy = pickle.loads(pickle.dumps(result))
    assert copy == result and str(copy.error) == str(error) and copy.error.fbtrace_id == "Atrace"


async def test_replies_go_out_from_the_helper_in_order_and_are_recorded(graph: GraphStandIn, helped: Inbox) -> None:
    client = not_here(GraphClient("test-token", graph.url, "v23.0"))
    out = output(client, helped)
    for text in ("one", "two", "three"):
        await out.send_text_message("US.123", text)
    assert [(number, p["text"]["body"]) for number, p in graph.received] == [
        ("PNID-B", "one"), ("PNID-B", "two"), ("PNID-B", "three")]
    rows = helped.outbound_for("US.123")
    assert [(r["state"], r["message_id"], r["turn_key"]) for r in rows] == [
        ("sent", "wamid.OUT1", "wamid.IN1#1"), ("sent", "wamid.OUT2", "wamid.IN1#2"),
        ("sent", "wamid.OUT3", "wamid.IN1#3")]
    assert [(row_id, result.message_id) for row_id, result in out.results] == [
        (rows[0]["id"], "wamid.OUT1"), (rows[1]["id"], "wamid.OUT2"), (rows[2]["id"], "wamid.OUT3")]


async def test_the_helper_applies_the_error_policy(graph: GraphStandIn, helped: Inbox) -> None:
    client = not_here(GraphClient("test-token", graph.url, "v23.0"))
    graph.failures = [graph_error(130429)]  # throughput: retried after a backoff
    await output(client, helped, turn_id="T1").send_text_message("US.123", "retried")
    graph.failures = [graph_error(131047)]  # outside the 24 h window: the template instead
    await output(client, helped, ("reengage", "es"), "T2").send_text_message("US.123", "window")
    graph.failures = [graph_error(131047)]  # and without a template: recorded, not retried
    out = output(client, helped, turn_id="T3")
    await out.send_text_message("US.123", "no template")
    assert [p.get("type") for p in graph.sent()] == ["text", "text", "text", "template", "text"]
    rows = helped.outbound_for("US.123")
    assert [(r["state"], r["error_code"], r["turn_key"]) for r in rows] == [
        ("sent", None, "T1#1"), ("failed", 131047, None), ("sent", None, "T2#1"), ("failed", 131047, "T3#1")]
    ((_row_id, result),) = out.results
    assert not result.ok and result.verdict is Verdict.TEMPLATE and result.error.code == 131047  # type: ignore[union-attr]


async def test_the_read_receipt_goes_from_the_helper(graph: GraphStandIn, helped: Inbox) -> None:
    client = not_here(GraphClient("test-token", graph.url, "v23.0"))
    assert helped.receipt_in_helper(client, "PNID-B", "wamid.IN9", "34600111222", typing=True) is False  # not started
    await helped.start_helper()
    assert helped.receipt_in_helper(client, "PNID-B", "wamid.IN9", "34600111222", typing=True) is True
    for _ in range(200):
        if graph.received:
            break
        await asyncio.sleep(0.02)
    assert graph.received == [("PNID-B", {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN9",
                                          "typing_indicator": {"type": "text"}})]


async def test_a_client_with_test_hooks_sends_from_rasa(graph: GraphStandIn, helped: Inbox) -> None:
    async def no_sleep(_seconds: float) -> None:
        return None

    client = GraphClient("test-token", graph.url, "v23.0", sleep=no_sleep)
    assert client.helper_spec() is None
    await helped.start_helper()
    assert helped.receipt_in_helper(client, "PNID-B", "wamid.IN9", "346", typing=False) is False
    await output(client, helped).send_text_message("US.123", "from here")
    await client.close()
    assert [p["text"]["body"] for p in graph.sent()] == ["from here"]


async def test_a_new_child_learns_the_clients_again(graph: GraphStandIn, helped: Inbox) -> None:
    client = not_here(GraphClient("test-token", graph.url, "v23.0"))
    await output(client, helped, turn_id="T1").send_text_message("US.123", "first")
    assert helped._helper is not None and helped._helper._transport is not None
    os.kill(helped._helper._transport.get_pid(), signal.SIGKILL)
    await asyncio.sleep(0.5)
    await output(client, helped, turn_id="T2").send_text_message("US.123", "after")
    assert [p["text"]["body"] for p in graph.sent()] == ["first", "after"]


async def test_the_helper_builds_only_the_channels_clients(helped: Inbox) -> None:
    class Hostile(GraphClient):
        def helper_spec(self) -> tuple[str, str, tuple[Any, ...]]:
            return ("os", "system", ("touch /tmp/voltbay-helper-hostile",))

    client = Hostile("test-token", "http://127.0.0.1:9", "v23.0")
    with pytest.raises(TypeError, match="only with the channels' clients"):
        await output(client, helped).send_text_message("US.123", "never")
    assert not os.path.exists("/tmp/voltbay-helper-hostile")
    assert helped.outbound_for("US.123") == []  # refused before anything was recorded


async def test_the_evolution_client_sends_from_the_helper_too(evolution: EvolutionStandIn, helped: Inbox) -> None:
    client = not_here(EvolutionClient(evolution.url, "evo-key"))
    assert not_here(EvolutionClient(evolution.url, "evo-key", max_attempts=2)).helper_spec() is None  # a test hook
    out = EvolutionOutput(client, helped, "voltbay", "346@s.whatsapp.net", "346@s.whatsapp.net", turn_id="voltbay:T1")
    await out.send_text_message("346", "hello")
    assert [path for path, _body in evolution.requests] == ["/message/sendText/voltbay"]
    ((row),) = helped.outbound_for("346@s.whatsapp.net")
    assert (row["state"], row["message_id"], row["turn_key"]) == ("sent", "OUT1", "voltbay:T1#1")
    assert helped.receipt_in_helper(client, "voltbay", "voltbay:IN1", "346@s.whatsapp.net", typing=True)
    for _ in range(200):
        if len(evolution.requests) == 3:
            break
        await asyncio.sleep(0.02)
    assert [path for path, _body in evolution.requests[1:]] == ["/chat/markMessageAsRead/voltbay",
                                                               "/chat/sendPresence/voltbay"]


async def test_a_turns_first_reply_is_handed_to_a_sending_helper_before_the_turn_goes_on(
        graph: GraphStandIn, helped: Inbox) -> None:
    client = not_here(GraphClient("test-token", graph.url, "v23.0"))
    await helped.start_helper()
    out = output(client, helped)
    out.send_chains = SendChains()
    await out.send_text_message("US.123", "first")  # returns without a step of the loop in between
    # On SQLite already written to the child; on PostgreSQL (statements in the child) left to the chain.
    handed_over = 0 if helped._statements_in_helper else 1
    assert helped._helper is not None and len(helped._helper._waiting) == handed_over
    await out.send_text_message("US.123", "second")  # behind the first in the conversation's chain
    assert len(helped._helper._waiting) == handed_over
    await out.sends_finished()
    assert [p["text"]["body"] for p in graph.sent()] == ["first", "second"]
    assert [(r["state"], r["turn_key"]) for r in helped.outbound_for("US.123")] == [
        ("sent", "wamid.IN1#1"), ("sent", "wamid.IN1#2")]
    assert [result.message_id for _row_id, result in out.results] == ["wamid.OUT1", "wamid.OUT2"]


async def test_a_first_reply_the_helper_refuses_fails_the_turns_sends(graph: GraphStandIn, helped: Inbox) -> None:
    class Hostile(GraphClient):
        def helper_spec(self) -> tuple[str, str, tuple[Any, ...]]:
            return ("os", "system", ("true",))

    await helped.start_helper()
    out = output(Hostile("test-token", graph.url, "v23.0"), helped)
    out.send_chains = SendChains()
    await out.send_text_message("US.123", "never")
    with pytest.raises(RuntimeError, match="1 of 1 send"):
        await out.sends_finished()
    assert graph.sent() == [] and helped.outbound_for("US.123") == []
