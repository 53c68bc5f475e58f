"""Compute (Nova v2.1) routes under /compute: parse HTTP, call strato.compute."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response, WebSocket
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api import serial_proxy
from strato.api.common import base_url, context, json_body, query, services
from strato.api.microversions import COMPUTE
from strato.api.unimplemented import (
    REFERENCE_SERVER_ACTIONS,
    find_server,
    unsupported_action,
)
from strato.compute import (
    backup,
    consoles,
    evacuate,
    guestops,
    live_migration,
    locks,
    migrations,
    rebuild,
    rescue,
    resize,
    schemas,
    shelve,
)
from strato.compute.api import ComputeAPI, P
from strato.compute.extras import PerUserQuota, ServerExtras
from strato.compute.interfaces import ServerNetworks
from strato.compute.snapshot_api import create_image
from strato.exceptions import BadRequest, NotFound

router = APIRouter(prefix="/compute")


def version_doc(request: Request) -> dict:
    return {
        "id": "v2.1", "status": "CURRENT", "version": str(COMPUTE.max),
        "min_version": str(COMPUTE.min), "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/compute/v2.1/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2.1"}],
    }


def legacy_version_doc(request: Request) -> dict:
    """Nova's v2.0: the v2.1 API without microversions, at ``/compute/v2/`` (with or
    without the project id in the URL, as old clients and catalogs have it)."""
    return {
        "id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/compute/v2/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2"}],
    }


@router.get("")
@router.get("/")
def versions(request: Request) -> dict:
    return {"versions": [legacy_version_doc(request), version_doc(request)]}


@router.get("/v2")
@router.get("/v2/")
def v20(request: Request) -> dict:
    return {"version": legacy_version_doc(request)}


@router.get("/v2.1")
@router.get("/v2.1/")
def v21(request: Request) -> dict:
    return {"version": version_doc(request)}


# ------------------------------------------------------------------ resources
_ACTIONS = {  # body key -> (power action, policy rule, Nova's action label)
    "os-start": ("start", "servers:start", "start"),
    "os-stop": ("stop", "servers:stop", "stop"),
    "pause": ("pause", "os-pause-server:pause", "pause"),
    "unpause": ("unpause", "os-pause-server:unpause", "unpause"),
    "suspend": ("suspend", "os-suspend-server:suspend", "suspend"),
    "resume": ("resume", "os-suspend-server:resume", "resume"),
}
V = "/v2.1"


class FastJSON(JSONResponse):
    """Plain ``json.dumps``: responses are already JSON types, so FastAPI's encoder
    (slow on a thousand servers) is skipped."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


def _api(request: Request) -> ComputeAPI:
    return services(request).compute


def _extras(request: Request) -> ServerExtras:
    return ServerExtras(_api(request))


def _nets(request: Request) -> ServerNetworks:
    return ServerNetworks(_api(request))


def _version(request: Request) -> tuple[int, int]:
    major, minor = (context(request).microversion or "2.1").split(".")
    return int(major), int(minor)


async def _run(fn: Any, *args: Any) -> Any:
    return await run_in_threadpool(fn, *args)


# ---------------------------------------------------------------- flavors
@router.get(V + "/flavors")
def list_flavors(request: Request) -> FastJSON:
    return FastJSON(_api(request).flavors.list(context(request), query(request), False,
                                               _version(request)))


@router.get(V + "/flavors/detail")
def list_flavors_detail(request: Request) -> FastJSON:
    return FastJSON(_api(request).flavors.list(context(request), query(request), True,
                                               _version(request)))


@router.get(V + "/flavors/{flavor_id}")
def show_flavor(request: Request, flavor_id: str) -> FastJSON:
    return FastJSON({"flavor": _api(request).flavors.show(context(request), flavor_id,
                                                          _version(request))})


