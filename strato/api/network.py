"""Neutron v2.0 at DevStack's ``/networking``: resources, quotas, extensions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from strato.api.common import base_url, context, json_body, services
from strato.network.api import NetworkAPI
from strato.network.errors import not_found
from strato.network.query import listing, pick

router = APIRouter(prefix="/networking")

EXTENSIONS = {
    "external-net": ("Neutron external network", "Adds external network attribute to "
                     "network resource."),
    "router": ("Neutron L3 Router", "Router abstraction for basic L3 forwarding between "
               "L2 Neutron networks and access to external networks via a NAT gateway."),
    "ext-gw-mode": ("Neutron L3 Configurable external gateway mode", "Extension of the "
                    "router abstraction for specifying whether SNAT should occur on the "
                    "external gateway"),
    "quotas": ("Quota management support", "Expose functions for quotas management per "
               "tenant"),
    "quota_details": ("Quota details management support", "Expose functions for quotas "
                      "usage statistics per project"),
    "security-group": ("security-group", "The security groups extension."),
    "stateful-security-group": ("Stateful security group", "Indicates if the security "
                                "group is stateful or not"),
    "port-security": ("Port Security", "Provides port security"),
    "binding": ("Port Binding", "Expose port bindings of a virtual port to external "
                "application"),
    "allowed-address-pairs": ("Allowed Address Pairs", "Provides allowed address pairs"),
    "standard-attr-description": ("standard-attr-description", "Extension to add "
                                  "descriptions to standard attributes"),
    "standard-attr-timestamp": ("Resource timestamps", "Adds created_at and updated_at "
                                "fields to all Neutron resources that have Neutron standard "
                                "attributes."),
    "standard-attr-revisions": ("Resource revision numbers", "This extension will display "
                                "the revision number of neutron resources."),
    "standard-attr-tag": ("Tag support for resources with standard attribute", "Enables "
                          "to set tag on resources with standard attribute."),
    "fip-port-details": ("Floating IP Port Details Extension", "Add port_details "
                         "attribute to Floating IP resource"),
    "project-id": ("project_id field enabled", "Extension that indicates that project_id "
                   "field is enabled."),
    "pagination": ("Pagination support", "Extension that indicates that pagination is "
                   "enabled."),
    "sorting": ("Sorting support", "Extension that indicates that sorting is enabled."),
    "filter-validation": ("Filter parameters validation", "Provides validation on "
                          "filter parameters."),
    "net-mtu": ("Network MTU", "Provides MTU attribute for a network resource."),
}


def _api(request: Request) -> NetworkAPI:
    return services(request).network


def _version(request: Request) -> dict:
    return {"id": "v2.0", "status": "CURRENT",
            "links": [{"rel": "self", "href": f"{base_url(request)}/networking/v2.0/"}]}


@router.get("")
@router.get("/")
def versions(request: Request) -> dict:
    return {"versions": [_version(request)]}


@router.get("/v2.0")
@router.get("/v2.0/")
def v2(request: Request) -> dict:
    return {"resources": [
        {"name": name, "collection": plural,
         "links": [{"rel": "self", "href": f"{base_url(request)}/networking/v2.0/{plural}"}]}
        for name, plural in RESOURCES.items()]}


@router.get("/v2.0/extensions")
def extensions(request: Request) -> dict:
    return {"extensions": [_extension(alias) for alias in EXTENSIONS]}


def _extension(alias: str) -> dict:
    name, description = EXTENSIONS[alias]
    return {"alias": alias, "name": name, "description": description,
            "updated": "2013-01-01T10:00:00-00:00", "links": []}


@router.get("/v2.0/extensions/{alias}")
def extension(alias: str) -> dict:
    if alias not in EXTENSIONS:
        from strato.network.errors import NotFound

        raise NotFound(f"Extension with alias {alias} does not exist")
    return {"extension": _extension(alias)}


# ------------------------------------------------------------------ quotas
@router.get("/v2.0/quotas")
def list_quotas(request: Request) -> dict:
    return {"quotas": _api(request).list_quotas(context(request))}


@router.get("/v2.0/quotas/{project_id}/default")
def quota_default(request: Request, project_id: str) -> dict:
    return {"quota": _api(request).quota_defaults_for(context(request), project_id)}


@router.get("/v2.0/quotas/{project_id}/details")
def quota_details(request: Request, project_id: str) -> dict:
    return {"quota": _api(request).quota(context(request), project_id, detail=True)}


@router.get("/v2.0/quotas/{project_id}")
def quota_show(request: Request, project_id: str) -> dict:
    return {"quota": _api(request).quota(context(request), project_id)}


@router.put("/v2.0/quotas/{project_id}")
async def quota_update(request: Request, project_id: str) -> dict:
    body = await json_body(request)
    return {"quota": await run_in_threadpool(_api(request).update_quota, context(request),
                                             project_id, body)}


@router.delete("/v2.0/quotas/{project_id}", status_code=204)
def quota_delete(request: Request, project_id: str) -> Response:
    _api(request).delete_quota(context(request), project_id)
    return Response(status_code=204)


# ------------------------------------------------------------------ routers' actions
@router.put("/v2.0/routers/{router_id}/add_router_interface")
async def add_interface(request: Request, router_id: str) -> dict:
    body = await json_body(request)
    return await run_in_threadpool(_api(request).add_router_interface, context(request),
                                   router_id, body)


@router.put("/v2.0/routers/{router_id}/remove_router_interface")
async def remove_interface(request: Request, router_id: str) -> dict:
    body = await json_body(request)
    return await run_in_threadpool(_api(request).remove_router_interface, context(request),
                                   router_id, body)


# ------------------------------------------------------------------ resources
# singular -> collection; each has list/create/show/update/delete on NetworkAPI
RESOURCES = {
    "network": "networks", "subnet": "subnets", "port": "ports",
    "security_group": "security-groups", "security_group_rule": "security-group-rules",
    "router": "routers", "floatingip": "floatingips",
}
BY_COLLECTION = {plural: name for name, plural in RESOURCES.items()}


def _kind(collection: str) -> str:
    name = BY_COLLECTION.get(collection.removesuffix(".json"))
    if name is None:
        from strato.network.errors import NotFound

        raise NotFound("The resource could not be found.")
    return name


def _plural_key(name: str) -> str:
    return {"security_group": "security_groups",
            "security_group_rule": "security_group_rules"}.get(name, name + "s")


def _call(api: NetworkAPI, verb: str, name: str) -> Any:
    return getattr(api, f"{verb}_{_plural_key(name) if verb == 'list' else name}")


@router.get("/v2.0/{collection}")
def list_resources(request: Request, collection: str) -> dict:
    name = _kind(collection)
    views = _call(_api(request), "list", name)(context(request))
    return listing(views, list(request.query_params.multi_items()), _plural_key(name),
                   f"{base_url(request)}/networking/v2.0/{RESOURCES[name]}")


@router.post("/v2.0/{collection}", status_code=201)
async def create_resource(request: Request, collection: str) -> dict:
    name = _kind(collection)
    body = await json_body(request)
    view = await run_in_threadpool(_call(_api(request), "create", name), context(request),
                                   body)
    return {name: view}


@router.get("/v2.0/{collection}/{row_id}")
def show_resource(request: Request, collection: str, row_id: str) -> dict:
    name = _kind(collection)
    view = _call(_api(request), "show", name)(context(request), row_id.removesuffix(".json"))
    return {name: pick(view, list(request.query_params.multi_items()))}


@router.put("/v2.0/{collection}/{row_id}")
async def update_resource(request: Request, collection: str, row_id: str) -> dict:
    name = _kind(collection)
    body = await json_body(request)
    if name == "security_group_rule":
        raise not_found("security_group_rule", row_id)
    view = await run_in_threadpool(_call(_api(request), "update", name), context(request),
                                   row_id, body)
    return {name: view}


@router.delete("/v2.0/{collection}/{row_id}", status_code=204)
async def delete_resource(request: Request, collection: str, row_id: str) -> Response:
    name = _kind(collection)
    await run_in_threadpool(_call(_api(request), "delete", name), context(request), row_id)
    return Response(status_code=204)
