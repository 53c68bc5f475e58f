"""Small helpers every router uses: the context, the services, list envelopes."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from strato.context import RequestContext


def context(request: Request) -> RequestContext:
    return request.state.context


def services(request: Request) -> Any:
    return request.app.state.services


def base_url(request: Request) -> str:
    return services(request).conf.public_endpoint


def query(request: Request) -> dict[str, str]:
    """Query parameters as a plain dict (the last value wins)."""
    return dict(request.query_params)
