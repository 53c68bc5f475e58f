"""What every dashboard page shares: templates, the session guard, CSRF, flash, forms.

A page handler is ``async def page(request)``: ``ctx = await page_context(request)``
(redirects to the login page without a session), reads and acts through ``ctx.api``
(the REST API as this user), and answers ``render(...)`` or, after a POST,
``done(...)`` / ``failed(...)`` (redirect with a flash message: POST-redirect-GET).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from strato.dashboard.client import ApiClient, ApiError
from strato.dashboard.session import Session, Sessions, csrf_ok

HERE = Path(__file__).parent
MAX_FORM = 64 << 10

# The menu, in order: (path under /dashboard, label).
NAV = [("/dashboard/servers", "Servers"), ("/dashboard/images", "Images"),
       ("/dashboard/volumes", "Volumes"), ("/dashboard/snapshots", "Snapshots"),
       ("/dashboard/lineage", "Lineage")]


class LoginRequired(Exception):  # noqa: N818 - control flow, turned into a redirect
    """No valid session: the handler installed by :func:`strato.dashboard.install`
    redirects to the login page."""


class CsrfFailed(Exception):  # noqa: N818 - answered 403 by the installed handler
    """A state-changing request without this session's CSRF token (or from another
    origin)."""


def _size(value: Any) -> str:
    """Bytes for people: 1.5 GiB."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _short(value: Any) -> str:
    text = str(value or "")
    return text[:8] if len(text) > 12 else text


class Dashboard:
    """Held on ``app.state.dashboard``: the session codec and the templates."""

    def __init__(self, sessions: Sessions, secure: bool) -> None:
        self.sessions = sessions
        self.secure = secure
        self.templates = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["size"] = _size
        self.templates.filters["short"] = _short


def dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard


@dataclass
class PageContext:
    request: Request
    session: Session
    api: ApiClient
    extra: dict[str, Any] = field(default_factory=dict)


async def page_context(request: Request) -> PageContext:
    """The logged-in user's context; LoginRequired without a valid session. A POST
    (or any state-changing method) must carry the session's CSRF token."""
    session = dashboard(request).sessions.read(request)
    if session is None:
        raise LoginRequired()
    if request.method not in ("GET", "HEAD"):
        await check_csrf(request, session.csrf)
    return PageContext(request, session, ApiClient(request.app, session.token))


def same_origin(request: Request) -> bool:
    """Origin (or Referer) names this host, when the browser sent one."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


async def check_csrf(request: Request, expected: str) -> None:
    """The token from the form field ``csrf_token`` or the ``X-CSRF-Token`` header
    (scripts), and a same-origin request."""
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        given = (await form(request)).get("csrf_token")
    if not same_origin(request) or not csrf_ok(expected, given):
        raise CsrfFailed()


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of a repeated name wins); read once
    and kept on the request."""
    cached = request.scope.get("strato.form")
    if cached is not None:
        return cached
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM:
            raise CsrfFailed()  # no form of ours is this large
    fields = dict(parse_qsl(raw.decode("utf-8", errors="replace"), keep_blank_values=True))
    request.scope["strato.form"] = fields
    return fields


def render(ctx: PageContext | Request, template: str, status: int = 200,
           **values: Any) -> HTMLResponse:
    """A page: the template with the session (user, project, csrf), the menu and the
    flash message of the last POST."""
    request = ctx.request if isinstance(ctx, PageContext) else ctx
    session = ctx.session if isinstance(ctx, PageContext) else None
    board = dashboard(request)
    response = HTMLResponse("")
    flash = board.sessions.take_flash(request, response)
    html = board.templates.get_template(template).render(
        request=request, session=session, nav=NAV, flash=flash,
        current=request.url.path, csrf=session.csrf if session else None, **values)
    response.body = html.encode()
    response.headers["content-length"] = str(len(response.body))
    response.status_code = status
    _secure_headers(response)
    return response


def _secure_headers(response: Response) -> None:
    response.headers["content-security-policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'")
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["cache-control"] = "no-store"


def redirect(request: Request, url: str, kind: str | None = None,
             text: str | None = None) -> RedirectResponse:
    """303 to ``url`` (a path of ours only), with a flash message for the next page."""
    if not url.startswith("/dashboard"):
        url = "/dashboard"
    response = RedirectResponse(url, status_code=303)
    if kind and text:
        board = dashboard(request)
        board.sessions.flash(response, kind, text, board.secure)
    _secure_headers(response)
    return response


def done(ctx: PageContext, url: str, text: str) -> RedirectResponse:
    return redirect(ctx.request, url, "success", text)


def failed(ctx: PageContext, url: str, error: ApiError | str) -> RedirectResponse:
    """The API's refusal, in its own words, on the page the user came from."""
    return redirect(ctx.request, url, "error", str(error))
