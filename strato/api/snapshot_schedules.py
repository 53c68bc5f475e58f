"""Snapshot schedule routes (strato's own, under compute): parse HTTP, call
strato.compute.schedules."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api.common import context, json_body, services
from strato.compute.schedules import CREATE, UPDATE, SnapshotSchedules

router = APIRouter(prefix="/compute/v2.1/servers/{server_id}/snapshot-schedules")


def _svc(request: Request) -> SnapshotSchedules:
    return SnapshotSchedules(services(request).compute)


@router.get("")
def list_schedules(request: Request, server_id: str) -> JSONResponse:
    return JSONResponse({"snapshot_schedules": _svc(request).list(context(request),
                                                                  server_id)})


@router.post("")
async def create_schedule(request: Request, server_id: str) -> JSONResponse:
    body = await json_body(request, CREATE)
    out = await run_in_threadpool(_svc(request).create, context(request), server_id, body)
    return JSONResponse({"snapshot_schedule": out}, status_code=201)


@router.get("/{schedule_id}")
def show_schedule(request: Request, server_id: str, schedule_id: str) -> JSONResponse:
    return JSONResponse({"snapshot_schedule": _svc(request).show(context(request),
                                                                 server_id, schedule_id)})


@router.put("/{schedule_id}")
async def update_schedule(request: Request, server_id: str, schedule_id: str) -> JSONResponse:
    body = await json_body(request, UPDATE)
    out = await run_in_threadpool(_svc(request).update, context(request), server_id,
                                  schedule_id, body)
    return JSONResponse({"snapshot_schedule": out})


@router.delete("/{schedule_id}", status_code=204)
def delete_schedule(request: Request, server_id: str, schedule_id: str) -> Response:
    _svc(request).delete(context(request), server_id, schedule_id)
    return Response(status_code=204)