@router.post(V + "/flavors")
async def create_flavor(request: Request) -> FastJSON:
    body = await json_body(request, schemas.CREATE_FLAVOR)
    return FastJSON({"flavor": await _run(_api(request).flavors.create, context(request),
                                          body, _version(request))})


@router.put(V + "/flavors/{flavor_id}")
async def update_flavor(request: Request, flavor_id: str) -> FastJSON:
    body = await json_body(request, schemas.UPDATE_FLAVOR)
    return FastJSON({"flavor": await _run(_api(request).flavors.update, context(request),
                                          flavor_id, body, _version(request))})


@router.delete(V + "/flavors/{flavor_id}", status_code=202)
def delete_flavor(request: Request, flavor_id: str) -> Response:
    _api(request).flavors.delete(context(request), flavor_id)
    return Response(status_code=202)


@router.get(V + "/flavors/{flavor_id}/os-flavor-access")
def list_flavor_access(request: Request, flavor_id: str) -> FastJSON:
    return FastJSON({"flavor_access": _api(request).flavors.access_list(context(request),
                                                                        flavor_id)})


@router.post(V + "/flavors/{flavor_id}/action")
async def flavor_action(request: Request, flavor_id: str) -> FastJSON:
    body = await json_body(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("The action body must hold exactly one action.")
    (name, args), = body.items()
    if name not in ("addTenantAccess", "removeTenantAccess"):
        raise BadRequest(f"There is no such action: {name}")
    return FastJSON({"flavor_access": await _run(_api(request).flavors.access_action,
                                                 context(request), flavor_id, name, args)})


@router.get(V + "/flavors/{flavor_id}/os-extra_specs")
def list_extra_specs(request: Request, flavor_id: str) -> FastJSON:
    return FastJSON({"extra_specs": _api(request).flavors.extra_specs(context(request),
                                                                      flavor_id)})


@router.post(V + "/flavors/{flavor_id}/os-extra_specs")
async def create_extra_specs(request: Request, flavor_id: str) -> FastJSON:
    body = await json_body(request, schemas.EXTRA_SPECS)
    return FastJSON({"extra_specs": await _run(_api(request).flavors.set_extra_specs,
                                               context(request), flavor_id, body)})


@router.get(V + "/flavors/{flavor_id}/os-extra_specs/{key}")
def show_extra_spec(request: Request, flavor_id: str, key: str) -> FastJSON:
    return FastJSON(_api(request).flavors.extra_spec(context(request), flavor_id, key))


@router.put(V + "/flavors/{flavor_id}/os-extra_specs/{key}")
async def update_extra_spec(request: Request, flavor_id: str, key: str) -> FastJSON:
    body = await json_body(request, schemas.EXTRA_SPEC)
    return FastJSON(await _run(_api(request).flavors.set_extra_specs, context(request),
                               flavor_id, body, key))


@router.delete(V + "/flavors/{flavor_id}/os-extra_specs/{key}")
def delete_extra_spec(request: Request, flavor_id: str, key: str) -> Response:
    _api(request).flavors.delete_extra_spec(context(request), flavor_id, key)
    return Response(status_code=200)


# ---------------------------------------------------------------- servers
@router.post(V + "/servers")
async def create_server(request: Request) -> FastJSON:
    body = await json_body(request, schemas.CREATE_SERVER)
    server = await _run(_api(request).create, context(request), body, _version(request))
    return FastJSON({"server": server}, status_code=202,
                    headers={"Location": server["links"][0]["href"]})


@router.get(V + "/servers")
def list_servers(request: Request) -> Response:
    return Response(_api(request).list(context(request), query(request), _version(request),
                                       False), media_type="application/json")


@router.get(V + "/servers/detail")
def list_servers_detail(request: Request) -> Response:
    return Response(_api(request).list(context(request), query(request), _version(request),
                                       True), media_type="application/json")


@router.get(V + "/servers/{server_id}")
def show_server(request: Request, server_id: str) -> FastJSON:
    return FastJSON({"server": _api(request).show(context(request), server_id,
                                                  _version(request))})


@router.put(V + "/servers/{server_id}")
async def update_server(request: Request, server_id: str) -> FastJSON:
    body = await json_body(request, schemas.UPDATE_SERVER)
    return FastJSON({"server": await _run(_api(request).update, context(request), server_id,
                                          body, _version(request))})


@router.delete(V + "/servers/{server_id}", status_code=204)
def delete_server(request: Request, server_id: str) -> Response:
    _api(request).delete(context(request), server_id)
    return Response(status_code=204)


@router.post(V + "/servers/{server_id}/action")
async def server_action(request: Request, server_id: str) -> Response:
    body = await json_body(request, schemas.SERVER_ACTION)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("The action body must hold exactly one action.")
    (name, args), = body.items()
    api, ctx = _api(request), context(request)
    await _run(locks.check_action, api, ctx, server_id, name, REFERENCE_SERVER_ACTIONS)
    if name in guestops.ACTIONS:
        await _run(guestops.GuestOps(api, services(request).virt).action, ctx, server_id,
                   name, args, _version(request))
        return Response(status_code=202)
    if name in _ACTIONS:
        action, rule, label = _ACTIONS[name]
        await _run(api.power_action, ctx, server_id, action, P + rule, label)
        return Response(status_code=202)
    if name == "reboot":
        kind = (args or {}).get("type") if isinstance(args, dict) else None
        if not isinstance(kind, str) or kind.upper() not in ("SOFT", "HARD"):
            raise BadRequest("Invalid input for field/attribute type: SOFT or HARD.")
        hard = kind.upper() == "HARD"
        await _run(api.power_action, ctx, server_id, "reboot_hard" if hard else "reboot",
                   P + "servers:reboot", "reboot")
        return Response(status_code=202)
    if name == "createImage":
        location, out = await _run(create_image, api, ctx, server_id, args, _version(request))
        if out is not None:  # 2.45: the id in the body, no Location
            return FastJSON(out, status_code=202)
        return Response(status_code=202, headers={"Location": location})
    if name in backup.ACTIONS:
        location, out = await _run(backup.Backups(api).action, ctx, server_id, name, args,
                                   _version(request))
        return FastJSON(out, status_code=202) if out is not None else Response(
            status_code=202, headers={"Location": location} if location else None)
    if name == "os-getConsoleOutput":
        out = await _run(_extras(request).console_output, ctx, server_id, args,
                         services(request).virt)
        return FastJSON(out)
    if name in ("addSecurityGroup", "removeSecurityGroup"):
        await _run(_nets(request).security_group_action, ctx, server_id, name, args)
        return Response(status_code=202)
    if name in rebuild.ACTIONS:
        return FastJSON(await _run(rebuild.Rebuild(api).action, ctx, server_id, name, args,
                                   _version(request)), status_code=202)
    if name in resize.ACTIONS:  # resize, migrate (cold), confirm, revert
        await _run(resize.Resizes(api).action, ctx, server_id, name, args, _version(request))
        return Response(status_code=204 if name == "confirmResize" else 202)
    if name in evacuate.ACTIONS:  # Nova answers 200 (adminPass before 2.14)
        out = await _run(evacuate.Evacuate(api).action, ctx, server_id, name, args,
                         _version(request))
        return FastJSON(out) if out is not None else Response(status_code=200)
    if name in rescue.ACTIONS:
        out = await _run(rescue.Rescue(api).action, ctx, server_id, name, args,
                         _version(request))
        return FastJSON(out) if out is not None else Response(status_code=202)
    if name in shelve.ACTIONS:
        await _run(shelve.Shelve(api).action, ctx, server_id, name, args, _version(request))
        return Response(status_code=202)
    if name in consoles.ACTIONS:
        return FastJSON(await _run(consoles.Consoles(api).action, ctx, server_id, name, args,
                                   _version(request)))
    if name in live_migration.ACTIONS:
        await _run(live_migration.LiveMigrations(api).action, ctx, server_id, name, args,
                   _version(request))
        return Response(status_code=202)
    if name in REFERENCE_SERVER_ACTIONS:  # Nova finds the server first: 404 before 501
        await _run(find_server, services(request), ctx, server_id)
    raise unsupported_action(name, REFERENCE_SERVER_ACTIONS)  # 501 if Nova has it, else 400


# ---------------------------------------------------------------- server networking
@router.get(V + "/servers/{server_id}/ips")
def list_ips(request: Request, server_id: str) -> FastJSON:
    return FastJSON(_nets(request).ips(context(request), server_id))


@router.get(V + "/servers/{server_id}/ips/{label}")
def show_ips(request: Request, server_id: str, label: str) -> FastJSON:
    return FastJSON(_nets(request).ips_for(context(request), server_id, label))


@router.get(V + "/servers/{server_id}/os-security-groups")
def server_security_groups(request: Request, server_id: str) -> FastJSON:
    return FastJSON(_nets(request).server_security_groups(context(request), server_id))


@router.get(V + "/servers/{server_id}/os-interface")
def list_interfaces(request: Request, server_id: str) -> FastJSON:
    return FastJSON(_nets(request).list_interfaces(context(request), server_id,
                                                   _version(request)))


@router.get(V + "/servers/{server_id}/os-interface/{port_id}")
def show_interface(request: Request, server_id: str, port_id: str) -> FastJSON:
    return FastJSON(_nets(request).show_interface(context(request), server_id, port_id,
                                                  _version(request)))


@router.post(V + "/servers/{server_id}/os-interface")
async def attach_interface(request: Request, server_id: str) -> FastJSON:
    body = await json_body(request, schemas.ATTACH_INTERFACE)
    return FastJSON(await _run(_nets(request).attach_interface, context(request), server_id,
                               body, _version(request)))


@router.delete(V + "/servers/{server_id}/os-interface/{port_id}", status_code=202)
async def detach_interface(request: Request, server_id: str, port_id: str) -> Response:
    await _run(_nets(request).detach_interface, context(request), server_id, port_id)
    return Response(status_code=202)


# ---------------------------------------------------------------- consoles
@router.post(V + "/servers/{server_id}/remote-consoles")
async def create_remote_console(request: Request, server_id: str) -> FastJSON:
    body = await json_body(request)
    return FastJSON(await _run(consoles.Consoles(_api(request)).remote_console,
                               context(request), server_id, body, _version(request)))


@router.websocket(consoles.PROXY_PATH.removeprefix("/compute"))
async def serial_console(websocket: WebSocket) -> None:
    """The websocket a console URL points at (the token is its credential)."""
    await serial_proxy.serve(websocket)


# ---------------------------------------------------------------- metadata
@router.get(V + "/servers/{server_id}/metadata")
def get_metadata(request: Request, server_id: str) -> FastJSON:
    return FastJSON({"metadata": _api(request).metadata(context(request), server_id)})


async def _meta_body(request: Request, key: str = "metadata") -> dict:
    body = await json_body(request, schemas.META_ITEM if key == "meta"
                           else schemas.METADATA_BODY)
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"Missing required element '{key}' in request body.")
    return body[key]


