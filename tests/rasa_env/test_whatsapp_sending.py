"""The Graph client and its retry policy, against a local Cloud API stand-in (the outbox around it:
test_queue_core.py and the live tests)."""

from __future__ import annotations

import pytest

from connectors.whatsapp.errors import (
    PERMANENT_CODES,
    RETRYABLE_CODES,
    GraphError,
    Verdict,
    backoff_seconds,
    verdict,
)
from connectors.whatsapp.graph_api import GraphClient

from .conftest import GraphStandIn, graph_error


@pytest.mark.parametrize("code", sorted(RETRYABLE_CODES))
def test_retryable_codes(code: int) -> None:
    assert verdict(GraphError(400, code, "x"), 0) is Verdict.RETRY


@pytest.mark.parametrize("code", sorted(PERMANENT_CODES - {131047}))
def test_permanent_codes(code: int) -> None:
    assert verdict(GraphError(400, code, "x"), 0) is Verdict.FAIL


def test_window_and_server_errors() -> None:
    assert verdict(GraphError(400, 131047, "x"), 0) is Verdict.TEMPLATE
    assert verdict(GraphError(500, None, "x"), 0) is Verdict.RETRY
    assert verdict(GraphError(502, None, "x"), 2) is Verdict.FAIL  # may have been sent: capped
    assert verdict(GraphError(0, None, "network"), 1) is Verdict.RETRY
    assert verdict(GraphError(400, 999999, "unknown"), 0) is Verdict.FAIL


def test_backoff_is_capped_and_jittered() -> None:
    assert backoff_seconds(1, 0.0) == 0.0
    assert backoff_seconds(1, 1.0) == 1.0
    assert backoff_seconds(20, 1.0) == 30.0


def test_error_parsing_survives_odd_bodies() -> None:
    assert GraphError.from_response(500, None).code is None
    assert GraphError.from_response(400, {"error": "x"}).code is None
    parsed = GraphError.from_response(400, graph_error(131047)[1])
    assert (parsed.code, parsed.details, parsed.fbtrace_id) == (131047, "details", "Atrace")


def client(graph: GraphStandIn, sleeps: list[float]) -> GraphClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return GraphClient("test-token", graph.url, "v23.0", sleep=sleep, rand=lambda: 0.5)


async def test_retryable_errors_are_retried_until_sent(graph: GraphStandIn) -> None:
    graph.failures = [graph_error(130429), graph_error(1, status=500), graph_error(131056)]
    sleeps: list[float] = []
    graph_client = client(graph, sleeps)
    result = await graph_client.send("PNID", {"messaging_product": "whatsapp", "to": "1", "type": "text",
                                              "text": {"body": "hi"}})
    await graph_client.close()
    assert result.ok and result.message_id == "wamid.OUT1" and result.attempts == 4
    assert sleeps == [0.5, 1.0, 2.0]  # full jitter (rand=0.5) of 1, 2, 4 s


async def test_permanent_errors_are_not_retried(graph: GraphStandIn) -> None:
    graph.failures = [graph_error(131026)]
    sleeps: list[float] = []
    graph_client = client(graph, sleeps)
    result = await graph_client.send("PNID", {"to": "1"})
    await graph_client.close()
    assert not result.ok and result.verdict is Verdict.FAIL and result.error.code == 131026  # type: ignore[union-attr]
    assert len(graph.received) == 1 and sleeps == []


async def test_server_errors_are_capped(graph: GraphStandIn) -> None:
    graph.failures = [(500, {"oops": True})] * 5
    graph_client = client(graph, [])
    result = await graph_client.send("PNID", {"to": "1"})
    await graph_client.close()
    assert not result.ok and len(graph.received) == 3  # first try + 2 retries


async def test_unreachable_graph_is_a_network_error() -> None:
    graph_client = GraphClient("t", "http://127.0.0.1:9", sleep=lambda s: _noop(), rand=lambda: 0.0, max_attempts=2)
    result = await graph_client.send("PNID", {"to": "1"})
    await graph_client.close()
    assert not result.ok and result.error.http_status == 0  # type: ignore[union-attr]


async def test_a_hostile_phone_number_id_stays_one_path_segment(graph: GraphStandIn) -> None:
    """The id comes from a webhook's metadata: quoted, it can neither reach another path nor end the request line."""
    graph_client = client(graph, [])
    hostile = "PNID/../../v1/x y\r\nX-Evil: 1?q=#"
    result = await graph_client.send(hostile, {"to": "1", "text": {"body": "ñ 👍"}})
    await graph_client.close()
    assert result.ok and graph.received == [(hostile, {"to": "1", "text": {"body": "ñ 👍"}})]


async def test_an_answer_that_is_not_a_json_object_is_a_graph_error(graph: GraphStandIn) -> None:
    graph.failures = [(502, "<html>Bad Gateway</html>"), (200, ["not", "an", "object"])]  # type: ignore[list-item]
    graph_client = GraphClient("test-token", graph.url, "v23.0", sleep=lambda s: _noop(), rand=lambda: 0.0)
    with pytest.raises(GraphError) as first:
        await graph_client.post("PNID", {"to": "1"})
    with pytest.raises(GraphError) as second:
        await graph_client.post("PNID", {"to": "1"})
    await graph_client.close()
    assert (first.value.http_status, second.value.http_status) == (502, 200)


def test_a_token_that_would_split_a_header_is_refused_at_start_without_showing_it() -> None:
    with pytest.raises(ValueError, match="WHATSAPP_ACCESS_TOKEN") as refused:
        GraphClient("s3cret\n", "https://graph.facebook.com")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(ValueError, match="WHATSAPP_GRAPH_API_URL"):
        GraphClient("t", "graph.facebook.com")


async def _noop() -> None:
    return None


async def test_sends_carry_the_outbox_key_meta_repeats_on_statuses(graph: GraphStandIn) -> None:
    graph_client = client(graph, [])
    payload = {"messaging_product": "whatsapp", "to": "1", "type": "text", "text": {"body": "hi"}}
    assert (await graph_client.send("PNID", graph_client.tagged(payload, "vb-out-7"))).ok
    receipt = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}
    assert graph_client.tagged(receipt, "vb-out-8") == receipt  # a read receipt is no message
    await graph_client.close()
    assert graph.sent()[0]["biz_opaque_callback_data"] == "vb-out-7"
