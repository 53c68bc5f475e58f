"""Live migration of a guest between two ``QemuDriver``s (two compute hosts).

SPIKE (issue 20, part M): the driver steps Nova's libvirt driver takes, as functions over
a source and a destination driver.  Nothing in the compute service calls them yet.

Flow (what libvirt does for ``virsh migrate --live [--copy-storage-all]``):

1. ``prepare_incoming(dest, spec)`` on the destination host: QEMU started from the
   same spec with ``-incoming defer`` (and ``-S`` for block migration: it must not run
   before its mirrors are complete), ``migrate-incoming tcp:HOST:PORT``.
   Shared storage (Ceph RBD, or the same local-engine files on one machine): ``spec``
   names the same disks; QEMU opens them inactive (no write lock) until the
   switch-over.  Block migration: ``spec`` names new empty disks of the same size and
   ``block=True`` exports each of them writable over NBD (``block-export-add``).
2. ``mirror(src, uuid, incoming)`` on the source (block migration only): an ``nbd``
   client node per disk and ``blockdev-mirror sync=full copy-mode=write-blocking`` to
   it; returns once every job is ``ready`` (then every guest write goes to both).
3. ``migrate(src, uuid, incoming)``: ``migrate-set-parameters`` (downtime limit,
   bandwidth), ``migrate tcp:HOST:PORT``, poll ``query-migrate`` to ``completed``; the
   source is then ``postmigrate`` (vCPUs stopped for good).
4. ``finish(src, dest, uuid, incoming)``: mirrors completed without pivot
   (``block-job-cancel`` of a ready job), source QEMU quit and its directory removed,
   ``cont`` on the destination (if held), its NBD exports dropped.
   ``abort(...)`` instead, on any failure before ``finish``: ``migrate_cancel``, mirrors
   cancelled, NBD nodes removed, the source running again, the destination killed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import QMPError, VirtError
from .qmp import Monitor
from .spec import GuestSpec

if TYPE_CHECKING:
    from .driver import QemuDriver

#: QEMU's default max-bandwidth is 128 MiB/s (32 MiB/s before 5.x): far below loopback
DEFAULT_BANDWIDTH = 8 << 30
DEFAULT_DOWNTIME_MS = 300


def _monitor(drv: QemuDriver, uuid: str, attempts: int = 5) -> Monitor:
    """``drv.monitor(uuid)``, retried: an event QEMU emits between switching a new
    session out of negotiation mode and answering ``qmp_capabilities`` reaches the client
    first and fails the handshake (qemu.qmp wants the reply) -- seen about once in ten
    connections around a switch-over (MIGRATION/RESUME events)."""
    for i in range(attempts):
        try:
            return drv.monitor(uuid)
        except QMPError:
            if i == attempts - 1 or drv.pid(uuid) is None:
                raise
            time.sleep(0.02)
    raise AssertionError("unreachable")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (the destination host picks it; racy but retried by
    the caller as libvirt does with its migration port range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Incoming:
    """What the destination host hands back to the source for the next steps."""

    uuid: str
    uri: str
    #: multifd channels (0: one stream); both ends must agree
    multifd: int = 0
    #: device_id -> (host, port, export name) of the destination's NBD export
    nbd: dict[str, tuple[str, int, str]] = field(default_factory=dict)

    @property
    def block(self) -> bool:
        return bool(self.nbd)


def _set_multifd(mon: Any, channels: int) -> None:
    if channels:
        mon.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "multifd", "state": True}]})
        mon.execute("migrate-set-parameters", {"multifd-channels": channels})


def prepare_incoming(dest: QemuDriver, spec: GuestSpec, host: str = "127.0.0.1",
                     block: bool = False, multifd: int = 0) -> Incoming:
    """Start the destination QEMU waiting for the migration stream."""
    with dest._lock(spec.uuid):
        paths = dest.paths(spec.uuid)
        paths.dir.mkdir(parents=True, exist_ok=True)
        if dest.pid(spec.uuid) is not None:
            raise VirtError(f"instance {spec.uuid} already runs on the destination")
        dest._save_spec(spec)
        # block migration: held at -S until the mirrors are complete (``finish``);
        # shared storage: runs by itself at the switch-over (the shortest pause)
        dest._launch(spec, incoming="defer", paused=block)
        try:
            spec = dest.spec(spec.uuid)  # as resolved by _launch
            port = free_port(host)
            uri = f"tcp:{host}:{port}"
            nbd: dict[str, tuple[str, int, str]] = {}
            with _monitor(dest, spec.uuid) as mon:
                # no "events" capability: MIGRATION events racing a new QMP session's
                # qmp_capabilities broke its negotiation (seen 1 run in ~4)
                _set_multifd(mon, multifd)
                mon.execute("migrate-incoming", {"uri": uri})
                if block:
                    nport = free_port(host)
                    mon.execute("nbd-server-start", {"addr": {
                        "type": "inet", "data": {"host": host, "port": str(nport)}}})
                    for d in spec.disks:
                        if d.read_only:
                            continue
                        mon.execute("block-export-add", {
                            "type": "nbd", "id": f"mig-{d.device_id}", "name": d.device_id,
                            "node-name": d.node, "writable": True})
                        nbd[d.device_id] = (host, nport, d.device_id)
        except BaseException:
            dest.destroy(spec.uuid)
            raise
        return Incoming(spec.uuid, uri, multifd, nbd)


def _wait_jobs_ready(mon: Any, jobs: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        info = {j["device"]: j for j in mon.execute("query-block-jobs")}
        missing = jobs - set(info)
        if missing:
            raise VirtError(f"block mirror {sorted(missing)} ended before it was ready")
        if all(info[j].get("ready") for j in jobs):
            return
        if time.monotonic() > deadline:
            raise VirtError(f"block mirror not ready within {timeout}s")
        time.sleep(0.05)


def mirror(src: QemuDriver, uuid: str, incoming: Incoming, timeout: float = 600.0) -> None:
    """Copy every writable disk to the destination's NBD export; return once in sync."""
    spec = src.spec(uuid)
    with src._lock(uuid), _monitor(src, uuid) as mon:
        jobs = set()
        for d in spec.disks:
            if d.device_id not in incoming.nbd:
                continue
            host, port, name = incoming.nbd[d.device_id]
            mon.execute("blockdev-add", {
                "driver": "nbd", "node-name": f"mig-{d.device_id}",
                "server": {"type": "inet", "host": host, "port": str(port)},
                "export": name})
            mon.execute("blockdev-mirror", {
                "job-id": f"mig-{d.device_id}", "device": d.node,
                "target": f"mig-{d.device_id}", "sync": "full",
                "copy-mode": "write-blocking", "auto-dismiss": False})
            jobs.add(f"mig-{d.device_id}")
        _wait_jobs_ready(mon, jobs, timeout)


