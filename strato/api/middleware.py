"""The one middleware every request passes: request id, microversion, auth, log line.

Pure ASGI (not BaseHTTPMiddleware) so request and response bodies stream through
untouched: image uploads and downloads are never held in memory here.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strato.api.faults import fault_response, service_of
from strato.api.microversions import RANGES
from strato.context import RequestContext, new_request_id
from strato.exceptions import BadRequest, StratoError, Unauthorized

LOG = logging.getLogger("strato.api")

# Version discovery and authentication itself need no token.
_DISCOVERY = {
    "/", "/identity", "/identity/", "/identity/v3", "/identity/v3/",
    "/compute", "/compute/", "/compute/v2.1", "/compute/v2.1/", "/compute/v2", "/compute/v2/",
    "/image", "/image/", "/image/versions", "/image/v2", "/image/v2/",
    "/volume", "/volume/", "/volume/v3", "/volume/v3/",
    "/networking", "/networking/", "/networking/v2.0", "/networking/v2.0/",
}
_SECRET_HEADERS = {"x-auth-token", "x-subject-token", "authorization"}
_SERVICE_ROOTS = {"/compute", "/compute/", "/compute/v2", "/compute/v2/", "/volume", "/volume/"}
_LEGACY = "/compute/v2/"
_PROJECT_IN_URL = re.compile(r"^[0-9a-f]{32}$")


def legacy_compute(scope: Scope) -> str | None:
    """Nova's legacy v2.0 (``/compute/v2/[<project_id>/]...``) is the v2.1 API at
    microversion 2.1: the request goes on as ``/compute/v2.1/...``; the project id of the
    URL, if any, is returned (it must be the token's)."""
    path = scope["path"]
    if not path.startswith(_LEGACY) or path == _LEGACY:
        return None
    head, sep, tail = path[len(_LEGACY):].partition("/")
    project = head if _PROJECT_IN_URL.match(head) else ""
    rest = tail if project else path[len(_LEGACY):]
    scope["path"] = "/compute/v2.1/" + rest
    scope["raw_path"] = scope["path"].encode()
    return project


def is_public(method: str, path: str) -> bool:
    if method in ("GET", "HEAD") and path in _DISCOVERY:
        return True
    if path == "/dashboard" or path.startswith("/dashboard/"):
        return True  # the dashboard's own session (strato.dashboard) guards its pages
    return method == "POST" and path.rstrip("/") == "/identity/v3/auth/tokens"


class RequestMiddleware:
    def __init__(self, app: ASGIApp, services: Any) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        url_project = legacy_compute(scope)
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        request_id = new_request_id()
        ctx = RequestContext(request_id=request_id)
        out_headers = {"X-OpenStack-Request-Id": request_id}
        status = [500]
        started_response = [False]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                started_response[0] = True
                status[0] = message["status"]
                response_headers = MutableHeaders(scope=message)
                for key, value in out_headers.items():
                    response_headers[key] = value
            await send(message)

        try:
            try:
                service = service_of(path)
                if url_project is not None:  # legacy v2.0: no microversions
                    ctx.microversion = "2.1"
                elif service in RANGES and path not in _SERVICE_ROOTS:
                    version = RANGES[service].negotiate(headers)
                    out_headers.update(RANGES[service].response_headers(version))
                    ctx.microversion = str(version)
                if not is_public(method, path):
                    token = headers.get("x-auth-token")
                    if not token:
                        raise Unauthorized()
                    authed = await run_in_threadpool(
                        self.services.identity.context_for, token, request_id)
                    authed.microversion = ctx.microversion
                    ctx = authed
                    if url_project and url_project != ctx.project_id:
                        raise BadRequest(
                            f"Malformed request URL: URL's project_id '{url_project}' "
                            f"doesn't match Context's project_id '{ctx.project_id}'")
            except StratoError as exc:
                extra = dict(exc.headers)
                if exc.status == 401:
                    base = self.services.conf.public_endpoint
                    extra["WWW-Authenticate"] = f'Keystone uri="{base}/identity"'
                response = fault_response(path, exc.status, exc.message, extra)
                await response(scope, receive, send_with_headers)
                return
            scope.setdefault("state", {})["context"] = ctx
            if LOG.isEnabledFor(logging.DEBUG):
                shown = {k: ("***" if k in _SECRET_HEADERS else v) for k, v in headers.items()}
                LOG.debug("%s %s %s?%s headers=%s", request_id, method, path,
                          scope.get("query_string", b"").decode("latin-1"), shown)
            try:
                await self.app(scope, receive, send_with_headers)
            except Exception:
                # A bug, never the client's fault: log it whole, answer without a traceback.
                LOG.exception("%s unexpected error on %s %s", request_id, method, path)
                if started_response[0]:
                    raise
                response = fault_response(
                    path, 500, f"An unexpected error occurred; request {request_id}.")
                await response(scope, receive, send_with_headers)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            LOG.info('%s user=%s project=%s "%s %s" %s %.1fms', request_id,
                     ctx.user_id or "-", ctx.project_id or "-", method, path, status[0],
                     elapsed)
