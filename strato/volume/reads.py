"""The block storage service's read-only admin and project views of itself: services,
hosts, pools, backend capabilities, availability zones, extensions and limits.

strato runs one scheduler and one volume worker per configured backend inside its
process, so every service is up while the API answers; the views say exactly that.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from strato.context import RequestContext
from strato.exceptions import BadRequest, NotFound, NotSupported
from strato.volume.api import VolumeAPI, iso
from strato.volume.models import Snapshot, Volume

VENDOR = "Open Source"
DRIVER_VERSION = "1.0.0"
# (alias, name, description) of the Cinder API extensions strato implements.
EXTENSIONS = (
    ("os-admin-actions", "AdminActions", "Enable admin actions."),
    ("os-availability-zone", "AvailabilityZones", "Describe Availability Zones."),
    ("capabilities", "Capabilities", "Capabilities support."),
    ("os-extended-snapshot-attributes", "ExtendedSnapshotAttributes",
     "Extended SnapshotAttributes support."),
    ("os-hosts", "Hosts", "Admin-only host administration."),
    ("os-quota-sets", "Quotas", "Quota management support."),
    ("scheduler-stats", "Scheduler_stats", "Scheduler stats support."),
    ("os-services", "Services", "Services support."),
    ("os-types-extra-specs", "TypesExtraSpecs", "Type extra specs support."),
    ("os-types-manage", "TypesManage", "Types manage support."),
    ("os-used-limits", "UsedLimits", "Provide data on limited resources that are being "
     "used."),
    ("os-volume-actions", "VolumeActions", "Enable volume actions."),
    ("os-vol-host-attr", "VolumeHostAttribute", "Expose host as an attribute of a volume."),
    ("os-vol-image-meta", "VolumeImageMetadata", "Show image metadata associated with the "
     "volume."),
    ("os-vol-mig-status-attr", "VolumeMigStatusAttribute", "Expose migration_status as an "
     "attribute of a volume."),
    ("os-vol-tenant-attr", "VolumeTenantAttribute", "Expose the internal project_id as an "
     "attribute of a volume."),
    ("os-volume-type-access", "VolumeTypeAccess", "Volume type access support."),
)


class VolumeReads:
    def __init__(self, api: VolumeAPI) -> None:
        self.api = api
        self.policy = api.policy
        self.host = api.conf.DEFAULT.host
        self.started = datetime.now(UTC)

    def _services(self) -> list[dict[str, Any]]:
        zone = self.api.conf.volume.storage_availability_zone
        rows = [("cinder-scheduler", self.host, zone)]
        rows += [("cinder-volume", f"{self.host}@{b.name}", b.availability_zone)
                 for b in self.api.backends.values()]
        return [{"binary": binary, "host": host, "zone": z, "status": "enabled",
                 "state": "up", "updated_at": iso(datetime.now(UTC)),
                 "disabled_reason": None} for binary, host, z in rows]

    def services(self, ctx: RequestContext, params: dict[str, str]) -> list[dict[str, Any]]:
        """``GET /os-services``: ``host`` matches a host or the host part of
        ``host@backend``, as Cinder's filter does."""
        self.policy.enforce(ctx, "volume_extension:services:index", {})
        out = self._services()
        if params.get("binary"):
            out = [s for s in out if s["binary"] == params["binary"]]
        if params.get("host"):
            host = params["host"]
            out = [s for s in out if host in (s["host"], s["host"].split("@", 1)[0])]
        return out

    def service_action(self, ctx: RequestContext, action: str, body: Any) -> None:
        """``PUT /os-services/{action}``: the requests are checked as Cinder checks
        them (an unknown host or binary is 404, freezing one is 400), but strato's
        services run inside its process and cannot be disabled or frozen: a valid
        request is 501."""
        self.policy.enforce(ctx, "volume_extension:services:update", {})
        body = body if isinstance(body, dict) else {}
        host, binary = body.get("host"), body.get("binary")
        host = host if isinstance(host, str) else None
        binary = binary if isinstance(binary, str) else None
        known = self._services()
        if action in ("freeze", "thaw"):
            if host not in {s["host"] for s in known if s["binary"] == "cinder-volume"}:
                raise BadRequest(f"Host {host} is not a volume backend.")
        elif action in ("enable", "disable", "disable-log-reason"):
            if action == "disable-log-reason" and not (
                    isinstance(body.get("disabled_reason"), str)
                    and body["disabled_reason"].strip()):
                raise BadRequest("Disabled reason contains invalid characters or is too "
                                 "long")
            if not any(s["host"] == host and s["binary"] == binary for s in known):
                raise NotFound(f"Service {binary} on host {host} could not be found.")
        elif action == "failover":
            pass
        else:
            raise NotFound("The resource could not be found.")
        raise NotSupported(f"os-services {action}: strato's volume services run "
                                     "in its own process and are always enabled.")

    def hosts(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """``GET /os-hosts``."""
        self.policy.enforce(ctx, "volume_extension:hosts", {})
        return [{"service-status": "available", "service": s["binary"], "zone": s["zone"],
                 "service-state": "enabled", "host_name": s["host"],
                 "last-update": s["updated_at"]} for s in self._services()]

    def show_host(self, ctx: RequestContext, host: str) -> list[dict[str, Any]]:
        """``GET /os-hosts/{host}``: the volume usage on a cinder-volume host, in total
        and per project (Cinder's numbers are strings here)."""
        self.policy.enforce(ctx, "volume_extension:hosts", {})
        if host not in {s["host"] for s in self._services()
                        if s["binary"] == "cinder-volume"}:
            raise NotFound(f"Host {host} could not be found.")
        like = f"{host}#%"
        with self.api.db.session(readonly=True) as session:
            vols = session.execute(select(Volume.project_id, func.count(), func.sum(
                Volume.size)).where(Volume.host.like(like)).group_by(Volume.project_id)).all()
            snaps = dict(((p, (n, g)) for p, n, g in session.execute(
                select(Snapshot.project_id, func.count(), func.sum(Snapshot.size)).join(
                    Volume, Volume.id == Snapshot.volume_id).where(
                    Volume.host.like(like)).group_by(Snapshot.project_id))))

        def resource(project: str, vc: int, vg: int, sc: int, sg: int) -> dict[str, Any]:
            return {"resource": {"host": host, "project": project, "volume_count": str(vc),
                                 "total_volume_gb": str(vg), "snapshot_count": str(sc),
                                 "total_snapshot_gb": str(sg)}}

        rows = [resource(p, n, g or 0, *(snaps.get(p, (0, 0)))) for p, n, g in vols]
        total = resource("(total)", sum(int(r["resource"]["volume_count"]) for r in rows),
                         sum(int(r["resource"]["total_volume_gb"]) for r in rows),
                         sum(n for n, _ in snaps.values()),
                         sum(g or 0 for _, g in snaps.values()))
        return [total, *rows]

    def _allocated(self) -> dict[str, float]:
        with self.api.db.session(readonly=True) as session:
            allocated: dict[str, float] = {}
            for host, size in session.execute(select(Volume.host, Volume.size).where(
                    Volume.host.is_not(None), Volume.status != "error")):
                name = self.api.backend_of(host)
                allocated[name] = allocated.get(name, 0) + size
        return allocated

    def pools(self, ctx: RequestContext, detail: bool) -> list[dict[str, Any]]:
        """``GET /scheduler-stats/get_pools``: one pool per backend."""
        self.policy.enforce(ctx, "scheduler_extension:scheduler_stats:get_pools", {})
        allocated = self._allocated()
        out = []
        for name, backend in self.api.backends.items():
            pool: dict[str, Any] = {"name": self.api.host_of(name)}
            if detail:
                caps = backend.capabilities
                pool["capabilities"] = {
                    "updated": iso(datetime.now(UTC)), "timestamp": iso(datetime.now(UTC)),
                    "QoS_support": False, "volume_backend_name": name,
                    "total_capacity_gb": round(backend.capacity_gb, 2),
                    "free_capacity_gb": round(max(0.0, backend.capacity_gb
                                                  - allocated.get(name, 0)), 2),
                    "reserved_percentage": self.api.conf.volume.reserved_percentage,
                    "driver_version": caps.get("driver_version", DRIVER_VERSION),
                    "vendor_name": caps.get("vendor_name", VENDOR),
                    "storage_protocol": caps.get("storage_protocol", "blockstore")}
            out.append(pool)
        return out

    def capabilities(self, ctx: RequestContext, host: str) -> dict[str, Any]:
        """``GET /capabilities/{host}`` (``host@backend``, a pool suffix allowed)."""
        self.policy.enforce(ctx, "volume_extension:capabilities", {})
        backend = None
        if "@" in host:
            name = host.split("@", 1)[1].split("#", 1)[0]
            if host.split("@", 1)[0] == self.host and name in self.api.backends:
                backend = self.api.backends[name]
        if backend is None:
            raise NotFound(f"Host {host} could not be found.")
        return {"namespace": f"OS::Storage::Capabilities::{self.host}@{backend.name}",
                "vendor_name": VENDOR, "volume_backend_name": backend.name,
                "pool_name": backend.pool, "driver_version": DRIVER_VERSION,
                "storage_protocol": backend.capabilities.get("storage_protocol",
                                                             "blockstore"),
                "display_name": None, "description": None, "visibility": None,
                "replication_targets": [], "properties": {
                    "thin_provisioning": {"title": "Thin Provisioning", "type": "boolean",
                                          "description": "Sets thin provisioning."}}}

    def availability_zones(self) -> list[dict[str, Any]]:
        zones = [self.api.conf.volume.storage_availability_zone]
        zones += [b.availability_zone for b in self.api.backends.values()]
        return [{"zoneName": z, "zoneState": {"available": True}}
                for z in dict.fromkeys(zones)]

    @staticmethod
    def extensions() -> list[dict[str, Any]]:
        return [{"alias": alias, "name": name, "description": description,
                 "updated": "2012-01-01T00:00:00+00:00", "links": []}
                for alias, name, description in EXTENSIONS]

    def limits(self, ctx: RequestContext) -> dict[str, Any]:
        """``GET /limits``: no rate limits; the project's quotas and usage."""
        self.policy.enforce(ctx, "limits_extension:used_limits",
                            {"project_id": ctx.project_id})
        quota = self.api.quota
        with self.api.db.session(readonly=True) as session:
            limits = quota.limits(session, ctx.project_id)
            used = quota.usage(session, ctx.project_id)

        def in_use(resource: str) -> int:
            row = used.get(resource)
            return row.in_use if row else 0

        return {"rate": [], "absolute": {
            "maxTotalVolumes": limits["volumes"], "maxTotalSnapshots": limits["snapshots"],
            "maxTotalVolumeGigabytes": limits["gigabytes"],
            "maxTotalBackups": limits["backups"],
            "maxTotalBackupGigabytes": limits["backup_gigabytes"],
            "totalVolumesUsed": in_use("volumes"), "totalSnapshotsUsed": in_use("snapshots"),
            "totalGigabytesUsed": in_use("gigabytes"), "totalBackupsUsed": in_use("backups"),
            "totalBackupGigabytesUsed": in_use("backup_gigabytes")}}
