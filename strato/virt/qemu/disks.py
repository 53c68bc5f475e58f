"""Disks of running guests: hot-plug, unplug, and live snapshots with the block store.

Module functions over a ``QemuDriver`` (whose methods call them) so the driver module
stays about the life cycle.  See ``spec`` for the node-name convention.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import devices, throttle
from .errors import AgentError, AgentUnavailable, QMPError, VirtError
from .qmp import Monitor
from .spec import DiskSpec, node_prefix, overlay_options

if TYPE_CHECKING:
    from strato.storage.base import Image, LiveSnapshot

    from .driver import QemuDriver

LOG = logging.getLogger(__name__)


def attach(drv: QemuDriver, uuid: str, disk: DiskSpec) -> None:
    """Hot-plug ``disk`` into a running guest, or add it to a stopped one's spec."""
    with drv._lock(uuid):
        spec = drv.spec(uuid)
        if spec.disk(disk.device_id) is not None:
            raise VirtError(f"{uuid} already has a disk {disk.device_id}")
        new_spec = spec.with_disks([*spec.disks, disk])
        state = drv._state(uuid)
        if drv.pid(uuid) is None:
            if state["suspended"]:
                raise VirtError(f"cannot change the disks of suspended {uuid}")
            drv._save_spec(new_spec)
            return
        place = devices.hotplug_placement(
            state, spec.machine, spec.scsi_model, disk.device_id, disk.bus,
            {d: b for d, b in devices.spec_devices(spec)})
        (dev,) = devices.device(disk.device_id, disk.node, place, spec.machine,
                                serial=disk.serial)
        with drv.monitor(uuid) as mon:
            mon.execute("blockdev-add", disk.blockdev)
            try:
                mon.execute("device_add", dev)
            except QMPError:
                with contextlib.suppress(QMPError):
                    mon.execute("blockdev-del", {"node-name": disk.node})
                raise
            if disk.throttle:
                try:
                    throttle.apply(mon, disk.device_id, disk.throttle)
                except (QMPError, VirtError):  # never a disk without its limits: unplug it
                    with contextlib.suppress(QMPError):
                        mon.execute("device_del", {"id": disk.device_id})
                        mon.wait_event(["DEVICE_DELETED"], 30.0,
                                       {"device": disk.device_id})
                    blockdev_del_quiet(mon, disk.node)
                    raise
        state["owned"][disk.device_id] = disk.node
        drv._save_state(uuid, state)
        drv._save_spec(new_spec)


def detach(drv: QemuDriver, uuid: str, device_id: str, timeout: float = 60.0) -> None:
    """Unplug a disk (the guest must release it: ``DEVICE_DELETED``), then close it."""
    with drv._lock(uuid):
        spec = drv.spec(uuid)
        disk = spec.disk(device_id)
        if disk is None:
            raise VirtError(f"{uuid} has no disk {device_id}")
        state = drv._state(uuid)
        if drv.pid(uuid) is not None:
            with drv.monitor(uuid) as mon:
                if device_present(mon, device_id):
                    mon.execute("device_del", {"id": device_id})
                    try:
                        mon.wait_event(["DEVICE_DELETED"], timeout, {"device": device_id})
                    except QMPError:
                        if device_present(mon, device_id):
                            raise VirtError(
                                f"guest did not release {device_id} in {timeout}s"
                            ) from None
                for node in dict.fromkeys([state["owned"].get(device_id), disk.node]):
                    if node:
                        blockdev_del_quiet(mon, node)
        elif state["suspended"]:
            raise VirtError(f"cannot change the disks of suspended {uuid}")
        for key in ("slots", "ports", "units", "owned"):
            state.get(key, {}).pop(device_id, None)
        drv._save_state(uuid, state)
        drv._save_spec(spec.with_disks([d for d in spec.disks if d.device_id != device_id]))


def live_snapshot(drv: QemuDriver, uuid: str, device_id: str, live: LiveSnapshot) -> None:
    """Send the store's snapshot command (``live.qmp``) to QEMU and record the new
    top layer in the spec, so later starts open the overlay, not the snapshot."""
    live_snapshots(drv, uuid, [(device_id, live)])


