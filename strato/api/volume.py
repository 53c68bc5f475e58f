"""Block storage (Cinder v3) routes under /volume: parse HTTP, call strato.volume."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api.common import base_url, context, json_body, query, services
from strato.api.microversions import VOLUME
from strato.exceptions import BadRequest, Forbidden, NotFound
from strato.volume import schemas
from strato.volume.actions import VolumeActions
from strato.volume.api import VolumeAPI

router = APIRouter(prefix="/volume")


def version_doc(request: Request) -> dict:
    return {
        "id": "v3.0", "status": "CURRENT", "version": str(VOLUME.max),
        "min_version": str(VOLUME.min), "updated": "2023-08-31T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/volume/v3/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.volume+json;version=3"}],
    }


@router.get("")
@router.get("/")
def versions(request: Request) -> JSONResponse:
    return JSONResponse({"versions": [version_doc(request)]}, status_code=300)


@router.get("/v3")
@router.get("/v3/")
def v3(request: Request) -> dict:
    return {"versions": [version_doc(request)]}


# ------------------------------------------------------------------ resources
def _api(request: Request) -> VolumeAPI:
    return services(request).volume


def _version(request: Request) -> tuple[int, int]:
    major, minor = (context(request).microversion or "3.0").split(".")
    return int(major), int(minor)


def _project(request: Request, project_id: str) -> None:
    """The URL's project must be the token's (an admin may name any)."""
    ctx = context(request)
    if project_id != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Project {project_id} in the URL is not the project of the token.")



P = "/v3/{project_id}"


@router.post(P + "/volumes", status_code=202)
async def create_volume(request: Request, project_id: str) -> JSONResponse:
    _project(request, project_id)
    body = await json_body(request, schemas.CREATE_VOLUME)
    if body["volume"].get("backup_id") and _version(request) >= (3, 47):
        view = await run_in_threadpool(services(request).backup.create_volume,
                                       context(request), body["volume"], _version(request))
        return JSONResponse({"volume": view}, status_code=202)
    view = await run_in_threadpool(_api(request).create, context(request), body,
                                   _version(request))
    return JSONResponse({"volume": view}, status_code=202)


def _url(request: Request, project_id: str, collection: str) -> str:
    """A collection's public URL, for its ``next`` links."""
    return f"{_api(request).conf.public_endpoint}/volume/v3/{project_id}/{collection}"


