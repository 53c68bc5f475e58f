"""Block storage API families of Cinder's reference that strato does not implement:
they answer 501 in Cinder's fault format (``notImplemented``), never 404, so a client
can tell "not here" from "no such thing".  Included after every implemented volume
route, so none of those is shadowed."""

from __future__ import annotations

from fastapi import APIRouter, Request

from strato.api.common import context, services
from strato.api.volume import P, _project
from strato.exceptions import NotSupported

router = APIRouter(prefix="/volume")

# Families (the first path segment after the project) and what they are.
UNSUPPORTED = {
    "groups": "generic volume groups", "group_types": "group types",
    "group_snapshots": "group snapshots", "consistencygroups": "consistency groups",
    "cgsnapshots": "consistency group snapshots", "qos-specs": "QoS specifications",
    "backups": "volume backups", "os-quota-class-sets": "quota classes",
    "os-volume-manage": "volume manage", "manageable_volumes": "volume manage",
    "os-snapshot-manage": "snapshot manage", "manageable_snapshots": "snapshot manage",
    "clusters": "clusters", "workers": "workers cleanup",
    "default-types": "project default volume types", "resource_filters": "resource filters",
    "os-backup-services": "backup services",
}
METHODS = ["GET", "POST", "PUT", "DELETE"]


def _refuse(request: Request, project_id: str, what: str) -> None:
    _project(request, project_id)
    raise NotSupported(f"The block storage API for {what} is not implemented.")


@router.api_route(P + "/types/{type_id}/encryption", methods=METHODS)
@router.api_route(P + "/types/{type_id}/encryption/{encryption_id}", methods=METHODS)
def encryption(request: Request, project_id: str, type_id: str) -> None:
    """Cinder looks the type up first: an unknown one is 404."""
    _project(request, project_id)
    services(request).volume.show_type(context(request), type_id)
    _refuse(request, project_id, "volume type encryption")


def _family(what: str):  # type: ignore[no-untyped-def]
    def refuse(request: Request, project_id: str) -> None:
        _refuse(request, project_id, what)
    return refuse


# One literal route per family (a pattern would also catch the methods an implemented
# route does not allow, turning their 405 into something else).
# The reference's paths are at most three segments below a family
# (``/group_types/{id}/group_specs/{key}``).
for _name, _what in UNSUPPORTED.items():
    for _tail in ("", "/{a}", "/{a}/{b}", "/{a}/{b}/{c}"):
        router.add_api_route(P + f"/{_name}{_tail}", _family(_what), methods=METHODS)
