"""Compute server tags routes (``/servers/{id}/tags``, 2.26): parse HTTP, call
strato.compute.tags."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api.common import base_url, context, json_body, services
from strato.compute.tags import ServerTags, check_version

router = APIRouter(prefix="/compute/v2.1/servers/{server_id}/tags")


def _tags(request: Request) -> ServerTags:
    major, minor = (context(request).microversion or "2.1").split(".")
    check_version((int(major), int(minor)))
    return ServerTags(services(request).compute)


@router.get("")
def list_tags(request: Request, server_id: str) -> JSONResponse:
    return JSONResponse({"tags": _tags(request).list(context(request), server_id)})


@router.put("")
async def replace_tags(request: Request, server_id: str) -> JSONResponse:
    tags = _tags(request)
    body = await json_body(request)
    return JSONResponse({"tags": await run_in_threadpool(
        tags.replace, context(request), server_id, body)})


@router.delete("", status_code=204)
def delete_all_tags(request: Request, server_id: str) -> Response:
    _tags(request).delete_all(context(request), server_id)
    return Response(status_code=204)


@router.get("/{tag}", status_code=204)
def check_tag(request: Request, server_id: str, tag: str) -> Response:
    _tags(request).exists(context(request), server_id, tag)
    return Response(status_code=204)


@router.put("/{tag}")
def add_tag(request: Request, server_id: str, tag: str) -> Response:
    if not _tags(request).add(context(request), server_id, tag):
        return Response(status_code=204)
    location = f"{base_url(request)}/compute/v2.1/servers/{server_id}/tags/{tag}"
    return Response(status_code=201, headers={"Location": location})


@router.delete("/{tag}", status_code=204)
def delete_tag(request: Request, server_id: str, tag: str) -> Response:
    _tags(request).delete(context(request), server_id, tag)
    return Response(status_code=204)
