"""Log in through Keystone with the user's own password; log out by revoking the token."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from strato.dashboard.client import ApiClient, ApiError
from strato.dashboard.session import LOGIN_CSRF_COOKIE, PATH, Session, csrf_ok, new_csrf
from strato.dashboard.web import (
    CsrfFailed,
    dashboard,
    form,
    page_context,
    redirect,
    render,
    same_origin,
)

router = APIRouter()
TOKENS = "/identity/v3/auth/tokens"


@router.get("/dashboard", include_in_schema=False)
@router.get("/dashboard/", include_in_schema=False)
def home(request: Request) -> Response:
    if dashboard(request).sessions.read(request) is None:
        return redirect(request, "/dashboard/login")
    return redirect(request, "/dashboard/servers")


@router.get("/dashboard/login", include_in_schema=False)
def login_page(request: Request, error: str | None = None, status: int = 200,
               username: str = "", project: str = "", domain: str = "Default") -> Response:
    """The form, with a fresh login CSRF secret (a cookie and the same value in the form:
    a page of another site can post neither)."""
    board = dashboard(request)
    secret = new_csrf()
    response = render(request, "login.html", status=status, login_csrf=secret, error=error,
                      username=username, project=project, domain=domain)
    response.set_cookie(LOGIN_CSRF_COOKIE, secret, max_age=1800, path=PATH, httponly=True,
                        samesite="strict", secure=board.secure)
    return response


def _password_auth(username: str, password: str, domain: str,
                   scope: dict[str, Any] | None) -> dict[str, Any]:
    auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": {
        "name": username, "domain": {"name": domain}, "password": password}}}}
    if scope:
        auth["scope"] = scope
    return {"auth": auth}


def _expiry(token: dict[str, Any]) -> float:
    text = str(token.get("expires_at", ""))
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + 3600


@router.post("/dashboard/login", include_in_schema=False)
async def login(request: Request) -> Response:
    fields = await form(request)
    if not same_origin(request) or not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE),
                                                fields.get("csrf_token")):
        raise CsrfFailed()
    username = fields.get("username", "").strip()
    password = fields.get("password", "")
    project = fields.get("project", "").strip()
    domain = fields.get("domain", "").strip() or "Default"
    again = {"username": username, "project": project, "domain": domain}
    if not username or not password:
        return login_page(request, "Enter your user name and password.", 400, **again)
    public = ApiClient(request.app)
    try:
        if project:
            scope = {"project": {"name": project, "domain": {"name": domain}}}
            answer = await public.post(TOKENS, _password_auth(username, password, domain,
                                                              scope))
        else:  # no project named: the first one the user has a role on
            unscoped = await public.post(TOKENS, _password_auth(username, password, domain,
                                                                None))
            first = unscoped.headers["x-subject-token"]
            mine = await ApiClient(request.app, first).get("/identity/v3/auth/projects")
            projects = sorted(mine.get("projects", []), key=lambda p: p["name"])
            await ApiClient(request.app, first).delete(
                TOKENS, headers={"x-subject-token": first}, check=False)
            if not projects:
                return login_page(request, "This user has no role on any project.", 403,
                                  **again)
            answer = await public.post(TOKENS, _password_auth(
                username, password, domain, {"project": {"id": projects[0]["id"]}}))
    except ApiError as exc:
        text = ("The user name or password is wrong, or the user has no role on that "
                "project." if exc.status == 401 else exc.message)
        return login_page(request, text, 401 if exc.status == 401 else 400, **again)
    token = answer.json()["token"]
    session = Session(
        token=answer.headers["x-subject-token"], csrf=new_csrf(),
        user_id=token["user"]["id"], user_name=token["user"]["name"],
        project_id=token["project"]["id"], project_name=token["project"]["name"],
        roles=[r["name"] for r in token.get("roles", [])], expires=_expiry(token))
    board = dashboard(request)
    response = redirect(request, "/dashboard/servers")
    board.sessions.write(response, session, board.secure)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PATH)
    return response


@router.post("/dashboard/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """Revoke the token in Keystone, then forget the cookie."""
    ctx = await page_context(request)
    await ctx.api.delete(TOKENS, headers={"x-subject-token": ctx.session.token},
                         check=False)
    response = redirect(request, "/dashboard/login", "success",
                        "You are logged out; your token is revoked.")
    dashboard(request).sessions.clear(response)
    return response
