"""Build the ASGI app: routers per service, the middleware, faults for every error."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from strato import dashboard
from strato.api import (
    compute,
    compute_proxies,
    compute_reads,
    identity,
    identity_admin,
    image,
    lineage,
    network,
    server_tags,
    snapshot_schedules,
    unimplemented,
    volume,
    volume_backups,
    volume_qos,
    volume_reads,
    volume_transfers,
)
from strato.api.faults import fault_response
from strato.api.middleware import RequestMiddleware
from strato.exceptions import StratoError

LOG = logging.getLogger("strato.api")


def build_app(services: object) -> FastAPI:
    app = FastAPI(title="strato", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.add_middleware(RequestMiddleware, services=services)
    for module in (identity, identity_admin, compute, compute_reads, image, volume,
                   volume_reads, volume_transfers, volume_qos, volume_backups, network,
                   compute_proxies, server_tags, snapshot_schedules, lineage):
        app.include_router(module.router)
    conf = getattr(services, "conf", None)  # None: a route listing (tests, scripts)
    if conf is not None and conf.dashboard.enabled:
        dashboard.install(app, services)
    app.include_router(unimplemented.router)  # LAST: the reference's other routes, 501

    @app.get("/", include_in_schema=False)
    def root() -> JSONResponse:
        base = services.conf.public_endpoint  # type: ignore[attr-defined]
        return JSONResponse(status_code=300, content={"services": {
            "identity": f"{base}/identity", "compute": f"{base}/compute",
            "image": f"{base}/image", "volume": f"{base}/volume",
            "network": f"{base}/networking"}})

    @app.exception_handler(StratoError)
    async def strato_error(request: Request, exc: StratoError) -> JSONResponse:
        return fault_response(request.url.path, exc.status, exc.message, exc.headers,
                              getattr(exc, "neutron_type", None))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        messages = {404: "The resource could not be found.",
                    405: "The method is not allowed for the requested URL."}
        return fault_response(request.url.path, exc.status_code,
                              messages.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(RecursionError)
    @app.exception_handler(OverflowError)
    @app.exception_handler(sa_exc.DataError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.ProgrammingError)
    @app.exception_handler(sa_exc.InvalidRequestError)
    async def bad_value(request: Request, exc: Exception) -> JSONResponse:
        # The last guard behind the schemas (strato.validation): a value the schemas let
        # through that the parser, the arithmetic or the database driver cannot take (a
        # nesting too deep, an integer no column holds, a list bound as a parameter) is
        # the client's mistake, answered 400 in the service's format. It is logged with
        # its traceback: a schema should have caught it.
        if not _bad_value(exc):
            return await _unexpected(request, exc)
        LOG.warning("%s %s %s: a value in the request body got past validation",
                    request_id(request), request.method, request.url.path, exc_info=exc)
        return fault_response(request.url.path, 400, "Invalid input: a value in the "
                              "request has the wrong type or is out of range.")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            message = "Malformed request body: the body is not valid JSON."
        else:
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
            message = f"Invalid input for field '{where}': {first.get('msg', 'invalid')}."
        return fault_response(request.url.path, 400, message)

    return app


def request_id(request: Request) -> str:
    ctx = request.scope.get("state", {}).get("context")
    return getattr(ctx, "request_id", "-")


def _bad_value(exc: Exception) -> bool:
    """Is this a value the database could not take, rather than a mistake of ours in
    SQL? A driver refusing a parameter's type (sqlite3: "Error binding parameter",
    psycopg: "cannot adapt type"), a list or object given as a primary key."""
    if isinstance(exc, sa_exc.ProgrammingError):
        text = str(exc.orig)
        return "binding parameter" in text or "cannot adapt" in text
    if isinstance(exc, sa_exc.InvalidRequestError):
        return str(exc).startswith("Incorrect number of values in identifier")
    return True


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    LOG.error("%s unexpected error on %s %s", request_id(request), request.method,
              request.url.path, exc_info=exc)
    return fault_response(request.url.path, 500, "An unexpected error occurred; request "
                          f"{request_id(request)}.")
