"""QoS specs (``/v3/{project}/qos-specs``) and volume type encryption, which strato
does not do (an unencrypted type's answers; creating one is 501)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from strato.api.common import context, json_body, query, services
from strato.api.volume import P, _project
from strato.exceptions import NotFound, NotSupported
from strato.volume.api import _flag
from strato.volume.qos import QosSpecsAPI

router = APIRouter(prefix="/volume")
Q = P + "/qos-specs"
ENC = P + "/types/{type_id}/encryption"


def _qos(request: Request, project_id: str) -> QosSpecsAPI:
    _project(request, project_id)
    return QosSpecsAPI(services(request).volume)


@router.get(Q)
def list_qos(request: Request, project_id: str) -> dict:
    return {"qos_specs": _qos(request, project_id).list(context(request), query(request))}


@router.post(Q)
async def create_qos(request: Request, project_id: str) -> dict:
    api = _qos(request, project_id)
    body = await json_body(request)
    view, row = await run_in_threadpool(api.create, context(request), body)
    return {"qos_specs": view, "links": api.links(row, project_id)}


@router.get(Q + "/{qos_id}")
def show_qos(request: Request, project_id: str, qos_id: str) -> dict:
    api = _qos(request, project_id)
    view, row = api.show(context(request), qos_id)
    return {"qos_specs": view, "links": api.links(row, project_id)}


@router.put(Q + "/{qos_id}")
async def update_qos(request: Request, project_id: str, qos_id: str) -> dict:
    api = _qos(request, project_id)
    body = await json_body(request)
    return await run_in_threadpool(api.update, context(request), qos_id, body)


@router.delete(Q + "/{qos_id}", status_code=202)
def delete_qos(request: Request, project_id: str, qos_id: str) -> Response:
    force = _flag(query(request).get("force", "false"), "force")
    _qos(request, project_id).delete(context(request), qos_id, force)
    return Response(status_code=202)


@router.put(Q + "/{qos_id}/delete_keys", status_code=202)
async def delete_keys(request: Request, project_id: str, qos_id: str) -> Response:
    api = _qos(request, project_id)
    body = await json_body(request)
    await run_in_threadpool(api.delete_keys, context(request), qos_id, body)
    return Response(status_code=202)


@router.get(Q + "/{qos_id}/associations")
def associations(request: Request, project_id: str, qos_id: str) -> dict:
    return {"qos_associations": _qos(request, project_id).associations(context(request),
                                                                       qos_id)}


@router.get(Q + "/{qos_id}/associate", status_code=202)
def associate(request: Request, project_id: str, qos_id: str) -> Response:
    _qos(request, project_id).associate(context(request), qos_id,
                                        query(request).get("vol_type_id"))
    return Response(status_code=202)


@router.get(Q + "/{qos_id}/disassociate", status_code=202)
def disassociate(request: Request, project_id: str, qos_id: str) -> Response:
    _qos(request, project_id).disassociate(context(request), qos_id,
                                           query(request).get("vol_type_id"))
    return Response(status_code=202)


@router.get(Q + "/{qos_id}/disassociate_all", status_code=202)
def disassociate_all(request: Request, project_id: str, qos_id: str) -> Response:
    _qos(request, project_id).disassociate_all(context(request), qos_id)
    return Response(status_code=202)


# ------------------------------------------------------------------ type encryption
def _unencrypted(request: Request, project_id: str, type_id: str, action: str) -> str:
    """Policy, then the type must exist (404); every type here is unencrypted."""
    _project(request, project_id)
    ctx = context(request)
    api = services(request).volume
    api.policy.enforce(ctx, f"volume_extension:volume_type_encryption:{action}", {})
    with api.db.session(readonly=True) as session:
        return api.volume_type(session, type_id).id


@router.get(ENC)
def get_encryption(request: Request, project_id: str, type_id: str) -> dict:
    """Cinder's answer for an unencrypted type: an empty object."""
    _unencrypted(request, project_id, type_id, "get")
    return {}


@router.get(ENC + "/{key}")
def get_encryption_key(request: Request, project_id: str, type_id: str, key: str) -> dict:
    vid = _unencrypted(request, project_id, type_id, "get")
    raise NotFound(f"Volume type encryption for type {vid} does not exist.")


@router.post(ENC)
def create_encryption(request: Request, project_id: str, type_id: str) -> dict:
    _unencrypted(request, project_id, type_id, "create")
    raise NotSupported("Volume encryption is not supported by this cloud: volume types "
                       "cannot be given an encryption.")


@router.put(ENC + "/{encryption_id}")
def update_encryption(request: Request, project_id: str, type_id: str,
                      encryption_id: str) -> dict:
    vid = _unencrypted(request, project_id, type_id, "update")
    raise NotFound(f"Volume type encryption for type {vid} does not exist.")


@router.delete(ENC + "/{encryption_id}")
def delete_encryption(request: Request, project_id: str, type_id: str,
                      encryption_id: str) -> dict:
    vid = _unencrypted(request, project_id, type_id, "delete")
    raise NotFound(f"Volume type encryption for type {vid} does not exist.")
