"""Lineage routes (strato's own API, docs/lineage.md): parse HTTP, call
strato.lineage.api; faults in compute's format."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api.common import context, services
from strato.lineage.api import LineageAPI

router = APIRouter(prefix="/lineage/v1")


def _api(request: Request) -> LineageAPI:
    return LineageAPI(services(request))


@router.get("/{kind}/{resource_id}")
async def show_lineage(request: Request, kind: str, resource_id: str) -> JSONResponse:
    out = await run_in_threadpool(_api(request).graph, context(request), kind, resource_id)
    return JSONResponse({"lineage": out})


@router.get("/{kind}/{resource_id}/delete-blockers")
async def delete_blockers(request: Request, kind: str, resource_id: str) -> JSONResponse:
    out = await run_in_threadpool(_api(request).blockers, context(request), kind,
                                  resource_id)
    return JSONResponse({"delete_blockers": out})
