"""What the WhatsApp channel's own code costs Rasa's event-loop thread per message, without Rasa.

    .venv/rasa/bin/python -m bench.channel_cost [--postgres postgresql://…/empty_db] [--rounds 7]

The bench/whatsapp_vs_rest.py ratios carry Rasa's whole turn (~30–90 ms of CPU per message here) and
swing ±0.1 between rounds of the same code; the channel's share of it (a few ms) is lost in that
noise. This runs the channel's path alone, as the worker drives it inside Rasa: the inbox worker
claims each stored message, the channel sends the read receipt and hands Rasa a `UserMessage` —
here a stand-in turn that replies `--replies` texts through the channel's output (rendered, recorded,
sent to a Graph API stand-in in another process, recorded again) — and the row is marked done. The
messages are stored from another thread, as connectors.ingest stores them from another process (with
NOTIFY on PostgreSQL). Figure: CPU of the thread running the event loop per message (`time.thread_time`),
median of the rounds, and wall per message. Compare codes by running this on each (a worktree), one
after the other, a few times: CPU is far less swayed by the machine's drift than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from rasa.core.channels.channel import UserMessage
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from sqlalchemy.engine import make_url

from connectors.inbox import DONE, InboxItem
from connectors.inbox_calls import INBOX_CALLS
from connectors.settings import DEFAULT_INBOX_CALLS, WhatsAppSettings
from connectors.whatsapp.channel import WhatsAppInput
from connectors.worker import InboxWorker


def serve_graph_stand_in(port: int) -> None:
    """The Cloud API's /messages as documented: a message id per send, success for a read receipt."""
    count = 0

    async def messages(request: web.Request) -> web.Response:
        nonlocal count
        payload = await request.json()
        if payload.get("status") == "read":
            return web.json_response({"success": True})
        count += 1
        return web.json_response({"messaging_product": "whatsapp", "contacts": [{"input": payload.get("to")}],
                                  "messages": [{"id": f"wamid.OUT{count}"}]})

    app = web.Application()
    app.router.add_post("/{version}/{phone_number_id}/messages", messages)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message(round_number: int, conversation: int, turn: int) -> InboxItem:
    number = f"4477009{conversation:05d}"
    return InboxItem(message_id=f"wamid.R{round_number}C{conversation}T{turn}", channel="whatsapp",
                     conversation_id=number, reply_to=number, business_id="PNID", sent_at=int(time.time()),
                     message={"text": "how long does delivery take", "metadata": {"profile_name": "Bench"}})


def store_in_batches(inbox: Any, items: list[InboxItem], batch: int = 4) -> None:
    for start in range(0, len(items), batch):
        inbox.add(items[start:start + batch])


async def run(args: argparse.Namespace, inbox_url: str, graph_url: str) -> list[tuple[float, float]]:
    settings = WhatsAppSettings(
        verify_token="v", app_secret="s", access_token="bench-token", graph_api_url=graph_url, api_version="v23.0",
        phone_number_id="PNID", inbox_db_url=inbox_url, stale_after_seconds=86400.0, concurrency=args.concurrency,
        template=None, run_worker=True, inbox_calls=args.inbox_calls)
    channel = WhatsAppInput(settings)
    # Rasa's SQL tracker store in the inbox's database, as `make run` and the production topology have it:
    # the read receipt asks it whether a person has the conversation.
    url = make_url(inbox_url)
    store = SQLTrackerStore(Domain.empty(), dialect=url.get_backend_name(), host=url.host, port=url.port,
                            db=url.database, username=url.username, password=url.password)
    channel.use_agent(SimpleNamespace(tracker_store=store))
    print(f"the claim answers the read receipt's question: {channel.inbox.pauses_in_this_database}", flush=True)
    replies = [f"Reply {n + 1}: orders ship within 2 working days." for n in range(args.replies)]

    async def turn(user_message: UserMessage) -> None:  # Rasa's turn, without Rasa
        await asyncio.sleep(0)
        for reply in replies:
            await user_message.output_channel.send_text_message(user_message.sender_id, reply)

    async def handler(row: Any) -> Any:
        return await channel.handle_row(row, turn)

    inbox = channel.inbox
    worker = InboxWorker(inbox, handler, concurrency=args.concurrency, poll_interval=0.05, channel="whatsapp")
    running = asyncio.create_task(worker.run())
    figures: list[tuple[float, float]] = []
    total = args.conversations * args.messages
    for round_number in range(args.rounds + 1):  # round 0 warms up (connections, statements)
        items = [message(round_number, c, t) for t in range(args.messages) for c in range(args.conversations)]
        cpu, wall = time.thread_time(), time.perf_counter()
        # Stored from another thread, in webhook-sized batches, as the ingest process stores them.
        await asyncio.to_thread(store_in_batches, inbox, items)
        worker.notify()
        while (await asyncio.to_thread(inbox.states)).get(DONE, 0) < total * (round_number + 1):
            await asyncio.sleep(0.02)
        await worker.idle()
        if round_number:
            figures.append(((time.thread_time() - cpu) * 1000 / total, (time.perf_counter() - wall) * 1000 / total))
            print(f"round {round_number}: loop thread CPU {figures[-1][0]:.3f} ms/message, wall {figures[-1][1]:.2f}",
                  flush=True)
    await worker.stop()
    running.cancel()
    await channel.client.close()
    await inbox.close()
    store.engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="", help="the inbox in this empty PostgreSQL database (else SQLite)")
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--replies", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--inbox-calls", default=DEFAULT_INBOX_CALLS, choices=INBOX_CALLS,
                        help="where a server's statements run (WHATSAPP_INBOX_CALLS)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--graph-stand-in", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.graph_stand_in:
        serve_graph_stand_in(args.graph_stand_in)
        return
    port = free_port()
    stand_in = subprocess.Popen([sys.executable, "-m", "bench.channel_cost", "--graph-stand-in", str(port)])
    try:
        time.sleep(1.5)
        with tempfile.TemporaryDirectory() as tmp:
            inbox_url = args.postgres or f"sqlite:///{Path(tmp) / 'inbox.db'}"
            figures = asyncio.run(run(args, inbox_url, f"http://127.0.0.1:{port}"))
    finally:
        stand_in.terminate()
    cpu = statistics.median(f[0] for f in figures)
    wall = statistics.median(f[1] for f in figures)
    print(f"channel's code on the loop thread: CPU {cpu:.3f} ms/message (median of {len(figures)} rounds; "
          f"range {min(f[0] for f in figures):.3f}-{max(f[0] for f in figures):.3f}), wall {wall:.2f} ms/message; "
          f"{args.replies} replies a message, {'PostgreSQL' if args.postgres else 'SQLite'}"
          + (f", WHATSAPP_INBOX_CALLS={args.inbox_calls}" if args.postgres else ""))
    if args.out:
        args.out.write_text(json.dumps({"cpu_ms": cpu, "wall_ms": wall, "rounds": figures}, indent=2))


if __name__ == "__main__":
    threading.current_thread().name = "loop"
    main()
