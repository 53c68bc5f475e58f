"""Volume transfers: ``/os-volume-transfer`` and, from 3.55, ``/volume-transfers``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api.common import context, json_body, query, services
from strato.api.volume import P, _project, _version
from strato.exceptions import NotFound
from strato.volume.transfers import VolumeTransfers

router = APIRouter(prefix="/volume")
PATHS = (P + "/os-volume-transfer", P + "/volume-transfers")


def _transfers(request: Request) -> VolumeTransfers:
    return VolumeTransfers(services(request).volume)


def _check(request: Request, project_id: str) -> tuple[int, int]:
    """The newer path exists from 3.55 (Cinder: 404 before)."""
    _project(request, project_id)
    version = _version(request)
    if "/volume-transfers" in request.url.path and version < (3, 55):
        raise NotFound("The resource could not be found.")
    return version


for base in PATHS:
    @router.post(base)
    async def create(request: Request, project_id: str) -> JSONResponse:
        version = _check(request, project_id)
        body = await json_body(request)
        view = await run_in_threadpool(_transfers(request).create, context(request), body,
                                       version)
        return JSONResponse({"transfer": view}, status_code=202)

    @router.get(base)
    def list_transfers(request: Request, project_id: str) -> dict:
        version = _check(request, project_id)
        return {"transfers": _transfers(request).list(context(request), query(request),
                                                      version, False)}

    @router.get(base + "/detail")
    def list_detail(request: Request, project_id: str) -> dict:
        version = _check(request, project_id)
        return {"transfers": _transfers(request).list(context(request), query(request),
                                                      version, True)}

    @router.get(base + "/{transfer_id}")
    def show(request: Request, project_id: str, transfer_id: str) -> dict:
        version = _check(request, project_id)
        return {"transfer": _transfers(request).show(context(request), transfer_id,
                                                     version)}

    @router.delete(base + "/{transfer_id}", status_code=202)
    def delete(request: Request, project_id: str, transfer_id: str) -> Response:
        _check(request, project_id)
        _transfers(request).delete(context(request), transfer_id)
        return Response(status_code=202)

    @router.post(base + "/{transfer_id}/accept")
    async def accept(request: Request, project_id: str, transfer_id: str) -> JSONResponse:
        version = _check(request, project_id)
        body = await json_body(request)
        view = await run_in_threadpool(_transfers(request).accept, context(request),
                                       transfer_id, body, version)
        return JSONResponse({"transfer": view}, status_code=202)
