"""Errors a client can cause or see; the HTTP layer renders them per service."""

from __future__ import annotations


class StratoError(Exception):
    """Base: carries the HTTP status; ``message`` is safe to show to the client."""

    status = 500
    message = "An unexpected error occurred."

    def __init__(self, message: str | None = None, headers: dict[str, str] | None = None):
        self.message = message or self.message
        self.headers = headers or {}
        super().__init__(self.message)


class BadRequest(StratoError):
    status = 400
    message = "The request is not valid."


class Unauthorized(StratoError):
    status = 401
    message = "The request you have made requires authentication."


class Forbidden(StratoError):
    status = 403
    message = "You are not authorized to perform the requested action."


class NotFound(StratoError):
    status = 404
    message = "The resource could not be found."


class MethodNotAllowed(StratoError):
    status = 405
    message = "The method is not allowed for the requested URL."


class NotAcceptable(StratoError):
    status = 406
    message = "The requested version is not supported."


class Conflict(StratoError):
    status = 409
    message = "The request conflicts with the state of the resource."


class OverLimit(StratoError):
    status = 413
    message = "Quota exceeded."


class UnsupportedMediaType(StratoError):
    status = 415
    message = "The media type is not supported."


class ServiceUnavailable(StratoError):
    status = 503
    message = "The service is unavailable; try again later."


class Gone(StratoError):
    """An API the reference lists as removed (Nova's obsolete APIs answer 410)."""

    status = 410
    message = "This resource is no longer available."


class NotSupported(StratoError):
    """A route or action of the service's API reference that strato does not implement:
    501, so a client can tell "unsupported here" from "no such thing" (404)."""

    status = 501
    message = "This API is not implemented."
    neutron_type = "HTTPNotImplemented"
