"""Console endpoints with a big tracker store: queue and conversation p50/p95, SQLite and PostgreSQL.

    make bench-console        (or: .venv/app/bin/python -m bench.console_endpoints [--conversations N])

Builds a tracker store with Rasa's `events` table: 10,000 conversations × 50 events = 500,000 events
(customer messages with NLU parse data, actions, bot messages with knowledge metadata; 30 % of the
conversations handed over), projects it into the console's tables (timed: events/s), starts the
console as its own process and times, sequentially after a warm-up, 200 requests each of:
GET /api/queue (unassigned, all, mine), GET /api/conversations/<random id>, and the HTML queue and
conversation pages. Baseline in the same run: GET /healthz (the HTTP + framework floor).
Target (issue 5): p95 <= 100 ms for the queue and conversation endpoints on both databases.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, create_engine, insert

from bench.scratch_database import scratch_database
from console.projector import Projector
from console.tables import create_db_engine, create_tables

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("bench@voltbay.example", "bench-password-1")
TARGET_P95_MS = 100.0
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

metadata = MetaData()
events = Table("events", metadata,
               Column("id", Integer, primary_key=True, autoincrement=True),
               Column("sender_id", String(255), nullable=False, index=True),
               Column("type_name", String(255), nullable=False),
               Column("timestamp", Float), Column("intent_name", String(255)), Column("action_name", String(255)),
               Column("data", Text))


def conversation_events(sender: str, start: float, count: int, handed_over: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    t = start
    while len(rows) < count - (5 if handed_over else 0):
        t += 7
        user = {"event": "user", "timestamp": t, "text": f"where is my order VB-{random.randint(100000, 999999)}?",
                "input_channel": "whatsapp",
                "parse_data": {"intent": {"name": "check_order_status", "confidence": 0.97}, "entities": [],
                               "intent_ranking": [{"name": "check_order_status", "confidence": 0.97}]},
                "metadata": {"channel": "whatsapp", "profile_name": f"Customer {sender[-4:]}", "wa_id": sender,
                             "display_phone_number": "15550001111", "message_type": "text"}}
        action = {"event": "action", "timestamp": t + 0.1, "name": "action_answer_question", "policy": "RulePolicy",
                  "confidence": 1.0}
        bot = {"event": "bot", "timestamp": t + 0.2, "text": "Your order is on its way " + "and arrives soon. " * 5,
               "metadata": {"knowledge": {"answer_mode": "extractive", "doc_ids": ["delivery"],
                                          "sources": [{"title": "Delivery"}]}}}
        listen = {"event": "action", "timestamp": t + 0.3, "name": "action_listen", "policy": "RulePolicy"}
        rows += [user, action, bot, listen]
    if handed_over:
        t += 5
        rows += [{"event": "action", "timestamp": t, "name": "action_handoff"},
                 {"event": "bot", "timestamp": t, "text": "Passing you to a person"},
                 {"event": "slot", "timestamp": t, "name": "handoff_reason", "value": "negative_sentiment"},
                 {"event": "slot", "timestamp": t, "name": "handoff_summary", "value": "Customer upset."},
                 {"event": "pause", "timestamp": t}]
    return rows[:count]


def fill(url: str, conversations: int, per_conversation: int) -> float:
    engine = create_engine(url)
    metadata.create_all(engine)
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    base = time.time() - 30 * 86400
    with engine.begin() as conn:
        for i in range(conversations):
            sender = f"3460{i:07d}"
            for event in conversation_events(sender, base + i * 60, per_conversation, handed_over=i % 10 < 3):
                batch.append({"sender_id": sender, "type_name": event["event"], "timestamp": event["timestamp"],
                              "intent_name": None, "action_name": event.get("name"), "data": json.dumps(event)})
            if len(batch) >= 20000:
                conn.execute(insert(events), batch)
                batch = []
        if batch:
            conn.execute(insert(events), batch)
    engine.dispose()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def timed(client: httpx.Client, paths: list[str], n: int) -> dict[str, float]:
    for path in paths[:10]:
        client.get(path)  # warm-up
    latencies = []
    for i in range(n):
        path = paths[i % len(paths)]
        started = time.perf_counter()
        answer = client.get(path)
        latencies.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
    return {"p50_ms": round(statistics.median(latencies), 1), "p95_ms": round(percentile(latencies, 95), 1)}


def run_console(name: str, tracker_url: str, console_url: str, conversations: int, n: int) -> dict[str, Any]:
    console = create_db_engine(console_url)
    create_tables(console)
    started = time.perf_counter()
    projected = Projector(console, create_engine(tracker_url)).catch_up()
    projection_s = time.perf_counter() - started
    port = 18000 + random.randint(0, 999)
    env = {**os.environ, "CONSOLE_PORT": str(port), "CONSOLE_DB_URL": console_url,
           "CONSOLE_TRACKER_DB_URL": tracker_url, "WHATSAPP_INBOX_DB_URL": tracker_url,
           "CONSOLE_ADMIN_EMAIL": ADMIN[0], "CONSOLE_ADMIN_PASSWORD": ADMIN[1], "CONSOLE_SECRET_KEY": "bench",
           "CONSOLE_SECURE_COOKIE": "false", "CONSOLE_RASA_URL": "http://127.0.0.1:9"}
    proc = subprocess.Popen([sys.executable, "-m", "console"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(200):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            login = client.post("/api/login", json={"email": ADMIN[0], "password": ADMIN[1]})
            assert login.status_code == 200, login.text
            ids = [f"3460{random.randrange(conversations):07d}" for _ in range(n)]
            results = {
                "healthz (baseline)": timed(client, ["/healthz"], n),
                "api queue unassigned": timed(client, ["/api/queue?filter=unassigned"], n),
                "api queue all (page 2)": timed(client, ["/api/queue?filter=all&offset=50"], n),
                "api queue mine": timed(client, ["/api/queue?filter=mine"], n),
                "api conversation": timed(client, [f"/api/conversations/{i}" for i in ids], n),
                "html queue": timed(client, ["/?filter=unassigned"], n),
                "html conversation": timed(client, [f"/c/{i}" for i in ids], n),
            }
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return {"database": name, "events_projected": projected,
            "projection_events_per_s": round(projected / projection_s), "endpoints": results}


def report(result: dict[str, Any]) -> bool:
    ok = True
    floor = result["endpoints"]["healthz (baseline)"]["p95_ms"]
    print(f"\n{result['database']}: projected {result['events_projected']} events at "
          f"{result['projection_events_per_s']} events/s")
    for name, figures in result["endpoints"].items():
        verdict = ""
        if name != "healthz (baseline)":
            passed = figures["p95_ms"] <= TARGET_P95_MS
            ok &= passed
            verdict = "PASS" if passed else "MISS"
        print(f"  {name:<26} p50 {figures['p50_ms']:>7} ms  p95 {figures['p95_ms']:>7} ms  "
              f"({figures['p95_ms'] / max(floor, 0.01):.1f}× baseline p95) {verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--events-per-conversation", type=int, default=50)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    random.seed(7)
    total = args.conversations * args.events_per_conversation
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_tracker = f"sqlite:///{tmp}/tracker.db"
        print(f"filling SQLite with {total} events …", flush=True)
        print(f"  {fill(sqlite_tracker, args.conversations, args.events_per_conversation):.1f} s")
        results.append(run_console("SQLite", sqlite_tracker, f"sqlite:///{tmp}/console.db", args.conversations,
                                   args.requests))
        if not args.skip_postgres:
            with scratch_database(PG_ADMIN_URL, "bench_console") as pg_url:
                print(f"filling PostgreSQL with {total} events …", flush=True)
                print(f"  {fill(pg_url, args.conversations, args.events_per_conversation):.1f} s")
                results.append(run_console("PostgreSQL", pg_url, pg_url, args.conversations, args.requests))
    ok = all([report(r) for r in results])
    out = ROOT / "results" / "bench_console.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\n{'all targets met' if ok else 'target missed'}; figures in {out.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
