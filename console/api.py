"""The JSON API under /api/ (documented in the README): the same actions as the pages.

Log in with POST /api/login {"email", "password"} → session cookie + {"csrf_token"}; send that token
as X-CSRF-Token on every POST. Errors: {"error": "..."} with 400/401/403/404/409/429/502/503.
"""

from __future__ import annotations

import asyncio

from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from console import store
from console.auth import AuthError, create_agent, list_agents, login, start_session, update_agent
from console.service import Console
from console.store import ConsoleError
from console.web import agent_of, authenticated, client_address, end_current_session, form_or_json, set_session_cookie

bp = Blueprint("api", url_prefix="/api")


def _console(request: Request) -> Console:
    return request.app.ctx.console


def _int(value: object, name: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ConsoleError(f"{name}: a number") from None


@bp.post("/login")
async def api_login(request: Request) -> HTTPResponse:
    body = form_or_json(request)
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        return response.json({"error": "send {\"email\": …, \"password\": …} as JSON"}, status=400)
    try:
        agent = await asyncio.to_thread(login, request.app.ctx.engine, email, password, client_address(request))
    except AuthError as failure:
        status = 429 if "too many" in str(failure) else 401
        return response.json({"error": str(failure)}, status=status)
    token, csrf = await asyncio.to_thread(start_session, request.app.ctx.engine, agent,
                                          request.app.ctx.settings.session_hours)
    resp = response.json({"agent": {"id": agent.id, "email": agent.email, "name": agent.name, "role": agent.role},
                          "csrf_token": csrf})
    set_session_cookie(request, resp, token)
    return resp


@bp.post("/logout")
@authenticated()
async def api_logout(request: Request) -> HTTPResponse:
    return end_current_session(request, response.json({"logged_out": True}))


@bp.get("/queue")
@authenticated()
async def api_queue(request: Request) -> HTTPResponse:
    view = request.args.get("filter", "unassigned")
    offset = _int(request.args.get("offset", "0"), "offset")
    return response.json(_console(request).queue(agent_of(request), view, offset), default=str)


@bp.get("/conversations/<sender_id>")
@authenticated()
async def api_conversation(request: Request, sender_id: str) -> HTTPResponse:
    view = await asyncio.to_thread(_console(request).view, sender_id)
    return response.json({"conversation": view["conversation"], "outside_window": view["outside_window"],
                          "can_message": view["can_message"], "notes": view["notes"],
                          "transcript": Console.transcript_json(view["transcript"])}, default=str)


@bp.post("/conversations/<sender_id>/claim")
@authenticated()
async def api_claim(request: Request, sender_id: str) -> HTTPResponse:
    body = form_or_json(request)
    assignee = _int(body["agent_id"], "agent_id") if body.get("agent_id") is not None else None
    _console(request).claim(agent_of(request), sender_id, assignee)
    return response.json({"claimed": True})


@bp.post("/conversations/<sender_id>/reply")
@authenticated()
async def api_reply(request: Request, sender_id: str) -> HTTPResponse:
    body = form_or_json(request)
    text, attachment = body.get("text") or "", body.get("attachment") or ""
    if not isinstance(text, str) or not isinstance(attachment, str):
        raise ConsoleError("text and attachment: strings")
    result = await _console(request).reply(agent_of(request), sender_id, text, attachment,
                                           template=body.get("template") is True)
    return response.json(result)


@bp.post("/conversations/<sender_id>/note")
@authenticated()
async def api_note(request: Request, sender_id: str) -> HTTPResponse:
    text = form_or_json(request).get("text")
    if not isinstance(text, str):
        raise ConsoleError("text: a string")
    return response.json({"note_id": _console(request).add_note(agent_of(request), sender_id, text)})


@bp.post("/conversations/<sender_id>/handback")
@authenticated()
async def api_handback(request: Request, sender_id: str) -> HTTPResponse:
    note = form_or_json(request).get("note") or ""
    if not isinstance(note, str):
        raise ConsoleError("note: a string")
    return response.json(await _console(request).handback(agent_of(request), sender_id, note))


@bp.post("/conversations/<sender_id>/close")
@authenticated()
async def api_close(request: Request, sender_id: str) -> HTTPResponse:
    csat = form_or_json(request).get("csat", True)
    if not isinstance(csat, bool):
        raise ConsoleError("csat: true or false")
    return response.json(await _console(request).close(agent_of(request), sender_id, csat))


@bp.get("/conversations/<sender_id>/suggestion")
@authenticated()
async def api_suggestion(request: Request, sender_id: str) -> HTTPResponse:
    return response.json(await _console(request).suggest(sender_id))


@bp.get("/canned")
@authenticated()
async def api_canned(request: Request) -> HTTPResponse:
    with request.app.ctx.engine.connect() as conn:
        return response.json({"canned": store.canned(conn)})


@bp.post("/canned")
@authenticated("admin")
async def api_canned_save(request: Request) -> HTTPResponse:
    body = form_or_json(request)
    canned_id = _int(body["id"], "id") if body.get("id") is not None else None
    with request.app.ctx.engine.begin() as conn:
        saved = store.save_canned(conn, agent_of(request).id, str(body.get("shortcut") or ""),
                                  str(body.get("title") or ""), str(body.get("text") or ""), canned_id)
    return response.json({"id": saved})


@bp.post("/canned/<canned_id:int>/delete")
@authenticated("admin")
async def api_canned_delete(request: Request, canned_id: int) -> HTTPResponse:
    with request.app.ctx.engine.begin() as conn:
        store.delete_canned(conn, agent_of(request).id, canned_id)
    return response.json({"deleted": True})


@bp.get("/agents")
@authenticated("admin")
async def api_agents(request: Request) -> HTTPResponse:
    with request.app.ctx.engine.connect() as conn:
        return response.json({"agents": [a.__dict__ for a in list_agents(conn)]})


@bp.post("/agents")
@authenticated("admin")
async def api_agent_create(request: Request) -> HTTPResponse:
    body = form_or_json(request)
    try:
        with request.app.ctx.engine.begin() as conn:
            agent = await asyncio.to_thread(create_agent, conn, str(body.get("email") or ""),
                                            str(body.get("name") or ""), str(body.get("password") or ""),
                                            str(body.get("role") or "agent"), agent_of(request).id)
    except AuthError as failure:
        raise ConsoleError(str(failure), 409 if "exists" in str(failure) else 400) from failure
    return response.json({"agent": agent.__dict__}, status=201)


@bp.post("/agents/<agent_id:int>")
@authenticated("admin")
async def api_agent_update(request: Request, agent_id: int) -> HTTPResponse:
    body = form_or_json(request)
    active = body.get("active")
    if active is not None and not isinstance(active, bool):
        raise ConsoleError("active: true or false")
    try:
        with request.app.ctx.engine.begin() as conn:
            update_agent(conn, agent_id, by=agent_of(request).id, role=body.get("role"), active=active,
                         password=body.get("password"))
    except AuthError as failure:
        raise ConsoleError(str(failure)) from failure
    return response.json({"updated": True})


@bp.get("/audit")
@authenticated("admin")
async def api_audit(request: Request) -> HTTPResponse:
    with request.app.ctx.engine.connect() as conn:
        return response.json({"entries": store.audit_entries(conn, request.args.get("conversation"))})


@bp.get("/csat")
@authenticated()
async def api_csat(request: Request) -> HTTPResponse:
    with request.app.ctx.engine.connect() as conn:
        return response.json({"closed": store.csat_list(conn)})
