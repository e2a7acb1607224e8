"""Replies sent off the turn: a turn queues its sends and returns; they leave in order per conversation;
the worker takes the conversation's next message meanwhile and marks a row done only once its sends were
recorded; a restart settles a handled turn's sends that never finished."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from connectors.inbox import DONE, PROCESSING, Inbox
from connectors.send_chains import SendChains
from connectors.worker import Answered, InboxRow, InboxWorker

from .conftest import GraphStandIn
from .inbox_support import item, make_worker
from .test_whatsapp_sending import output


async def wait_until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_chain_runs_each_conversations_work_in_order_whatever_became_of_the_earlier() -> None:
    chains = SendChains()
    done: list[str] = []
    gate = asyncio.Event()

    async def work(name: str, wait: bool = False, fail: bool = False) -> None:
        if wait:
            await gate.wait()
        if fail:
            raise RuntimeError(name)
        done.append(name)

    first = chains.then("c1", lambda: work("c1-a", wait=True))
    failing = chains.then("c1", lambda: work("c1-b", fail=True))
    last = chains.then("c1", lambda: work("c1-c"))
    other = chains.then("c2", lambda: work("c2-a"))
    await other
    assert done == ["c2-a"]  # another conversation does not wait for c1
    gate.set()
    await asyncio.gather(first, failing, last, return_exceptions=True)
    assert done == ["c2-a", "c1-a", "c1-c"]  # c1's failed send did not stop the next one
    assert len(chains) == 0  # chains whose last send ended are forgotten


async def test_the_turn_returns_before_graph_answers_and_the_sends_keep_their_order(
        graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    graph.answer_when = asyncio.Event()
    chains = SendChains()
    turn = output(graph, sqlite_inbox)
    turn.send_chains = chains
    await asyncio.wait_for(turn.send_text_message("US.123", "one"), 1)  # queued: Graph has not answered
    await turn.send_text_message("US.123", "two")
    following = output(graph, sqlite_inbox, turn_id="wamid.IN2")  # the customer's next message
    following.send_chains = chains
    await following.send_text_message("US.123", "three")
    await asyncio.sleep(0.2)
    assert [p["text"]["body"] for p in graph.sent()] == ["one"]  # "two" and "three" wait for "one" to end
    # Each is recorded in the chain, just before it goes out; a crash before then is repaired from Rasa's
    # tracker, which holds the turn's replies (test_a_handled_turns_never_recorded_sends_go_out_on_restart).
    assert [row["state"] for row in sqlite_inbox.outbound_for("US.123")] == ["sending"]
    graph.answer_when.set()
    await turn.sends_finished()
    await following.sends_finished()
    await turn.client.close()
    await following.client.close()
    assert [p["text"]["body"] for p in graph.sent()] == ["one", "two", "three"]
    assert [row["state"] for row in sqlite_inbox.outbound_for("US.123")] == ["sent"] * 3


async def test_a_reply_with_nothing_ahead_of_it_is_recorded_and_on_its_way_before_the_turn_goes_on(
        graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    """On SQLite (a record costs no round trip) the turn's first reply does not wait for the chain's task to
    start (an event-loop iteration behind every other turn's step); one queued behind another still does."""
    chains = SendChains()
    warm = output(graph, sqlite_inbox, turn_id="wamid.IN0")
    warm.send_chains = chains
    await warm.send_text_message("US.123", "warm")  # a kept connection to Graph
    await warm.sends_finished()
    turn = output(graph, sqlite_inbox)
    turn.client = warm.client
    turn.send_chains = chains
    graph.answer_when = asyncio.Event()
    await turn.send_text_message("US.123", "one")
    # Not a single await has let the loop run: the row is recorded and the request written on the kept connection.
    assert [row["state"] for row in sqlite_inbox.outbound_for("US.123")] == ["sent", "sending"]
    http = warm.client._http  # type: ignore[attr-defined]
    assert http._idle == [] and http._open == 1
    await turn.send_text_message("US.123", "two")  # behind "one": in the chain, recorded when its turn comes
    assert len(sqlite_inbox.outbound_for("US.123")) == 2
    graph.answer_when.set()
    await turn.sends_finished()
    await warm.client.close()
    assert [p["text"]["body"] for p in graph.sent()] == ["warm", "one", "two"]
    assert [row["state"] for row in sqlite_inbox.outbound_for("US.123")] == ["sent"] * 3


async def test_sends_finished_raises_when_a_send_was_not_recorded(graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    turn = output(graph, sqlite_inbox)
    turn.send_chains = SendChains()

    def database_away(*_args: object) -> None:
        raise OSError("database away")

    sqlite_inbox.finish_outbound = database_away  # type: ignore[method-assign]
    await turn.send_text_message("US.123", "one")
    try:
        await turn.sends_finished()
    except RuntimeError as error:
        assert "1 of 1 send(s) were not recorded" in str(error)
    else:
        raise AssertionError("a send that was not recorded must not count as finished")
    await turn.client.close()


async def test_a_handled_turns_cut_off_sends_are_settled_on_restart(graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    # Before the crash the turn queued two sends: "one" went out (Meta's status webhook came), "two" did not.
    for n, text in ((1, "one"), (2, "two")):
        payload = {"messaging_product": "whatsapp", "type": "text", "to": "34600111222", "text": {"body": text}}
        sqlite_inbox.begin_outbound({"channel": "whatsapp", "conversation_id": "US.123", "business_id": "PNID-B",
                                     "turn_key": f"wamid.IN1#{n}", "payload": json.dumps(payload)})
    sqlite_inbox.add_statuses([{"message_id": "wamid.ONE", "status": "delivered", "sent_at": int(time.time()),
                                "recipient_id": "34600111222", "business_id": "PNID-B", "errors": None}])
    again = output(graph, sqlite_inbox, rerun=True)
    again.status_grace_seconds = 0.3
    await again.resend_unfinished()
    await again.client.close()
    assert [p["text"]["body"] for p in graph.sent()] == ["two"]  # "one" is settled by its evidence
    states = [(row["state"], row["message_id"]) for row in sqlite_inbox.outbound_for("US.123")]
    assert states == [("sent", "wamid.ONE"), ("interrupted", None), ("sent", "wamid.OUT1")]


async def test_a_handled_turns_never_recorded_sends_go_out_on_restart(graph: GraphStandIn, sqlite_inbox: Inbox) -> None:
    """Rasa saved the turn (its three replies in the tracker); the crash came while the chain was at the
    second: "one" recorded sent, "two" recorded sending (no status webhook came), "three" never recorded.
    On restart "two" goes again and "three" goes out, once each, in order; "one" does not."""
    for n, (text, state) in enumerate((("one", "sent"), ("two", "sending")), start=1):
        payload = {"messaging_product": "whatsapp", "type": "text", "to": "34600111222", "text": {"body": text}}
        row_id = sqlite_inbox.begin_outbound({"channel": "whatsapp", "conversation_id": "US.123",
                                              "business_id": "PNID-B", "turn_key": f"wamid.IN1#{n}",
                                              "payload": json.dumps(payload)})
        if state == "sent":
            sqlite_inbox.finish_outbound(row_id, "sent", "wamid.ONE", None, None)
    replies = [{"text": text, "timestamp": 1.0, "attachment": None} for text in ("one", "two", "three")]
    again = output(graph, sqlite_inbox, rerun=True)
    again.status_grace_seconds = 0.2
    await again.resend_unfinished(replies)
    await again.resend_unfinished(replies)  # a second restart: everything is recorded now, nothing goes twice
    await again.client.close()
    assert [p["text"]["body"] for p in graph.sent()] == ["two", "three"]
    states = [(row["state"], row["turn_key"]) for row in sqlite_inbox.outbound_for("US.123")]
    assert states == [("sent", "wamid.IN1#1"), ("interrupted", None), ("sent", "wamid.IN1#2"),
                      ("sent", "wamid.IN1#3")]


async def test_the_turns_replies_are_read_back_from_rasas_tracker() -> None:
    """What the restart repairs a handled turn from: the bot messages between its user message and the next,
    each as Rasa's processor gave it to the output channel."""
    from rasa.core.tracker_store import InMemoryTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered

    from connectors.inbox_channel import replies_of_handled_turn

    store = InMemoryTrackerStore(Domain.empty())
    tracker = await store.get_or_create_tracker("c1")
    buttons = {"buttons": [{"title": "Yes", "payload": "/affirm"}]}
    for event in (UserUttered("hi", message_id="m0"), BotUttered("hello"), ActionExecuted("action_listen"),
                  UserUttered("order?", message_id="m1"), ActionExecuted("utter_which"),
                  BotUttered("Which one?", buttons),
                  ActionExecuted("action_help"), BotUttered("Or call us."), ActionExecuted("action_listen"),
                  BotUttered("From the console", metadata={"agent": "ana"}),  # after the turn's end
                  UserUttered("ok", message_id="m2"),  # a paused conversation: no action runs, an agent answers
                  BotUttered("Agent here", metadata={"agent": "ana"})):
        tracker.update(event)
    await store.save(tracker)
    agent = type("Agent", (), {"tracker_store": store})()

    def row(message_id: str, conversation: str = "c1") -> InboxRow:
        return InboxRow(id=1, message_id=message_id, channel="whatsapp", conversation_id=conversation,
                        reply_to=conversation, business_id="PNID", sent_at=1, message={}, attempts=2)

    said = await replies_of_handled_turn(agent, row("m1"))
    assert said is not None and [(m["text"], m.get("buttons")) for m in said] == \
        [("Which one?", buttons["buttons"]), ("Or call us.", None)]
    assert await replies_of_handled_turn(agent, row("m2")) == []  # handled, nothing said (yet)
    assert await replies_of_handled_turn(agent, row("m9")) is None  # not stored: the turn runs again
    assert await replies_of_handled_turn(agent, row("m1", "c2")) is None  # no such conversation
    assert await replies_of_handled_turn(None, row("m1")) is None


async def test_the_next_message_starts_while_the_previous_replies_go_out(inbox: Inbox) -> None:
    inbox.add([item("m1", sent_at=1_000), item("m2", sent_at=1_001)])
    replies_out = asyncio.Event()
    seen: list[tuple[str, int, dict[str, str], str]] = []

    async def sends() -> None:
        await replies_out.wait()

    async def handler(row: InboxRow) -> Answered:
        first_state = inbox.states().get(PROCESSING, 0)
        seen.append((row.message_id, row.attempts, row.menu, f"processing={first_state}"))
        return Answered({"1": "/affirm"} if row.message_id == "m1" else {}, sends())

    worker = make_worker(inbox, handler, poll_interval=0.01)
    running = asyncio.create_task(worker.run())
    await wait_until(lambda: len(seen) == 2)
    # m2 was taken while m1's replies were still going out: both rows "processing", the lease held.
    assert [(m, a, menu) for m, a, menu, _ in seen] == [("m1", 1, {}), ("m2", 1, {"1": "/affirm"})]
    assert seen[1][3] == "processing=2"
    assert inbox.states() == {PROCESSING: 2}
    assert {owner for owner, in inbox.engine.connect().exec_driver_sql("SELECT owner FROM wa_leases")} == \
        {inbox.owner}
    replies_out.set()
    await wait_until(lambda: inbox.states() == {DONE: 2})
    await worker.idle()
    await worker.stop()
    running.cancel()
    with inbox.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM wa_leases").scalar() == 0  # given back at the end


async def test_a_row_whose_replies_were_not_recorded_is_taken_up_again(inbox: Inbox) -> None:
    inbox.add([item("m1", sent_at=1_000), item("m2", sent_at=1_001)])
    seen: list[tuple[str, int]] = []

    async def not_recorded() -> None:
        raise RuntimeError("1 of 1 send(s) were not recorded")

    async def recorded() -> None:
        return None

    async def handler(row: InboxRow) -> Answered | None:
        seen.append((row.message_id, row.attempts))
        if row.attempts > 1:
            return None  # the channel: Rasa knows it, its unfinished sends were settled
        return Answered(None, not_recorded() if row.message_id == "m1" else recorded())

    worker = make_worker(inbox, handler, poll_interval=0.01)
    running = asyncio.create_task(worker.run())
    await wait_until(lambda: inbox.states() == {DONE: 2})
    await worker.stop()
    running.cancel()
    assert seen == [("m1", 1), ("m2", 1), ("m1", 2)]


async def run_until_the_next_message_is_taken(inbox: Inbox, announce: bool) -> list[str]:
    """m1's replies are held; m2 comes after its turn, announced (LISTEN, the route in Rasa) or found by the poll."""
    inbox.add([item("m1", sent_at=1_000)])
    replies_out = asyncio.Event()
    seen: list[str] = []

    async def sends() -> None:
        await replies_out.wait()

    async def handler(row: InboxRow) -> Answered:
        seen.append(row.message_id)
        return Answered(None, sends())

    # A 30 s poll when announced: only the announcement can bring m2 in time.
    worker = make_worker(inbox, handler, poll_interval=30 if announce else 0.02)
    running = asyncio.create_task(worker.run())
    await wait_until(lambda: seen == ["m1"])
    await asyncio.sleep(0.1)  # m1's drain now waits for its replies, with nothing to claim
    inbox.add([item("m2", sent_at=1_001)])
    if announce:
        worker.notify("c1")
    await wait_until(lambda: seen == ["m1", "m2"])
    states = inbox.states()
    replies_out.set()
    await wait_until(lambda: inbox.states() == {DONE: 2})
    await worker.stop()
    running.cancel()
    with inbox.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM wa_leases").scalar() == 0
    return [f"{state}={count}" for state, count in sorted(states.items())]


async def test_a_message_announced_while_the_replies_go_out_is_taken_at_once(sqlite_inbox: Inbox) -> None:
    assert await run_until_the_next_message_is_taken(sqlite_inbox, announce=True) == ["processing=2"]


async def test_a_message_the_poll_finds_while_the_replies_go_out_is_taken_at_once(inbox: Inbox) -> None:
    assert await run_until_the_next_message_is_taken(inbox, announce=False) == ["processing=2"]


def test_the_conversations_of_rows_stored_since_a_look(inbox: Inbox) -> None:
    inbox.add([item("a1", conversation="a"), item("b1", conversation="b")])
    seen = inbox.latest_id()
    assert inbox.conversations_since(seen) == []
    inbox.add([item("c1", conversation="c"), item("a2", conversation="a"), item("c2", conversation="c")])
    inbox.add([item("r1", conversation="d", skip="reaction", metadata={})])  # recorded, not to be answered
    assert sorted(inbox.conversations_since(seen)) == ["a", "c"]
    assert inbox.conversations_since(seen, "evolution") == []


async def test_stopping_with_replies_not_recorded_leaves_the_row_to_be_taken_up_again(
        sqlite_inbox: Inbox, caplog: pytest.LogCaptureFixture) -> None:
    sqlite_inbox.add([item("m1", sent_at=1_000)])
    stopping: list[asyncio.Task[None]] = []

    async def not_recorded() -> None:
        raise RuntimeError("1 of 1 send(s) were not recorded")

    async def handler(row: InboxRow) -> Answered:
        stopping.append(asyncio.create_task(worker.stop()))  # the server stops while this turn ran
        await asyncio.sleep(0)
        return Answered(None, not_recorded())

    worker = make_worker(sqlite_inbox, handler, poll_interval=0.01)
    running = asyncio.create_task(worker.run())
    await wait_until(lambda: bool(stopping) and stopping[0].done())
    running.cancel()
    assert sqlite_inbox.states() == {PROCESSING: 1}  # not done: Rasa knows it, its sends are settled on restart
    assert "replies to inbox message m1 were not all recorded" in caplog.text  # said, not an escaped exception


class LoopIterations:
    """Counts the event loop's iterations: a callback that puts itself back on the ready queue runs once in each."""

    def __init__(self) -> None:
        self.count = 0
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_a_message_announced_while_the_replies_go_out_reaches_the_handler_on_the_next_iteration(
        sqlite_inbox: Inbox) -> None:
    """The customer's next message, posted once the first reply showed, while the turn's other replies
    still go out. Under load each loop iteration runs every other turn's step (tens of ms), so every
    iteration between the announcement and Rasa's turn is latency the customer sees. SQLite's statements
    run inline: nothing but the drain's own wake-up is left between them (it was four iterations)."""
    sends_out = asyncio.Event()
    handled: list[tuple[str, int]] = []
    iterations = LoopIterations()

    async def handler(row: InboxRow) -> Answered:
        handled.append((row.message_id, iterations.count))
        return Answered({}, sends_out.wait())  # the replies are still going out

    worker = make_worker(sqlite_inbox, handler, poll_interval=30.0, channel="whatsapp")
    running = asyncio.create_task(worker.run())
    await asyncio.sleep(0.05)  # the start-up look is over
    sqlite_inbox.add([item("m1", "c1", 1_001)])
    worker.notify("c1")
    await wait_until(lambda: "c1" in worker._news)  # m1 handled, its drain waits for its replies or news
    sqlite_inbox.add([item("m2", "c1", 1_002)])
    announced = iterations.count
    worker.notify("c1")
    await wait_until(lambda: len(handled) == 2)
    assert handled[1][0] == "m2" and handled[1][1] - announced <= 1
    sends_out.set()
    await wait_until(lambda: sqlite_inbox.states() == {DONE: 2})
    iterations.stop()
    await worker.stop()
    running.cancel()


async def test_a_message_announced_during_its_predecessors_turn_is_taken_by_that_turns_look_alone(
        sqlite_inbox: Inbox) -> None:
    """The first reply goes out before its turn ends, so the customer's next message is often stored and
    announced while the turn runs: the turn's own look (the advance) takes it, and the announcement is
    spent — no further look, which took a slot at the back of the queue that the customer's next message
    then waited in a second time."""
    sqlite_inbox.add([item("m1", sent_at=1_000)])
    replies_out = asyncio.Event()
    seen: list[str] = []
    looks: list[str] = []
    worker: InboxWorker
    advance = sqlite_inbox.advance

    def counted_advance(row: InboxRow, *args: Any) -> InboxRow | None:
        looks.append(row.message_id)
        return advance(row, *args)

    async def sends() -> None:
        await replies_out.wait()

    async def handler(row: InboxRow) -> Answered:
        seen.append(row.message_id)
        if row.message_id == "m1":  # stored and announced by the ingest during m1's turn
            sqlite_inbox.add([item("m2", sent_at=1_001)])
            worker.notify("c1")
        return Answered(None, sends())

    sqlite_inbox.advance = counted_advance  # type: ignore[method-assign]
    worker = make_worker(sqlite_inbox, handler, poll_interval=30)
    running = asyncio.create_task(worker.run())
    await wait_until(lambda: seen == ["m1", "m2"])
    await asyncio.sleep(0.2)  # m2's drain waits for its replies, with nothing announced since its look
    assert looks == ["m1", "m2"]  # m1's advance took m2; m2's found nothing, and nobody looked again
    replies_out.set()
    await wait_until(lambda: sqlite_inbox.states() == {DONE: 2})
    await worker.stop()
    running.cancel()
