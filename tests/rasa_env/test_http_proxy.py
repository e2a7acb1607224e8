"""connectors/http_proxy.py and KeptHttp through an HTTP proxy: CONNECT tunnels for https (TLS end to end,
the proxy's credentials to the proxy only), absolute-form requests for http, the environment's settings,
and every way a proxy can fail."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from connectors.http_kept import HttpError, KeptHttp
from connectors.http_proxy import parse_proxy, proxy_from_environment
from connectors.whatsapp.graph_api import GraphClient

from .scripted_http import OK, client
from .scripted_proxy import Proxy
from .test_http_kept_tls import certificates


@pytest.fixture
async def proxies() -> AsyncIterator[Any]:
    started: list[asyncio.AbstractServer] = []

    async def start(**script: Any) -> Proxy:
        proxy = Proxy(**script)
        started.append(await proxy.start())
        return proxy

    yield start
    for listening in started:
        listening.close()


async def test_https_goes_through_one_kept_tunnel_with_the_proxys_credentials_to_the_proxy_only(
        serve: Any, proxies: Any, tmp_path: Path) -> None:
    server_context, _other, trusting = certificates(tmp_path)
    server = await serve(lambda seen: OK, server_context)
    proxy = await proxies()
    http = client(server, "https", ssl_context=trusting, proxy=f"http://agent%40voltbay:p%3Ass@127.0.0.1:{proxy.port}")
    for _ in range(3):
        assert (await http.request("POST", "/m", b"{}")).body == b'{"ok":true}'
    assert len(proxy.heads) == 1 and server.connections == 1  # one tunnel, kept
    connect = proxy.heads[0].decode()
    assert connect.startswith(f"CONNECT 127.0.0.1:{server.port} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n")
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'agent@voltbay:p:ss').decode()}\r\n" in connect
    assert "Bearer" not in connect  # the Graph token never reaches the proxy
    assert all("proxy-authorization" not in seen.headers for seen in server.seen)  # nor its password the origin
    assert server.seen[0].headers["authorization"] == "Bearer t0ken" and server.seen[0].target == "/base/m"
    await http.close()


async def test_the_certificate_is_checked_through_the_tunnel(serve: Any, proxies: Any, tmp_path: Path) -> None:
    _context, other_name, trusting = certificates(tmp_path)
    server = await serve(lambda seen: OK, other_name)  # a certificate for another host
    proxy = await proxies()
    http = client(server, "https", ssl_context=trusting, proxy=proxy.url)
    with pytest.raises(HttpError, match="IP address mismatch"):
        await http.request("POST", "/m", b"{}")
    assert http._open == 0 and server.seen == []


async def test_http_goes_to_the_proxy_in_absolute_form(serve: Any, proxies: Any) -> None:
    server = await serve(lambda seen: OK)
    proxy = await proxies()
    http = client(server, proxy=f"127.0.0.1:{proxy.port}")  # "host:port", as curl takes it
    for _ in range(2):
        assert (await http.request("POST", "/m", b"{}")).status == 200
    assert [seen.target for seen in server.seen] == [f"http://127.0.0.1:{server.port}/base/m"] * 2
    assert len(proxy.heads) == 1  # kept
    await http.close()


@pytest.mark.parametrize("script, problem", [
    ({"answer": b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"},
     "the proxy refused the tunnel to 127.0.0.1:1: 'HTTP/1.1 407 Proxy Authentication Required'"),
    ({"answer": b"SSH-2.0-OpenSSH_9.2\r\n\r\n"}, "malformed answer from the proxy to CONNECT"),
    ({"answer": b"HTTP/1.1 200 OK\r\n\r\nsurprise"}, "the proxy sent bytes after its answer to CONNECT"),
    ({"answer": b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 70_000}, "headers over 65536 bytes"),
    ({"answer": b""}, "the proxy closed the connection before the tunnel was up"),
    ({"silent": True}, "through the proxy 127.0.0.1:.*: timed out"),
])
async def test_every_failure_of_the_proxy_is_an_http_error_and_frees_its_connection(
        proxies: Any, script: dict[str, Any], problem: str) -> None:
    proxy = await proxies(**script)
    http = KeptHttp("https://127.0.0.1:1/base", proxy=f"http://user:hunter2@127.0.0.1:{proxy.port}", timeout=0.5)
    with pytest.raises(HttpError, match=problem) as failed:
        await http.request("POST", "/m", b"{}")
    assert "hunter2" not in str(failed.value)
    assert http._open == 0


@pytest.mark.parametrize("url", ["https://user:hunter2@proxy.example:3128", "socks5://user:hunter2@proxy.example:1080",
                                 "http://user:hunter2@proxy.example:port", "http://user:hunter2@proxy.example:3128/x",
                                 "http://user:hunter2@proxy.example:3128?q=1", "http://:3128"])
def test_a_proxy_url_it_cannot_use_is_refused_at_start_without_its_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="only an http://host:port proxy") as refused:
        parse_proxy(url)
    assert "hunter2" not in str(refused.value)


def test_the_environment_names_the_proxy_by_scheme_and_no_proxy_bypasses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_from_environment("https://graph.facebook.com") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxy_from_environment("https://graph.facebook.com") == "http://proxy.internal:3128"
    assert proxy_from_environment("http://127.0.0.1:8081") is None  # HTTPS_PROXY is for https only
    monkeypatch.setenv("http_proxy", "http://plain.internal:8080")
    assert proxy_from_environment("http://127.0.0.1:8081") == "http://plain.internal:8080"
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.facebook.com")
    assert proxy_from_environment("http://127.0.0.1:8081") is None
    assert proxy_from_environment("https://graph.facebook.com") is None
    assert proxy_from_environment("https://graph.example") == "http://proxy.internal:3128"


def test_the_graph_client_takes_the_environments_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    proxy = GraphClient("s3cret-token", base_url="https://graph.example")._http._proxy
    assert proxy is not None and (proxy.host, proxy.port) == ("proxy.internal", 3128)
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.internal:1080")
    with pytest.raises(ValueError, match="HTTPS_PROXY") as refused:
        GraphClient("s3cret-token", base_url="https://graph.example")
    assert "s3cret-token" not in str(refused.value)


def test_the_tunnel_works_on_uvloop_the_loop_rasa_serves_on(tmp_path: Path) -> None:
    """Sanic runs Rasa on uvloop, whose start_tls is its own: the same tunnel, kept, there."""
    import uvloop

    from .scripted_http import scripted_servers

    server_context, _other, trusting = certificates(tmp_path)

    async def scenario() -> tuple[list[int], int, int]:
        async with scripted_servers() as serve:
            server = await serve(lambda seen: OK, server_context)
            proxy = Proxy()
            listening = await proxy.start()
            http = client(server, "https", ssl_context=trusting, proxy=proxy.url)
            statuses = [(await http.request("POST", "/m", b"{}")).status for _ in range(3)]
            await http.close()
            listening.close()
            return statuses, len(proxy.heads), server.connections

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == ([200, 200, 200], 1, 1)
    finally:
        loop.close()
