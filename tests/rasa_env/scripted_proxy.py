"""An HTTP proxy for the tests of connectors/http_proxy.py: CONNECT tunnels and absolute-form requests, piped
to the origin; or a scripted answer (a refusal, garbage, silence) instead."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Proxy:
    answer: bytes | None = None  # instead of piping: written, then the connection is closed (b"": closed at once)
    silent: bool = False  # never answers
    heads: list[bytes] = field(default_factory=list)  # the first request head of every connection
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> asyncio.AbstractServer:
        listening = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = listening.sockets[0].getsockname()[1]
        return listening

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        self.heads.append(head)
        if self.silent:
            await asyncio.sleep(3600)
        if self.answer is not None:
            writer.write(self.answer)
            await writer.drain()
            writer.close()
            return
        method, target, _version = head.split(b"\r\n", 1)[0].decode().split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream_reader, upstream = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute form: passed on as it came (the test's origin reads its target)
            parts = urlsplit(target)
            upstream_reader, upstream = await asyncio.open_connection(parts.hostname, parts.port)
            upstream.write(head)
        await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()
