"""What compute and the network service exchange about an instance's NICs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """One entry of a server's ``networks`` once validated: a network (optionally with
    a fixed IP) or an existing port."""

    network_id: str | None = None
    port_id: str | None = None
    fixed_ip: str | None = None
    tag: str | None = None


@dataclass(frozen=True)
class Nic:
    """A port bound to an instance, as the hypervisor plugs it."""

    port_id: str
    network_id: str
    mac: str
    tap: str
