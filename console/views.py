"""The console's pages: login, queue, conversation, admin (agents, canned responses, audit), CSAT."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from console import store
from console.auth import AuthError, create_agent, list_agents, login, start_session, update_agent
from console.service import Console
from console.store import ConsoleError
from console.web import (
    LOGIN_CSRF_COOKIE,
    agent_of,
    authenticated,
    client_address,
    end_current_session,
    login_csrf_token,
    new_login_csrf,
    render,
    render_page,
    set_session_cookie,
)

bp = Blueprint("pages")


def _console(request: Request) -> Console:
    return request.app.ctx.console


def _safe_next(value: str | None) -> str:
    # only paths of this site: no open redirect to another host
    return value if value and value.startswith("/") and not value.startswith("//") else "/"


@bp.get("/login")
async def login_page(request: Request) -> HTTPResponse:
    token = login_csrf_token()
    resp = render("login.html", csrf=token, next=_safe_next(request.args.get("next")), error=None)
    new_login_csrf(request, resp, token)
    return resp


@bp.post("/login")
async def login_submit(request: Request) -> HTTPResponse:
    form = request.form or {}
    next_path = _safe_next(form.get("next"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    token = login_csrf_token()
    if not expected or form.get("csrf_token") != expected:
        resp = render("login.html", status=403, csrf=token, next=next_path,
                      error="The form expired; please try again.")
        new_login_csrf(request, resp, token)
        return resp
    try:
        agent = await asyncio.to_thread(login, request.app.ctx.engine, form.get("email") or "",
                                        form.get("password") or "", client_address(request))
    except AuthError as failure:
        resp = render("login.html", status=429 if "too many" in str(failure) else 401, csrf=token,
                      next=next_path, error=str(failure))
        new_login_csrf(request, resp, token)
        return resp
    session, _csrf = await asyncio.to_thread(start_session, request.app.ctx.engine, agent,
                                             request.app.ctx.settings.session_hours)
    resp = response.redirect(next_path, status=303)
    set_session_cookie(request, resp, session)
    resp.delete_cookie(LOGIN_CSRF_COOKIE)
    return resp


@bp.post("/logout")
@authenticated()
async def logout(request: Request) -> HTTPResponse:
    return end_current_session(request, response.redirect("/login", status=303))


@bp.get("/")
@authenticated()
async def queue_page(request: Request) -> HTTPResponse:
    view = request.args.get("filter", "unassigned")
    data = _console(request).queue(agent_of(request), view)
    partial = request.args.get("partial") == "1"
    return render_page(request, "_queue_list.html" if partial else "queue.html",
                  **data)


@bp.get("/c/<sender_id>")
@authenticated()
async def conversation_page(request: Request, sender_id: str) -> HTTPResponse:
    view = await asyncio.to_thread(_console(request).view, sender_id)
    with request.app.ctx.engine.connect() as conn:
        agents = list_agents(conn) if agent_of(request).is_admin else []
    template = "_transcript.html" if request.args.get("partial") == "1" else "conversation.html"
    return render_page(request, template, agents=agents,
                  flash=request.args.get("flash"), prefill=request.args.get("prefill", ""), **view)


# Shown inline; anything else is downloaded, never rendered by the browser.
INLINE_MEDIA = ("image/jpeg", "image/png", "image/webp", "image/gif", "audio/", "video/mp4", "video/3gpp",
                "application/pdf")


@bp.get("/c/<sender_id>/media/<media_id>")
@authenticated()
async def media(request: Request, sender_id: str, media_id: str) -> HTTPResponse:
    content, mime = await _console(request).media(sender_id, media_id)
    mime = (mime or "application/octet-stream").split(";")[0].strip().lower()
    inline = mime.startswith(INLINE_MEDIA)
    resp = response.raw(content, content_type=mime if inline else "application/octet-stream")
    resp.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    resp.headers["Cache-Control"] = "private, max-age=300"
    if not inline:
        resp.headers["Content-Disposition"] = f'attachment; filename="media-{quote(media_id)}"'
    return resp


def _back(sender_id: str, flash: str | None = None, prefill: str | None = None) -> HTTPResponse:
    query = []
    if flash:
        query.append(f"flash={quote(flash)}")
    if prefill:
        query.append(f"prefill={quote(prefill)}")
    return response.redirect(f"/c/{quote(sender_id, safe='')}" + ("?" + "&".join(query) if query else ""),
                             status=303)


@bp.post("/c/<sender_id>/claim")
@authenticated()
async def claim(request: Request, sender_id: str) -> HTTPResponse:
    assignee = request.form.get("agent_id")
    _console(request).claim(agent_of(request), sender_id, int(assignee) if assignee and assignee.isdigit() else None)
    return _back(sender_id, "Assigned.")


@bp.post("/c/<sender_id>/reply")
@authenticated()
async def reply(request: Request, sender_id: str) -> HTTPResponse:
    form = request.form
    await _console(request).reply(agent_of(request), sender_id, form.get("text") or "",
                                  form.get("attachment") or "", template=form.get("template") == "1")
    return _back(sender_id, "Sent.")


@bp.post("/c/<sender_id>/canned")
@authenticated()
async def use_canned(request: Request, sender_id: str) -> HTTPResponse:
    canned_id = request.form.get("canned_id") or ""
    if not canned_id.isdigit():
        raise ConsoleError("pick a canned response")
    text = _console(request).canned_for(agent_of(request), sender_id, int(canned_id))
    return _back(sender_id, prefill=text)


@bp.post("/c/<sender_id>/note")
@authenticated()
async def note(request: Request, sender_id: str) -> HTTPResponse:
    _console(request).add_note(agent_of(request), sender_id, request.form.get("text") or "")
    return _back(sender_id, "Note saved.")


@bp.post("/c/<sender_id>/handback")
@authenticated()
async def handback(request: Request, sender_id: str) -> HTTPResponse:
    result = await _console(request).handback(agent_of(request), sender_id, request.form.get("note") or "")
    return _back(sender_id, "Handed back to the bot." + (f" ({result['warning']})" if result.get("warning") else ""))


@bp.post("/c/<sender_id>/close")
@authenticated()
async def close(request: Request, sender_id: str) -> HTTPResponse:
    result = await _console(request).close(agent_of(request), sender_id, request.form.get("csat") == "1")
    return _back(sender_id, "Closed." + (f" ({result['warning']})" if result.get("warning") else ""))


@bp.get("/csat")
@authenticated()
async def csat_page(request: Request) -> HTTPResponse:
    with request.app.ctx.engine.connect() as conn:
        rows = store.csat_list(conn)
    scores = [r["csat"] for r in rows if r["csat"]]
    return render_page(request, "csat.html", rows=rows,
                  average=round(sum(scores) / len(scores), 2) if scores else None)


@bp.get("/admin/agents")
@authenticated("admin")
async def agents_page(request: Request) -> HTTPResponse:
    with request.app.ctx.engine.connect() as conn:
        agents = list_agents(conn)
    return render_page(request, "agents.html", agents=agents,
                  flash=request.args.get("flash"))


@bp.post("/admin/agents")
@authenticated("admin")
async def agents_submit(request: Request) -> HTTPResponse:
    form = request.form
    try:
        with request.app.ctx.engine.begin() as conn:
            if form.get("agent_id"):
                update_agent(conn, int(form.get("agent_id") or 0), by=agent_of(request).id,
                             role=form.get("role") or None,
                             active={"1": True, "0": False}.get(form.get("active") or ""),
                             password=form.get("password") or None)
            else:
                create_agent(conn, form.get("email") or "", form.get("name") or "", form.get("password") or "",
                             form.get("role") or "agent", agent_of(request).id)
    except (AuthError, ValueError) as failure:
        raise ConsoleError(str(failure)) from failure
    return response.redirect("/admin/agents?flash=Saved.", status=303)


@bp.get("/admin/canned")
@authenticated("admin")
async def canned_page(request: Request) -> HTTPResponse:
    with request.app.ctx.engine.connect() as conn:
        items = store.canned(conn)
    return render_page(request, "canned.html", items=items,
                  flash=request.args.get("flash"))


@bp.post("/admin/canned")
@authenticated("admin")
async def canned_submit(request: Request) -> HTTPResponse:
    form = request.form
    with request.app.ctx.engine.begin() as conn:
        if form.get("delete"):
            store.delete_canned(conn, agent_of(request).id, int(form.get("delete") or 0))
        else:
            canned_id = form.get("id")
            store.save_canned(conn, agent_of(request).id, form.get("shortcut") or "", form.get("title") or "",
                              form.get("text") or "", int(canned_id) if canned_id and canned_id.isdigit() else None)
    return response.redirect("/admin/canned?flash=Saved.", status=303)


@bp.get("/admin/audit")
@authenticated("admin")
async def audit_page(request: Request) -> HTTPResponse:
    with request.app.ctx.engine.connect() as conn:
        entries = store.audit_entries(conn, request.args.get("conversation"))
    return render_page(request, "audit.html", entries=entries)
