"""The guest's NICs on network ports, between the network service and the hypervisor.

The network service (``services.network``, a ``strato.network.api.NetworkAPI``) owns
ports, taps and the namespaces they live in; the driver only ever sees ``NicSpec``s
and gets a tap's fd through ``tap_opener``.  Every helper here accepts a missing
network service (None): the guest then has the user-mode NIC only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from strato.virt.qemu.spec import NicSpec

if TYPE_CHECKING:
    from strato.network.api import NetworkAPI
    from strato.virt.qemu.driver import OpenTap

LOG = logging.getLogger(__name__)


def network_of(services: Any) -> NetworkAPI | None:
    """This process's network service, or None (absent, or not usable on this host)."""
    net = getattr(services, "network", None)
    if net is None or not getattr(net, "enabled", False):
        return None
    return net


def tap_opener(network: NetworkAPI) -> OpenTap:
    """The driver's ``open_tap`` over the network service (``Services.build`` passes
    ``QemuDriver(..., open_tap=tap_opener(network))``)."""
    from strato.network.instance import Nic

    def open_tap(nic: NicSpec) -> int:
        return network.open_tap(Nic(nic.port_id, nic.network_id, nic.mac, nic.tap))

    return open_tap


def spec_of(nic: Any) -> NicSpec:
    """A ``strato.network.instance.Nic`` as the hypervisor's ``NicSpec``."""
    return NicSpec(nic.port_id, nic.network_id, nic.mac, nic.tap)


def plug_all(services: Any, instance_id: str) -> tuple[NicSpec, ...]:
    """Plug (idempotent) every port bound to the instance, in NIC order, here.  A guest
    with ports on a host whose data plane is not usable fails (never a guest without
    the NICs its ports promise)."""
    net = network_of(services)
    if net is None:
        known = getattr(services, "network", None)
        if known is not None and known.instance_nics(instance_id):
            raise RuntimeError("the instance has network ports but networking is not "
                               f"available on this host: {known.disabled_reason}")
        return ()
    return tuple(spec_of(net.plug(n.port_id)) for n in net.instance_nics(instance_id))


def replug(services: Any, nics: tuple[NicSpec, ...]) -> None:
    """Before QEMU starts again from a stored spec (a host restart may have lost the
    network's namespace): plug each port once more."""
    net = network_of(services)
    if net is None:
        return
    for nic in nics:
        net.plug(nic.port_id)


def deallocate(services: Any, rctx: Any, instance_id: str) -> None:
    """Ports the instance made are deleted, the ones it was given unbound (idempotent)."""
    net = getattr(services, "network", None)
    if net is None:
        return
    net.deallocate_for_instance(rctx, instance_id)


def network_data(services: Any, instance_id: str) -> dict[str, Any] | None:
    """``network_data.json`` of the instance's ports, None when it has none."""
    net = getattr(services, "network", None)
    if net is None or not net.instance_nics(instance_id):
        return None
    data: dict[str, Any] = net.network_data(instance_id)
    return data