@router.get(P + "/volumes")
def list_volumes(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return _api(request).list(context(request), query(request), _version(request), False,
                              _url(request, project_id, "volumes"))


@router.get(P + "/volumes/detail")
def list_volumes_detail(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return _api(request).list(context(request), query(request), _version(request), True,
                              _url(request, project_id, "volumes/detail"))


@router.get(P + "/volumes/summary")
def volume_summary(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return {"volume-summary": _api(request).summary(context(request), query(request),
                                                    _version(request))}


# An empty id (``/volumes/``) names nothing: Cinder answers 404, not a redirect to the
# collection (where PUT and DELETE would be 405).
@router.get(P + "/volumes/")
@router.put(P + "/volumes/")
@router.delete(P + "/volumes/")
@router.get(P + "/snapshots/")
@router.put(P + "/snapshots/")
@router.delete(P + "/snapshots/")
@router.get(P + "/types/")
@router.put(P + "/types/")
@router.delete(P + "/types/")
def empty_id(request: Request, project_id: str) -> Response:
    raise NotFound("The resource could not be found.")


@router.get(P + "/volumes/{volume_id}")
def show_volume(request: Request, project_id: str, volume_id: str) -> dict:
    _project(request, project_id)
    return {"volume": _api(request).show(context(request), volume_id, _version(request))}


@router.put(P + "/volumes/{volume_id}")
async def update_volume(request: Request, project_id: str, volume_id: str) -> dict:
    _project(request, project_id)
    body = await json_body(request, schemas.UPDATE_VOLUME)
    view = await run_in_threadpool(_api(request).update, context(request), volume_id, body,
                                   _version(request))
    return {"volume": view}


@router.delete(P + "/volumes/{volume_id}", status_code=202)
def delete_volume(request: Request, project_id: str, volume_id: str) -> Response:
    _project(request, project_id)
    cascade = query(request).get("cascade", "false").lower() in ("true", "1", "yes")
    _api(request).delete(context(request), volume_id, cascade=cascade)
    return Response(status_code=202)


@router.post(P + "/snapshots", status_code=202)
async def create_snapshot(request: Request, project_id: str) -> JSONResponse:
    _project(request, project_id)
    body = await json_body(request, schemas.CREATE_SNAPSHOT)
    view = await run_in_threadpool(_api(request).create_snapshot, context(request), body,
                                   _version(request))
    return JSONResponse({"snapshot": view}, status_code=202)


@router.get(P + "/snapshots")
def list_snapshots(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return _api(request).list_snapshots(context(request), query(request), _version(request),
                                        False, _url(request, project_id, "snapshots"))


@router.get(P + "/snapshots/detail")
def list_snapshots_detail(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return _api(request).list_snapshots(context(request), query(request), _version(request),
                                        True, _url(request, project_id, "snapshots/detail"))


@router.get(P + "/snapshots/{snapshot_id}")
def show_snapshot(request: Request, project_id: str, snapshot_id: str) -> dict:
    _project(request, project_id)
    return {"snapshot": _api(request).show_snapshot(context(request), snapshot_id,
                                                    _version(request))}


@router.put(P + "/snapshots/{snapshot_id}")
async def update_snapshot(request: Request, project_id: str, snapshot_id: str) -> dict:
    _project(request, project_id)
    body = await json_body(request, schemas.UPDATE_SNAPSHOT)
    view = await run_in_threadpool(_api(request).update_snapshot, context(request),
                                   snapshot_id, body, _version(request))
    return {"snapshot": view}


@router.delete(P + "/snapshots/{snapshot_id}", status_code=202)
def delete_snapshot(request: Request, project_id: str, snapshot_id: str) -> Response:
    _project(request, project_id)
    _api(request).delete_snapshot(context(request), snapshot_id)
    return Response(status_code=202)


@router.get(P + "/types")
def list_types(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return {"volume_types": _api(request).list_types(context(request), query(request))}


@router.get(P + "/os-quota-sets/{target}/defaults")
def show_default_quota(request: Request, project_id: str, target: str) -> dict:
    _project(request, project_id)
    return {"quota_set": _api(request).quota_set(context(request), target, False,
                                                 defaults=True)}


@router.delete(P + "/os-quota-sets/{target}")
def delete_quota(request: Request, project_id: str, target: str) -> Response:
    _project(request, project_id)
    _api(request).delete_quota(context(request), target)
    return Response(status_code=200)


@router.get(P + "/os-quota-sets/{target}")
def show_quota(request: Request, project_id: str, target: str) -> dict:
    _project(request, project_id)
    usage = query(request).get("usage", "false").lower() == "true"
    return {"quota_set": _api(request).quota_set(context(request), target, usage)}


@router.put(P + "/os-quota-sets/{target}")
async def update_quota(request: Request, project_id: str, target: str) -> dict:
    _project(request, project_id)
    body = await json_body(request, schemas.UPDATE_QUOTA)
    return {"quota_set": await run_in_threadpool(_api(request).update_quota,
                                                 context(request), target, body)}


# ------------------------------------------------------------------ user messages (3.3)
def _messages_version(request: Request) -> tuple[int, int]:
    """Cinder answers 404 to a route older than the version asked for."""
    version = _version(request)
    if version < (3, 3):
        raise NotFound("The resource could not be found.")
    return version


@router.get(P + "/messages")
def list_messages(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    version = _messages_version(request)
    return _api(request).messages.list(context(request), project_id, query(request),
                                       version)


@router.get(P + "/messages/{message_id}")
def show_message(request: Request, project_id: str, message_id: str) -> dict:
    _project(request, project_id)
    _messages_version(request)
    message = _api(request).messages.show(context(request), message_id)
    # Cinder's key is "message", and strict clients (Tempest) refuse any other key.
    # openstacksdk (4.x) reads a fetched message under "messages" (its resource_key),
    # so `openstack volume message show` would print nothing but nulls: that client,
    # and only it, gets the same object under both keys.
    if "openstacksdk" in request.headers.get("user-agent", ""):
        return {"message": message, "messages": message}
    return {"message": message}


@router.delete(P + "/messages/{message_id}", status_code=204)
def delete_message(request: Request, project_id: str, message_id: str) -> Response:
    _project(request, project_id)
    _messages_version(request)
    _api(request).messages.delete(context(request), message_id)
    return Response(status_code=204)


# ------------------------------------------------------------------ metadata
META = P + "/{kind}/{row_id}/metadata"


def _kind(kind: str) -> str:
    if kind not in ("volumes", "snapshots"):
        raise NotFound("The resource could not be found.")
    return kind


@router.get(META)
def get_metadata(request: Request, project_id: str, kind: str, row_id: str) -> dict:
    _project(request, project_id)
    return {"metadata": _api(request).get_metadata(context(request), _kind(kind), row_id)}


@router.post(META)
@router.put(META)
async def set_metadata(request: Request, project_id: str, kind: str, row_id: str) -> dict:
    _project(request, project_id)
    body = await json_body(request, schemas.METADATA_BODY)
    meta = await run_in_threadpool(_api(request).set_metadata, context(request), _kind(kind),
                                   row_id, body, request.method == "PUT")
    return {"metadata": meta}


@router.get(META + "/{key}")
def show_metadata_key(request: Request, project_id: str, kind: str, row_id: str,
                      key: str) -> dict:
    _project(request, project_id)
    meta = _api(request).get_metadata(context(request), _kind(kind), row_id)
    if key not in meta:
        raise NotFound(f"Metadata key {key} not found.")
    return {"meta": {key: meta[key]}}


@router.put(META + "/{key}")
async def update_metadata_key(request: Request, project_id: str, kind: str, row_id: str,
                              key: str) -> dict:
    """Cinder: the body is ``{"meta": {key: value}}``, one item, named as in the URL."""
    _project(request, project_id)
    body = await json_body(request, schemas.METADATA_ITEM)
    meta = body["meta"]
    if len(meta) != 1:
        raise BadRequest("Request body contains too many items.")
    if key not in meta:
        raise BadRequest("Request body and URI mismatch.")
    await run_in_threadpool(_api(request).set_metadata, context(request), _kind(kind),
                            row_id, {"metadata": meta}, False)
    return {"meta": meta}


@router.delete(META + "/{key}")
def delete_metadata_key(request: Request, project_id: str, kind: str, row_id: str,
                        key: str) -> Response:
    _project(request, project_id)
    _api(request).delete_metadata_key(context(request), _kind(kind), row_id, key)
    return Response(status_code=200)


# ------------------------------------------------------------------ types
@router.post(P + "/types")
async def create_type(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    body = await json_body(request, schemas.CREATE_TYPE)
    return {"volume_type": await run_in_threadpool(_api(request).create_type,
                                                   context(request), body)}


@router.get(P + "/types/{type_id}")
def show_type(request: Request, project_id: str, type_id: str) -> dict:
    _project(request, project_id)
    return {"volume_type": _api(request).show_type(context(request), type_id)}


@router.put(P + "/types/{type_id}")
async def update_type(request: Request, project_id: str, type_id: str) -> dict:
    _project(request, project_id)
    body = await json_body(request, schemas.UPDATE_TYPE)
    return {"volume_type": await run_in_threadpool(_api(request).update_type,
                                                   context(request), type_id, body)}


@router.delete(P + "/types/{type_id}", status_code=202)
def delete_type(request: Request, project_id: str, type_id: str) -> Response:
    _project(request, project_id)
    _api(request).delete_type(context(request), type_id)
    return Response(status_code=202)


@router.get(P + "/types/{type_id}/extra_specs")
def get_extra_specs(request: Request, project_id: str, type_id: str) -> dict:
    _project(request, project_id)
    return {"extra_specs": _api(request).extra_specs(context(request), type_id)}


@router.post(P + "/types/{type_id}/extra_specs")
async def set_extra_specs(request: Request, project_id: str, type_id: str) -> dict:
    """Cinder answers the specs it was given (not the merged set)."""
    _project(request, project_id)
    body = await json_body(request, schemas.EXTRA_SPECS)
    await run_in_threadpool(_api(request).extra_specs, context(request), type_id, body)
    return {"extra_specs": body["extra_specs"]}


@router.get(P + "/types/{type_id}/extra_specs/{key}")
def show_extra_spec(request: Request, project_id: str, type_id: str, key: str) -> dict:
    _project(request, project_id)
    specs = _api(request).extra_specs(context(request), type_id)
    if key not in specs:
        raise NotFound(f"Volume Type {type_id} has no extra specs with key {key}.")
    return {key: specs[key]}


@router.put(P + "/types/{type_id}/extra_specs/{key}")
async def update_extra_spec(request: Request, project_id: str, type_id: str,
                            key: str) -> dict:
    """Cinder: a body of one item, named as in the URL."""
    _project(request, project_id)
    body = await json_body(request, schemas.EXTRA_SPEC_ITEM)
    if len(body) != 1:
        raise BadRequest("Request body contains too many items.")
    if key not in body:
        raise BadRequest("Request body and URI mismatch.")
    await run_in_threadpool(_api(request).extra_specs, context(request), type_id,
                            {"extra_specs": body})
    return body


@router.delete(P + "/types/{type_id}/extra_specs/{key}", status_code=202)
def delete_extra_spec(request: Request, project_id: str, type_id: str, key: str) -> Response:
    _project(request, project_id)
    _api(request).extra_specs(context(request), type_id, delete_key=key)
    return Response(status_code=202)


# ------------------------------------------------------------------ actions, attachments
def _actions(request: Request) -> VolumeActions:
    return VolumeActions(_api(request))


@router.post(P + "/volumes/{volume_id}/action")
async def volume_action(request: Request, project_id: str, volume_id: str) -> Response:
    _project(request, project_id)
    body = await json_body(request, schemas.VOLUME_ACTION)
    result = await run_in_threadpool(_actions(request).dispatch, context(request), volume_id,
                                     body, _version(request))
    if result is None:  # Cinder answers set-bootable 200, the other actions 202
        return Response(status_code=200 if "os-set_bootable" in body else 202)
    if not result:  # an action Cinder answers 200 with no body (unset image metadata)
        return Response(status_code=200)
    return JSONResponse(result, status_code=202 if "os-volume_upload_image" in result
                        else 200)


@router.post(P + "/snapshots/{snapshot_id}/action", status_code=202)
async def snapshot_action(request: Request, project_id: str, snapshot_id: str) -> Response:
    _project(request, project_id)
    body = await json_body(request, schemas.SNAPSHOT_ACTION)
    await run_in_threadpool(_actions(request).snapshot_action, context(request),
                            snapshot_id, body)
    return Response(status_code=202)


@router.post(P + "/attachments")
async def create_attachment(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    body = await json_body(request, schemas.CREATE_ATTACHMENT)
    return {"attachment": await run_in_threadpool(_actions(request).create_attachment,
                                                  context(request), body)}


@router.get(P + "/attachments")
def list_attachments(request: Request, project_id: str) -> dict:
    """Cinder's summary: id, status, instance and volume only."""
    _project(request, project_id)
    keys = ("id", "status", "instance", "volume_id")
    return {"attachments": [{k: a[k] for k in keys} for a in
                            _actions(request).list_attachments(context(request))]}


@router.get(P + "/attachments/detail")
def list_attachments_detail(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return {"attachments": _actions(request).list_attachments(context(request))}


@router.get(P + "/attachments/{attachment_id}")
def show_attachment(request: Request, project_id: str, attachment_id: str) -> dict:
    _project(request, project_id)
    return {"attachment": _actions(request).show_attachment(context(request), attachment_id)}


@router.put(P + "/attachments/{attachment_id}")
async def update_attachment(request: Request, project_id: str, attachment_id: str) -> dict:
    _project(request, project_id)
    body = await json_body(request, schemas.UPDATE_ATTACHMENT)
    return {"attachment": await run_in_threadpool(_actions(request).update_attachment,
                                                  context(request), attachment_id, body)}


@router.post(P + "/attachments/{attachment_id}/action", status_code=204)
async def attachment_action(request: Request, project_id: str,
                            attachment_id: str) -> Response:
    _project(request, project_id)
    body = await json_body(request, schemas.ATTACHMENT_ACTION)
    if not isinstance(body, dict) or "os-complete" not in body:
        raise BadRequest("The only attachment action is os-complete.")
    await run_in_threadpool(_actions(request).complete_attachment, context(request),
                            attachment_id)
    return Response(status_code=204)


@router.delete(P + "/attachments/{attachment_id}")
def delete_attachment(request: Request, project_id: str, attachment_id: str) -> dict:
    _project(request, project_id)
    _actions(request).delete_attachment(context(request), attachment_id)
    return {"attachments": []}


# ------------------------------------------------------------------ private type access
@router.get(P + "/types/{type_id}/os-volume-type-access")
def list_type_access(request: Request, project_id: str, type_id: str) -> dict:
    _project(request, project_id)
    return {"volume_type_access": _api(request).type_access(context(request), type_id)}


@router.post(P + "/types/{type_id}/action", status_code=202)
async def type_action(request: Request, project_id: str, type_id: str) -> Response:
    _project(request, project_id)
    body = await json_body(request)
    await run_in_threadpool(_api(request).type_access_action, context(request), type_id,
                            body)
    return Response(status_code=202)
