"""Webhooks from the stand-ins to the channel, over kept-alive connections.

A new connection per webhook (urllib) cost the stand-in and the receiving channel more CPU than the
webhook itself, and on a machine where the bench runs everything side by side that CPU is taken
from the server being measured (Meta's and Evolution's real senders are not on our machine).
Each thread of the default executor keeps one connection per host; httpx's async client was tried
and cost twice the CPU of urllib.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
from typing import Any

from connectors.whatsapp.signature import sign

TIMEOUT_SECONDS = 10.0


class WebhookPoster:
    """POSTs JSON webhooks from worker threads, each keeping its connections open between webhooks."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, netloc: str) -> http.client.HTTPConnection:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        if netloc not in pool:
            pool[netloc] = http.client.HTTPConnection(netloc, timeout=TIMEOUT_SECONDS)
            with self._lock:
                self._all.append(pool[netloc])
        return pool[netloc]

    def post_blocking(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """(HTTP status, the first 500 characters of the answer); status 0 when nothing answered."""
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", **headers}
        for attempt in range(2):  # a kept connection the server has closed meanwhile: once more on a new one
            connection = self._connection(parts.netloc)
            try:
                connection.request("POST", path or "/", body=body, headers=headers)
                answer = connection.getresponse()
                return answer.status, answer.read().decode("utf-8", "replace")[:500]
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                if attempt == 1 or isinstance(error, ConnectionRefusedError | TimeoutError):
                    return 0, str(error) or type(error).__name__
        return 0, "unreachable"

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        return await asyncio.to_thread(self.post_blocking, url, body, headers)

    async def post_signed(self, url: str, payload: dict[str, Any], app_secret: str) -> tuple[int, str]:
        """A Cloud API webhook, signed the way Meta signs it."""
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return await self.post(url, body, {"X-Hub-Signature-256": sign(body, app_secret)})

    async def close(self) -> None:
        with self._lock:
            for connection in self._all:
                connection.close()
