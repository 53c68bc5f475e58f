"""The web dashboard: server-side pages over the REST API, with the user's own token.

:func:`install` mounts it on the API app at ``/dashboard`` (``[dashboard] enabled``).
Each page module owns a router; this package only puts them together.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from strato.dashboard import auth, lineage_view, servers, storage
from strato.dashboard.client import ApiClient, ApiError
from strato.dashboard.session import Sessions
from strato.dashboard.web import (
    HERE,
    CsrfFailed,
    Dashboard,
    LoginRequired,
    PageContext,
    dashboard,
    redirect,
    render,
)

ROUTERS = (auth.router, servers.router, storage.router, lineage_view.router)


def install(app: FastAPI, services: Any) -> None:
    conf = services.conf
    app.state.dashboard = Dashboard(Sessions(conf.dashboard.key_repository),
                                    secure=conf.public_endpoint.startswith("https:"))
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=str(HERE / "static")),
              name="dashboard-static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("accept", "").startswith("application/json"):
            return Response('{"error": "login required"}', status_code=401,
                            media_type="application/json")
        return redirect(request, "/dashboard/login", "error",
                        "Your session has ended; log in again.")

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, exc: CsrfFailed) -> Response:
        return HTMLResponse("<!doctype html><title>Forbidden</title><p>The form was stale "
                            "or did not come from this dashboard. <a href=\"/dashboard\">"
                            "Back</a></p>", status_code=403)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        """A refusal no page handled: 401 (token expired or revoked) ends the session;
        anything else is shown as the service said it."""
        if exc.status == 401:
            response = redirect(request, "/dashboard/login", "error",
                                "Your session has ended; log in again.")
            dashboard(request).sessions.clear(response)
            return response
        session = dashboard(request).sessions.read(request)
        ctx = (PageContext(request, session, ApiClient(request.app, session.token))
               if session else request)
        return render(ctx, "error.html", status=exc.status if exc.status < 500 else 502,
                      message=exc.message, code=exc.status)
