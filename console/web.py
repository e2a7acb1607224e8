"""Sessions, CSRF and rendering for the console's routes (HTML and JSON)."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

from console.auth import Agent, csrf_ok, end_session, session_agent
from console.store import ConsoleError
from languages import LANGUAGE_NAMES

SESSION_COOKIE = "console_session"
LOGIN_CSRF_COOKIE = "console_login_csrf"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)

Handler = Callable[..., Awaitable[HTTPResponse]]


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ts else ""


def _waited(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _language_name(code: str | None) -> str:
    """'es' → 'Español (es)'; the conversation's language as its customer writes it."""
    return f"{LANGUAGE_NAMES[code]} ({code})" if code in LANGUAGE_NAMES else "not known yet"


TEMPLATES.filters["when"] = _when
TEMPLATES.filters["language_name"] = _language_name
TEMPLATES.filters["waited"] = _waited


def render(template: str, status: int = 200, **context: Any) -> HTTPResponse:
    return response.html(TEMPLATES.get_template(template).render(**context), status=status)


def render_page(request: Request, template: str, **context: Any) -> HTTPResponse:
    """A page for the logged-in agent: the layout's navigation and forms need the agent and the CSRF token."""
    return render(template, agent=request.ctx.agent, csrf=request.ctx.csrf, **context)


def secure_cookie(request: Request) -> bool:
    mode = request.app.ctx.settings.secure_cookie
    if mode is not None:
        return bool(mode)
    return request.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def set_session_cookie(request: Request, resp: HTTPResponse, token: str) -> None:
    resp.add_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", secure=secure_cookie(request),
                    max_age=int(request.app.ctx.settings.session_hours * 3600), path="/")


def new_login_csrf(request: Request, resp: HTTPResponse, token: str) -> None:
    resp.add_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=secure_cookie(request),
                    max_age=3600, path="/")


def login_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def security_headers(resp: HTTPResponse) -> None:
    resp.headers.setdefault("Content-Security-Policy",
                            "default-src 'self'; img-src 'self' https: data:; frame-ancestors 'none'; "
                            "form-action 'self'; base-uri 'none'")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault("Cache-Control", "no-store")


def client_address(request: Request) -> str:
    return str(request.remote_addr or request.ip or "unknown")[:100]


def wants_json(request: Request) -> bool:
    return request.path.startswith("/api/")


def error(request: Request, message: str, status: int) -> HTTPResponse:
    if wants_json(request) or request.path.startswith("/events/"):
        return response.json({"error": message}, status=status)
    return render("error.html", status=status, message=message, agent=getattr(request.ctx, "agent", None),
                  csrf=getattr(request.ctx, "csrf", ""))


def form_or_json(request: Request) -> dict[str, Any]:
    """The request's fields: JSON object for /api/, form fields for pages; {} when malformed."""
    if wants_json(request):
        if "application/json" not in (request.content_type or ""):
            return {}
        try:
            body = request.json
        except Exception:  # malformed JSON answers 400 through the callers' validation
            return {}
        return body if isinstance(body, dict) else {}
    return {key: request.form.get(key) for key in request.form} if request.form else {}


def authenticated(role: str | None = None) -> Callable[[Handler], Handler]:
    """Route guard: a live session (pages redirect to /login, the API answers 401), the role, and for
    state changes the session's CSRF token (form field `csrf_token` or header X-CSRF-Token)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            found = session_agent(request.app.ctx.engine, request.cookies.get(SESSION_COOKIE))
            if found is None:
                if wants_json(request) or request.method in UNSAFE_METHODS or request.path.startswith("/events/"):
                    return response.json({"error": "log in first"}, status=401)
                return response.redirect(f"/login?next={quote(request.path)}")
            agent, csrf = found
            request.ctx.agent, request.ctx.csrf = agent, csrf
            if role == "admin" and not agent.is_admin:
                return error(request, "admins only", 403)
            if request.method in UNSAFE_METHODS:
                given = request.headers.get("x-csrf-token") or (request.form.get("csrf_token") if request.form
                                                                else None)
                if not csrf_ok(csrf, given):
                    return error(request, "missing or wrong CSRF token; reload the page", 403)
            try:
                return await handler(request, *args, **kwargs)
            except ConsoleError as failure:
                return error(request, str(failure), failure.status)

        return guarded

    return decorate


def end_current_session(request: Request, resp: HTTPResponse) -> HTTPResponse:
    """Log the agent of this request out: the server-side session goes, the cookie is cleared."""
    end_session(request.app.ctx.engine, request.cookies.get(SESSION_COOKIE, ""), agent_of(request).id)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


def agent_of(request: Request) -> Agent:
    return request.ctx.agent
