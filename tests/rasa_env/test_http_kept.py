"""connectors/http_kept.py against scripted HTTP servers on the test's own loop (https: test_http_kept_tls.py)."""

from __future__ import annotations

import asyncio
import select
import socket
from typing import Any

import pytest

from connectors import http_kept
from connectors.http_kept import HttpError, KeptHttp

from .scripted_http import OK, Seen, client, holding_slow


async def test_requests_go_out_whole_and_share_one_kept_connection(serve: Any) -> None:
    server = await serve(lambda seen: OK)
    http = client(server)
    for n in range(20):
        response = await http.request("POST", f"/v23.0/PNID/messages?n={n}", b'{"to":"1"}')
        assert (response.status, response.body, response.headers["content-type"]) == (200, b'{"ok":true}',
                                                                                      "application/json")
    assert server.connections == 1 and len(server.seen) == 20
    first = server.seen[0]
    assert (first.method, first.target, first.body) == ("POST", "/base/v23.0/PNID/messages?n=0", b'{"to":"1"}')
    assert first.headers == {"host": f"127.0.0.1:{server.port}", "authorization": "Bearer t0ken",
                             "content-type": "application/json", "content-length": "10"}
    results = await asyncio.gather(*(http.request("GET", "/x") for _ in range(8)))
    assert all(r.status == 200 for r in results) and server.connections <= 8
    before = server.connections
    await asyncio.gather(*(http.request("GET", "/x") for _ in range(8)))
    assert server.connections == before  # the second wave found them all kept
    await http.close()


@pytest.mark.parametrize(("answer", "body", "reused"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n", b'{"a":1}', True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", b"{}", False),
    (b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n[]", b"[]", True),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"hi", False),
])
async def test_answers_framed_every_way_http_allows(serve: Any, answer: bytes, body: bytes, reused: bool) -> None:
    server = await serve(lambda seen: answer)
    http = client(server)
    assert (await http.request("POST", "/m", b"{}")).body == body
    assert (await http.request("POST", "/m", b"{}")).body == body
    assert server.connections == (1 if reused else 2)


async def test_an_answer_delimited_by_the_servers_close_is_read_whole(serve: Any) -> None:
    def answer(seen: Seen) -> bytes:
        seen.transport.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n{\"error\":")
        seen.transport.write(b"{\"code\":1}}")
        seen.transport.close()
        return b""

    server = await serve(answer)
    response = await client(server).request("POST", "/m", b"{}")
    assert (response.status, response.body) == (500, b'{"error":{"code":1}}')


@pytest.mark.parametrize(("answer", "problem"), [
    (b"HTTX/1.1 200 OK\r\n\r\n", "malformed answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n", "answer of 2000000 bytes, over 1048576"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
     + b"10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n", "answer over 1048576 bytes"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * 70000 + b"\r\nContent-Length: 0\r\n\r\n", "headers over 65536"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed before a whole answer"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", "switched protocols"),
])
async def test_a_bad_answer_is_an_error_and_its_connection_is_not_reused(
        serve: Any, answer: bytes, problem: str) -> None:
    def reply(seen: Seen) -> bytes:
        if seen.target.endswith("/bad"):
            seen.transport.write(answer)
            if b"short" in answer:
                seen.transport.close()
            return b""
        return OK

    server = await serve(reply)
    http = client(server)
    with pytest.raises(HttpError, match=problem):
        await http.request("POST", "/bad", b"{}")
    assert (await http.request("POST", "/good", b"{}")).status == 200
    assert server.connections == 2 and http._open == 1


