"""The compute-host scheduler (Nova's filter scheduler): the hosts that pass the
``[filter_scheduler] enabled_filters``, best of them by the weighers (free RAM spreads
by default).

It runs inside the caller's transaction and locks the node rows it reads (``FOR
UPDATE`` on PostgreSQL; SQLite serializes writers) before it counts what each host
holds, so two placements never both take the last room on a host: the caller records
its claim (``inst.host``, or a migration's ``dest_compute``) before it commits.

A host holds its live servers' flavors and, for every unfinished migration touching
it, the flavor the move will bring (the new one on the destination; after a resize
finished, the old one stays claimed on the source until confirmed or reverted)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato.compute import scheduler_filters, scheduler_weighers, states
from strato.compute.migration_models import Migration
from strato.compute.models import ComputeNode, Flavor, Instance
from strato.compute.reads_models import Aggregate, ServerGroup, ServerGroupMember, ServiceRecord
from strato.db.base import utcnow

LOG = logging.getLogger(__name__)
NO_HOST = "No valid host was found. There are not enough hosts available."
#: Nova's migration statuses after which a move holds nothing any more
FINAL_MIGRATION = frozenset({"confirmed", "reverted", "error", "failed", "completed",
                             "done", "cancelled"})
DEFAULT_ZONE = "nova"


class NoValidHost(Exception):  # noqa: N818 - Nova's name
    """No host passes the filters; ``filter`` names the one that left none."""

    def __init__(self, message: str = NO_HOST, filter: str | None = None) -> None:
        super().__init__(message)
        self.filter = filter


@dataclass(frozen=True)
class Want:
    memory_mb: int
    vcpus: int
    disk_gb: int


def want_of(flavor: Mapping[str, Any], image_backed: bool) -> Want:
    """What a flavor takes on a host: a server booted from a volume has no local root
    disk; ephemeral and swap disks are local either way (Nova's DiskFilter)."""
    disk = (int(flavor.get("root_gb") or 0) if image_backed else 0) \
        + int(flavor.get("ephemeral_gb") or 0) + -(-int(flavor.get("swap") or 0) // 1024)
    return Want(int(flavor["memory_mb"]), int(flavor["vcpus"]), disk)


@dataclass
class HostState:
    """One compute host as the filters see it."""

    host: str
    zone: str = DEFAULT_ZONE
    up: bool = True
    disabled: bool = False
    total_ram_mb: float = 0.0
    total_vcpus: float = 0.0
    total_disk_gb: float = 0.0
    used_ram_mb: int = 0
    used_vcpus: int = 0
    used_disk_gb: int = 0
    #: what the host keeps for itself (its agent's reserved_host_*_mb)
    reserved_ram_mb: int = 0
    reserved_disk_mb: int = 0
    #: live servers on it (SameHost/DifferentHost filters)
    instance_ids: set[str] = field(default_factory=set)
    #: its aggregates' metadata: key → every value
    aggregate_metadata: dict[str, list[str]] = field(default_factory=dict)

    @property
    def free_ram_mb(self) -> float:
        return self.total_ram_mb - self.used_ram_mb

    @property
    def free_vcpus(self) -> float:
        return self.total_vcpus - self.used_vcpus

    @property
    def free_disk_gb(self) -> float:
        return self.total_disk_gb - self.used_disk_gb


@dataclass
class Snapshot:
    """What the request's server group looks like now (one read per placement)."""

    group_policy: str | None = None
    group_rules: dict[str, Any] = field(default_factory=dict)
    #: the hosts of the group's other members, once per member
    group_hosts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RequestSpec:
    """What one placement asks for (Nova's RequestSpec): a new server, or a move of
    ``instance_id`` (cold/live migration, resize, evacuation, unshelve)."""

    want: Want
    #: the server being placed (a move: its own usage is not counted twice)
    instance_id: str | None = None
    project_id: str | None = None
    #: availability zone the server must land in (None: any)
    zone: str | None = None
    #: a host the caller named (admin's ``zone:host``, migrate/evacuate ``host``):
    #: only that host is considered; still filtered unless ``force`` (Nova's force)
    requested_host: str | None = None
    force: bool = False
    #: hosts never chosen (a move's source host)
    ignore_hosts: frozenset[str] = frozenset()
    #: the server group the server is a member of (its policy filters/weighs)
    group_id: str | None = None
    #: os:scheduler_hints as validated by the API (same_host, different_host, ...)
    hints: Mapping[str, Any] = field(default_factory=dict)
    #: the flavor's extra specs (aggregate metadata filter)
    extra_specs: Mapping[str, str] = field(default_factory=dict)


# ------------------------------------------------------------ host states
def _ratio(conf_value: float, metas: list[dict[str, Any]], key: str) -> float:
    """The allocation ratio: the lowest an aggregate of the host sets (Nova's
    Aggregate*Filter), else the option."""
    found = []
    for m in metas:
        try:
            found.append(float(m[key]))
        except (KeyError, TypeError, ValueError):
            continue
    return min(found) if found else conf_value


def _flavor(session: Session, inst: Instance, key: str, flavor_id: str | None,
            cache: dict[str, dict[str, Any] | None]) -> Mapping[str, Any]:
    """The old or new flavor of a migration: the resize's snapshot in the server's
    system metadata, else the flavor row, else the server's own."""
    snap = (inst.system_metadata or {}).get(key)
    if isinstance(snap, dict) and str(snap.get("id")) == str(flavor_id):
        return snap
    if flavor_id and flavor_id != inst.flavor_id:
        if flavor_id not in cache:
            row = session.get(Flavor, flavor_id)
            cache[flavor_id] = None if row is None else {
                "memory_mb": row.memory_mb, "vcpus": row.vcpus, "root_gb": row.root_gb,
                "ephemeral_gb": row.ephemeral_gb, "swap": row.swap}
        if cache[flavor_id] is not None:
            return cache[flavor_id]  # type: ignore[return-value]
    return inst.flavor or {}


def host_states(session: Session, conf: Any, exclude: str | None = None,
                lock: bool = True) -> list[HostState]:
    """Every registered compute host with what it holds, its node row locked until the
    caller's transaction ends (``lock``; a read-only view passes False). ``exclude``:
    a server whose own usage (its row and its unfinished migrations) is not counted
    (the one being moved)."""
    from strato.compute.hosts import reserved

    c = conf.compute
    query = select(ComputeNode).order_by(ComputeNode.host)
    nodes = list(session.scalars(query.with_for_update() if lock else query))
    services = {r.host: r for r in session.scalars(select(ServiceRecord).where(
        ServiceRecord.binary == "nova-compute"))}
    aggs = list(session.scalars(select(Aggregate).order_by(Aggregate.id)))
    down_after = timedelta(seconds=conf.DEFAULT.service_down_time)
    now = utcnow()
    states_by_host: dict[str, HostState] = {}
    for n in nodes:
        rec = services.get(n.host)
        metas = [dict(a.metadata_ or {}) for a in aggs if n.host in (a.hosts or [])]
        agg_meta: dict[str, list[str]] = {}
        for m in metas:
            for k, v in m.items():
                agg_meta.setdefault(k, []).append(str(v))
        zone = next((m["availability_zone"] for m in metas if m.get("availability_zone")),
                    DEFAULT_ZONE)
        ram_ratio = _ratio(c.ram_allocation_ratio, metas, "ram_allocation_ratio")
        cpu_ratio = _ratio(c.cpu_allocation_ratio, metas, "cpu_allocation_ratio")
        disk_ratio = _ratio(c.disk_allocation_ratio, metas, "disk_allocation_ratio")
        ram_kept, disk_kept = reserved(n, conf)
        states_by_host[n.host] = HostState(
            n.host, zone=zone,
            up=not (rec is not None and rec.forced_down) and n.updated_at is not None
            and now - n.updated_at < down_after,
            disabled=rec is not None and bool(rec.disabled),
            total_ram_mb=n.memory_mb * ram_ratio - ram_kept,
            total_vcpus=n.vcpus * cpu_ratio,
            total_disk_gb=n.local_gb * disk_ratio - disk_kept / 1024,
            reserved_ram_mb=ram_kept, reserved_disk_mb=disk_kept,
            aggregate_metadata=agg_meta)

    def add(host: str | None, flavor: Mapping[str, Any], image_backed: bool) -> None:
        h = states_by_host.get(host or "")
        if h is None:
            return
        w = want_of(flavor, image_backed)
        h.used_ram_mb += w.memory_mb
        h.used_vcpus += w.vcpus
        h.used_disk_gb += w.disk_gb

    rows = session.execute(select(Instance.id, Instance.host, Instance.flavor,
                                  Instance.image_ref, Instance.vm_state).where(
        Instance.deleted.is_(False), Instance.host.is_not(None)))
    for iid, host, flavor, image_ref, vm_state in rows:
        if host in states_by_host:
            states_by_host[host].instance_ids.add(iid)
        if vm_state != states.ERROR and iid != exclude:
            add(host, flavor or {}, bool(image_ref))
    cache: dict[str, dict[str, Any] | None] = {}
    for m, inst in session.execute(select(Migration, Instance).join(
            Instance, Instance.id == Migration.instance_uuid).where(
            Migration.deleted.is_(False), Migration.status.not_in(FINAL_MIGRATION),
            Instance.deleted.is_(False))):
        if inst.id == exclude:
            continue
        if inst.host == m.source_compute:  # in flight: the new flavor on the destination
            add(m.dest_compute, _flavor(session, inst, "new_flavor", m.new_flavor_id, cache),
                bool(inst.image_ref))
        elif inst.host == m.dest_compute:  # resized, unconfirmed: the old one stays
            add(m.source_compute, _flavor(session, inst, "old_flavor", m.old_flavor_id,
                                          cache), bool(inst.image_ref))
    return list(states_by_host.values())


# ------------------------------------------------------------ selection
def _snapshot(session: Session, spec: RequestSpec) -> Snapshot:
    if spec.group_id is None:
        return Snapshot()
    g = session.get(ServerGroup, spec.group_id)
    if g is None:
        return Snapshot()
    hosts = [h for i, h in session.execute(
        select(Instance.id, Instance.host).join(
            ServerGroupMember, ServerGroupMember.instance_uuid == Instance.id)
        .where(ServerGroupMember.group_id == g.id, Instance.deleted.is_(False),
               Instance.host.is_not(None))) if i != spec.instance_id]
    return Snapshot(group_policy=g.policy, group_rules=dict(g.rules or {}),
                    group_hosts=hosts)


def enabled_filters(conf: Any) -> list[str]:
    names = list(conf.filter_scheduler.enabled_filters)
    unknown = [n for n in names if n not in scheduler_filters.FILTERS]
    if unknown:
        raise ValueError(f"[filter_scheduler] enabled_filters: unknown {unknown}")
    return names


def select_hosts(session: Session, conf: Any, spec: RequestSpec) -> list[str]:
    """The hosts that pass the filters, best first (the scheduler's alternates)."""
    hosts = [h for h in host_states(session, conf, exclude=spec.instance_id)
             if h.host not in spec.ignore_hosts]
    if spec.requested_host:
        hosts = [h for h in hosts if h.host == spec.requested_host]
        if not hosts:
            raise NoValidHost(f"{NO_HOST} Requested host {spec.requested_host} is not "
                              "a usable compute host.", filter="requested_host")
    names = enabled_filters(conf)
    if spec.force:  # Nova's forced host: no filters, but placement still claims room
        names = [n for n in names if n in scheduler_filters.RESOURCE_FILTERS]
    snap = _snapshot(session, spec)
    for name in names:
        fn = scheduler_filters.FILTERS[name]
        passed = [h for h in hosts if fn(h, spec, snap)]
        LOG.debug("filter %s: %d of %d hosts pass", name, len(passed), len(hosts))
        if not passed:
            LOG.info("NoValidHost for %s: filter %s returned 0 hosts (of %s)",
                     spec.instance_id, name, [h.host for h in hosts])
            raise NoValidHost(filter=name)
        hosts = passed
    ranked = scheduler_weighers.weigh(hosts, spec, snap, conf.filter_scheduler)
    return [h.host for _, _, h in ranked]


def select_destination(session: Session, conf: Any, spec: RequestSpec) -> str:
    """The host for ``spec``, inside the caller's transaction: node rows are locked
    (``FOR UPDATE``) until it commits, so the caller records its claim (``inst.host``,
    or a migration's ``dest_compute``) in the same transaction. NoValidHost if none."""
    hosts = select_hosts(session, conf, spec)
    if not hosts:
        raise NoValidHost(filter="ignore_hosts")
    return hosts[0]


def spec_for_instance(session: Session, inst: Any, *, flavor: dict[str, Any] | None = None,
                      requested_host: str | None = None, force: bool = False,
                      ignore_source: bool = True) -> RequestSpec:
    """The RequestSpec of a move of ``inst`` (migrate, resize to ``flavor``, evacuate,
    live migration, unshelve): the flavor it will run with, the zone it was *asked*
    for at boot, its server group and hints as remembered at create
    (``system_metadata["scheduler_hints"]`` / ``["requested_zone"]``); its own host is
    ignored unless ``ignore_source`` is false (a same-host resize)."""
    fl = flavor if flavor is not None else inst.flavor
    meta = inst.system_metadata or {}
    group = session.scalar(select(ServerGroupMember.group_id).where(
        ServerGroupMember.instance_uuid == inst.id))
    return RequestSpec(
        want=want_of(fl, bool(inst.image_ref)),
        instance_id=inst.id, project_id=inst.project_id,
        zone=meta.get("requested_zone") or None, requested_host=requested_host,
        force=force,
        ignore_hosts=frozenset({inst.host}) if ignore_source and inst.host else frozenset(),
        group_id=group, hints=dict(meta.get("scheduler_hints") or {}),
        extra_specs=dict(fl.get("extra_specs") or {}))
