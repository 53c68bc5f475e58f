"""Cinder's backups: ``/v3/{project_id}/backups`` (strato.backup does the work)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api.common import context, json_body, query, services
from strato.api.volume import P, _project, _url, _version
from strato.backup import schemas
from strato.backup.api import BackupAPI
from strato.exceptions import NotFound

router = APIRouter(prefix="/volume")
B = P + "/backups"


def _api(request: Request) -> BackupAPI:
    return services(request).backup


@router.post(B, status_code=202)
async def create(request: Request, project_id: str) -> JSONResponse:
    _project(request, project_id)
    body = await json_body(request, schemas.CREATE)
    view = await run_in_threadpool(_api(request).create, context(request), body,
                                   _version(request))
    return JSONResponse({"backup": view}, status_code=202)


@router.get(B)
def list_backups(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return _api(request).list(context(request), query(request), _version(request), False,
                              _url(request, project_id, "backups"))


@router.get(B + "/detail")
def list_detail(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return _api(request).list(context(request), query(request), _version(request), True,
                              _url(request, project_id, "backups/detail"))


@router.post(B + "/import_record", status_code=201)
async def import_record(request: Request, project_id: str) -> JSONResponse:
    _project(request, project_id)
    body = await json_body(request, schemas.IMPORT)
    view = await run_in_threadpool(_api(request).import_record, context(request), body,
                                   _version(request))
    return JSONResponse({"backup": view}, status_code=201)


@router.get(B + "/")
@router.put(B + "/")
@router.delete(B + "/")
def empty_id(request: Request, project_id: str) -> Response:
    raise NotFound("The resource could not be found.")


@router.get(B + "/{backup_id}")
def show(request: Request, project_id: str, backup_id: str) -> dict:
    _project(request, project_id)
    return {"backup": _api(request).show(context(request), backup_id, _version(request))}


@router.put(B + "/{backup_id}")
async def update(request: Request, project_id: str, backup_id: str) -> dict:
    _project(request, project_id)
    if _version(request) < (3, 9):  # Cinder: the route is not there before 3.9
        raise NotFound("The resource could not be found.")
    body = await json_body(request, schemas.UPDATE)
    view = await run_in_threadpool(_api(request).update, context(request), backup_id, body,
                                   _version(request))
    return {"backup": view}


@router.delete(B + "/{backup_id}", status_code=202)
def delete(request: Request, project_id: str, backup_id: str) -> Response:
    _project(request, project_id)
    _api(request).delete(context(request), backup_id)
    return Response(status_code=202)


@router.post(B + "/{backup_id}/restore", status_code=202)
async def restore(request: Request, project_id: str, backup_id: str) -> JSONResponse:
    _project(request, project_id)
    body = await json_body(request, schemas.RESTORE)
    view = await run_in_threadpool(_api(request).restore, context(request), backup_id,
                                   body, _version(request))
    return JSONResponse({"restore": view}, status_code=202)


@router.get(B + "/{backup_id}/export_record")
def export_record(request: Request, project_id: str, backup_id: str) -> dict:
    _project(request, project_id)
    return {"backup-record": _api(request).export_record(context(request), backup_id)}


@router.post(B + "/{backup_id}/action", status_code=202)
async def action(request: Request, project_id: str, backup_id: str) -> Response:
    _project(request, project_id)
    body = await json_body(request, schemas.ACTION)
    await run_in_threadpool(_api(request).action, context(request), backup_id, body)
    return Response(status_code=202)
