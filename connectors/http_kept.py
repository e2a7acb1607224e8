"""HTTP/1.1 requests to one origin on kept connections, each written in one go: the Cloud API's per-message calls.

aiohttp builds a request and a response object, header multidicts, a timer and a task that writes the
body for every call: ~0.2 ms of Rasa's event-loop thread per request, three requests a message (the read
receipt and two replies), about a third of the channel's own cost on that thread. Here a request is one
`transport.write` of a header block built once plus the body, and the answer is parsed by httptools
(llhttp, the parser Sanic serves Rasa's own routes with): ~0.03 ms.

What it does, and does not:
- one origin, the base URL's scheme, host and port; http and https (certificates checked against the
  system's CAs and the host name, unless the caller gives its own SSL context);
- keep-alive: a connection is reused once its answer was read whole and the server did not ask to close
  it; one idle for KEEPALIVE_SECONDS is closed instead (servers close idle ones, and a request written
  while they do is lost);
- at most `max_connections` open; beyond them a request waits for a free one, in arrival order;
- one deadline per request (waiting, connecting, writing, reading); past it the connection is aborted;
- through an HTTP proxy when given one (`proxy_from_environment`: HTTPS_PROXY / HTTP_PROXY, NO_PROXY
  honoured, as curl and aiohttp's `trust_env` read them): an https origin through a CONNECT tunnel
  (TLS end to end, the proxy sees only the host name), an http origin with absolute-form requests;
  Basic proxy credentials from the proxy URL;
- no redirects, compression or `Expect: 100-continue` (the Graph API's /messages needs none);
- every failure is an HttpError: refused, reset, closed before a whole answer, a malformed answer, an
  answer over `max_body` bytes, the deadline. A request is never written twice here (a POST may have
  been acted on): what to retry is the caller's call.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from connectors.http_proxy import MAX_HEADER_BYTES, Tunnel, TunnelFailed, parse_proxy, proxy_from_environment
from connectors.waiting_line import WaitingLine

__all__ = ["HttpError", "HttpResponse", "KeptHttp", "proxy_from_environment"]

KEEPALIVE_SECONDS = 15.0  # aiohttp's default too
MAX_BODY_BYTES = 1024 * 1024  # a Graph answer is a few hundred bytes
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(r"/[\x21-\x7e]*")  # printable ASCII, no space: nothing can end the request line early


class HttpError(Exception):
    """No usable answer: the connection failed, the answer was malformed or too large, or time ran out."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header's values joined with ", "
    body: bytes


class _Connection(asyncio.Protocol):
    """One kept connection: one request at a time, its answer parsed as the bytes come."""

    def __init__(self, max_body: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = False  # the last answer was read whole and the server keeps the connection open
        self.idle_since = 0.0
        self._max_body = max_body
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._until_eof = False  # neither a length nor chunked: the answer ends when the server closes
        self._problem = ""

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def expect(self, waiter: asyncio.Future[HttpResponse]) -> None:
        self._waiter, self.reusable = waiter, False
        self._reset()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self._fail("the server sent bytes no request asked for")
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the server switched protocols")
        except httptools.HttpParserError as error:
            self._fail(self._problem or f"malformed answer: {error}")
        else:
            if self._problem:
                self._fail(self._problem)

    def eof_received(self) -> bool:
        if self._until_eof and self._headers_done:
            self._complete(keep=False)
        return False  # the transport closes itself; connection_lost fails what is still waiting

    def connection_lost(self, exc: Exception | None) -> None:
        if self._until_eof and self._headers_done and exc is None:
            self._complete(keep=False)
        reason = f": {type(exc).__name__}: {exc}" if exc else ""
        self._fail(f"the connection closed before a whole answer came{reason}")

    # httptools callbacks: never raise here (the parser wraps it); a problem is noted and acted on after feed_data
    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():  # a second answer to one request, in the same bytes
            self._problem = "the server sent bytes no request asked for"

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._problem = f"answer headers over {MAX_HEADER_BYTES} bytes"
            return
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._headers_done = True
        length = self._headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_body:
            self._problem = f"answer of {length} bytes, over {self._max_body}"
        self._until_eof = not length and "chunked" not in self._headers.get("transfer-encoding", "").lower()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._problem = f"answer over {self._max_body} bytes"
        elif not self._problem:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._problem:
            return
        if self._parser.get_status_code() < 200:  # an interim answer (103 Early Hints): the real one follows
            self._reset()
            return
        self._complete(keep=self._parser.should_keep_alive())

    def _complete(self, keep: bool) -> None:
        waiter, self._waiter = self._waiter, None
        self.reusable = keep and not self._until_eof
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpResponse(self._parser.get_status_code(), self._headers, b"".join(self._body)))

    def _fail(self, reason: str) -> None:
        waiter, self._waiter = self._waiter, None
        self.reusable = False  # (also when the answer was already handed on: its request's end drops this)
        if waiter is not None and not waiter.done():
            waiter.set_exception(HttpError(reason))
        self.abort()


