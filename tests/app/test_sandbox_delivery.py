"""The sandbox's webhook sender: one kept-alive connection for many webhooks, signed bodies, no raising."""

from __future__ import annotations

import asyncio
import json

from connectors.whatsapp.signature import sign
from sandbox.delivery import WebhookPoster


class CountingServer:
    """A bare HTTP/1.1 server that keeps connections open and counts them and the requests."""

    def __init__(self, status: int = 200, close_after_answer: bool = False) -> None:
        self.status = status
        self.close_after_answer = close_after_answer  # as a server whose keep-alive timed out
        self.connections = 0
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((headers, body))
            answer = b'{"ok": true}'
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(answer)}\r\n"
                         "Content-Type: application/json\r\n\r\n".encode() + answer)
            await writer.drain()
            if self.close_after_answer:
                break
        writer.close()


async def serve(handler: CountingServer) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/webhooks/whatsapp/webhook"


async def test_many_webhooks_share_one_connection_and_are_signed() -> None:
    handler = CountingServer()
    server, url = await serve(handler)
    poster = WebhookPoster()
    try:
        for n in range(20):
            code, answer = await poster.post_signed(url, {"n": n, "name": "José"}, "secret")
            assert (code, json.loads(answer)) == (200, {"ok": True})
    finally:
        await poster.close()
        server.close()
    # At most one connection per executor thread (a handful), not one per webhook.
    assert len(handler.requests) == 20 and handler.connections < 10
    headers, body = handler.requests[19]
    assert json.loads(body) == {"n": 19, "name": "José"}
    assert headers["x-hub-signature-256"] == sign(body, "secret")
    assert headers["content-type"] == "application/json"


async def test_refusals_and_unreachable_channels_are_answers_not_exceptions() -> None:
    handler = CountingServer(status=403)
    server, url = await serve(handler)
    poster = WebhookPoster()
    try:
        assert (await poster.post(url, b"{}", {"X-Evolution-Secret": "s"}))[0] == 403
        server.close()
        await server.wait_closed()
        code, reason = await poster.post("http://127.0.0.1:9/nothing-listens", b"{}", {})
        assert code == 0 and reason
    finally:
        await poster.close()
    await poster.close()  # closing twice is harmless


async def test_a_connection_the_server_closed_is_replaced_and_the_webhook_still_arrives() -> None:
    handler = CountingServer(close_after_answer=True)
    server, url = await serve(handler)
    poster = WebhookPoster()
    try:
        codes = [(await poster.post(url, b'{"n": %d}' % n, {}))[0] for n in range(6)]
    finally:
        await poster.close()
        server.close()
    assert codes == [200] * 6
    assert [json.loads(body)["n"] for _, body in handler.requests] == list(range(6))
