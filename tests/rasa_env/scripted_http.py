"""HTTP servers whose answers a test scripts, on the test's own loop (plain or TLS), for connectors/http_kept.py."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httptools

from connectors.http_kept import KeptHttp

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    transport: asyncio.Transport


Answer = Callable[[Seen], bytes | None]


@dataclass
class Server:
    """Parses each request with httptools and writes what `answer` gives for it (None: nothing, yet)."""

    answer: Answer
    connections: int = 0
    seen: list[Seen] = field(default_factory=list)
    transports: list[asyncio.Transport] = field(default_factory=list)
    port: int = 0

    def protocol(self) -> asyncio.Protocol:
        server = self

        class Handler(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                server.connections += 1
                server.transports.append(transport)  # type: ignore[arg-type]
                self.transport = transport
                self.parser = httptools.HttpRequestParser(self)
                self.headers: dict[str, str] = {}
                self.body = b""

            def data_received(self, data: bytes) -> None:
                self.parser.feed_data(data)

            def on_url(self, url: bytes) -> None:
                self.url = url.decode()

            def on_header(self, name: bytes, value: bytes) -> None:
                self.headers[name.decode().lower()] = value.decode()

            def on_body(self, body: bytes) -> None:
                self.body += body

            def on_message_complete(self) -> None:
                seen = Seen(self.parser.get_method().decode(), self.url, self.headers, self.body, self.transport)
                self.headers, self.body = {}, b""
                server.seen.append(seen)
                reply = server.answer(seen)
                if reply is not None:
                    self.transport.write(reply)  # type: ignore[attr-defined]

        return Handler()

    async def start(self, context: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
        listening = await asyncio.get_running_loop().create_server(self.protocol, "127.0.0.1", 0, ssl=context)
        self.port = listening.sockets[0].getsockname()[1]
        return listening


@asynccontextmanager
async def scripted_servers() -> AsyncIterator[Callable[..., Any]]:
    """`start(answer, ssl_context=None) -> Server`; every server started is closed at the end."""
    started: list[asyncio.AbstractServer] = []

    async def start(answer: Answer, context: ssl.SSLContext | None = None) -> Server:
        server = Server(answer)
        started.append(await server.start(context))
        return server

    yield start
    for listening in started:
        listening.close()


def client(server: Server, scheme: str = "http", **options: Any) -> KeptHttp:
    return KeptHttp(f"{scheme}://127.0.0.1:{server.port}/base", {"Authorization": "Bearer t0ken"}, **options)


def holding_slow(others: bytes = OK) -> tuple[Answer, list[Seen]]:
    """An answer script that leaves requests for /base/slow unanswered (the test answers them through the
    returned list's transports, or never) and answers every other request with `others`."""
    held: list[Seen] = []

    def answer(seen: Seen) -> bytes | None:
        if seen.target == "/base/slow":
            held.append(seen)
            return None
        return others

    return answer, held
