"""Auth on every route, roles, CSRF, login rate limit, audit entries, hostile and malformed input."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from console.tables import audit_log
from tests.app.console.conftest import ADMIN, AGENT, Browser
from tests.app.console.helpers import add_events, handoff_events, user
from tests.app.console.test_console_api import admin_and_agent

PUBLIC = {"/login", "/api/login", "/healthz"}


def concrete(path: str) -> str:
    path = re.sub(r"<[^>]*:int>", "1", path)
    return "/" + re.sub(r"<[^>]+>", "34600000001", path).lstrip("/")


def app_routes(app: Any) -> list[tuple[str, str]]:
    app.router.finalize() if not app.router.finalized else None
    routes = []
    for route in app.router.routes:
        path = concrete(route.path)
        if path.startswith("/static") or path in PUBLIC:
            continue
        routes.extend((method, path) for method in route.methods if method in ("GET", "POST"))
    return sorted(set(routes))


async def test_every_route_refuses_anonymous_visitors(env: dict[str, Any]) -> None:
    browser = Browser(env["app"])
    await browser.request("get", "/login")  # starts the app
    routes = app_routes(env["app"])
    assert len(routes) >= 30, routes
    for method, path in routes:
        extra = {"content": "{}"} if method == "POST" else {}
        answer = await browser.request(method.lower(), path, headers={"Content-Type": "application/json"}, **extra)
        if method == "GET" and not path.startswith(("/api/", "/events/")):
            assert answer.status == 302 and answer.headers["location"].startswith("/login"), (method, path)
        else:
            assert answer.status == 401, (method, path, answer.status)


async def test_admin_pages_and_api_refuse_agents(env: dict[str, Any]) -> None:
    admin, agent = await admin_and_agent(env)
    for path in ["/api/agents", "/api/audit"]:
        assert (await agent.api("get", path)).status == 403
        assert (await admin.api("get", path)).status == 200
    for path in ["/admin/agents", "/admin/canned", "/admin/audit"]:
        assert (await agent.request("get", path)).status == 403
        assert (await admin.request("get", path)).status == 200
    assert (await agent.api("post", "/api/agents", {"email": "x@y.example", "name": "X", "password": "p" * 12,
                                                    "role": "admin"})).status == 403
    assert (await agent.api("post", "/api/canned", {"shortcut": "hi", "title": "Hi", "text": "Hi"})).status == 403


async def test_state_changes_need_the_sessions_csrf_token(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    add_events(env["tracker"], "34600000001", [user("agent please", "human_handoff"), *handoff_events()])
    env["app"].ctx.projector.catch_up()
    assert (await agent.api("post", "/api/conversations/34600000001/claim", {}, csrf=False)).status == 403
    wrong = await agent.request("post", "/api/conversations/34600000001/claim", json={},
                                headers={"Content-Type": "application/json", "X-CSRF-Token": "forged"})
    assert wrong.status == 403
    form = await agent.request("post", "/c/34600000001/note", data={"text": "hi", "csrf_token": "forged"})
    assert form.status == 403
    page = await agent.request("get", "/c/34600000001")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    form = await agent.request("post", "/c/34600000001/note", data={"text": "hi", "csrf_token": token})
    assert form.status == 303


async def test_login_form_has_its_own_csrf_and_rate_limit(env: dict[str, Any]) -> None:
    browser = Browser(env["app"])
    page = await browser.request("get", "/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    forged = await browser.request("post", "/login", data={"email": ADMIN[0], "password": ADMIN[1],
                                                           "csrf_token": "forged"})
    assert forged.status == 403
    page = await browser.request("get", "/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    ok = await browser.request("post", "/login", data={"email": ADMIN[0], "password": ADMIN[1], "csrf_token": token,
                                                       "next": "//evil.example/"})
    assert ok.status == 303 and ok.headers["location"] == "/"  # no open redirect
    cookie = next(h for h in ok.headers.get_list("set-cookie") if h.startswith("console_session=")).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    attacker = Browser(env["app"])
    statuses = [(await attacker.api_login(AGENT[0], "wrong-password")).status for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    unknown = await attacker.api_login("nobody@voltbay.example", "whatever-123")
    assert unknown.status == 401 and unknown.json["error"] == "wrong email or password"


async def test_audit_log_records_logins_and_changes(env: dict[str, Any]) -> None:
    admin, agent = await admin_and_agent(env)
    await Browser(env["app"]).api_login(AGENT[0], "nope-nope-nope")
    with env["app"].ctx.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit_log.c.action).order_by(audit_log.c.id))]
    assert actions[:4] == ["agent_created", "login", "agent_created", "login"]
    assert "login_failed" in actions
    entries = (await admin.api("get", "/api/audit")).json["entries"]
    assert entries[0]["action"] == "login_failed"
    assert (await agent.api("post", "/api/logout", {})).status == 200
    assert (await agent.api("get", "/api/queue")).status == 401  # the session is gone


async def test_hostile_and_malformed_input(env: dict[str, Any]) -> None:
    _admin, agent = await admin_and_agent(env)
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    add_events(env["tracker"], "34600000001", [user(evil, "human_handoff", name=evil), *handoff_events(evil)])
    env["app"].ctx.projector.catch_up()
    for path in ["/?filter=unassigned", "/c/34600000001"]:
        page = await agent.request("get", path)
        assert page.status == 200 and "<script>alert" not in page.text and "&lt;script&gt;" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
    bad = await agent.request("post", "/api/conversations/34600000001/reply", content="{not json",
                              headers={"Content-Type": "application/json", "X-CSRF-Token": agent.csrf})
    assert bad.status == 400
    for body in [{"text": 5}, {"text": "x" * 5000}, {"attachment": "javascript:alert(1)"}, {}]:
        assert (await agent.api("post", "/api/conversations/34600000001/reply", body)).status == 400, body
    assert (await agent.api("post", "/api/conversations/34600000001/close", {"csat": "yes"})).status == 400
    assert (await agent.api("get", "/api/queue?filter=everything")).status == 400
    assert (await agent.api("get", "/api/conversations/nobody")).status == 404
    huge = await agent.request("post", "/api/conversations/34600000001/note", content="x" * (2 * 1024 * 1024),
                               headers={"Content-Type": "application/json", "X-CSRF-Token": agent.csrf})
    assert huge.status == 413
    assert env["rasa"].calls == []  # nothing malformed reached Rasa
