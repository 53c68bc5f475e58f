"""os-services and os-hypervisors: this deployment's compute services and hosts.

Every host with a registered compute node runs ``nova-compute`` (its agent); the
scheduler and the conductor run inside the API process (embedded) or beside it, so they
are listed on the API's host. A service is ``up`` while its process shows signs of
life: the compute agent's heartbeat (``compute_nodes.updated_at``, refreshed by the
agent) for nova-compute, the process answering this request for the others. The
operator's switches (disabled, its reason, forced down) are kept in
``compute_services``; the scheduler skips a disabled or forced-down compute host.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato.compute.models import ComputeNode, Instance
from strato.compute.reads_models import Aggregate, ServiceRecord
from strato.compute.views import Version, iso_us
from strato.context import RequestContext
from strato.db.base import utcnow
from strato.exceptions import BadRequest, NotFound, NotSupported
from strato.validation import query_int
from strato.virt.qemu.process import qemu_version

P = "os_compute_api:"
COMPUTE = "nova-compute"
INTERNAL = ("nova-scheduler", "nova-conductor")
_NS = uuid.UUID("8f0b6f0e-5b1b-4a51-9a38-3f3c1cbbd0a1")


def hypervisor_uuid(host: str) -> str:
    """A compute node's stable id (Nova's compute node uuid)."""
    return str(uuid.uuid5(_NS, "compute-node:" + host))


def heartbeat(db: Any, host: str, conf: Any = None) -> None:
    """The compute agent's sign of life, read by the service and hypervisor views, with
    the host's facts (its uptime, CPU, QEMU, free disk) the API cannot see itself."""
    facts = host_facts(conf)
    with db.session() as session:
        node = session.get(ComputeNode, host)
        if node is not None:
            node.updated_at = utcnow()
            node.facts = facts


def host_zone(session: Session, host: str, default: str = "nova") -> str:
    """The availability zone of a host: that of an aggregate holding it, else
    ``default_availability_zone``."""
    for agg in session.scalars(select(Aggregate).order_by(Aggregate.id)):
        if host in (agg.hosts or []) and (agg.metadata_ or {}).get("availability_zone"):
            return str(agg.metadata_["availability_zone"])
    return default


def zones_of_compute_hosts(session: Session) -> set[str]:
    """The zones a server may ask for: those of the registered compute hosts."""
    return {host_zone(session, h) for h in session.scalars(select(ComputeNode.host))}


