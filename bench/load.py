"""The load of bench/whatsapp_vs_rest.py: closed-loop REST and WhatsApp customers, the throughput phase,
the ACK probes, and the statistics they are reported with."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
from sqlalchemy import create_engine, text

from connectors.queue_schema import PENDING
from connectors.whatsapp.signature import sign
from tests.integration.harness import APP_SECRET, Stack, text_webhook

# Between phases: the last replies' status webhooks land before the next phase starts its clock.
SETTLE_SECONDS = 1.0
# A reply that has not come by then is lost, not late: the run stops and says which, instead of waiting forever.
REPLY_DEADLINE_SECONDS = 120.0
PHASE_DEADLINE_SECONDS = 600.0  # all of a throughput phase's messages answered
MESSAGES = ["hi", "how long does delivery take", "do you take paypal", "thanks"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    return {"n": len(latencies_ms), "p50_ms": percentile(latencies_ms, 50), "p95_ms": percentile(latencies_ms, 95),
            "p99_ms": percentile(latencies_ms, 99),
            "mean_ms": statistics.fmean(latencies_ms) if latencies_ms else float("nan")}


def tail_share(started: float, answered_at: list[float]) -> float:
    """The share of a phase spent on its last tenth of answers (0.1 at a steady rate; more: the phase
    ended slower than it ran, fewer conversations left to keep the bot busy)."""
    ordered = sorted(answered_at)
    if len(ordered) < 10:
        return float("nan")
    return (ordered[-1] - ordered[int(0.9 * len(ordered)) - 1]) / (ordered[-1] - started)


async def rest_user(session: aiohttp.ClientSession, stack: Stack, user: str, turns: int,
                    answered_at: list[float]) -> list[float]:
    latencies = []
    for turn in range(turns):
        started = time.perf_counter()
        async with session.post(f"{stack.rasa_url}/webhooks/rest/webhook",
                                json={"sender": user, "message": MESSAGES[turn % len(MESSAGES)]}) as answer:
            body = await answer.json()
            assert answer.status == 200 and body, body
        answered_at.append(time.time())
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def whatsapp_user(session: aiohttp.ClientSession, stack: Stack, user: str, turns: int,
                        run: str) -> list[float]:
    latencies = []
    seq = 0
    for turn in range(turns):
        body = text_webhook(user, f"wamid.bench.{run}.{user}.{turn}", MESSAGES[turn % len(MESSAGES)])
        posted = time.time()
        async with session.post(stack.webhook_url, data=body,
                                headers={"X-Hub-Signature-256": sign(body, APP_SECRET),
                                         "Content-Type": "application/json"}) as answer:
            assert answer.status == 200
        reply_at = None
        while reply_at is None:
            if time.time() - posted > REPLY_DEADLINE_SECONDS:
                raise RuntimeError(f"no reply to {user}'s message {turn} within {REPLY_DEADLINE_SECONDS:.0f} s")
            async with session.get(f"{stack.graph_url}/api/messages",
                                   params={"phone": user, "since": str(seq), "wait": "20"}) as answer:
                data = await answer.json()
            seq = max(seq, data["seq"])
            outs = [m for m in data["messages"] if m["direction"] == "out" and m["at"] >= posted]
            if outs:
                reply_at = min(m["at"] for m in outs)
        latencies.append((reply_at - posted) * 1000)
    return latencies


async def closed_loop(stack: Stack, users: int, turns: int, kind: str, run: str) -> dict[str, Any]:
    answered_at: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        started, started_at = time.perf_counter(), time.time()
        if kind == "rest":
            results = await asyncio.gather(*(rest_user(session, stack, f"rest-{run}-{u}", turns, answered_at)
                                             for u in range(users)))
        else:
            results = await asyncio.gather(*(whatsapp_user(session, stack, f"3470{run}{u:04d}", turns, run)
                                             for u in range(users)))
        elapsed = time.perf_counter() - started
    latencies = [x for user in results for x in user]
    return {**summary(latencies), "seconds": elapsed, "throughput_msg_s": len(latencies) / elapsed,
            **({"tail_share": tail_share(started_at, answered_at)} if answered_at else {})}


async def whatsapp_throughput(stack: Stack, users: int, turns: int, run: str) -> dict[str, Any]:
    """Server-side throughput: every message stored up front (in order per user), time until all are answered.

    The closed-loop run includes the bench client noticing each reply (a long-poll hop REST does
    not have); here only the channel's own work counts, with the same number of conversations.
    """
    numbers = [f"3471{run}{u:04d}" for u in range(users)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.time()
        for turn in range(turns):
            for number in numbers:
                body = text_webhook(number, f"wamid.tp.{run}.{number}.{turn}", MESSAGES[turn % len(MESSAGES)])
                async with session.post(stack.webhook_url, data=body,
                                        headers={"X-Hub-Signature-256": sign(body, APP_SECRET),
                                                 "Content-Type": "application/json"}) as answer:
                    assert answer.status == 200
        expected = users * turns
        wanted = set(numbers)
        deadline = time.monotonic() + PHASE_DEADLINE_SECONDS
        seen, replies = 0, 0
        while replies < expected and time.monotonic() < deadline:
            # Only the requests since the last look: the bench shares the CPU with what it measures.
            async with session.get(f"{stack.graph_url}/_sandbox/requests", params={"since": str(seen)}) as answer:
                requests = await answer.json()
            seen += len(requests)
            replies += sum(1 for r in requests if r["accepted"] and r["payload"].get("to") in wanted)
            await asyncio.sleep(0.2)
    if replies < expected:
        raise RuntimeError(f"only {replies} of {expected} messages answered within {PHASE_DEADLINE_SECONDS:.0f} s")
    sent = await _outbound_times(stack, numbers)
    finished = max(m["at"] for m in sent)
    return {"n": expected, "seconds": finished - started, "throughput_msg_s": expected / (finished - started),
            "tail_share": tail_share(started, [m["at"] for m in sent])}


async def _outbound_times(stack: Stack, numbers: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:
        for number in numbers:
            async with session.get(f"{stack.graph_url}/api/messages", params={"phone": number}) as answer:
                found.extend(m for m in (await answer.json())["messages"] if m["direction"] == "out")
    return found


async def ack_under_saturation(stack: Stack, url: str, total: int, connections: int, tag: str) -> dict[str, Any]:
    bodies = [text_webhook(f"348{tag}{n:06d}", f"wamid.flood.{tag}.{n}", MESSAGES[n % len(MESSAGES)])
              for n in range(total)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, data=body,
                                    headers={"X-Hub-Signature-256": sign(body, APP_SECRET),
                                             "Content-Type": "application/json"}) as answer:
                await answer.read()
                assert answer.status == 200
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {**summary(latencies), "seconds": elapsed, "acks_per_s": total / elapsed}


async def ack_at_rate(url: str, rate: float, seconds: float, tag: str) -> dict[str, Any]:
    """Open loop: a webhook every 1/rate s whatever the answers do, so queueing in the client adds nothing."""
    total = int(rate * seconds)
    latencies: list[float] = []
    # Not ACKed within the client's 60 s, or the connection dropped (Sanic's own 60 s response
    # timeout on Rasa's route): Meta would deliver these again; counted, not fatal to the run.
    unanswered: list[str] = []

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        body = text_webhook(f"349{tag}{n:06d}", f"wamid.rate.{tag}.{n}", MESSAGES[n % len(MESSAGES)])
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers={"X-Hub-Signature-256": sign(body, APP_SECRET),
                                                             "Content-Type": "application/json"}) as answer:
                await answer.read()
                assert answer.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            unanswered.append(type(error).__name__)
            return
        latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        tasks = []
        start = time.perf_counter()
        for n in range(total):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(session, n)))
        await asyncio.gather(*tasks)
    return {**summary(latencies), "rate_per_s": rate, "unanswered": len(unanswered)}


def pending_rows(stack: Stack) -> int:
    """Messages stored and not yet answered (a bench may read the tables synchronously; it is no server)."""
    engine = create_engine(stack.inbox_url, future=True)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM wa_inbox WHERE state = :s"), {"s": PENDING}).scalar()
                       or 0)
    finally:
        engine.dispose()
