"""Routes of the API references that strato does not implement: 501, not 404.

Every (method, path) of the compute v2.1, block storage v3, image v2, identity v3 and
networking v2.0 references (``reference_routes.ROUTES``) gets a route here that answers
the service's own fault with 501 Not Implemented, so a client can tell "this cloud does
not do that" from "no such thing". This router is included LAST in the app: a real route
always matches first, so it only answers where nothing else does. Exceptions follow the
real services: Nova's obsolete APIs answer 410 Gone; a Neutron resource whose extension
strato does not load answers 404, as Neutron does (its routes do not exist there).

The action dispatchers use :func:`unsupported_action` for an action name they lack:
501 when the reference lists it, 400 when it is no action at all.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute, Match

from strato.api.microversions import APIVersion
from strato.api.reference_routes import ACTIONS, ROUTES
from strato.exceptions import BadRequest, Gone, NotFound, NotSupported, StratoError
from strato.network.errors import NotFound as NeutronNotFound

# Where each service is mounted (DevStack's layout).
MOUNTS = {"compute": "/compute", "volume": "/volume", "image": "/image",
          "identity": "/identity", "networking": "/networking"}

REFERENCE_SERVER_ACTIONS: frozenset[str] = frozenset(ACTIONS["compute:servers"])
REFERENCE_VOLUME_ACTIONS: frozenset[str] = frozenset(ACTIONS["volume:volumes"])

# Neutron answers 404 for the routes of an extension it has not loaded (they do not
# exist there). strato's networking router answers 404 for a collection it does not
# have (subnetpools included: core in Neutron, absent here), so only the sections of
# the extensions strato loads (strato.api.network.EXTENSIONS) answer 501 for a route
# they lack; their member actions that belong to another extension (extraroute-atomic,
# external-gateway-multihoming) answer 404 like the rest.
NEUTRON_LOADED = frozenset({
    "versions", "extensions", "networks", "subnets", "ports", "routers", "floatingips",
    "security-groups", "security-group-rules", "quotas", "quota_details", "tags",
})
NEUTRON_OTHER_EXTENSION_ACTIONS = ("_extraroutes", "_external_gateways")


# Nova's proxy APIs: past this microversion Nova answers 404 (api-ref, per section);
# image metadata lasts until 2.38.
NOVA_LAST_VERSION = {
    "images": APIVersion(2, 35), "os-volumes": APIVersion(2, 35),
    "os-networks": APIVersion(2, 35), "os-tenant-network": APIVersion(2, 35),
    "os-floating-ips": APIVersion(2, 35), "os-floating-ip-pools": APIVersion(2, 35),
    "os-security-groups": APIVersion(2, 35), "os-security-group-rules": APIVersion(2, 35),
    "os-baremetal-nodes": APIVersion(2, 35), "os-hosts": APIVersion(2, 42),
}
IMAGE_METADATA_LAST_VERSION = APIVersion(2, 38)


def unsupported_action(name: str, reference: frozenset[str]) -> StratoError:
    """The error for an action body a dispatcher has no handler for."""
    if name in reference:
        return NotSupported(f"The action {name} is not implemented by this cloud.")
    return BadRequest(f"There is no such action: {name}")


@dataclass(frozen=True)
class RefRoute:
    service: str
    method: str
    path: str  # full path template, mount point included
    section: str  # the api-ref section (file) it is documented in
    status: int  # what strato answers when it does not implement it

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


def reference_routes() -> list[RefRoute]:
    out = []
    for service, method, path, section, status in ROUTES:
        if service == "networking" and (
                section not in NEUTRON_LOADED
                or path.endswith(NEUTRON_OTHER_EXTENSION_ACTIONS)):
            status = 404
        out.append(RefRoute(service, method, MOUNTS[service] + path, section, status))
    return out


def _past_last_version(ref: RefRoute, request: Request) -> bool:
    last = NOVA_LAST_VERSION.get(ref.section) if ref.service == "compute" else None
    if last is None:
        return False
    if ref.section == "images" and "/metadata" in ref.path:
        last = IMAGE_METADATA_LAST_VERSION
    version = getattr(request.scope.get("state", {}).get("context"), "microversion", None)
    return bool(version) and APIVersion.parse(version) > last


def find_server(svc: Any, ctx: Any, row_id: str) -> None:
    with svc.compute.db.session(readonly=True) as session:
        svc.compute.get_row(session, ctx, row_id)


def find_volume(svc: Any, ctx: Any, row_id: str) -> None:
    with svc.volume.db.session(readonly=True) as session:
        svc.volume.get_volume_row(session, ctx, row_id)


def _find_snapshot(svc: Any, ctx: Any, row_id: str) -> None:
    with svc.volume.db.session(readonly=True) as session:
        svc.volume.get_snapshot_row(session, ctx, row_id)


# The resource a sub-route hangs off, which Nova, Cinder and Glance load before anything
# else: a missing one is 404 even where the sub-route is not supported.
PARENTS: tuple[tuple[re.Pattern[str], Callable[[Any, Any, str], None]], ...] = (
    (re.compile(r"^/compute/v2\.1/servers/\{[^}]+\}/"), find_server),
    (re.compile(r"^/volume/v3/\{project_id\}/volumes/\{[^}]+\}/"), find_volume),
    (re.compile(r"^/volume/v3/\{project_id\}/snapshots/\{[^}]+\}/"), _find_snapshot),
    (re.compile(r"^/volume/v3/\{project_id\}/types/\{[^}]+\}/"),
     lambda svc, ctx, row_id: svc.volume.show_type(ctx, row_id)),
    (re.compile(r"^/image/v2/images/\{[^}]+\}/"),
     lambda svc, ctx, row_id: svc.image.show(ctx, row_id)),
)


async def check_parent(ref: RefRoute, request: Request) -> None:
    """Raise the owner's NotFound when the resource the route hangs off is missing."""
    for pattern, find in PARENTS:
        match = pattern.match(ref.path)
        if match:
            name = match.group(0).rstrip("/").rsplit("{", 1)[1].rstrip("}")
            ctx = request.scope.get("state", {}).get("context")
            await run_in_threadpool(find, request.app.state.services, ctx,
                                    request.path_params[name])
            return


