"""What one inbox statement costs Rasa's event-loop thread on PostgreSQL, against a bare round trip, one run.

    .venv/rasa/bin/python -m bench.inbox_statements --postgres postgresql://…/postgres [--calls 1000]

The channel's own cost on Rasa's loop is mostly its round trips to the database (bench/channel_cost.py:
the asyncpg calls are more than half of its loop CPU). This tells what part of one is the machine's
(socket writes, reads and polls: a bare asyncpg `SELECT 1`, the baseline) and what part is ours (the
statement, the greenlet `Inbox.call` runs it in, the kept connection, the result rows), for the
statements the worker runs on every message: the reply's two `wa_outbound` rows, and the claim and
advance. One task, calls one after another, loop-thread CPU (`time.thread_time`) and wall per call,
median of `--repeats`. Runs in a database of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from bench.scratch_database import scratch_database
from connectors.inbox import SENT, Inbox, InboxItem, create_inbox_engine
from connectors.inbox_calls import ON_EVENTS

Call = Callable[[], Awaitable[Any]]


async def per_call(call: Call, calls: int) -> tuple[float, float]:
    """(loop-thread CPU µs, wall µs) per call, `calls` awaited one after another."""
    for _ in range(20):  # connections, prepared statements
        await call()
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.thread_time() - cpu) * 1e6 / calls, (time.perf_counter() - wall) * 1e6 / calls


def messages(conversation: str, count: int) -> list[InboxItem]:
    return [InboxItem(message_id=f"wamid.{conversation}.{n}", channel="whatsapp", conversation_id=conversation,
                      reply_to=conversation, business_id="PNID", sent_at=int(time.time()),
                      message={"text": "how long does delivery take", "metadata": {"profile_name": "Bench"}})
            for n in range(count)]


async def measure(url: str, calls: int, repeats: int) -> dict[str, list[tuple[float, float]]]:
    bare = await asyncpg.connect(url)
    inbox = Inbox(create_inbox_engine(url), calls=ON_EVENTS)
    record = {"channel": "whatsapp", "conversation_id": "c1", "business_id": "PNID", "turn_key": None,
              "payload": '{"messaging_product": "whatsapp", "to": "c1", "type": "text", "text": {"body": "'
                         + "Orders ship within 2 working days. " * 4 + '"}}'}
    last_sent = await inbox.call(inbox.begin_outbound, record)
    figures: dict[str, list[tuple[float, float]]] = {}
    for repeat in range(repeats):
        conversation = f"c{repeat}"
        inbox.add(messages(conversation, calls + 21))  # every advance finds a next row
        row = await inbox.call(inbox.claim_next, conversation, "whatsapp")
        previous: list[int] = []

        async def advance() -> None:
            nonlocal row, previous
            following = await inbox.call(inbox.advance, row, None, [row.id], previous)
            previous, row = [row.id], following

        async def begin() -> None:
            nonlocal last_sent
            last_sent = await inbox.call(inbox.begin_outbound, record)

        cases: dict[str, Call] = {
            "bare asyncpg SELECT 1 (baseline)": lambda: bare.fetchval("SELECT 1"),
            "reply row: begin (INSERT)": begin,
            "reply row: finish (UPDATE)": lambda: inbox.call(inbox.finish_outbound, last_sent, SENT, "wamid.OUT"),
            "advance (mark done, renew lease, claim next)": advance,
            "claim (lease, next row)": lambda c=conversation: inbox.call(inbox.claim_next, c, "whatsapp"),
        }
        for name, call in cases.items():
            figures.setdefault(name, []).append(await per_call(call, calls))
    await bare.close()
    await inbox.close()
    inbox.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a server (any database on it: the bench makes its own)")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with scratch_database(args.postgres, "bench_statements") as url:
        figures = asyncio.run(measure(url, args.calls, args.repeats))
    baseline = statistics.median(cpu for cpu, _ in figures["bare asyncpg SELECT 1 (baseline)"])
    print(f"loop-thread CPU and wall per call, median of {args.repeats} × {args.calls} calls (PostgreSQL):")
    for case, runs in figures.items():
        cpu, wall = statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)
        print(f"  {case:46s} CPU {cpu:6.1f} µs ({cpu / baseline:.2f} × baseline)  wall {wall:6.1f} µs")


if __name__ == "__main__":
    main()
