"""Small helpers every router uses: the context, the services, list envelopes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from strato.context import RequestContext
from strato.exceptions import BadRequest, OverLimit
from strato.validation import MAX_DEPTH, Schema, validate


def context(request: Request) -> RequestContext:
    return request.state.context


def services(request: Request) -> Any:
    return request.app.state.services


def base_url(request: Request) -> str:
    return services(request).conf.public_endpoint


def query(request: Request) -> dict[str, str]:
    """Query parameters as a plain dict (the last value wins)."""
    return dict(request.query_params)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, schema: Schema | None = None) -> Any:
    """A body's JSON (None when empty) after the checks every body passes
    (:func:`strato.validation.validate`); 400 when it is not JSON or breaks them."""
    if not raw:
        value = None
    else:
        try:
            value = json.loads(raw, parse_constant=_no_constant)
        except RecursionError:
            raise BadRequest(f"Malformed request body: nested more than {MAX_DEPTH} "
                             "levels deep.") from None
        except ValueError:  # also UnicodeDecodeError
            raise BadRequest("Malformed request body: the body is not valid JSON.") \
                from None
    return validate(schema, value)


# OpenStack's services refuse bodies over 112 KiB (oslo.middleware's sizelimit); a JSON
# body here may be larger (Glance properties of 64 KiB) but never this large.
MAX_JSON_BODY = 1 << 20


async def json_body(request: Request, schema: Schema | None = None) -> Any:
    """The request's JSON body (None when empty), checked against ``schema`` (the
    request's schema from ``strato/<service>/schemas.py``); 400 when it is not JSON or
    does not fit, 413 when it is over :data:`MAX_JSON_BODY`."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_JSON_BODY:
        raise OverLimit(f"Request is too large: at most {MAX_JSON_BODY} bytes.")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BODY:
            raise OverLimit(f"Request is too large: at most {MAX_JSON_BODY} bytes.")
    return parse_json(bytes(raw), schema)
