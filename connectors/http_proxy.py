"""An HTTP proxy for connectors/http_kept.py: which one the environment gives, and a CONNECT tunnel through it.

HTTPS_PROXY / HTTP_PROXY and NO_PROXY are read as curl and aiohttp's `trust_env` read them (the standard
library's own reading). An https origin is reached through a CONNECT tunnel, so TLS runs end to end and
the proxy sees only the host name; the proxy's credentials go in the CONNECT request only.
"""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

MAX_HEADER_BYTES = 64 * 1024


class TunnelFailed(Exception):
    """The proxy refused the tunnel, answered something else than HTTP, or closed the connection."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: bytes  # the Proxy-Authorization header line, or b""


def parse_proxy(url: str) -> Proxy:
    """An http:// proxy URL ("host:port" alone too, as curl takes it); credentials never reach a message."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme != "http" or not parts.hostname or not port or (parts.path not in ("", "/")) \
            or parts.query or parts.fragment:
        raise ValueError(f"proxy: only an http://host:port proxy is supported (given: {parts.scheme}://"
                         f"{parts.hostname or '?'}…)")
    authorization = b""
    if parts.username is not None:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        authorization = f"Proxy-Authorization: Basic {token}\r\n".encode("latin-1")
    return Proxy(parts.hostname, port, authorization)


def proxy_from_environment(url: str) -> str | None:
    """The proxy the environment gives for `url` (HTTPS_PROXY / HTTP_PROXY by its scheme, lower or upper case),
    None when there is none or NO_PROXY names its host."""
    parts = urlsplit(url)
    proxies = getproxies_environment()
    if not parts.hostname or proxy_bypass_environment(parts.hostname, proxies):
        return None
    return proxies.get(parts.scheme) or None


class Tunnel(asyncio.Protocol):
    """A proxy connection until its answer to CONNECT: `established` ends when the tunnel is up (a 2xx)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: str) -> None:
        self.established: asyncio.Future[None] = loop.create_future()
        self._origin = origin
        self._answer = b""
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self.established.done():  # nothing may come before our TLS hello: it speaks first
            self._fail("the proxy sent bytes the tunnel did not ask for")
            return
        self._answer += data
        end = self._answer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._answer) > MAX_HEADER_BYTES:
                self._fail(f"the proxy's answer to CONNECT has headers over {MAX_HEADER_BYTES} bytes")
            return
        status_line = self._answer.split(b"\r\n", 1)[0]
        match = re.fullmatch(rb"HTTP/1\.[01] (\d{3})(?: .*)?", status_line)
        if match is None:
            self._fail(f"malformed answer from the proxy to CONNECT: {status_line[:80]!r}")
        elif not match.group(1).startswith(b"2"):
            self._fail(f"the proxy refused the tunnel to {self._origin}: {status_line[:80].decode('latin-1')!r}")
        elif end + 4 != len(self._answer):
            self._fail("the proxy sent bytes after its answer to CONNECT")
        else:
            self.established.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("the proxy closed the connection before the tunnel was up")

    def _fail(self, reason: str) -> None:
        if not self.established.done():
            self.established.set_exception(TunnelFailed(reason))
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]
