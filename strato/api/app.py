"""Build the ASGI app: routers per service, the middleware, faults for every error."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from strato.api import compute, identity, image, volume
from strato.api.faults import fault_response
from strato.api.middleware import RequestMiddleware
from strato.exceptions import StratoError


def build_app(services: object) -> FastAPI:
    app = FastAPI(title="strato", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.add_middleware(RequestMiddleware, services=services)
    for module in (identity, compute, image, volume):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def root() -> JSONResponse:
        base = services.conf.public_endpoint  # type: ignore[attr-defined]
        return JSONResponse(status_code=300, content={"services": {
            "identity": f"{base}/identity", "compute": f"{base}/compute",
            "image": f"{base}/image", "volume": f"{base}/volume"}})

    @app.exception_handler(StratoError)
    async def strato_error(request: Request, exc: StratoError) -> JSONResponse:
        return fault_response(request.url.path, exc.status, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        messages = {404: "The resource could not be found.",
                    405: "The method is not allowed for the requested URL."}
        return fault_response(request.url.path, exc.status_code,
                              messages.get(exc.status_code, str(exc.detail)))

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
