"""The scheduler's host filters, by Nova's names and semantics.

Each filter answers whether one host may take the request; the scheduler runs the
``[filter_scheduler] enabled_filters`` in order and stops at the first that leaves no
host (its name is kept for the log and the fault's details)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strato.compute.scheduler import HostState, RequestSpec, Snapshot

Filter = Callable[["HostState", "RequestSpec", "Snapshot"], bool]


def compute_filter(h: HostState, spec: RequestSpec, snap: Snapshot) -> bool:
    """ComputeFilter: the host's nova-compute is enabled and up (not forced down, a
    heartbeat within ``service_down_time``)."""
    return h.up and not h.disabled


def ram_filter(h: HostState, spec: RequestSpec, snap: Snapshot) -> bool:
    """RamFilter (AggregateRamFilter's ratio): free RAM after the allocation ratio and
    ``reserved_host_memory_mb``."""
    return h.free_ram_mb >= spec.want.memory_mb


def core_filter(h: HostState, spec: RequestSpec, snap: Snapshot) -> bool:
    return h.free_vcpus >= spec.want.vcpus


def disk_filter(h: HostState, spec: RequestSpec, snap: Snapshot) -> bool:
    return h.free_disk_gb >= spec.want.disk_gb


def availability_zone_filter(h: HostState, spec: RequestSpec, snap: Snapshot) -> bool:
    return not spec.zone or h.zone == spec.zone


def aggregate_instance_extra_specs_filter(h: HostState, spec: RequestSpec,
                                          snap: Snapshot) -> bool:
    """AggregateInstanceExtraSpecsFilter: every flavor extra spec scoped
    ``aggregate_instance_extra_specs:`` (or not scoped at all) matches the metadata of
    one of the host's aggregates (Nova's extra-spec operators)."""
    for key, req in spec.extra_specs.items():
        scope, _, name = key.partition(":")
        if name:
            if scope != "aggregate_instance_extra_specs":
                continue
            key = name
        values = h.aggregate_metadata.get(key)
        if not values or not any(match(v, str(req)) for v in values):
            return False
    return True


def _group_hosts(spec: RequestSpec, snap: Snapshot) -> list[str]:
    return snap.group_hosts if spec.group_id else []


def server_group_affinity_filter(h: HostState, spec: RequestSpec, snap: Snapshot) -> bool:
    """ServerGroupAffinityFilter: an ``affinity`` group's members share one host."""
    if snap.group_policy != "affinity":
        return True
    others = _group_hosts(spec, snap)
    return not others or h.host in others


def server_group_anti_affinity_filter(h: HostState, spec: RequestSpec,
                                      snap: Snapshot) -> bool:
    """ServerGroupAntiAffinityFilter: at most ``max_server_per_host`` (2.64 rule;
    default 1) members of an ``anti-affinity`` group per host."""
    if snap.group_policy != "anti-affinity":
        return True
    limit = int(snap.group_rules.get("max_server_per_host") or 1)
    return _group_hosts(spec, snap).count(h.host) < limit


def same_host_filter(h: HostState, spec: RequestSpec, snap: Snapshot) -> bool:
    """SameHostFilter: on a host with one of the ``same_host`` servers."""
    wanted = _uuids(spec.hints.get("same_host"))
    return not wanted or bool(wanted & h.instance_ids)


def different_host_filter(h: HostState, spec: RequestSpec, snap: Snapshot) -> bool:
    """DifferentHostFilter: on no host of the ``different_host`` servers."""
    return not (_uuids(spec.hints.get("different_host")) & h.instance_ids)


def _uuids(value: Any) -> set[str]:
    if not value:
        return set()
    return {value} if isinstance(value, str) else {str(v) for v in value}


FILTERS: dict[str, Filter] = {
    "ComputeFilter": compute_filter,
    "AvailabilityZoneFilter": availability_zone_filter,
    "RamFilter": ram_filter,
    "CoreFilter": core_filter,
    "DiskFilter": disk_filter,
    "AggregateInstanceExtraSpecsFilter": aggregate_instance_extra_specs_filter,
    "ServerGroupAntiAffinityFilter": server_group_anti_affinity_filter,
    "ServerGroupAffinityFilter": server_group_affinity_filter,
    "SameHostFilter": same_host_filter,
    "DifferentHostFilter": different_host_filter,
}
#: what a placement needs whatever the filters: room (Nova's placement claims it even
#: for a forced host)
RESOURCE_FILTERS = ("RamFilter", "CoreFilter", "DiskFilter")


# ------------------------------------------------------------ extra-spec operators
def _num(op: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    def check(value: str, wanted: str) -> bool:
        try:
            return op(float(value), float(wanted))
        except ValueError:
            return False
    return check


_OPS: dict[str, Callable[[str, str], bool]] = {
    "=": _num(operator.ge),  # Nova: "= 4" means at least 4
    "==": _num(operator.eq), "!=": _num(operator.ne),
    ">=": _num(operator.ge), "<=": _num(operator.le),
    "s==": operator.eq, "s!=": operator.ne,
    "s<": operator.lt, "s<=": operator.le, "s>": operator.gt, "s>=": operator.ge,
    "<in>": lambda value, wanted: wanted in value,
}


def match(value: str, req: str) -> bool:
    """Nova's extra_specs_ops.match: ``req`` is a plain string (equal, case-
    insensitive as Nova's boolean/strings compare), ``<or> a <or> b``, ``<all-in> a
    b``, or ``<op> operand``."""
    words = req.split()
    if not words:
        return value == req
    op = words[0]
    if op == "<or>":
        return value in words[1::2]
    if op == "<all-in>":
        return all(w in value for w in words[1:])
    if op in _OPS and len(words) == 2:
        return _OPS[op](value, words[1])
    return value.strip().lower() == req.strip().lower() if \
        req.strip().lower() in ("true", "false") else value == req