class KeptHttp:
    """Requests to the origin of `base_url` (its path a prefix of every request's), on kept connections."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None, timeout: float = 15.0,
                 max_connections: int = 32, max_body: int = MAX_BODY_BYTES,
                 ssl_context: ssl.SSLContext | None = None, proxy: str | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {base_url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"a base URL takes no query, fragment or credentials: {base_url!r}")
        self._prefix = parts.path.rstrip("/")
        if self._prefix and not _TARGET.fullmatch(self._prefix):
            raise ValueError(f"the base URL's path must be printable ASCII without spaces: {base_url!r}")
        secure = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if secure else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if secure else None
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_body = max_body
        host = f"[{self._host}]" if ":" in self._host else self._host
        lines = {"Host": host if parts.port is None else f"{host}:{self._port}", **(headers or {})}
        for name, value in lines.items():
            if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r} is not a valid header name and value")
        self._head = "".join(f"{name}: {value}\r\n" for name, value in lines.items()).encode("latin-1")
        self._proxy = parse_proxy(proxy) if proxy else None
        self._absolute = ""  # an http origin through a proxy: requests name it (absolute form)
        self._connect = b""  # an https origin through a proxy: the tunnel's request
        if self._proxy is not None:
            origin = f"{host}:{self._port}"
            if secure:  # the proxy's credentials go to the proxy only, never through the tunnel
                self._connect = (f"CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n".encode("latin-1")
                                 + self._proxy.authorization + b"\r\n")
            else:
                self._absolute = f"http://{origin}"
                self._head += self._proxy.authorization
        self._idle: list[_Connection] = []  # the most recently used last
        self._open = 0  # connections of this loop, idle or in use
        self._waiting = WaitingLine()  # requests without a connection
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json",
                      timeout: float | None = None) -> HttpResponse:
        """One request, its answer read whole within `timeout` (default: the client's); HttpError when none came
        (ValueError for a bad method, path or content type)."""
        return await self.start(method, path, body, content_type, timeout)

    def start(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json",
              timeout: float | None = None) -> asyncio.Future[HttpResponse]:
        """`request`, begun at once: on a kept connection the request is written before this returns (no
        event-loop iteration in between, as a task's first step would cost); the future gives the answer. Its
        connection goes back when it is done, awaited or not; cancelling it drops the connection."""
        target = self._prefix + path
        if not _TOKEN.fullmatch(method) or not path.startswith("/") or not _TARGET.fullmatch(target) \
                or any(c in content_type for c in "\r\n\0"):
            raise ValueError(f"not a request: {method!r} {target!r} {content_type!r}")
        head = b"%s %s%s HTTP/1.1\r\n%s" % (method.encode(), self._absolute.encode(), target.encode(), self._head)
        if body:
            head += b"Content-Type: %s\r\n" % content_type.encode("latin-1")
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._adopt(loop)
        seconds = self._timeout if timeout is None else timeout
        deadline = loop.time() + seconds
        connection = self._idle_connection(loop)
        if connection is None:
            return asyncio.ensure_future(self._on_a_new_connection(loop, head + body, deadline, seconds))
        return self._write(connection, loop, head + body, deadline, seconds)

    async def _on_a_new_connection(self, loop: asyncio.AbstractEventLoop, request: bytes, deadline: float,
                                   seconds: float) -> HttpResponse:
        connection = await self._new_connection(loop, deadline, seconds)
        return await self._write(connection, loop, request, deadline, seconds)

    def _write(self, connection: _Connection, loop: asyncio.AbstractEventLoop, request: bytes, deadline: float,
               seconds: float) -> asyncio.Future[HttpResponse]:
        waiter: asyncio.Future[HttpResponse] = loop.create_future()
        connection.expect(waiter)
        timer = loop.call_later(max(0.0, deadline - loop.time()), _expire, connection, waiter, seconds)
        waiter.add_done_callback(lambda done: self._ended(connection, timer, done, loop))
        assert connection.transport is not None
        connection.transport.write(request)
        return waiter

    def _ended(self, connection: _Connection, timer: asyncio.TimerHandle, waiter: asyncio.Future[HttpResponse],
               loop: asyncio.AbstractEventLoop) -> None:
        timer.cancel()
        if loop is not self._loop:  # another loop took the client over meanwhile (tests): not one of its own
            connection.abort()
            return
        if waiter.cancelled():
            connection.reusable = False  # the answer may still come: never read as the next request's
        self._release(connection)

    async def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.abort()
            self._open -= 1

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connections work only on the loop that opened them (tests run several): another loop starts afresh;
        the old loop's idle ones are closed on that loop while it runs (transports are not thread-safe)."""
        old, idle = self._loop, self._idle
        if idle and old is not None and not old.is_closed():
            old.call_soon_threadsafe(_abort_all, idle)
        self._idle, self._open, self._waiting, self._loop = [], 0, WaitingLine(), loop

    def _idle_connection(self, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        now = loop.time()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable and now - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.abort()
            self._open -= 1
        return None

    async def _new_connection(self, loop: asyncio.AbstractEventLoop, deadline: float, seconds: float) -> _Connection:
        while self._open >= self._max_connections:
            await self._wait_for_a_free_one(loop, deadline, seconds)
            connection = self._idle_connection(loop)
            if connection is not None:
                return connection
        self._open += 1
        try:
            connection = await asyncio.wait_for(self._connected(loop), max(0.0, deadline - loop.time()))
        except (OSError, asyncio.TimeoutError) as error:  # (ssl.SSLError is an OSError)
            self._closed_one()
            detail = "timed out" if isinstance(error, asyncio.TimeoutError) else f"{type(error).__name__}: {error}"
            via = f" through the proxy {self._proxy.host}:{self._proxy.port}" if self._proxy else ""
            raise HttpError(f"could not connect to {self._host}:{self._port}{via}: {detail}") from error
        except TunnelFailed as error:
            self._closed_one()
            raise HttpError(str(error)) from error
        except BaseException:
            self._closed_one()
            raise
        return connection

    async def _connected(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """A new connection to the origin: direct, to the proxy (http), or through the proxy's tunnel (https)."""
        if self._proxy is None:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_body), self._host, self._port, ssl=self._ssl,
                server_hostname=self._host if self._ssl else None)
            return connection
        if not self._connect:  # an http origin: absolute-form requests to the proxy itself
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_body), self._proxy.host, self._proxy.port)
            return connection
        transport, tunnel = await loop.create_connection(
            lambda: Tunnel(loop, f"{self._host}:{self._port}"), self._proxy.host, self._proxy.port)
        try:
            transport.write(self._connect)
            await tunnel.established
            connection = _Connection(self._max_body)
            tls = await loop.start_tls(transport, connection, self._ssl, server_hostname=self._host)
        except BaseException:
            transport.abort()
            raise
        connection.connection_made(tls)  # (start_tls hands the protocol its new transport without calling it)
        return connection

    async def _wait_for_a_free_one(self, loop: asyncio.AbstractEventLoop, deadline: float, seconds: float) -> None:
        freed = self._waiting.join(loop)
        timer = loop.call_later(max(0.0, deadline - loop.time()), _time_out, freed,
                                f"no free connection within {seconds:g}s: {self._max_connections} in use")
        try:
            await freed
        except BaseException:
            self._waiting.leave(freed)
            raise
        finally:
            timer.cancel()

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and connection.usable and self._loop is not None:
            connection.idle_since = self._loop.time()
            self._idle.append(connection)
            self._waiting.serve_next()
            return
        connection.abort()
        self._closed_one()

    def _closed_one(self) -> None:
        self._open -= 1
        self._waiting.serve_next()


def _abort_all(connections: list[_Connection]) -> None:
    for connection in connections:
        connection.abort()


def _expire(connection: _Connection, waiter: asyncio.Future[HttpResponse], seconds: float) -> None:
    if not waiter.done():
        waiter.set_exception(HttpError(f"no whole answer within {seconds:g}s"))
    connection.reusable = False
    connection.abort()


def _time_out(waiter: asyncio.Future[None], reason: str) -> None:
    if not waiter.done():
        waiter.set_exception(HttpError(reason))