# ------------------------------------------------------------------ host facts
@functools.cache
def cpu_info() -> dict[str, Any]:
    """The host CPU as Nova's libvirt driver describes it, from /proc/cpuinfo."""
    fields: dict[str, str] = {}
    sockets: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    sockets.add(value)
                fields.setdefault(key, value)
    except OSError:
        pass
    total = os.cpu_count() or 1
    n_sockets = max(len(sockets), 1)
    cores = int(fields.get("cpu cores") or 0) or max(total // n_sockets, 1)
    siblings = int(fields.get("siblings") or 0) or cores
    threads = max(siblings // cores, 1)
    vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(
        fields.get("vendor_id", ""), fields.get("vendor_id", ""))
    return {"arch": os.uname().machine, "model": fields.get("model name", ""),
            "vendor": vendor, "features": sorted(fields.get("flags", "").split()),
            "topology": {"cells": 1, "sockets": n_sockets, "cores": cores,
                         "threads": threads}}


def uptime_text() -> str:
    """What ``uptime`` prints: the host's time, uptime and load (Nova's format)."""
    try:
        with open("/proc/uptime") as f:
            up = int(float(f.read().split()[0]))
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
    except (OSError, ValueError, IndexError):
        return ""
    days, rest = divmod(up, 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    span = f"{days} day{'s' if days != 1 else ''}, " if days else ""
    return (f" {time.strftime('%H:%M:%S', time.gmtime())} up {span}{hours:d}:{minutes:02d},"
            f"  0 users,  load average: {', '.join(load)}")


def host_facts(conf: Any = None) -> dict[str, Any]:
    """What this host's agent reports of it: os-hypervisors' uptime, cpu_info,
    hypervisor_version, disk_available_least, and what the host keeps for itself
    (its own ``[compute] reserved_host_memory_mb`` / ``reserved_host_disk_mb``, as
    Nova's compute reports its inventory's reserved amounts)."""
    facts: dict[str, Any] = {"uptime": uptime_text(), "cpu_info": cpu_info(),
                             "hypervisor_version": qemu_version()}
    if conf is not None:
        c = conf.compute
        facts["reserved_host_memory_mb"] = c.reserved_host_memory_mb
        facts["reserved_host_disk_mb"] = c.reserved_host_disk_mb
        try:
            facts["disk_available_least"] = shutil.disk_usage(c.instances_path).free >> 30
        except OSError:
            pass
    return facts


def reserved(node: Any, conf: Any) -> tuple[int, int]:
    """(RAM MiB, disk MiB) the host keeps for itself: as its agent reported, else this
    process's options."""
    facts = node.facts or {}
    return (int(facts.get("reserved_host_memory_mb", conf.compute.reserved_host_memory_mb)),
            int(facts.get("reserved_host_disk_mb", conf.compute.reserved_host_disk_mb)))


@dataclass
class Usage:
    memory_mb: int = 0
    vcpus: int = 0
    local_gb: int = 0
    running: int = 0


def host_usage(session: Session, conf: Any) -> dict[str, Usage]:
    """What each host holds as the scheduler counts it (live servers and unfinished
    migrations' claims), plus what the host keeps for itself (Nova's
    ``memory_mb_used`` includes ``reserved_host_memory_mb``)."""
    from strato.compute.scheduler import host_states

    return {h.host: Usage(h.used_ram_mb + h.reserved_ram_mb, h.used_vcpus,
                          h.used_disk_gb + -(-h.reserved_disk_mb // 1024),
                          len(h.instance_ids))
            for h in host_states(session, conf, lock=False)}


def host_is_up(session: Session, conf: Any, host: str) -> bool:
    """Whether ``host``'s compute service is up: heartbeat within ``[DEFAULT]
    service_down_time`` and not forced down (evacuation wants it down; the scheduler
    skips it when down)."""
    node = session.scalar(select(ComputeNode).where(ComputeNode.host == host))
    rec = session.scalar(select(ServiceRecord).where(
        ServiceRecord.host == host, ServiceRecord.binary == COMPUTE))
    if rec is not None and rec.forced_down:
        return False
    if node is None or node.updated_at is None:
        return False
    return utcnow() - node.updated_at < timedelta(seconds=conf.DEFAULT.service_down_time)


class Hosts:
    """os-services and os-hypervisors over the compute nodes and service records."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy
        self.conf = api.conf

    # ------------------------------------------------------------ services
    def _records(self, session: Session) -> list[tuple[ServiceRecord, ComputeNode | None]]:
        """Every service with its record (made on first sight) and, for nova-compute,
        its node."""
        nodes = {n.host: n for n in session.scalars(select(ComputeNode))}
        wanted = [(h, COMPUTE) for h in sorted(nodes)]
        wanted += [(self.conf.DEFAULT.host, b) for b in INTERNAL]
        rows = {(r.host, r.binary): r for r in session.scalars(select(ServiceRecord))}
        for key in wanted:
            if key not in rows:
                rows[key] = ServiceRecord(host=key[0], binary=key[1], created_at=utcnow())
                session.add(rows[key])
        session.flush()
        return sorted(((r, nodes.get(r.host) if r.binary == COMPUTE else None)
                       for r in rows.values() if r.binary in INTERNAL or r.host in nodes),
                      key=lambda p: p[0].id)

    def _up(self, rec: ServiceRecord, node: ComputeNode | None) -> bool:
        if rec.forced_down:
            return False
        if rec.binary != COMPUTE:
            return True  # it runs in the process answering
        if node is None or node.updated_at is None:
            return False
        return utcnow() - node.updated_at < timedelta(
            seconds=self.conf.DEFAULT.service_down_time)

    def _updated(self, rec: ServiceRecord, node: ComputeNode | None) -> datetime | None:
        if rec.binary == COMPUTE:
            seen = node.updated_at if node is not None else None
        else:
            seen = utcnow()
        return max((t for t in (seen, rec.updated_at) if t is not None), default=None)

    def service_view(self, session: Session, rec: ServiceRecord, node: ComputeNode | None,
                     version: Version) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": rec.uuid if version >= (2, 53) else rec.id,
            "binary": rec.binary, "host": rec.host,
            "zone": host_zone(session, rec.host) if rec.binary == COMPUTE else "internal",
            "status": "disabled" if rec.disabled else "enabled",
            "state": "up" if self._up(rec, node) else "down",
            "updated_at": iso_us(self._updated(rec, node)),
            "disabled_reason": rec.disabled_reason,
        }
        if version >= (2, 11):
            body["forced_down"] = rec.forced_down
        return body

    def list_services(self, ctx: RequestContext, q: dict[str, str],
                      version: Version) -> list[dict[str, Any]]:
        self.policy.enforce(ctx, P + "os-services:list", {})
        with self.db.session() as session:
            return [self.service_view(session, r, n, version)
                    for r, n in self._records(session)
                    if q.get("host", r.host) == r.host
                    and q.get("binary", r.binary) == r.binary]

    def _find(self, session: Session, host: Any, binary: Any
              ) -> tuple[ServiceRecord, ComputeNode | None]:
        for r, n in self._records(session):
            if r.host == host and r.binary == binary:
                return r, n
        raise NotFound(f"Service {binary} on host {host} could not be found.")

    def update_service(self, ctx: RequestContext, service_id: str, body: Any,
                       version: Version) -> dict[str, Any]:
        """2.53: PUT /os-services/{uuid} with status, disabled_reason, forced_down."""
        self.policy.enforce(ctx, P + "os-services:update", {})
        if not isinstance(body, dict) or not body:
            raise BadRequest("At least one of status or forced_down must be given.")
        extra = set(body) - {"status", "disabled_reason", "forced_down"}
        if extra:
            raise BadRequest(f"Additional properties are not allowed ({', '.join(extra)} "
                             "unexpected).")
        status = body.get("status")
        if status is not None and status not in ("enabled", "disabled"):
            raise BadRequest("Invalid input for field/attribute status.")
        reason = body.get("disabled_reason")
        if reason is not None and (not isinstance(reason, str) or not 1 <= len(reason)
                                   <= 255 or not reason.strip()):
            raise BadRequest("Invalid input for field/attribute disabled_reason.")
        if "disabled_reason" in body and status != "disabled":
            raise BadRequest("Specifying 'disabled_reason' with status other than "
                             "'disabled' is invalid.")
        forced = body.get("forced_down")
        if "forced_down" in body and not isinstance(forced, bool):
            raise BadRequest("Invalid input for field/attribute forced_down.")
        if status is None and "forced_down" not in body:
            raise BadRequest("No updates were requested. Fields 'status' or "
                             "'forced_down' should be specified.")
        with self.db.session() as session:
            pair = next(((r, n) for r, n in self._records(session)
                         if r.uuid == service_id), None)
            if pair is None:
                raise NotFound(f"Service {service_id} could not be found.")
            rec, node = pair
            if rec.binary != COMPUTE:
                raise BadRequest(f"Updating a {rec.binary} service is not supported. "
                                 "Only nova-compute services can be updated.")
            if status is not None:
                rec.disabled = status == "disabled"
                rec.disabled_reason = reason if rec.disabled else None
            if forced is not None:
                rec.forced_down = forced
            rec.updated_at = utcnow()
            session.flush()
            return self.service_view(session, rec, node, version)

    def legacy_action(self, ctx: RequestContext, action: str, body: Any,
                      version: Version) -> dict[str, Any]:
        """Before 2.53: PUT /os-services/{enable,disable,disable-log-reason,force-down}
        with host and binary."""
        self.policy.enforce(ctx, P + "os-services:update", {})
        if version >= (2, 53):
            raise NotFound("Service not found.")
        if action == "force-down" and version < (2, 11):
            raise NotFound("The resource could not be found.")
        if not isinstance(body, dict) or not isinstance(body.get("host"), str) or \
                not isinstance(body.get("binary"), str):
            raise BadRequest("Missing required element 'host' and 'binary'.")
        with self.db.session() as session:
            rec, _ = self._find(session, body["host"], body["binary"])
            out: dict[str, Any] = {"host": rec.host, "binary": rec.binary}
            if action == "force-down":
                forced = body.get("forced_down")
                if not isinstance(forced, bool):
                    raise BadRequest("Invalid input for field/attribute forced_down.")
                rec.forced_down = forced
                out["forced_down"] = forced
            elif action == "enable":
                rec.disabled, rec.disabled_reason = False, None
                out["status"] = "enabled"
            else:
                reason = body.get("disabled_reason") if action == "disable-log-reason" \
                    else None
                if action == "disable-log-reason" and (
                        not isinstance(reason, str) or not reason.strip()
                        or len(reason) > 255):
                    raise BadRequest("Invalid input for field/attribute disabled_reason.")
                rec.disabled, rec.disabled_reason = True, reason
                out["status"] = "disabled"
                if reason is not None:
                    out["disabled_reason"] = reason
            rec.updated_at = utcnow()
            return out

    def delete_service(self, ctx: RequestContext, service_id: str,
                       version: Version) -> None:
        self.policy.enforce(ctx, P + "os-services:delete", {})
        with self.db.session() as session:
            key = "uuid" if version >= (2, 53) else "id"
            pair = next(((r, n) for r, n in self._records(session)
                         if str(getattr(r, key)) == service_id), None)
            if pair is None:
                if version >= (2, 53):
                    try:
                        uuid.UUID(service_id)
                    except ValueError:
                        raise BadRequest(f"Invalid uuid {service_id}") from None
                raise NotFound(f"Service {service_id} could not be found.")
            raise NotSupported("Deleting a compute service is not supported: strato's "
                               "services are registered by their running processes.")

    def is_disabled(self, session: Session, host: str) -> bool:
        rec = session.scalars(select(ServiceRecord).where(
            ServiceRecord.host == host, ServiceRecord.binary == COMPUTE)).first()
        return rec is not None and (rec.disabled or rec.forced_down)

    # ------------------------------------------------------------ hypervisors
    def _nodes(self, session: Session) -> list[tuple[ServiceRecord, ComputeNode]]:
        return [(r, n) for r, n in self._records(session) if n is not None]

    def _servers(self, session: Session, host: str) -> list[dict[str, str]]:
        return [{"uuid": i, "name": name} for i, name in session.execute(
            select(Instance.id, Instance.name).where(
                Instance.host == host, Instance.deleted.is_(False))
            .order_by(Instance.created_at))]

    def _hyp_id(self, rec: ServiceRecord, node: ComputeNode, version: Version) -> Any:
        return hypervisor_uuid(node.host) if version >= (2, 53) else rec.id

    def hypervisor_view(self, session: Session, rec: ServiceRecord, node: ComputeNode,
                        version: Version, detail: bool, servers: bool,
                        usage: dict[str, Usage] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self._hyp_id(rec, node, version), "hypervisor_hostname": node.host,
            "state": "up" if self._up(rec, node) else "down",
            "status": "disabled" if rec.disabled else "enabled"}
        if detail:
            body.update({
                "hypervisor_type": node.hypervisor_type,
                "hypervisor_version": self._fact(node, "hypervisor_version", qemu_version),
                "host_ip": self.conf.DEFAULT.bind_host if node.host == self.conf.DEFAULT.host
                else node.host,
                "service": {"host": rec.host,
                            "id": rec.uuid if version >= (2, 53) else rec.id,
                            "disabled_reason": rec.disabled_reason}})
            if version >= (2, 88):
                body["uptime"] = self._fact(node, "uptime", uptime_text)
            else:
                used = (usage if usage is not None else host_usage(session, self.conf)).get(
                    node.host, Usage())
                info = self._fact(node, "cpu_info", cpu_info)
                body.update({
                    "vcpus": node.vcpus, "memory_mb": node.memory_mb,
                    "local_gb": node.local_gb, "vcpus_used": used.vcpus,
                    "memory_mb_used": used.memory_mb, "local_gb_used": used.local_gb,
                    "free_ram_mb": node.memory_mb - used.memory_mb,
                    "free_disk_gb": node.local_gb - used.local_gb,
                    "current_workload": 0, "running_vms": used.running,
                    "disk_available_least": self._disk_least(node),
                    "cpu_info": info if version >= (2, 28) else _json(info)})
        if servers:
            found = self._servers(session, node.host)
            if found:  # Nova leaves the key out for a host without servers
                body["servers"] = found
        return body

    def _fact(self, node: ComputeNode, key: str, local: Any) -> Any:
        """A fact the host's agent reported; this process's own when it is that host
        (an agent of an older strato reported none)."""
        facts = node.facts or {}
        if key in facts:
            return facts[key]
        return local() if node.host == self.conf.DEFAULT.host else None

    def _disk_least(self, node: ComputeNode) -> int:
        least = (node.facts or {}).get("disk_available_least")
        if least is not None:
            return int(least)
        if node.host != self.conf.DEFAULT.host:
            return node.local_gb
        try:
            return shutil.disk_usage(self.conf.compute.instances_path).free >> 30
        except OSError:
            return node.local_gb

    def _bool(self, q: dict[str, str], key: str) -> bool:
        value = q.get(key, "false").strip().lower()
        if value in ("1", "true", "t", "yes", "y", "on"):
            return True
        if value in ("0", "false", "f", "no", "n", "off", ""):
            return False
        raise BadRequest(f"Invalid input for query parameters {key}.")

    def list_hypervisors(self, ctx: RequestContext, q: dict[str, str], detail: bool,
                         version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + ("os-hypervisors:list-detail" if detail
                                      else "os-hypervisors:list"), {})
        allowed = set()
        if version >= (2, 33):
            allowed |= {"limit", "marker"}
        if version >= (2, 53):
            allowed |= {"hypervisor_hostname_pattern", "with_servers"}
        extra = set(q) - allowed
        if extra and version >= (2, 53):
            raise BadRequest(f"Invalid input for query parameters {', '.join(extra)}. "
                             "Additional properties are not allowed.")
        pattern = q.get("hypervisor_hostname_pattern") if version >= (2, 53) else None
        if pattern is not None and ("limit" in q or "marker" in q):
            raise BadRequest("Paging over a list of hypervisors with a hostname "
                             "pattern is not supported.")
        servers = version >= (2, 53) and self._bool(q, "with_servers")
        limit = query_int("limit", q["limit"]) if "limit" in q and version >= (2, 33) else None
        with self.db.session() as session:
            nodes = self._nodes(session)
            if pattern is not None:
                nodes = [(r, n) for r, n in nodes if pattern in n.host]
                if not nodes:
                    raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
            marker = q.get("marker") if version >= (2, 33) else None
            if marker is not None:
                ids = [str(self._hyp_id(r, n, version)) for r, n in nodes]
                if marker not in ids:
                    raise BadRequest(f"marker [{marker}] not found")
                nodes = nodes[ids.index(marker) + 1:]
            more = limit is not None and len(nodes) > limit
            if limit is not None:
                nodes = nodes[:limit]
            usage = host_usage(session, self.conf) if detail else None
            body: dict[str, Any] = {"hypervisors": [
                self.hypervisor_view(session, r, n, version, detail, servers, usage)
                for r, n in nodes]}
            if more and nodes:
                last = self._hyp_id(*nodes[-1], version)
                path = "os-hypervisors/detail" if detail else "os-hypervisors"
                body["hypervisors_links"] = [{"rel": "next", "href": (
                    f"{self.api.base}/compute/v2.1/{path}?limit={limit}&marker={last}")}]
            return body

    def _one(self, session: Session, hyp_id: str,
             version: Version) -> tuple[ServiceRecord, ComputeNode]:
        if version >= (2, 53):
            try:
                uuid.UUID(hyp_id)
            except ValueError:
                raise BadRequest(f"Invalid uuid {hyp_id}") from None
        for r, n in self._nodes(session):
            if str(self._hyp_id(r, n, version)) == hyp_id:
                return r, n
        raise NotFound(f"Hypervisor with ID '{hyp_id}' could not be found.")

    def show_hypervisor(self, ctx: RequestContext, hyp_id: str, q: dict[str, str],
                        version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-hypervisors:show", {})
        servers = version >= (2, 53) and self._bool(q, "with_servers")
        with self.db.session() as session:
            r, n = self._one(session, hyp_id, version)
            return self.hypervisor_view(session, r, n, version, True, servers)

    def uptime(self, ctx: RequestContext, hyp_id: str, version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-hypervisors:uptime", {})
        if version >= (2, 88):
            raise NotFound("The resource could not be found.")
        with self.db.session() as session:
            r, n = self._one(session, hyp_id, version)
            body = self.hypervisor_view(session, r, n, version, False, False)
            uptime = self._fact(n, "uptime", uptime_text)
            if not uptime:  # Nova: the driver cannot tell (osc shows the rest)
                raise NotSupported(f"The uptime of host {n.host} is unknown: its "
                                     "agent has not reported it.")
            body["uptime"] = uptime
            return body

    def statistics(self, ctx: RequestContext, version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-hypervisors:statistics", {})
        if version >= (2, 88):
            raise NotFound("The resource could not be found.")
        keys = ("vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used",
                "local_gb_used", "free_ram_mb", "free_disk_gb", "current_workload",
                "running_vms", "disk_available_least")
        total = dict.fromkeys(keys, 0)
        with self.db.session() as session:
            usage = host_usage(session, self.conf)
            nodes = self._nodes(session)
            for r, n in nodes:
                view = self.hypervisor_view(session, r, n, (2, 1), True, False, usage)
                for k in keys:
                    total[k] += view[k] or 0
        return {"count": len(nodes), **total}

    def search(self, ctx: RequestContext, pattern: str, servers: bool,
               version: Version) -> list[dict[str, Any]]:
        """Before 2.53: /os-hypervisors/{pattern}/search and /{pattern}/servers."""
        self.policy.enforce(ctx, P + ("os-hypervisors:servers" if servers
                                      else "os-hypervisors:search"), {})
        if version >= (2, 53):
            raise NotFound("The resource could not be found.")
        with self.db.session() as session:
            found = [self.hypervisor_view(session, r, n, version, False, servers)
                     for r, n in self._nodes(session) if pattern in n.host]
        if not found:
            raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
        return found


class OsHosts:
    """os-hosts (deprecated, until 2.42): the services' hosts, a compute host's
    resources by project, and its operator switches (power actions: 501 here)."""

    def __init__(self, hosts: Hosts) -> None:
        self.h = hosts

    def _check(self, ctx: RequestContext, rule: str, version: Version) -> None:
        self.h.policy.enforce(ctx, P + "os-hosts:" + rule, {})
        if version >= (2, 43):
            raise NotFound("The resource could not be found.")

    def _node(self, session: Session, host: str) -> tuple[ServiceRecord, ComputeNode]:
        for r, n in self.h._nodes(session):
            if n.host == host:
                return r, n
        raise NotFound(f"Compute host {host} could not be found.")

    def list(self, ctx: RequestContext, q: dict[str, str],
             version: Version) -> list[dict[str, str]]:
        self._check(ctx, "list", version)
        zone = q.get("zone") or None
        with self.h.db.session() as session:
            rows = [{"host_name": r.host, "service": r.binary.removeprefix("nova-"),
                     "zone": host_zone(session, r.host) if r.binary == COMPUTE
                     else "internal"} for r, _ in self.h._records(session)]
        return [r for r in rows if zone is None or r["zone"] == zone]

    def show(self, ctx: RequestContext, host: str, version: Version) -> list[dict]:
        self._check(ctx, "show", version)
        with self.h.db.session() as session:
            _, n = self._node(session, host)
            used = host_usage(session, self.h.conf).get(host, Usage())
            per: dict[str, list[int]] = {}
            for pid, flavor, image in session.execute(select(
                    Instance.project_id, Instance.flavor, Instance.image_ref).where(
                    Instance.host == host, Instance.deleted.is_(False))):
                f = flavor or {}
                row = per.setdefault(pid, [0, 0, 0])
                row[0] += int(f.get("vcpus") or 0)
                row[1] += int(f.get("memory_mb") or 0)
                row[2] += int(f.get("root_gb") or 0) if image else 0

        def res(project: str, cpu: int, mem: int, disk: int) -> dict:
            return {"resource": {"host": host, "project": project, "cpu": cpu,
                                 "memory_mb": mem, "disk_gb": disk}}

        return [res("(total)", n.vcpus, n.memory_mb, n.local_gb),
                res("(used_now)", used.vcpus, used.memory_mb, used.local_gb),
                res("(used_max)", used.vcpus, used.memory_mb, used.local_gb),
                *(res(p, *v) for p, v in sorted(per.items()))]

    def update(self, ctx: RequestContext, host: str, body: Any,
               version: Version) -> dict[str, str]:
        self._check(ctx, "update", version)
        if not isinstance(body, dict) or not body or set(body) - {"status",
                                                                  "maintenance_mode"}:
            raise BadRequest("'status' or 'maintenance_mode' needed for host update")
        for key in body:
            if body[key] not in ("enable", "disable"):
                raise BadRequest(f"Invalid input for field/attribute {key}: 'enable' or "
                                 "'disable' is required.")
        with self.h.db.session() as session:
            rec, _ = self._node(session, host)
            if "maintenance_mode" in body:
                raise NotSupported("Host maintenance mode is not supported by the QEMU "
                                   "driver.")
            rec.disabled = body["status"] == "disable"
            rec.disabled_reason = None
            rec.updated_at = utcnow()
            return {"host": host, "status": "disabled" if rec.disabled else "enabled"}

    def power(self, ctx: RequestContext, host: str, action: str, version: Version) -> None:
        self._check(ctx, {"startup": "start"}.get(action, action), version)
        with self.h.db.session() as session:
            self._node(session, host)
        raise NotSupported(f"Host power action {action} is not supported: strato does not "
                           "power hosts on or off.")


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