def _error(ref: RefRoute, request: Request) -> StratoError:
    if _past_last_version(ref, request):
        return NotFound("The resource could not be found.")
    if ref.status == 410:
        return Gone(f"{ref.method} {ref.path} was removed from the Compute API.")
    if ref.status == 404 and ref.service == "networking":
        return NeutronNotFound("The resource could not be found.")
    if ref.status == 404:
        return NotFound("The resource could not be found.")
    return NotSupported(f"{ref.method} {ref.path} ({ref.section}) is not implemented by "
                        "this cloud.")


def _endpoint(by_method: dict[str, RefRoute]) -> Callable[[Request], Awaitable[None]]:
    async def not_implemented(request: Request) -> None:
        ref = by_method[request.method]
        if not _past_last_version(ref, request):
            await check_parent(ref, request)
        raise _error(ref, request)
    not_implemented.strato_unimplemented = True  # type: ignore[attr-defined]
    return not_implemented


def _build() -> APIRouter:
    router = APIRouter()
    by_path: dict[str, dict[str, RefRoute]] = {}
    for ref in reference_routes():
        by_path.setdefault(ref.path, {})[ref.method] = ref
    # Literal segments before parameters, so the most specific template is tried first
    # (all answer the same way; this only keeps the section in the message exact).
    for path in sorted(by_path, key=lambda p: (p.count("{"), p)):
        methods = by_path[path]
        router.add_api_route(path, _endpoint(methods), methods=sorted(methods),
                             include_in_schema=False, response_model=None)
    return router


router = _build()


def is_unimplemented(route: BaseRoute) -> bool:
    return getattr(getattr(route, "endpoint", None), "strato_unimplemented", False)


def flat_routes(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """An app's routes in matching order, included routers opened up."""
    out: list[BaseRoute] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out += flat_routes(inner.routes) if inner is not None else [route]
    return out


# ------------------------------------------------------------ what strato implements
_PARAM = re.compile(r"\{[^}]*\}")


def _collections() -> Iterable[str]:
    from strato.api.network import BY_COLLECTION  # lazy: the dispatchers import this module
    return BY_COLLECTION


# Generic templates of strato's routers and the values their parameter takes.
_EXPANSIONS: dict[str, Callable[[], Iterable[str]]] = {
    "collection": _collections,
    "kind": lambda: ("volumes", "snapshots"),
}


def _shape(path: str) -> str:
    return _PARAM.sub("{}", path.rstrip("/"))


def implemented_shapes(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path shape) of every route the app's own routers serve: the 501 routes
    left out, generic parameters (a Neutron collection, a metadata owner) expanded."""
    out: set[tuple[str, str]] = set()
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if not path or not methods:
            continue
        paths = [path]
        for name, values in _EXPANSIONS.items():
            token = "{" + name + "}"
            paths = [p.replace(token, v) for p in paths for v in values()] \
                if any(token in p for p in paths) else paths
        out |= {(m, _shape(p)) for p in paths for m in methods}
    return out


def route_status(routes: Iterable[BaseRoute]) -> list[tuple[RefRoute, bool]]:
    """Each reference route and whether strato implements it (the app's own routes,
    compared by shape: the same literal segments, any parameter names)."""
    own = implemented_shapes(r for r in flat_routes(routes) if not is_unimplemented(r))
    return [(ref, (ref.method, _shape(ref.path)) in own) for ref in reference_routes()]


def shadowed(routes: Iterable[BaseRoute]) -> dict[RefRoute, str]:
    """Unimplemented reference routes that one of strato's own routes answers before the
    501 table can (a literal segment such as ``types/default`` taken for an id), each
    with the template that answers it: what a client really gets there."""
    flat = flat_routes(routes)
    out: dict[RefRoute, str] = {}
    for ref, ok in route_status(flat):
        if ok or ref.status == 404:
            continue
        scope = {"type": "http", "method": ref.method, "root_path": "",
                 "path": _PARAM.sub("00000000-0000-4000-8000-000000000001", ref.path)}
        chosen = next((r for r in flat if r.matches(scope)[0] == Match.FULL), None)
        if chosen is not None and not is_unimplemented(chosen):
            out[ref] = getattr(chosen, "path", "?")
    return out
