"""`make evolution-setup` against an Evolution API stand-in: create, QR, webhook with the secret header."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connectors.evolution.setup import main, save_qr, setup
from connectors.settings import EvolutionSettings

from .conftest import start_web

PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489")).decode()


class EvolutionAdmin:
    def __init__(self) -> None:
        self.instances: dict[str, str] = {}
        self.webhooks: dict[str, Any] = {}
        self.calls: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers.get("apikey") == "evo-key"
        path = request.path
        self.calls.append(f"{request.method} {path}")
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/instance/connectionState/"):
            if name not in self.instances:
                return web.json_response({"status": 404, "response": {"message": ["does not exist"]}}, status=404)
            return web.json_response({"instance": {"instanceName": name, "state": self.instances[name]}})
        if path == "/instance/create":
            self.instances[(await request.json())["instanceName"]] = "connecting"
            return web.json_response({"instance": {"status": "created"}}, status=201)
        if path.startswith("/instance/connect/"):
            return web.json_response({"base64": f"data:image/png;base64,{PNG}", "pairingCode": "ABCD1234"})
        if path.startswith("/webhook/set/"):
            self.webhooks[name] = (await request.json())["webhook"]
            return web.json_response({"webhook": self.webhooks[name]}, status=201)
        return web.json_response({"status": 404}, status=404)


def evo(url: str) -> EvolutionSettings:
    return EvolutionSettings(api_url=url, api_key="evo-key", instance="shop", webhook_secret="s3cret",
                             inbox_db_url="sqlite://", stale_after_seconds=1, concurrency=1)


async def test_creates_instance_saves_qr_and_registers_webhook(tmp_path: Path, capsys: Any) -> None:
    admin = EvolutionAdmin()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", admin.handle)
    runner, url = await start_web(app)
    try:
        qr = tmp_path / "qr.png"
        assert await setup(evo(url), "https://bot.example/webhooks/evolution/webhook", qr) == 0
        assert qr.read_bytes().startswith(b"\x89PNG")
        assert admin.instances == {"shop": "connecting"}
        hook = admin.webhooks["shop"]
        assert hook["url"] == "https://bot.example/webhooks/evolution/webhook"
        assert hook["headers"] == {"X-Evolution-Secret": "s3cret"} and "MESSAGES_UPSERT" in hook["events"]
        out = capsys.readouterr().out
        assert "instance 'shop' created" in out and "ABCD1234" in out
        admin.instances["shop"] = "open"  # scanned: a second run only checks and re-registers
        admin.calls.clear()
        assert await setup(evo(url), "https://bot.example/webhooks/evolution/webhook", qr) == 0
        assert not any("create" in c or "/instance/connect/" in c for c in admin.calls)
    finally:
        await runner.cleanup()


async def test_unreachable_server_is_a_clear_error(tmp_path: Path, capsys: Any) -> None:
    assert await setup(evo("http://127.0.0.1:9"), "https://x/webhooks/evolution/webhook", tmp_path / "q.png") == 1
    assert "Evolution API at http://127.0.0.1:9" in capsys.readouterr().err


def test_missing_settings_and_bad_url(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("EVOLUTION_API_KEY", raising=False)
    assert main(["--webhook-url", "https://x/y"]) == 2
    assert "EVOLUTION_API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("EVOLUTION_API_KEY", "k")
    monkeypatch.setenv("EVOLUTION_WEBHOOK_SECRET", "s")
    assert main(["--webhook-url", "ftp://x"]) == 2


def test_qr_must_be_a_png(tmp_path: Path) -> None:
    assert not save_qr("data:image/png;base64,bm90IGEgcG5n", tmp_path / "q.png")
    assert not save_qr("", tmp_path / "q.png")
