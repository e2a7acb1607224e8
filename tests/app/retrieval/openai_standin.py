"""A local stand-in for OpenAI's HTTP API (chat completions + embeddings), for the real `openai` client.

Answers in the documented response format; the test sets what the "model" says and reads the
requests the client made. Test-only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class OpenAIStandIn:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply: Callable[[dict[str, Any]], str] = lambda _body: "NO_ANSWER"
        self.fail_next: list[int] = []  # HTTP statuses to answer with before succeeding
        self.url = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                standin.requests.append({"path": self.path, "body": body,
                                         "authorization": self.headers.get("Authorization")})
                if standin.fail_next:
                    status = standin.fail_next.pop(0)
                    self._send(status, {"error": {"message": "stand-in failure", "type": "server_error"}})
                    return
                if self.path.endswith("/chat/completions"):
                    self._send(200, {
                        "id": "chatcmpl-standin", "object": "chat.completion", "created": 1700000000,
                        "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": standin.reply(body)}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}})
                elif self.path.endswith("/embeddings"):
                    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                    data = [{"object": "embedding", "index": n, "embedding": [float(len(t) % 7 + 1), 1.0, float(n)]}
                            for n, t in enumerate(inputs)]
                    self._send(200, {"object": "list", "data": data, "model": body.get("model"),
                                     "usage": {"prompt_tokens": 1, "total_tokens": 1}})
                else:
                    self._send(404, {"error": {"message": "unknown route"}})

        return Handler


@contextmanager
def openai_standin() -> Iterator[OpenAIStandIn]:
    standin = OpenAIStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), standin.handler())
    standin.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
