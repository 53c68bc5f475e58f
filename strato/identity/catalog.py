"""The service catalog: every service of this deployment, on DevStack's paths."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

INTERFACES = ("public", "internal", "admin")
_NS = uuid.UUID("5c1f3b0e-8a35-4c5e-9d8e-7c4b8a1e2f60")


@dataclass(frozen=True)
class Service:
    type: str
    name: str
    path: str  # below the public endpoint; may hold %(project_id)s


SERVICES = (
    Service("identity", "keystone", "/identity"),
    Service("compute", "nova", "/compute/v2.1"),
    Service("image", "glance", "/image"),
    Service("block-storage", "cinder", "/volume/v3/%(project_id)s"),
    Service("volumev3", "cinderv3", "/volume/v3/%(project_id)s"),
    # DevStack's path without the version: the client appends /v2.0
    Service("network", "neutron", "/networking"),
)


def stable_id(*parts: str) -> str:
    """Ids that do not change between restarts, since the catalog is not stored."""
    return uuid.uuid5(_NS, "/".join(parts)).hex


def catalog(base_url: str, region: str, project_id: str | None) -> list[dict]:
    """The token's ``catalog``; empty for an unscoped token, as Keystone's."""
    if project_id is None:
        return []
    entries = []
    for svc in SERVICES:
        url = base_url + svc.path % {"project_id": project_id}
        entries.append({
            "id": stable_id("service", svc.type),
            "type": svc.type,
            "name": svc.name,
            "endpoints": [
                {
                    "id": stable_id("endpoint", svc.type, iface),
                    "interface": iface,
                    "region": region,
                    "region_id": region,
                    "url": url,
                }
                for iface in INTERFACES
            ],
        })
    return entries


def services() -> list[dict]:
    return [
        {"id": stable_id("service", s.type), "type": s.type, "name": s.name, "enabled": True}
        for s in SERVICES
    ]


def endpoints(base_url: str, region: str) -> list[dict]:
    """Endpoints as ``GET /v3/endpoints`` lists them (project id left as a template)."""
    return [
        {
            "id": stable_id("endpoint", s.type, iface),
            "service_id": stable_id("service", s.type),
            "interface": iface,
            "region": region,
            "region_id": region,
            "url": base_url + s.path.replace("%(project_id)s", "$(project_id)s"),
            "enabled": True,
        }
        for s in SERVICES
        for iface in INTERFACES
    ]