@router.post(V + "/servers/{server_id}/metadata")
async def merge_metadata(request: Request, server_id: str) -> FastJSON:
    new = await _meta_body(request)
    return FastJSON({"metadata": await _run(_api(request).set_metadata, context(request),
                                            server_id, new, False, "create")})


@router.put(V + "/servers/{server_id}/metadata")
async def replace_metadata(request: Request, server_id: str) -> FastJSON:
    new = await _meta_body(request)
    return FastJSON({"metadata": await _run(_api(request).set_metadata, context(request),
                                            server_id, new, True, "update_all")})


@router.get(V + "/servers/{server_id}/metadata/{key}")
def get_metadata_item(request: Request, server_id: str, key: str) -> FastJSON:
    meta = _api(request).metadata(context(request), server_id)
    if key not in meta:
        raise NotFound(f"Metadata item was not found: {key}")
    return FastJSON({"meta": {key: meta[key]}})


@router.put(V + "/servers/{server_id}/metadata/{key}")
async def set_metadata_item(request: Request, server_id: str, key: str) -> FastJSON:
    new = await _meta_body(request, "meta")
    if set(new) != {key}:
        raise BadRequest("Request body and URI mismatch")
    await _run(_api(request).set_metadata, context(request), server_id, new, False,
               "update")
    return FastJSON({"meta": new})