def migrate(src: QemuDriver, uuid: str, incoming: Incoming,
            downtime_ms: int = DEFAULT_DOWNTIME_MS, bandwidth: int = DEFAULT_BANDWIDTH,
            timeout: float = 600.0, progress: Any = None) -> dict[str, Any]:
    """Migrate RAM and device state; returns the final ``query-migrate`` (``downtime``,
    ``total-time`` in ms, ``ram`` figures).  The source is ``postmigrate`` after it."""
    with src._lock(uuid), _monitor(src, uuid) as mon:
        _set_multifd(mon, incoming.multifd)
        mon.execute("migrate-set-parameters", {
            "downtime-limit": downtime_ms, "max-bandwidth": bandwidth})
        mon.execute("migrate", {"uri": incoming.uri})
        deadline = time.monotonic() + timeout
        while True:
            info: dict[str, Any] = mon.execute("query-migrate")
            st = info.get("status")
            if progress is not None:
                progress(info)
            if st == "completed":
                return info
            if st in ("failed", "cancelled"):
                raise VirtError(f"migration of {uuid}: {st}: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise VirtError(f"migration of {uuid} not done within {timeout}s")
            time.sleep(0.02)


def finish(src: QemuDriver, dest: QemuDriver, uuid: str, incoming: Incoming,
           timeout: float = 60.0) -> int:
    """After ``migrate``: the guest runs on the destination, the source is gone.
    Returns the destination's QEMU pid."""
    with src._lock(uuid):
        with _monitor(src, uuid) as mon:
            status = mon.execute("query-status")["status"]
            if status != "postmigrate":
                raise VirtError(f"finish of {uuid}: source is {status}, not postmigrate")
            for dev in incoming.nbd:
                # a ready mirror cancelled = completed without pivot (the source keeps
                # its disk); write-blocking mode left nothing to copy
                with contextlib.suppress(QMPError):
                    mon.execute("block-job-cancel", {"device": f"mig-{dev}"})
            deadline = time.monotonic() + timeout
            while any(j["device"].startswith("mig-") and j["status"] != "concluded"
                      for j in mon.execute("query-block-jobs")):
                if time.monotonic() > deadline:
                    raise VirtError(f"finish of {uuid}: mirrors did not end")
                time.sleep(0.02)
            for dev in incoming.nbd:
                with contextlib.suppress(QMPError):
                    mon.execute("job-dismiss", {"id": f"mig-{dev}"})
                with contextlib.suppress(QMPError):  # closes the NBD connection
                    mon.execute("blockdev-del", {"node-name": f"mig-{dev}"})
        # the guest runs again as soon as possible: the source is cleaned after
        with dest._lock(uuid), _monitor(dest, uuid) as dmon:
            deadline = time.monotonic() + timeout
            while (st := dmon.execute("query-status")["status"]) == "inmigrate":
                if time.monotonic() > deadline:
                    raise VirtError(f"finish of {uuid}: destination still {st}")
                time.sleep(0.01)
            if st != "running":
                dmon.execute("cont")
            for dev in incoming.nbd:
                dmon.execute("block-export-del", {"id": f"mig-{dev}", "mode": "hard"})
            if incoming.nbd:
                dmon.execute("nbd-server-stop")
        src.destroy(uuid)
    pid = dest.pid(uuid)
    if pid is None:
        raise VirtError(f"finish of {uuid}: the destination QEMU is gone")
    return pid


def abort(src: QemuDriver, dest: QemuDriver, uuid: str, incoming: Incoming | None) -> None:
    """Undo a migration that has not finished: the guest keeps running on the source,
    nothing of it stays on the destination (its new disks are the caller's to remove)."""
    with contextlib.suppress(Exception), src._lock(uuid), _monitor(src, uuid) as mon:
        with contextlib.suppress(QMPError):
            mon.execute("migrate_cancel")
        deadline = time.monotonic() + 30
        while (mon.execute("query-migrate").get("status")
               in ("active", "cancelling", "device", "pre-switchover", "setup")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for dev in (incoming.nbd if incoming else {}):
            with contextlib.suppress(QMPError):
                mon.execute("block-job-cancel", {"device": f"mig-{dev}", "force": True})
            with contextlib.suppress(QMPError):
                mon.execute("job-dismiss", {"id": f"mig-{dev}"})
            with contextlib.suppress(QMPError):
                mon.execute("blockdev-del", {"node-name": f"mig-{dev}"})
        if mon.execute("query-status")["status"] in ("postmigrate", "paused"):
            mon.execute("cont")
    if uuid in dest.list_instances():
        dest.destroy(uuid)
