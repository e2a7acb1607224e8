"""Where a message's end-to-end latency goes, REST vs the WhatsApp channel, closed loop (a diagnosis, no target).

    .venv/rasa/bin/python -m bench.latency_parts [--rounds 3] [--postgres postgresql://…/empty_db]

The same closed loop as bench/whatsapp_vs_rest.py (U customers × T messages, each sending the next
when the answer is there: REST's HTTP answer, WhatsApp's first reply at the Graph stand-in). Each
message's latency is cut at the timestamps Rasa's tracker store gives its events:
- before the turn: posted → the `user` event (NLU included: Rasa stamps the event after parsing;
  for WhatsApp also the ACK, the worker's wake-up and the previous turn of the same customer);
- turn head: `user` event → the first `bot` event;
- after the first reply: first `bot` event → the turn's last event (what keeps the customer's
  next message waiting: on WhatsApp the send's round trip to Graph is awaited inside the turn).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import create_engine, text

from bench.whatsapp_vs_rest import MESSAGES, SETTLE_SECONDS, closed_loop, rows_left_in, summary
from connectors.whatsapp.signature import sign
from tests.integration.harness import APP_SECRET, Stack, text_webhook

Times = dict[tuple[str, int], tuple[float, float]]  # (customer, turn) -> (posted, answered), epoch seconds
EVENTS = text("SELECT type_name, timestamp FROM events WHERE sender_id = :sender ORDER BY id")


async def rest_customer(session: aiohttp.ClientSession, stack: Stack, user: str, turns: int, times: Times) -> None:
    for turn in range(turns):
        posted = time.time()
        async with session.post(f"{stack.rasa_url}/webhooks/rest/webhook",
                                json={"sender": user, "message": MESSAGES[turn % len(MESSAGES)]}) as answer:
            assert answer.status == 200 and await answer.json()
        times[(user, turn)] = (posted, time.time())


async def whatsapp_customer(session: aiohttp.ClientSession, stack: Stack, user: str, turns: int, run: str,
                            times: Times) -> None:
    seq = 0
    for turn in range(turns):
        body = text_webhook(user, f"wamid.parts.{run}.{user}.{turn}", MESSAGES[turn % len(MESSAGES)])
        posted = time.time()
        async with session.post(stack.webhook_url, data=body, headers={
                "X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"}) as answer:
            assert answer.status == 200
        answered = None
        while answered is None:
            async with session.get(f"{stack.graph_url}/api/messages",
                                   params={"phone": user, "since": str(seq), "wait": "20"}) as answer:
                data = await answer.json()
            seq = max(seq, data["seq"])
            replies = [m["at"] for m in data["messages"] if m["direction"] == "out" and m["at"] >= posted]
            answered = min(replies) if replies else None
        times[(user, turn)] = (posted, answered)


def turns_of(events: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """A conversation's events cut into turns at each `user` event: its time, its bot events', its last event's."""
    turns: list[dict[str, Any]] = []
    for name, stamp in events:
        if name == "user":
            turns.append({"user": stamp, "bots": [], "last": stamp})
        elif turns:
            if name == "bot":
                turns[-1]["bots"].append(stamp)
            turns[-1]["last"] = stamp
    return turns


def parts(engine: Any, times: Times) -> dict[str, list[float]]:
    """Milliseconds per message in each part, from the tracker store's event timestamps."""
    split: dict[str, list[float]] = {"before the turn": [], "turn head": [], "after the first reply": [], "total": []}
    with engine.connect() as conn:
        for user in sorted({user for user, _turn in times}):
            for turn, stamps in enumerate(turns_of(list(conn.execute(EVENTS, {"sender": user})))):
                if (user, turn) not in times or not stamps["bots"]:
                    continue
                posted, answered = times[(user, turn)]
                split["before the turn"].append((stamps["user"] - posted) * 1000)
                split["turn head"].append((stamps["bots"][0] - stamps["user"]) * 1000)
                split["after the first reply"].append((stamps["last"] - stamps["bots"][0]) * 1000)
                split["total"].append((answered - posted) * 1000)
    return split


def line(values: list[float]) -> str:
    figures = summary(values)  # the main bench's percentiles, so the figures compare
    return f"p50 {figures['p50_ms']:7.1f}  p95 {figures['p95_ms']:7.1f}  mean {figures['mean_ms']:7.1f} ms"


async def measure(stack: Stack, rounds: int, users: int, turns: int) -> dict[str, dict[str, list[float]]]:
    await closed_loop(stack, 2, 4, "rest", "warm")  # first predictions load TensorFlow's graphs
    await closed_loop(stack, 2, 4, "whatsapp", "9")
    engine = create_engine(stack.tracker_db_url or f"sqlite:///{stack.workdir / 'tracker.db'}", future=True)
    pooled: dict[str, dict[str, list[float]]] = {"REST": {}, "WhatsApp": {}}
    for n in range(rounds):
        for kind in (["REST", "WhatsApp"] if n % 2 == 0 else ["WhatsApp", "REST"]):
            await asyncio.sleep(SETTLE_SECONDS)
            times: Times = {}
            started = time.perf_counter()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
                if kind == "REST":
                    await asyncio.gather(*(rest_customer(session, stack, f"parts-r{n}-{u}", turns, times)
                                           for u in range(users)))
                else:
                    await asyncio.gather(*(whatsapp_customer(session, stack, f"3478{n}{u:04d}", turns, str(n), times)
                                           for u in range(users)))
            rate = len(times) / (time.perf_counter() - started)
            print(f"round {n + 1} {kind}: {rate:.1f} msg/s", flush=True)
            for part, values in parts(engine, times).items():
                pooled[kind].setdefault(part, []).extend(values)
    engine.dispose()
    return pooled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--postgres", default="", help="Rasa's tracker store and the inbox in this empty database")
    parser.add_argument("--out", type=Path, default=None, help="write every message's parts here (JSON)")
    args = parser.parse_args()
    if args.postgres and rows_left_in(args.postgres):
        print(f"error: {args.postgres} holds rows of an earlier run; give an empty database", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_parts_") as tmp:
        stack = Stack(Path(tmp), with_ingest=True, tracker_db_url=args.postgres, with_evolution=False)
        try:
            stack.start()
            pooled = asyncio.run(measure(stack, args.rounds, args.users, args.turns))
        finally:
            stack.stop()
    print(f"all rounds pooled ({'PostgreSQL' if args.postgres else 'SQLite'}):")
    for kind, split in pooled.items():
        print(f"{kind} ({len(split['total'])} messages)")
        for part, values in split.items():
            print(f"  {part:22} {line(values)}")
    if args.out:
        args.out.write_text(json.dumps(pooled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
