"""The compute-host scheduler: filter on free RAM, vCPUs and disk; spread by free RAM.

It runs inside the create transaction and locks the node rows it reads (``FOR
UPDATE`` on PostgreSQL; SQLite serializes writers), so two creates never both take
the last room on a host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from strato.compute import states
from strato.compute.models import ComputeNode, Instance
from strato.compute.reads_models import ServiceRecord


class NoValidHost(Exception):  # noqa: N818 - Nova's name
    """No host passes the filters."""


@dataclass(frozen=True)
class Want:
    memory_mb: int
    vcpus: int
    disk_gb: int


@dataclass(frozen=True)
class HostState:
    host: str
    free_ram_mb: float
    free_vcpus: float
    free_disk_gb: float


def host_states(session: Session, conf: Any) -> list[HostState]:
    c = conf.compute
    nodes = list(session.scalars(select(ComputeNode).order_by(ComputeNode.host)
                                 .with_for_update()))
    # Nova's ComputeFilter: no guest goes to a host whose nova-compute an operator
    # disabled or forced down (os-services)
    off = set(session.scalars(select(ServiceRecord.host).where(
        ServiceRecord.binary == "nova-compute",
        (ServiceRecord.disabled.is_(True)) | (ServiceRecord.forced_down.is_(True)))))
    nodes = [n for n in nodes if n.host not in off]
    used: dict[str, tuple[int, int, int]] = {}
    live = (Instance.deleted.is_(False), Instance.vm_state != states.ERROR,
            Instance.host.is_not(None))
    ram = func.coalesce(func.sum(Instance.flavor["memory_mb"].as_integer()), 0)
    cpus = func.coalesce(func.sum(Instance.flavor["vcpus"].as_integer()), 0)
    # a server booted from a volume uses no local disk
    disk = func.coalesce(func.sum(case((Instance.image_ref != "",
                                        Instance.flavor["root_gb"].as_integer()), else_=0)), 0)
    for host, r, v, d in session.execute(
            select(Instance.host, ram, cpus, disk).where(*live).group_by(Instance.host)):
        used[host] = (int(r), int(v), int(d))
    out = []
    for n in nodes:
        r, v, d = used.get(n.host, (0, 0, 0))
        out.append(HostState(
            n.host,
            free_ram_mb=n.memory_mb * c.ram_allocation_ratio - c.reserved_host_memory_mb - r,
            free_vcpus=n.vcpus * c.cpu_allocation_ratio - v,
            free_disk_gb=n.local_gb * c.disk_allocation_ratio
            - c.reserved_host_disk_mb / 1024 - d))
    return out


def choose(hosts: list[HostState], want: Want) -> str:
    """RamFilter, CoreFilter, DiskFilter; then the most free RAM (Nova's RAMWeigher)."""
    fit = [h for h in hosts if h.free_ram_mb >= want.memory_mb
           and h.free_vcpus >= want.vcpus and h.free_disk_gb >= want.disk_gb]
    if not fit:
        raise NoValidHost("No valid host was found. There are not enough hosts available.")
    return max(fit, key=lambda h: (h.free_ram_mb, h.host)).host


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


def select_destination(session: Session, conf: Any, spec: RequestSpec) -> str:
    """The host for ``spec``, inside the caller's transaction: node rows are locked
    (``FOR UPDATE``) until it commits, so the caller records its claim (``inst.host``,
    or a migration's ``dest_compute``) in the same transaction. NoValidHost if none."""
    from strato.compute.hosts import host_zone

    candidates = [h for h in host_states(session, conf) if h.host not in spec.ignore_hosts]
    if spec.zone:
        candidates = [h for h in candidates if host_zone(session, h.host) == spec.zone]
    if spec.requested_host:
        candidates = [h for h in candidates if h.host == spec.requested_host]
    host = choose(candidates, spec.want)
    if spec.group_id is not None and spec.instance_id is not None:
        from strato.compute.reads_models import ServerGroup
        from strato.compute.server_groups import check_host

        g = session.get(ServerGroup, spec.group_id)
        if g is not None:
            host = check_host(session, g, spec.instance_id, host)
    return host


def spec_for_instance(session: Session, inst: Any, *, flavor: dict[str, Any] | None = None,
                      requested_host: str | None = None, force: bool = False,
                      ignore_source: bool = True) -> RequestSpec:
    """The RequestSpec of a move of ``inst`` (migrate, resize to ``flavor``, evacuate,
    live migration, unshelve): the flavor it will run with, the zone it was *asked*
    for at boot, its server group and hints as remembered at create
    (``system_metadata["scheduler_hints"]`` / ``["requested_zone"]``); its own host is
    ignored unless ``ignore_source`` is false (a same-host resize)."""
    from strato.compute.reads_models import ServerGroupMember

    fl = flavor if flavor is not None else inst.flavor
    meta = inst.system_metadata or {}
    group = session.scalar(select(ServerGroupMember.group_id).where(
        ServerGroupMember.instance_uuid == inst.id))
    return RequestSpec(
        want=Want(fl["memory_mb"], fl["vcpus"], (fl.get("root_gb") or 0)
                  if inst.image_ref else 0),
        instance_id=inst.id, project_id=inst.project_id,
        zone=meta.get("requested_zone") or None, requested_host=requested_host,
        force=force,
        ignore_hosts=frozenset({inst.host}) if ignore_source and inst.host else frozenset(),
        group_id=group, hints=dict(meta.get("scheduler_hints") or {}),
        extra_specs=dict(fl.get("extra_specs") or {}))