@router.delete(V + "/servers/{server_id}/metadata/{key}", status_code=204)
def delete_metadata_item(request: Request, server_id: str, key: str) -> Response:
    _api(request).delete_metadata_key(context(request), server_id, key)
    return Response(status_code=204)


# ---------------------------------------------------------------- volume attachments
@router.get(V + "/servers/{server_id}/os-volume_attachments")
def list_volume_attachments(request: Request, server_id: str) -> FastJSON:
    return FastJSON({"volumeAttachments": _extras(request).list_attachments(
        context(request), server_id, _version(request))})


@router.get(V + "/servers/{server_id}/os-volume_attachments/{volume_id}")
def show_volume_attachment(request: Request, server_id: str, volume_id: str) -> FastJSON:
    return FastJSON({"volumeAttachment": _extras(request).show_attachment(
        context(request), server_id, volume_id, _version(request))})


@router.post(V + "/servers/{server_id}/os-volume_attachments")
async def attach_volume(request: Request, server_id: str) -> FastJSON:
    body = await json_body(request, schemas.ATTACH_VOLUME)
    return FastJSON({"volumeAttachment": await _run(
        _extras(request).attach, context(request), server_id, body, _version(request))})


@router.put(V + "/servers/{server_id}/os-volume_attachments/{volume_id}")
async def update_volume_attachment(request: Request, server_id: str,
                                   volume_id: str) -> Response:
    body = await json_body(request, schemas.UPDATE_ATTACHMENT)
    await _run(_extras(request).update_attachment, context(request), server_id, volume_id,
               body, _version(request))
    return Response(status_code=202)


