"""Each service's own error body, so every client parses our errors as it expects."""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse

# Nova's and Cinder's fault names by status.
_NOVA_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "badMethod", 406: "notAcceptable", 409: "conflictingRequest", 413: "overLimit",
    415: "badMediaType", 422: "unprocessableEntity", 429: "overLimit",
    501: "notImplemented", 503: "serviceUnavailable",
}

SERVICES = ("identity", "compute", "image", "volume", "networking", "lineage")


def service_of(path: str) -> str:
    """Which service a path belongs to (the first segment), or '' for the root."""
    head = path.lstrip("/").split("/", 1)[0]
    return head if head in SERVICES else ""


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# Neutron's fault types by status, for errors that do not name their own.
_NEUTRON_TYPES = {
    400: "HTTPBadRequest", 401: "HTTPUnauthorized", 403: "HTTPForbidden",
    404: "HTTPNotFound", 405: "HTTPMethodNotAllowed", 409: "HTTPConflict",
    413: "HTTPRequestEntityTooLarge", 503: "ServiceUnavailable",
}


def fault_body(service: str, status: int, message: str, kind: str | None = None) -> dict:
    if service == "networking":
        return {"NeutronError": {
            "type": kind or _NEUTRON_TYPES.get(status, "HTTPInternalServerError"),
            "message": message, "detail": ""}}
    if service in ("compute", "volume", "lineage"):  # lineage: compute's format
        name = _NOVA_NAMES.get(status, "error" if service == "volume" else "computeFault")
        return {name: {"code": status, "message": message}}
    if service == "image":
        # What Glance's webob faults render as JSON.
        return {"code": f"{status} {_title(status)}", "title": _title(status),
                "message": message}
    return {"error": {"code": status, "title": _title(status), "message": message}}


def fault_response(path: str, status: int, message: str,
                   headers: dict[str, str] | None = None,
                   kind: str | None = None) -> JSONResponse:
    """``kind``: the fault's own type name, where the format has one (Neutron's)."""
    return JSONResponse(fault_body(service_of(path), status, message, kind),
                        status_code=status, headers=headers)
