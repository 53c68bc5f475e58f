"""Block storage reads of the service itself: os-services, os-hosts, scheduler pools,
capabilities, availability zones, extensions and limits (Cinder v3)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from strato.api.common import context, json_body, query, services
from strato.api.volume import P, _project
from strato.volume.reads import VolumeReads

router = APIRouter(prefix="/volume")


def _reads(request: Request) -> VolumeReads:
    return VolumeReads(services(request).volume)


@router.get(P + "/os-services")
def list_services(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return {"services": _reads(request).services(context(request), query(request))}


@router.put(P + "/os-services/{action}")
async def service_action(request: Request, project_id: str, action: str) -> dict:
    _project(request, project_id)
    body = await json_body(request)
    _reads(request).service_action(context(request), action, body)
    return {}


@router.get(P + "/os-hosts")
def list_hosts(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return {"hosts": _reads(request).hosts(context(request))}


@router.get(P + "/os-hosts/{host}")
def show_host(request: Request, project_id: str, host: str) -> dict:
    _project(request, project_id)
    return {"host": _reads(request).show_host(context(request), host)}


@router.get(P + "/scheduler-stats/get_pools")
def get_pools(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    detail = query(request).get("detail", "false").lower() in ("true", "1", "yes")
    return {"pools": _reads(request).pools(context(request), detail)}


@router.get(P + "/capabilities/{host}")
def capabilities(request: Request, project_id: str, host: str) -> dict:
    _project(request, project_id)
    return _reads(request).capabilities(context(request), host)


@router.get(P + "/os-availability-zone")
def availability_zones(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return {"availabilityZoneInfo": _reads(request).availability_zones()}


@router.get(P + "/extensions")
def extensions(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return {"extensions": VolumeReads.extensions()}


@router.get(P + "/limits")
def limits(request: Request, project_id: str) -> dict:
    _project(request, project_id)
    return {"limits": _reads(request).limits(context(request))}
