"""NICs on network ports of running guests: hot-plug and unplug over QMP.

A port's tap is opened by the driver's ``open_tap`` callback (the network service
owns the namespace the tap lives in), handed to QEMU with ``getfd`` (SCM_RIGHTS),
then ``netdev_add`` names it and ``device_add`` puts a virtio-net NIC on it at a
recorded place (``devices.hotplug_placement``), so a restart keeps its address.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING

from . import devices
from .disks import device_present
from .errors import QMPError, VirtError
from .spec import NicSpec

if TYPE_CHECKING:
    from .driver import QemuDriver

LOG = logging.getLogger(__name__)


def attach(drv: QemuDriver, uuid: str, nic: NicSpec) -> None:
    """Hot-plug ``nic`` into a running guest, or add it to a stopped one's spec."""
    with drv._lock(uuid):
        spec = drv.spec(uuid)
        if spec.nic(nic.port_id) is not None:
            raise VirtError(f"{uuid} already has a NIC on port {nic.port_id}")
        new_spec = spec.with_nics([*spec.nics, nic])
        state = drv._state(uuid)
        if drv.pid(uuid) is None:
            if state["suspended"]:
                raise VirtError(f"cannot change the NICs of suspended {uuid}")
            drv._save_spec(new_spec)
            return
        if drv.open_tap is None:
            raise VirtError("this driver cannot open taps")
        place = devices.hotplug_placement(
            state, spec.machine, spec.scsi_model, nic.device_id, devices.nic_bus(spec),
            dict(devices.spec_devices(spec)))
        dev = devices.nic_device(nic, place, spec.machine)
        fd = drv.tap_fd(nic)
        try:
            with drv.monitor(uuid) as mon:
                mon.send_fd(fd, nic.netdev_id)
                try:
                    mon.execute("netdev_add", {"type": "tap", "id": nic.netdev_id,
                                               "fd": nic.netdev_id})
                except QMPError:
                    with contextlib.suppress(QMPError):
                        mon.execute("closefd", {"fdname": nic.netdev_id})
                    raise
                try:
                    mon.execute("device_add", dev)
                except QMPError:
                    with contextlib.suppress(QMPError):
                        mon.execute("netdev_del", {"id": nic.netdev_id})
                    raise
        finally:
            os.close(fd)
        drv._save_state(uuid, state)
        drv._save_spec(new_spec)


def detach(drv: QemuDriver, uuid: str, port_id: str, timeout: float = 60.0) -> None:
    """Unplug a port's NIC (the guest must release it: ``DEVICE_DELETED``), then remove
    its netdev (QEMU closes the tap) and drop it from the spec."""
    with drv._lock(uuid):
        spec = drv.spec(uuid)
        nic = spec.nic(port_id)
        if nic is None:
            raise VirtError(f"{uuid} has no NIC on port {port_id}")
        state = drv._state(uuid)
        if drv.pid(uuid) is not None:
            with drv.monitor(uuid) as mon:
                if device_present(mon, nic.device_id):
                    mon.execute("device_del", {"id": nic.device_id})
                    try:
                        mon.wait_event(["DEVICE_DELETED"], timeout,
                                       {"device": nic.device_id})
                    except QMPError:
                        if device_present(mon, nic.device_id):
                            raise VirtError(f"guest did not release {nic.device_id} in "
                                            f"{timeout}s") from None
                try:
                    mon.execute("netdev_del", {"id": nic.netdev_id})
                except QMPError as exc:  # already gone (a retried detach)
                    LOG.info("instance %s: netdev_del %s: %s", uuid, nic.netdev_id, exc)
        elif state["suspended"]:
            raise VirtError(f"cannot change the NICs of suspended {uuid}")
        for key in ("slots", "ports"):
            state.get(key, {}).pop(nic.device_id, None)
        drv._save_state(uuid, state)
        drv._save_spec(spec.with_nics([n for n in spec.nics if n.port_id != port_id]))