def live_snapshots(drv: QemuDriver, uuid: str, lives: list[tuple[str, LiveSnapshot]]) -> None:
    """Several disks' live snapshots at one instant: one QMP ``transaction`` (all
    taken or none), then the spec follows every disk onto its overlay."""
    with drv._lock(uuid):
        spec = drv.spec(uuid)
        actions = []
        new = {}  # device -> its blockdev once on the overlay
        with drv.monitor(uuid) as mon:
            tops = active_nodes(mon)
            for device_id, live in lives:
                disk = spec.disk(device_id)
                if disk is None:
                    raise VirtError(f"{uuid} has no disk {device_id}")
                args = live.qmp.get("arguments", {})
                # the store may have merged layers under the guest since it started, so
                # QEMU (not the spec) says which node is the top now
                if args.get("node-name") not in (None, tops.get(device_id)):
                    raise VirtError(f"snapshot of node {args.get('node-name')} but "
                                    f"{device_id}'s top is {tops.get(device_id)}")
                actions.append({"type": live.qmp["execute"], "data": args})
                new[device_id] = overlay_options(disk.blockdev, live.overlay, live.node_name)
            if len(actions) == 1:
                mon.execute(actions[0]["type"], actions[0]["data"])
            elif actions:
                mon.execute("transaction", {"actions": actions})
        drv._save_spec(spec.with_disks([d.with_blockdev(new[d.device_id])
                                        if d.device_id in new else d for d in spec.disks]))


def active_nodes(mon: Monitor) -> dict[str, str]:
    """Device id -> the node its guest writes to now (QMP ``query-block``)."""
    tops = {}
    for dev in mon.execute("query-block"):
        qdev = str(dev.get("qdev") or "")
        node = (dev.get("inserted") or {}).get("node-name")
        if qdev.startswith("/machine/peripheral/") and node:
            tops[qdev.split("/")[3]] = str(node)
    return tops


def snapshot(drv: QemuDriver, uuid: str, device_id: str, image: Image, name: str,
             quiesce: bool | None = None) -> bool:
    """Snapshot a running guest's disk ``image`` (open in the store) as ``name``.

    ``quiesce``: True requires a guest-agent freeze, None tries it and falls back
    to a crash-consistent snapshot, False skips it.  Returns whether the guest was
    frozen.  The store is told the outcome (commit or abort) before returning.
    """
    return snapshot_many(drv, uuid, [(device_id, image, name)], quiesce)


def snapshot_many(drv: QemuDriver, uuid: str, disks: list[tuple[str, Image, str]],
                  quiesce: bool | None = None) -> bool:
    """``snapshot`` for several disks of one guest, all inside one freeze window: the
    disks QEMU owns in one QMP transaction, the ones their store snapshots itself
    (rbd) right after it.  A failure leaves none of the stores' snapshots pending."""
    with drv._lock(uuid):
        prepared: list[tuple[str, Image, str, LiveSnapshot | None]] = []
        try:
            for device_id, image, name in disks:
                prepared.append((device_id, image, name,
                                 image.prepare_live_snapshot(name, node_prefix(device_id))))
        except BaseException:
            _settle(prepared, taken=False)
            raise
        lives = [(dev, live) for dev, _, _, live in prepared if live is not None]
        taken = False
        try:
            with maybe_frozen(drv, uuid, quiesce) as quiesced:
                if lives:
                    live_snapshots(drv, uuid, lives)
                    taken = True
                for _, image, name, live in prepared:
                    if live is None:  # the engine snapshots in-use images itself (rbd)
                        image.create_snap(name)
        except BaseException:
            _settle(prepared, taken)  # taken: only a later step failed, QEMU is on overlays
            raise
        _settle(prepared, taken=True)
        return quiesced


def _settle(prepared: list[tuple[str, Image, str, LiveSnapshot | None]], taken: bool) -> None:
    for _, image, name, live in prepared:
        if live is None:
            continue
        if taken:
            image.commit_live_snapshot(name)
        else:
            image.abort_live_snapshot(name)


@contextlib.contextmanager
def maybe_frozen(drv: QemuDriver, uuid: str, quiesce: bool | None) -> Iterator[bool]:
    """``frozen`` when asked (True) or possible (None); yields whether it froze."""
    if quiesce is False:
        yield False
        return
    freeze = drv.frozen(uuid)
    try:
        freeze.__enter__()
    except (AgentUnavailable, AgentError):
        if quiesce:
            raise
        LOG.warning("instance %s: guest agent unavailable, not quiescing", uuid)
        yield False
        return
    with contextlib.ExitStack() as stack:
        stack.push(freeze)
        yield True


def device_present(mon: Monitor, device_id: str) -> bool:
    try:
        mon.execute("qom-get", {"path": f"/machine/peripheral/{device_id}", "property": "type"})
        return True
    except QMPError:
        return False


def blockdev_del_quiet(mon: Monitor, node: str) -> None:
    """blockdev-del, ignoring nodes already gone or not owned by the monitor (overlays
    QEMU created for a live snapshot vanish with their device)."""
    try:
        mon.execute("blockdev-del", {"node-name": node})
    except QMPError as exc:
        LOG.debug("blockdev-del %s: %s", node, exc)
