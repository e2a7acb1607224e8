"""A console app on temporary SQLite files, a fake tracker store and a Rasa stand-in."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sanic import Sanic
from sanic_testing.testing import SanicASGITestClient
from sqlalchemy import create_engine

from console.app import create_app
from console.settings import load_settings
from tests.app.console.helpers import RasaStandIn, tracker_metadata

ADMIN = ("admin@voltbay.example", "admin-password-1")
AGENT = ("ana@voltbay.example", "agent-password-1")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    tracker_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    tracker = create_engine(tracker_url)
    tracker_metadata.create_all(tracker)
    settings = replace(load_settings({"CONSOLE_SECRET_KEY": "k", "CONSOLE_ADMIN_EMAIL": ADMIN[0],
                                      "CONSOLE_ADMIN_PASSWORD": ADMIN[1], "CHANNEL_AGENT_TOKEN": "channel-token",
                                      "RASA_TOKEN": "rasa-token", "CONSOLE_SECURE_COOKIE": "false"}),
                       db_url=f"sqlite:///{tmp_path / 'console.db'}", tracker_db_url=tracker_url,
                       inbox_db_url=tracker_url)
    rasa = RasaStandIn(tracker)
    suggestions: list[str] = []

    def suggest(question: str) -> dict[str, Any]:
        suggestions.append(question)
        return {"question": question, "mode": "extractive", "text": "Delivery takes 1–2 working days.",
                "sources": [{"doc_id": "delivery", "title": "Delivery", "section": "Delivery > Times",
                             "source": "knowledge/delivery.md"}]}

    app = create_app(settings, name=f"console_{uuid.uuid4().hex[:8]}", rasa_transport=rasa.transport(),
                     suggest=suggest, run_projector=False)
    return {"app": app, "tracker": tracker, "rasa": rasa, "suggestions": suggestions}


@pytest.fixture
def app(env: dict[str, Any]) -> Sanic:
    return env["app"]


class Browser:
    """An ASGI client that keeps cookies and the CSRF token between requests."""

    def __init__(self, app: Sanic) -> None:
        self.app = app
        self.client = SanicASGITestClient(app)
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        _, answer = await getattr(self.client, method)(path, headers=headers, **kwargs)
        for key, cookie in answer.cookies.items():
            self.cookies[key] = cookie if isinstance(cookie, str) else cookie.value
        for header in answer.headers.get_list("set-cookie") if hasattr(answer.headers, "get_list") else []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value and "max-age=0" not in header.lower():
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        return answer

    async def api_login(self, email: str, password: str) -> Any:
        answer = await self.request("post", "/api/login", json={"email": email, "password": password},
                                    headers={"Content-Type": "application/json"})
        if answer.status == 200:
            self.csrf = answer.json["csrf_token"]
        return answer

    async def api(self, method: str, path: str, body: Any = None, csrf: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if csrf and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        return await self.request(method, path, **kwargs)
