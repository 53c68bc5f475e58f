"""Nova's everyday read APIs under /compute/v2.1: availability zones, limits, tenant
usage, services, hypervisors, server groups, aggregates, quota classes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from strato.api.common import context, json_body, query, services
from strato.api.compute import FastJSON, _run, _version
from strato.compute.aggregates import Aggregates
from strato.compute.availability_zones import AvailabilityZones
from strato.compute.hosts import Hosts, OsHosts
from strato.compute.limits import Limits
from strato.compute.server_groups import ServerGroups
from strato.compute.usage import TenantUsage
from strato.exceptions import NotFound

router = APIRouter(prefix="/compute/v2.1")


def _api(request: Request) -> Any:
    return services(request).compute


# ---------------------------------------------------------------- availability zones
@router.get("/os-availability-zone")
def list_zones(request: Request) -> FastJSON:
    zones = AvailabilityZones(Hosts(_api(request))).list(context(request), False)
    return FastJSON({"availabilityZoneInfo": zones})


@router.get("/os-availability-zone/detail")
def list_zones_detail(request: Request) -> FastJSON:
    zones = AvailabilityZones(Hosts(_api(request))).list(context(request), True)
    return FastJSON({"availabilityZoneInfo": zones})


# ---------------------------------------------------------------- limits
@router.get("/limits")
def show_limits(request: Request) -> FastJSON:
    return FastJSON(Limits(_api(request)).show(context(request), query(request),
                                               _version(request)))


# ---------------------------------------------------------------- tenant usage
@router.get("/os-simple-tenant-usage")
def list_usage(request: Request) -> FastJSON:
    return FastJSON(TenantUsage(_api(request)).list(context(request), query(request),
                                                    _version(request)))


@router.get("/os-simple-tenant-usage/")
def usage_without_project(request: Request) -> FastJSON:
    """An empty project id names no project (Nova: 404), not the list."""
    raise NotFound("The resource could not be found.")


@router.get("/os-simple-tenant-usage/{project_id}")
def show_usage(request: Request, project_id: str) -> FastJSON:
    return FastJSON(TenantUsage(_api(request)).show(context(request), project_id,
                                                    query(request), _version(request)))


# ---------------------------------------------------------------- services
_LEGACY = ("enable", "disable", "disable-log-reason", "force-down")


@router.get("/os-services")
def list_services(request: Request) -> FastJSON:
    return FastJSON({"services": Hosts(_api(request)).list_services(
        context(request), query(request), _version(request))})


@router.put("/os-services/{service_id}")
async def update_service(request: Request, service_id: str) -> FastJSON:
    body = await json_body(request)
    version = _version(request)
    hosts = Hosts(_api(request))
    if version < (2, 53):
        if service_id not in _LEGACY:
            raise NotFound("The resource could not be found.")
        out = await _run(hosts.legacy_action, context(request), service_id, body, version)
    else:
        out = await _run(hosts.update_service, context(request), service_id, body, version)
    return FastJSON({"service": out})


@router.delete("/os-services/{service_id}", status_code=204)
def delete_service(request: Request, service_id: str) -> Response:
    Hosts(_api(request)).delete_service(context(request), service_id, _version(request))
    return Response(status_code=204)


# ---------------------------------------------------------------- hypervisors
@router.get("/os-hypervisors")
def list_hypervisors(request: Request) -> FastJSON:
    return FastJSON(Hosts(_api(request)).list_hypervisors(
        context(request), query(request), False, _version(request)))


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(request: Request) -> FastJSON:
    return FastJSON(Hosts(_api(request)).list_hypervisors(
        context(request), query(request), True, _version(request)))


@router.get("/os-hypervisors/statistics")
def hypervisor_statistics(request: Request) -> FastJSON:
    return FastJSON({"hypervisor_statistics": Hosts(_api(request)).statistics(
        context(request), _version(request))})


@router.get("/os-hypervisors/{hyp_id}")
def show_hypervisor(request: Request, hyp_id: str) -> FastJSON:
    return FastJSON({"hypervisor": Hosts(_api(request)).show_hypervisor(
        context(request), hyp_id, query(request), _version(request))})


@router.get("/os-hypervisors/{hyp_id}/uptime")
def hypervisor_uptime(request: Request, hyp_id: str) -> FastJSON:
    return FastJSON({"hypervisor": Hosts(_api(request)).uptime(
        context(request), hyp_id, _version(request))})


@router.get("/os-hypervisors/{pattern}/search")
def search_hypervisors(request: Request, pattern: str) -> FastJSON:
    return FastJSON({"hypervisors": Hosts(_api(request)).search(
        context(request), pattern, False, _version(request))})


@router.get("/os-hypervisors/{pattern}/servers")
def hypervisor_servers(request: Request, pattern: str) -> FastJSON:
    return FastJSON({"hypervisors": Hosts(_api(request)).search(
        context(request), pattern, True, _version(request))})


# ---------------------------------------------------------------- os-hosts (< 2.43)
@router.get("/os-hosts")
def list_hosts(request: Request) -> FastJSON:
    return FastJSON({"hosts": OsHosts(Hosts(_api(request))).list(
        context(request), query(request), _version(request))})


@router.get("/os-hosts/{host}")
def show_host(request: Request, host: str) -> FastJSON:
    return FastJSON({"host": OsHosts(Hosts(_api(request))).show(
        context(request), host, _version(request))})


@router.put("/os-hosts/{host}")
async def update_host(request: Request, host: str) -> FastJSON:
    body = await json_body(request)
    return FastJSON(await _run(OsHosts(Hosts(_api(request))).update, context(request),
                               host, body, _version(request)))


@router.get("/os-hosts/{host}/{action}")
def host_power_action(request: Request, host: str, action: str) -> FastJSON:
    if action not in ("startup", "shutdown", "reboot"):
        raise NotFound("The resource could not be found.")
    OsHosts(Hosts(_api(request))).power(context(request), host, action, _version(request))
    raise AssertionError("unreachable")  # power() always raises


# ---------------------------------------------------------------- server groups
def _groups(request: Request) -> ServerGroups:
    api = _api(request)
    return ServerGroups(api, Limits(api))


@router.get("/os-server-groups")
def list_server_groups(request: Request) -> FastJSON:
    return FastJSON({"server_groups": _groups(request).list(
        context(request), query(request), _version(request))})


@router.post("/os-server-groups")
async def create_server_group(request: Request) -> FastJSON:
    body = await json_body(request)
    return FastJSON({"server_group": await _run(_groups(request).create, context(request),
                                                body, _version(request))})


@router.get("/os-server-groups/{group_id}")
def show_server_group(request: Request, group_id: str) -> FastJSON:
    return FastJSON({"server_group": _groups(request).show(context(request), group_id,
                                                           _version(request))})


@router.delete("/os-server-groups/{group_id}", status_code=204)
def delete_server_group(request: Request, group_id: str) -> Response:
    _groups(request).delete(context(request), group_id)
    return Response(status_code=204)


# ---------------------------------------------------------------- aggregates
@router.get("/os-aggregates")
def list_aggregates(request: Request) -> FastJSON:
    return FastJSON({"aggregates": Aggregates(_api(request)).list(context(request),
                                                                  _version(request))})


@router.post("/os-aggregates")
async def create_aggregate(request: Request) -> FastJSON:
    body = await json_body(request)
    return FastJSON({"aggregate": await _run(Aggregates(_api(request)).create,
                                             context(request), body, _version(request))})


@router.get("/os-aggregates/{agg_id}")
def show_aggregate(request: Request, agg_id: str) -> FastJSON:
    return FastJSON({"aggregate": Aggregates(_api(request)).show(context(request), agg_id,
                                                                 _version(request))})


@router.put("/os-aggregates/{agg_id}")
async def update_aggregate(request: Request, agg_id: str) -> FastJSON:
    body = await json_body(request)
    return FastJSON({"aggregate": await _run(Aggregates(_api(request)).update,
                                             context(request), agg_id, body,
                                             _version(request))})


@router.delete("/os-aggregates/{agg_id}")
def delete_aggregate(request: Request, agg_id: str) -> Response:
    Aggregates(_api(request)).delete(context(request), agg_id)
    return Response(status_code=200)


@router.post("/os-aggregates/{agg_id}/action")
async def aggregate_action(request: Request, agg_id: str) -> FastJSON:
    body = await json_body(request)
    return FastJSON({"aggregate": await _run(Aggregates(_api(request)).action,
                                             context(request), agg_id, body,
                                             _version(request))})


# ---------------------------------------------------------------- quota classes
@router.get("/os-quota-class-sets/{class_name}")
def show_quota_class(request: Request, class_name: str) -> FastJSON:
    return FastJSON({"quota_class_set": Limits(_api(request)).show_class(
        context(request), class_name, _version(request))})


@router.put("/os-quota-class-sets/{class_name}")
async def update_quota_class(request: Request, class_name: str) -> FastJSON:
    body = await json_body(request)
    return FastJSON({"quota_class_set": await _run(Limits(_api(request)).update_class,
                                                   context(request), class_name, body,
                                                   _version(request))})
