"""Choose a backend for a new volume, as Cinder's filter scheduler does (seed 003).

Filters drop backends that cannot take the volume (zone, capacity, the type's extra
specs); weighers rank the rest — each weigher's values normalized to 0..1, times its
multiplier, summed — and the highest wins.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strato.config import ConfigError

GiB = 1 << 30


@dataclass(frozen=True)
class Backend:
    name: str
    pool: str
    capacity_gb: float
    availability_zone: str
    capabilities: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendState:
    """A backend as the scheduler sees it now."""

    backend: Backend
    allocated_gb: float
    reserved_percentage: int
    max_over_subscription_ratio: float = 20.0

    @property
    def free_gb(self) -> float:
        """Room left for new volumes.  Thin backends (every block-store pool: volumes are
        sparse) may promise ``max_over_subscription_ratio`` times their capacity, as
        Cinder's capacity filter allows."""
        capacity = self.backend.capacity_gb
        reserved = capacity * self.reserved_percentage / 100
        if self.backend.capabilities.get("thin_provisioning_support"):
            capacity *= max(1.0, self.max_over_subscription_ratio)
        return capacity - reserved - self.allocated_gb


@dataclass(frozen=True)
class Request:
    size_gb: int
    availability_zone: str | None
    extra_specs: dict[str, str]


def parse_backends(entries: Sequence[str], store_root: Path, default_zone: str) -> list[Backend]:
    """``NAME:POOL[:CAPACITY_GB[:ZONE]]`` entries of ``[volume] enabled_backends``."""
    backends = []
    for entry in entries:
        parts = entry.split(":")
        if len(parts) < 2 or not parts[0] or not parts[1] or len(parts) > 4:
            raise ConfigError(f"invalid value {entry!r} for option [volume] enabled_backends: "
                              "expected NAME:POOL[:CAPACITY_GB[:ZONE]]")
        if len(parts) > 2 and parts[2]:
            try:
                capacity = float(parts[2])
            except ValueError:
                raise ConfigError(f"invalid capacity in [volume] enabled_backends entry "
                                  f"{entry!r}") from None
        else:
            store_root.mkdir(parents=True, exist_ok=True)
            st = os.statvfs(store_root)
            capacity = st.f_bavail * st.f_frsize / GiB
        zone = parts[3] if len(parts) > 3 and parts[3] else default_zone
        backends.append(Backend(parts[0], parts[1], capacity, zone, {
            "volume_backend_name": parts[0], "storage_protocol": "blockstore",
            "vendor_name": "Open Source", "driver_version": "1.0.0",
            "thin_provisioning_support": True, "thick_provisioning_support": False,
            "multiattach": False}))
    if len({b.name for b in backends}) != len(backends):
        raise ConfigError("[volume] enabled_backends names a backend twice")
    return backends


# ------------------------------------------------------------------ filters
def availability_zone_filter(state: BackendState, req: Request) -> bool:
    return req.availability_zone is None or req.availability_zone == \
        state.backend.availability_zone


def capacity_filter(state: BackendState, req: Request) -> bool:
    return state.free_gb >= req.size_gb


def capabilities_filter(state: BackendState, req: Request) -> bool:
    """Every extra spec (``capabilities:`` scope or none) must match the backend's."""
    caps = state.backend.capabilities
    for key, want in req.extra_specs.items():
        scope, _, name = key.rpartition(":")
        if scope not in ("", "capabilities"):
            continue  # other scopes (qos:, hw:) are not for the scheduler
        have = caps.get(name)
        if have is None:
            return False
        if str(want).startswith("<is> "):
            if str(have).lower() != want[4:].strip().lower():
                return False
        elif str(have) != str(want):
            return False
    return True


FILTERS: dict[str, Callable[[BackendState, Request], bool]] = {
    "AvailabilityZoneFilter": availability_zone_filter,
    "CapacityFilter": capacity_filter,
    "CapabilitiesFilter": capabilities_filter,
}

WEIGHERS: dict[str, tuple[Callable[[BackendState], float], str]] = {
    "CapacityWeigher": (lambda s: s.free_gb, "capacity_weight_multiplier"),
    "AllocatedCapacityWeigher": (lambda s: s.allocated_gb,
                                 "allocated_capacity_weight_multiplier"),
}


def _normalize(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    if high == low:
        return [0.0 for _ in values]
    return [(v - low) / (high - low) for v in values]


class NoValidBackend(Exception):  # noqa: N818 - Cinder's name
    pass


def choose(states: list[BackendState], req: Request, filters: Sequence[str],
           weighers: Sequence[str], multipliers: dict[str, float]) -> Backend:
    for name in list(filters) + list(weighers):
        if name not in FILTERS and name not in WEIGHERS:
            raise ConfigError(f"unknown scheduler filter or weigher {name!r}")
    passed = [s for s in states if all(FILTERS[f](s, req) for f in filters)]
    if not passed:
        raise NoValidBackend(f"No valid backend was found: no backend passed the filters "
                             f"{', '.join(filters)} for a {req.size_gb} GiB volume.")
    totals = [0.0] * len(passed)
    for name in weighers:
        fn, option = WEIGHERS[name]
        for i, value in enumerate(_normalize([fn(s) for s in passed])):
            totals[i] += value * multipliers[option]
    best = max(range(len(passed)), key=lambda i: (totals[i], -i))
    return passed[best].backend
