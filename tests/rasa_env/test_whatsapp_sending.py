"""Graph client retry policy and the output channel, against a local Cloud API stand-in."""

from __future__ import annotations

import asyncio
import json

import pytest

from connectors.inbox import Inbox
from connectors.whatsapp.errors import (
    PERMANENT_CODES,
    RETRYABLE_CODES,
    GraphError,
    Verdict,
    backoff_seconds,
    verdict,
)
from connectors.whatsapp.graph_api import GraphClient
from connectors.whatsapp.output import WhatsAppOutput

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


def output(graph: GraphStandIn, inbox: Inbox, template: tuple[str, str] | None = None,
           turn_id: str | None = "wamid.IN1", rerun: bool = False) -> WhatsAppOutput:
    return WhatsAppOutput(client(graph, []), inbox, "PNID-B", "34600111222", "US.123", turn_id=turn_id,
                          rerun=rerun, template=template)


async def test_output_sends_from_the_receiving_number_and_records(graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    out = output(graph, sqlite_inbox)
    await out.send_response("US.123", {"text": "Pick", "buttons": [{"title": "Yes", "payload": "/affirm"},
                                                                    {"title": "No", "payload": "/deny"}]})
    await out.client.close()
    ((number, payload),) = graph.received
    assert number == "PNID-B" and payload["to"] == "34600111222" and payload["type"] == "interactive"
    assert out.menu == {"1": "/affirm", "2": "/deny"}
    (row,) = sqlite_inbox.outbound_for("US.123")
    assert (row["state"], row["message_id"], row["turn_key"]) == ("sent", "wamid.OUT1", "wamid.IN1#1")


async def test_outside_the_window_the_template_goes_instead(graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    graph.failures = [graph_error(131047)]
    out = output(graph, sqlite_inbox, template=("reengage", "es"))
    await out.send_text_message("US.123", "Your repair is ready")
    await out.client.close()
    assert [p["type"] for p in graph.sent()] == ["text", "template"]
    assert graph.sent()[1]["template"] == {"name": "reengage", "language": {"code": "es"}}
    failed, sent = sqlite_inbox.outbound_for("US.123")
    assert (failed["state"], failed["error_code"]) == ("failed", 131047)
    assert sent["state"] == "sent" and json.loads(sent["payload"])["type"] == "template"


async def test_outside_the_window_without_template_is_recorded_not_retried(
    graph: GraphStandIn, sqlite_inbox: Inbox
) -> None:
    graph.failures = [graph_error(131047)]
    out = output(graph, sqlite_inbox)
    await out.send_text_message("US.123", "Your repair is ready")
    await out.client.close()
    assert len(graph.received) == 1
    (row,) = sqlite_inbox.outbound_for("US.123")
    assert (row["state"], row["error_code"]) == ("failed", 131047)
    assert "131047" in row["error"]


async def test_a_rerun_turn_skips_what_was_already_sent(graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    first = output(graph, sqlite_inbox)
    await first.send_text_message("US.123", "one")
    # crash here; the message is handled again and the reply re-rendered
    again = output(graph, sqlite_inbox, rerun=True)
    await again.send_text_message("US.123", "one")
    await again.send_text_message("US.123", "two")
    await first.client.close()
    await again.client.close()
    assert [p["text"]["body"] for p in graph.sent()] == ["one", "two"]


async def test_a_send_cut_off_by_a_crash_is_sent_again(graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    # The process died between recording "sending" and learning the outcome.
    sqlite_inbox.begin_outbound({"channel": "whatsapp", "conversation_id": "US.123", "business_id": "PNID-B",
                                 "turn_key": "wamid.IN1#1", "payload": "{}"})
    again = output(graph, sqlite_inbox, rerun=True)
    again.status_grace_seconds = 0.3  # no status webhook will come
    await again.send_text_message("US.123", "one")
    await again.client.close()
    assert [p["text"]["body"] for p in graph.sent()] == ["one"]
    states = [row["state"] for row in sqlite_inbox.outbound_for("US.123")]
    assert states == ["interrupted", "sent"]


async def test_a_cut_off_send_that_went_out_is_not_sent_again(graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    import time

    sqlite_inbox.begin_outbound({"channel": "whatsapp", "conversation_id": "US.123", "business_id": "PNID-B",
                                 "turn_key": "wamid.IN1#1", "payload": "{}"})
    # Meta's status webhook for the accepted message arrives after the restart; an older
    # status, one to someone else and one for a message we know are no evidence.
    now = int(time.time())
    sqlite_inbox.add_statuses([
        {"message_id": "wamid.OLD", "status": "sent", "sent_at": now - 60, "recipient_id": "34600111222",
         "business_id": "PNID-B", "errors": None},
        {"message_id": "wamid.OTHER", "status": "sent", "sent_at": now, "recipient_id": "34699999999",
         "business_id": "PNID-B", "errors": None},
    ])

    async def status_arrives_later() -> None:
        await asyncio.sleep(0.3)
        sqlite_inbox.add_statuses([{"message_id": "wamid.CUT", "status": "sent", "sent_at": now,
                                    "recipient_id": "34600111222", "business_id": "PNID-B", "errors": None}])

    again = output(graph, sqlite_inbox, rerun=True)
    arrival = asyncio.create_task(status_arrives_later())
    await again.send_text_message("US.123", "one")
    await arrival
    await again.client.close()
    assert graph.sent() == []
    (row,) = sqlite_inbox.outbound_for("US.123")
    assert (row["state"], row["message_id"]) == ("sent", "wamid.CUT")
