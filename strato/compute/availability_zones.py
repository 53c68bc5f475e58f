"""os-availability-zone: the zones of the compute hosts (from aggregates' metadata),
and, for admins, every service of every zone (the scheduler's and conductor's host is
in the ``internal`` zone, as in Nova)."""

from __future__ import annotations

from typing import Any

from strato.compute.hosts import COMPUTE, Hosts, host_zone
from strato.compute.views import iso_us
from strato.context import RequestContext

P = "os_compute_api:"


class AvailabilityZones:
    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts

    def list(self, ctx: RequestContext, detail: bool) -> list[dict[str, Any]]:
        h = self.hosts
        h.policy.enforce(ctx, P + ("os-availability-zone:detail" if detail
                                   else "os-availability-zone:list"), {})
        zones: dict[str, dict[str, dict[str, Any]]] = {}
        enabled: dict[str, bool] = {}
        with h.db.session() as session:
            for rec, node in h._records(session):
                zone = host_zone(session, rec.host) if rec.binary == COMPUTE \
                    else "internal"
                if rec.binary == COMPUTE:
                    enabled[zone] = enabled.get(zone, False) or not rec.disabled
                zones.setdefault(zone, {}).setdefault(rec.host, {})[rec.binary] = {
                    "available": h._up(rec, node), "active": not rec.disabled,
                    "updated_at": iso_us(h._updated(rec, node))}
        out = []
        for zone in sorted(zones):
            if zone == "internal":
                if detail:
                    out.append({"zoneName": zone, "zoneState": {"available": True},
                                "hosts": zones[zone]})
                continue
            available = enabled.get(zone, False)
            out.append({"zoneName": zone, "zoneState": {"available": available},
                        "hosts": zones[zone] if detail and available else None})
        return out
