"""Small helpers every router uses: the context, the services, list envelopes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from strato.context import RequestContext
from strato.exceptions import BadRequest


def context(request: Request) -> RequestContext:
    return request.state.context


def services(request: Request) -> Any:
    return request.app.state.services


def base_url(request: Request) -> str:
    return services(request).conf.public_endpoint


def query(request: Request) -> dict[str, str]:
    """Query parameters as a plain dict (the last value wins)."""
    return dict(request.query_params)


async def json_body(request: Request) -> Any:
    """The request's JSON body (None when empty); 400 when it is not JSON."""
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest("Malformed request body: the body is not valid JSON.") from None
