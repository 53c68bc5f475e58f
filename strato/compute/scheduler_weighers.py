"""The scheduler's weighers (Nova's): each gives the hosts that passed the filters a
raw weight, normalized over them to [0, 1] and scaled by its ``[filter_scheduler]
*_weight_multiplier``; the host with the highest sum wins."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strato.compute.scheduler import HostState, RequestSpec, Snapshot

Weigher = Callable[["HostState", "RequestSpec", "Snapshot"], float]


def ram(h: HostState, spec: RequestSpec, snap: Snapshot) -> float:
    """RAMWeigher: free RAM (a positive multiplier spreads, a negative one stacks)."""
    return h.free_ram_mb


def cpu(h: HostState, spec: RequestSpec, snap: Snapshot) -> float:
    return h.free_vcpus


def soft_affinity(h: HostState, spec: RequestSpec, snap: Snapshot) -> float:
    """ServerGroupSoftAffinityWeigher: members of a ``soft-affinity`` group here."""
    return float(snap.group_hosts.count(h.host)) if snap.group_policy == "soft-affinity" \
        else 0.0


def soft_anti_affinity(h: HostState, spec: RequestSpec, snap: Snapshot) -> float:
    """ServerGroupSoftAntiAffinityWeigher: fewer members of the group is better."""
    return -float(snap.group_hosts.count(h.host)) \
        if snap.group_policy == "soft-anti-affinity" else 0.0


#: weigher → its multiplier option in [filter_scheduler]
WEIGHERS: tuple[tuple[Weigher, str], ...] = (
    (ram, "ram_weight_multiplier"),
    (cpu, "cpu_weight_multiplier"),
    (soft_affinity, "soft_affinity_weight_multiplier"),
    (soft_anti_affinity, "soft_anti_affinity_weight_multiplier"),
)


def normalize(values: list[float]) -> list[float]:
    """Nova's weights.normalize: to [0, 1] over the candidates (all 0 when equal)."""
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def weigh(hosts: list[HostState], spec: RequestSpec, snap: Snapshot,
          opts: Any) -> list[tuple[float, float, HostState]]:
    """(total weight, group weight, host) per host, best first; ties go to the host
    the group's soft policy prefers, then to the host name (deterministic)."""
    totals = [0.0] * len(hosts)
    group = [0.0] * len(hosts)
    for fn, option in WEIGHERS:
        mult = float(getattr(opts, option))
        if not mult:
            continue
        raw = [fn(h, spec, snap) for h in hosts]
        for i, w in enumerate(normalize(raw)):
            totals[i] += mult * w
            if fn in (soft_affinity, soft_anti_affinity):
                group[i] += mult * w
    ranked = sorted(zip(totals, group, hosts, strict=True),
                    key=lambda t: (-t[0], -t[1], t[2].host))
    return ranked