async def test_refused_reset_and_silent_servers_are_errors_within_the_deadline(serve: Any) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = KeptHttp(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(HttpError, match=f"could not connect to 127.0.0.1:{port}: ConnectionRefusedError"):
        await refused.request("GET", "/")
    assert refused._open == 0

    def reset(seen: Seen) -> None:
        seen.transport.abort()

    http = client(await serve(reset))
    with pytest.raises(HttpError, match="closed before a whole answer"):
        await http.request("POST", "/m", b"{}")
    assert http._open == 0

    silent = await serve(lambda seen: None)
    http = client(silent, timeout=0.3)
    with pytest.raises(HttpError, match=r"no whole answer within 0\.3s"):
        await http.request("POST", "/m", b"{}")
    assert http._open == 0 and http._idle == []
    await asyncio.sleep(0.05)
    assert silent.transports[0].is_closing()  # aborted on our side: the server saw it go


async def test_a_connection_closed_by_the_server_while_idle_is_not_written_to(serve: Any) -> None:
    server = await serve(lambda seen: OK)
    http = client(server)
    await http.request("GET", "/a")
    server.transports[0].close()  # the server's keep-alive timeout
    await asyncio.sleep(0.05)
    assert (await http.request("GET", "/b")).status == 200
    assert server.connections == 2 and http._open == 1


async def test_a_connection_idle_for_longer_than_keepalive_is_closed_not_reused(
        serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_kept, "KEEPALIVE_SECONDS", 0.1)
    server = await serve(lambda seen: OK)
    http = client(server)
    await http.request("GET", "/a")
    await asyncio.sleep(0.15)
    await http.request("GET", "/b")
    assert server.connections == 2 and http._open == 1
    await asyncio.sleep(0.05)
    assert server.transports[0].is_closing()


async def test_bytes_nobody_asked_for_drop_the_connection(serve: Any) -> None:
    server = await serve(lambda seen: OK + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # two answers to one
    http = client(server)
    await http.request("GET", "/a")
    await asyncio.sleep(0.05)
    assert (await http.request("GET", "/b")).status == 200
    assert server.connections == 2


async def test_a_cancelled_request_never_hands_its_late_answer_to_the_next(serve: Any) -> None:
    answer, held = holding_slow(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfast")
    server = await serve(answer)
    http = client(server)
    slow = asyncio.create_task(http.request("GET", "/slow"))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    if not held[0].transport.is_closing():  # (the connection was dropped: this goes nowhere)
        held[0].transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
    assert (await http.request("GET", "/fast")).body == b"fast"
    assert http._open == 1


async def test_at_most_max_connections_open_and_the_rest_wait_their_turn(serve: Any) -> None:
    def answer(seen: Seen) -> None:
        asyncio.get_running_loop().call_later(0.02, seen.transport.write, OK)

    server = await serve(answer)
    http = client(server, max_connections=3)
    assert [r.status for r in await asyncio.gather(*(http.request("GET", "/x") for _ in range(30)))] == [200] * 30
    assert server.connections == 3 and http._open == 3 and not http._waiting

    blocked = client(await serve(lambda seen: None), max_connections=1, timeout=0.3)
    first = asyncio.create_task(blocked.request("GET", "/x", timeout=5))
    await asyncio.sleep(0.05)
    with pytest.raises(HttpError, match=r"no free connection within 0\.3s: 1 in use"):
        await blocked.request("GET", "/y")
    assert not blocked._waiting
    second = asyncio.create_task(blocked.request("GET", "/y", timeout=0.5))
    await asyncio.sleep(0.05)
    first.cancel()  # its connection is dropped: the one waiting opens another
    with pytest.raises(HttpError, match=r"no whole answer within 0\.5s"):
        await second
    assert blocked._open == 0 and not blocked._waiting


@pytest.mark.parametrize(("method", "path"), [("POST", "/a b"), ("POST", "/a\r\nX-Evil: 1"), ("POST", "a"),
                                              ("PO ST", "/a"), ("POST", "/ü")])
async def test_a_request_line_that_could_be_split_is_refused_before_anything_is_sent(
        serve: Any, method: str, path: str) -> None:
    server = await serve(lambda seen: OK)
    with pytest.raises(ValueError, match="not a request"):
        await client(server).request(method, path, b"{}")
    assert server.connections == 0


@pytest.mark.parametrize(("url", "headers"), [("ftp://h/", {}), ("http:///x", {}), ("http://h/?q=1", {}),
                                              ("http://u:p@h/", {}), ("http://h/a b", {}),
                                              ("http://h", {"Authorization": "Bearer x\r\nX-Evil: 1"}),
                                              ("http://h", {"Bad Name": "v"})])
def test_a_bad_base_url_or_header_is_refused_at_construction(url: str, headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        KeptHttp(url, headers)


async def test_another_event_loop_gets_its_own_connections(serve: Any) -> None:
    server = await serve(lambda seen: OK)
    http = client(server)
    await http.request("GET", "/a")
    first_loop = http._loop

    def on_another_loop() -> int:
        async def ask() -> int:
            return (await http.request("GET", "/b")).status
        return asyncio.run(ask())

    assert await asyncio.to_thread(on_another_loop) == 200
    assert http._loop is not first_loop and server.connections == 2
    assert (await http.request("GET", "/c")).status == 200


async def test_a_started_request_is_on_the_wire_before_start_returns(serve: Any) -> None:
    """No event-loop iteration between a reply's start and its bytes leaving (a task's first step costs one,
    which under load waits behind every other turn's step)."""
    server = await serve(lambda seen: OK)
    http = client(server)
    await http.request("GET", "/warm")  # a kept connection
    server_socket = server.transports[0].get_extra_info("socket")
    answer = http.start("POST", "/m", b'{"to":"1"}')
    readable, _, _ = select.select([server_socket], [], [], 1.0)  # (blocking: the loop does not run meanwhile)
    assert readable and not answer.done()
    assert (await answer).status == 200 and server.connections == 1

    unawaited = http.start("POST", "/m", b"{}")  # nobody awaits it: its connection still goes back
    await asyncio.sleep(0.1)
    assert unawaited.done() and len(http._idle) == 1 and http._open == 1
    dropped = http.start("POST", "/m", b"{}")
    dropped.cancel()
    await asyncio.sleep(0.05)
    assert http._idle == [] and http._open == 0
    assert (await http.request("GET", "/after")).status == 200 and server.connections == 2


async def test_a_request_that_ends_after_another_loop_took_over_is_not_kept_for_it(serve: Any) -> None:
    answer, held = holding_slow()
    server = await serve(answer)
    http = client(server)
    slow = http.start("GET", "/slow")
    await asyncio.sleep(0.05)

    def on_another_loop() -> int:
        async def ask() -> int:
            return (await http.request("GET", "/x")).status
        return asyncio.run(ask())

    assert await asyncio.to_thread(on_another_loop) == 200
    idle_of_the_other_loop = list(http._idle)
    held[0].transport.write(OK)
    assert (await slow).status == 200
    await asyncio.sleep(0.01)
    assert http._idle == idle_of_the_other_loop  # this loop's connection was not handed to the other's list