@router.delete(V + "/servers/{server_id}/os-volume_attachments/{volume_id}",
               status_code=202)
async def detach_volume(request: Request, server_id: str, volume_id: str) -> Response:
    await _run(_extras(request).detach, context(request), server_id, volume_id)
    return Response(status_code=202)


# ---------------------------------------------------------------- keypairs
def _params(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


@router.get(V + "/os-keypairs")
def list_keypairs(request: Request) -> FastJSON:
    return FastJSON(_api(request).keypairs.list(context(request), _params(request),
                                                _version(request)))


@router.post(V + "/os-keypairs")
async def create_keypair(request: Request) -> FastJSON:
    body = await json_body(request)
    version = _version(request)
    keypair = await _run(_api(request).keypairs.create, context(request), body, version)
    return FastJSON({"keypair": keypair}, status_code=201 if version >= (2, 2) else 200)


@router.get(V + "/os-keypairs/{name}")
def show_keypair(request: Request, name: str) -> FastJSON:
    return FastJSON({"keypair": _api(request).keypairs.show(
        context(request), name, _params(request), _version(request))})


@router.delete(V + "/os-keypairs/{name}")
def delete_keypair(request: Request, name: str) -> Response:
    version = _version(request)
    _api(request).keypairs.delete(context(request), name, _params(request), version)
    return Response(status_code=204 if version >= (2, 2) else 202)


# ---------------------------------------------------------------- actions, quotas
@router.get(V + "/os-migrations")
def list_migrations(request: Request) -> FastJSON:
    return FastJSON(migrations.list_migrations(_api(request), context(request),
                                               dict(request.query_params), _version(request)))


def _live(request: Request) -> live_migration.LiveMigrations:
    return live_migration.LiveMigrations(_api(request))


def _since(request: Request, version: tuple[int, int]) -> None:
    """Nova's server-migrations routes exist from their microversion on (404 before)."""
    if _version(request) < version:
        raise NotFound("The resource could not be found.")


@router.get(V + "/servers/{server_id}/migrations")
def list_server_migrations(request: Request, server_id: str) -> FastJSON:
    # answered below 2.23 too (an empty list before any live migration, as ever here)
    return FastJSON(_live(request).list(context(request), server_id, _version(request)))


@router.get(V + "/servers/{server_id}/migrations/{migration_id}")
def show_server_migration(request: Request, server_id: str, migration_id: str) -> FastJSON:
    _since(request, (2, 23))
    return FastJSON(_live(request).show(context(request), server_id, migration_id,
                                        _version(request)))


@router.delete(V + "/servers/{server_id}/migrations/{migration_id}", status_code=202)
async def abort_server_migration(request: Request, server_id: str,
                                 migration_id: str) -> Response:
    _since(request, (2, 24))
    await _run(_live(request).abort, context(request), server_id, migration_id,
               _version(request))
    return Response(status_code=202)


@router.post(V + "/servers/{server_id}/migrations/{migration_id}/action", status_code=202)
async def server_migration_action(request: Request, server_id: str,
                                  migration_id: str) -> Response:
    _since(request, (2, 22))
    body = await json_body(request)
    await _run(_live(request).force_complete, context(request), server_id, migration_id,
               body)
    return Response(status_code=202)


@router.get(V + "/servers/{server_id}/os-instance-actions")
def list_instance_actions(request: Request, server_id: str) -> FastJSON:
    return FastJSON({"instanceActions": _extras(request).list_actions(
        context(request), server_id, _version(request))})


@router.get(V + "/servers/{server_id}/os-instance-actions/{request_id}")
def show_instance_action(request: Request, server_id: str, request_id: str) -> FastJSON:
    return FastJSON({"instanceAction": _extras(request).show_action(
        context(request), server_id, request_id, _version(request))})


def _no_user_quota(request: Request) -> None:
    """Nova keeps quotas per user too; strato's are per project only (501, not a
    silent change of the project's)."""
    if request.query_params.get("user_id"):
        raise PerUserQuota()


@router.get(V + "/os-quota-sets/{project_id}")
def show_quota(request: Request, project_id: str) -> FastJSON:
    # a user's quota set falls back to the project's, which is all strato has
    return FastJSON({"quota_set": _extras(request).quota_set(
        context(request), project_id, False, _version(request))})


@router.get(V + "/os-quota-sets/{project_id}/detail")
def show_quota_detail(request: Request, project_id: str) -> FastJSON:
    return FastJSON({"quota_set": _extras(request).quota_set(
        context(request), project_id, True, _version(request))})


@router.get(V + "/os-quota-sets/{project_id}/defaults")
def show_quota_defaults(request: Request, project_id: str) -> FastJSON:
    return FastJSON({"quota_set": _extras(request).quota_set(
        context(request), project_id, False, _version(request), defaults=True)})


@router.put(V + "/os-quota-sets/{project_id}")
async def update_quota(request: Request, project_id: str) -> FastJSON:
    _no_user_quota(request)
    body = await json_body(request, schemas.UPDATE_QUOTA)
    return FastJSON({"quota_set": await _run(_extras(request).update_quota,
                                             context(request), project_id, body,
                                             _version(request))})


@router.delete(V + "/os-quota-sets/{project_id}", status_code=202)
def delete_quota(request: Request, project_id: str) -> Response:
    _no_user_quota(request)
    _extras(request).delete_quota(context(request), project_id)
    return Response(status_code=202)
