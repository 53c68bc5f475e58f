"""Live migration of a guest between two ``QemuDriver``s (two compute hosts).

The driver steps Nova's libvirt driver takes, as functions over a source and a
destination driver.  The compute service (``strato.compute.live_migration_manager``) runs
the source's and the destination's halves in jobs on their own hosts; ``finish`` and
``abort`` are the two halves together (one process holding both drivers: tests, bench).

Flow (what libvirt does for ``virsh migrate --live [--copy-storage-all]``):

1. ``prepare_incoming(dest, spec)`` on the destination host: QEMU started from the
   same spec (and the source's PCI slot assignment) with ``-incoming defer``,
   ``migrate-incoming tcp:HOST:PORT``; it runs by itself at the switch-over.
   Shared storage (Ceph RBD, or the same local-engine files on one machine): ``spec``
   names the same disks; QEMU opens them inactive (no write lock) until the
   switch-over.  Block migration: ``spec`` names new empty disks of the same size and
   ``block=True`` exports each of them writable over NBD (``block-export-add``).
2. ``mirror(src, uuid, incoming)`` on the source (block migration only): an ``nbd``
   client node per disk and ``blockdev-mirror sync=full copy-mode=background`` to
   it; returns once every job is ``ready`` (then it tracks what the guest dirties).
3. ``migrate(src, uuid, incoming)``: ``migrate-set-parameters`` (downtime limit,
   bandwidth), ``migrate tcp:HOST:PORT``, poll ``query-migrate`` to ``completed``; the
   source is then ``postmigrate`` (vCPUs stopped for good).  Block migration: the
   destination is held (``-S``); ``complete_mirrors`` on the source completes the
   mirrors without pivot (``block-job-cancel`` of a ready job: what is still dirty
   reaches the destination), then ``finish_dest(resume=True)`` runs it there.
   ``control()`` is asked between polls: ``"abort"`` cancels the migration,
   ``"force"`` makes it converge (Nova's force-complete without post-copy: the guest is
   paused, so nothing dirties its RAM any more; it runs again on the destination).
4. ``complete_source(src, uuid, incoming)`` on the source: NBD nodes dropped, source
   QEMU quit and its directory removed; ``finish_dest(dest, uuid, incoming)`` on the
   destination: running (``cont`` if force-complete paused it), NBD exports dropped.
   ``abort_source`` / ``abort_dest`` instead, on any failure before the switch-over:
   ``migrate_cancel``, mirrors cancelled, NBD nodes removed, the source running again;
   the destination killed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import process
from .errors import QMPError, VirtError
from .qmp import Monitor
from .spec import GuestSpec

if TYPE_CHECKING:
    from .driver import QemuDriver

#: QEMU's default max-bandwidth is 128 MiB/s (32 MiB/s before 5.x): far below loopback
DEFAULT_BANDWIDTH = 8 << 30
#: QEMU stops the guest for the last pass once what is left fits this many ms at the
#: measured rate: it aims AT the limit.  Measured with a 512 MiB guest (400 MiB dirty)
#: on loopback: 300 -> 367 ms downtime, total 1.3 s; 50 -> 32 ms, total 0.5 s (more
#: passes, each small: the guest dirties little while the first one runs)
DEFAULT_DOWNTIME_MS = 50


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
    """Both ends must agree, and a QEMU keeps the capability of a migration it took
    in: always set, on or off."""
    mon.execute("migrate-set-capabilities", {"capabilities": [
        {"capability": "multifd", "state": bool(channels)}]})
    if channels:
        mon.execute("migrate-set-parameters", {"multifd-channels": channels})


def prepare_incoming(dest: QemuDriver, spec: GuestSpec, host: str = "127.0.0.1",
                     block: bool = False, multifd: int = 0,
                     slots: dict[str, Any] | None = None,
                     memory: str | None = None) -> Incoming:
    """Start the destination QEMU waiting for the migration stream.  ``slots``: the
    source's PCI slot assignment (its ``state.json``), so hot-plugged devices sit where
    the migrated device state expects them; ``memory``: the source's ``-m`` (its
    ``state.json``; by default what this host gives a new guest of that size)."""
    with dest._lock(spec.uuid):
        paths = dest.paths(spec.uuid)
        paths.dir.mkdir(parents=True, exist_ok=True)
        if dest.pid(spec.uuid) is not None:
            raise VirtError(f"instance {spec.uuid} already runs on the destination")
        dest._save_spec(spec)
        state = dest._state(spec.uuid)
        if slots is not None:
            state["slots"] = slots
        state["memory"] = memory or process.memory_arg(spec.memory_mb)
        state["suspended"] = False
        dest._save_state(spec.uuid, state)
        # shared storage: runs by itself at the switch-over (the shortest pause; QEMU's
        # global state keeps a guest paused on the source paused here).  Block
        # migration: held (-S) until the source has completed its mirrors and
        # ``finish_dest`` runs it (letting it run at a pre-switchover pause instead
        # crashed the guest now and then: seen 2 in ~6 runs)
        dest._launch(spec, incoming="defer", paused=bool(block))
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
                        if d.read_only or d.device_id not in _block_devices(spec, block):
                            continue
                        mon.execute("block-export-add", {
                            "type": "nbd", "id": f"mig-{d.device_id}", "name": d.device_id,
                            "node-name": d.node, "writable": True})
                        nbd[d.device_id] = (host, nport, d.device_id)
        except BaseException:
            dest.destroy(spec.uuid)
            raise
        return Incoming(spec.uuid, uri, multifd, nbd)


def _block_devices(spec: GuestSpec, block: bool | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(block, tuple):
        return block
    return tuple(d.device_id for d in spec.disks) if block else ()


def _wait_jobs_ready(mon: Any, jobs: set[str], timeout: float,
                     control: Any = None) -> None:
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
        if control is not None and control({"status": "mirroring", "disk": {
                "total": sum(info[j]["len"] for j in jobs),
                "transferred": sum(info[j]["offset"] for j in jobs)}}) == "abort":
            raise MigrationCancelled("the migration was aborted while mirroring")
        time.sleep(0.05)


class MigrationCancelled(VirtError):
    """``control()`` asked to abort: the caller rolls back (``abort_source``)."""


def mirror(src: QemuDriver, uuid: str, incoming: Incoming, timeout: float = 600.0,
           sync: dict[str, str] | None = None, control: Any = None) -> None:
    """Copy every exported disk to the destination's NBD export; return once in sync.
    ``sync``: device -> ``"full"`` (default) or ``"top"`` (only the top layer: the
    destination disk is a copy-on-write child of the same parent)."""
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
                "target": f"mig-{d.device_id}", "sync": (sync or {}).get(d.device_id, "full"),
                # background: a guest write never waits on the destination (with
                # write-blocking, a stalled NBD target hung the guest's I/O now and
                # then); what is still dirty is copied by ``complete_mirrors``
                "copy-mode": "background", "auto-dismiss": False})
            jobs.add(f"mig-{d.device_id}")
        _wait_jobs_ready(mon, jobs, timeout, control)


def _complete_mirrors(mon: Any, incoming: Incoming, timeout: float) -> None:
    """Ready mirrors completed without pivot (``block-job-cancel``: the source keeps
    its disk; the vCPUs are stopped, so the job copies what is still dirty and ends),
    dismissed, NBD nodes closed."""
    for dev in incoming.nbd:
        with contextlib.suppress(QMPError):
            mon.execute("block-job-cancel", {"device": f"mig-{dev}"})
    deadline = time.monotonic() + timeout
    while any(j["device"].startswith("mig-") and j["status"] != "concluded"
              for j in mon.execute("query-block-jobs")):
        if time.monotonic() > deadline:
            raise VirtError("the block mirrors did not end")
        time.sleep(0.005)
    for dev in incoming.nbd:
        with contextlib.suppress(QMPError):
            mon.execute("job-dismiss", {"id": f"mig-{dev}"})
        with contextlib.suppress(QMPError):  # closes the NBD connection
            mon.execute("blockdev-del", {"node-name": f"mig-{dev}"})


#: downtime limit (ms) force-complete allows besides pausing the guest
FORCE_DOWNTIME_MS = 10_000


def migrate(src: QemuDriver, uuid: str, incoming: Incoming,
            downtime_ms: int = DEFAULT_DOWNTIME_MS, bandwidth: int = DEFAULT_BANDWIDTH,
            timeout: float = 600.0, progress: Any = None, control: Any = None,
            poll: float = 0.02) -> dict[str, Any]:
    """Migrate RAM and device state; returns the final ``query-migrate`` (``downtime``,
    ``total-time`` in ms, ``ram`` figures; ``"forced": True`` when force-completed).
    The source is ``postmigrate`` after it.  ``control(info)`` (or ``progress``) is
    called with each ``query-migrate``; it may answer ``"abort"`` or ``"force"``."""
    control = control or progress
    forced = False
    with src._lock(uuid), _monitor(src, uuid) as mon:
        _set_multifd(mon, incoming.multifd)
        mon.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "pause-before-switchover", "state": False}]})
        mon.execute("migrate-set-parameters", {
            "downtime-limit": downtime_ms, "max-bandwidth": bandwidth})
        mon.execute("migrate", {"uri": incoming.uri})
        deadline = time.monotonic() + timeout
        while True:
            info: dict[str, Any] = mon.execute("query-migrate")
            st = info.get("status")
            if st == "pre-switchover":
                _complete_mirrors(mon, incoming, 60.0)
                mon.execute("migrate-continue", {"state": "pre-switchover"})
                continue
            if st == "completed":
                if forced:
                    info["forced"] = True
                return info
            if st in ("failed", "cancelled"):
                raise VirtError(f"migration of {uuid}: {st}: {info.get('error-desc', '')}")
            if time.monotonic() > deadline:
                raise VirtError(f"migration of {uuid} not done within {timeout}s")
            ask = control(info) if control is not None else None
            if ask == "abort":
                raise MigrationCancelled(f"migration of {uuid} aborted")
            if ask == "force" and not forced:
                forced = True
                with contextlib.suppress(QMPError):
                    # paused: the rest goes at full speed, in one last pass
                    mon.execute("migrate-set-parameters", {
                        "downtime-limit": FORCE_DOWNTIME_MS,
                        "max-bandwidth": DEFAULT_BANDWIDTH})
                if mon.execute("query-status")["status"] == "running":
                    mon.execute("stop")
            time.sleep(poll)


def complete_mirrors(src: QemuDriver, uuid: str, incoming: Incoming,
                     timeout: float = 60.0) -> None:
    """On the source after ``migrate`` (``postmigrate``): the mirrors completed
    without pivot, their NBD nodes closed -- before the destination may run."""
    if not incoming.nbd or src.pid(uuid) is None:
        return
    with src._lock(uuid), _monitor(src, uuid) as mon:
        _complete_mirrors(mon, incoming, timeout)


def complete_source(src: QemuDriver, uuid: str, incoming: Incoming | None = None,
                    timeout: float = 60.0) -> None:
    """After ``migrate`` on the source host: the guest runs on the destination; the
    source QEMU (``postmigrate``) quits and its directory goes."""
    with src._lock(uuid):
        if src.pid(uuid) is not None:
            with _monitor(src, uuid) as mon:
                status = mon.execute("query-status")["status"]
                if status != "postmigrate":
                    raise VirtError(f"finish of {uuid}: source is {status}, not postmigrate")
                if incoming is not None and incoming.nbd:  # already done at pre-switchover
                    _complete_mirrors(mon, incoming, timeout)
                # a clean quit closes the disks: librbd hands its exclusive lock over
                # at once (a killed client's lock blocked the destination's first
                # write until Ceph declared the dead client gone)
                with contextlib.suppress(QMPError):
                    mon.execute("quit")
            pid = src.pid(uuid)
            if pid is not None:
                process.wait_exit(pid, src.paths(uuid), 10.0)
        src.destroy(uuid)


def finish_dest(dest: QemuDriver, uuid: str, incoming: Incoming | None = None,
                resume: bool = False, timeout: float = 60.0) -> int:
    """On the destination host after the switch-over: the guest running (``resume``:
    ``cont`` a guest force-complete paused), the NBD exports gone.  Returns its pid."""
    with dest._lock(uuid), _monitor(dest, uuid) as dmon:
        deadline = time.monotonic() + timeout
        while (st := dmon.execute("query-status")["status"]) == "inmigrate":
            if time.monotonic() > deadline:
                raise VirtError(f"finish of {uuid}: destination still {st}")
            time.sleep(0.01)
        if st in ("paused", "prelaunch") and resume:
            dmon.execute("cont")
        exports = {e["id"] for e in _query(dmon, "query-block-exports")}
        for e in exports:
            if e.startswith("mig-"):
                dmon.execute("block-export-del", {"id": e, "mode": "hard"})
        if exports or (incoming is not None and incoming.nbd):
            with contextlib.suppress(QMPError):
                dmon.execute("nbd-server-stop")
    pid = dest.pid(uuid)
    if pid is None:
        raise VirtError(f"finish of {uuid}: the destination QEMU is gone")
    return pid


def _query(mon: Any, cmd: str) -> list[dict[str, Any]]:
    try:
        return list(mon.execute(cmd))
    except QMPError:
        return []


def finish(src: QemuDriver, dest: QemuDriver, uuid: str, incoming: Incoming,
           timeout: float = 60.0, resume: bool = False) -> int:
    """After ``migrate``, both halves: the guest runs on the destination, the source is
    gone.  Returns the destination's QEMU pid."""
    complete_mirrors(src, uuid, incoming, timeout)
    pid = finish_dest(dest, uuid, incoming, resume or incoming.block, timeout)
    complete_source(src, uuid, incoming, timeout)
    return pid


def source_status(src: QemuDriver, uuid: str) -> tuple[str | None, str | None]:
    """(``query-status``, ``query-migrate`` status) of the source QEMU; (None, None)
    when none runs -- what a restarted source reads to know how far it got."""
    if src.pid(uuid) is None:
        return None, None
    with src._lock(uuid), _monitor(src, uuid) as mon:
        return (mon.execute("query-status")["status"],
                mon.execute("query-migrate").get("status"))


def abort_source(src: QemuDriver, uuid: str, incoming: Incoming | None) -> None:
    """On the source host: the migration cancelled, mirrors and NBD nodes gone, the
    guest running again (unless it was paused before: ``was_running`` in the QEMU
    state is what ``cont`` restores -- force-complete's pause is undone)."""
    with contextlib.suppress(Exception), src._lock(uuid), _monitor(src, uuid) as mon:
        with contextlib.suppress(QMPError):
            mon.execute("migrate_cancel")
        deadline = time.monotonic() + 30
        while (mon.execute("query-migrate").get("status")
               in ("active", "cancelling", "device", "pre-switchover", "setup")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        names = set(incoming.nbd) if incoming else set()
        names |= {j["device"][4:] for j in _query(mon, "query-block-jobs")
                  if j["device"].startswith("mig-")}
        for dev in names:
            with contextlib.suppress(QMPError):
                mon.execute("block-job-cancel", {"device": f"mig-{dev}", "force": True})
            deadline = time.monotonic() + 10
            while any(j["device"] == f"mig-{dev}" and j["status"] != "concluded"
                      for j in _query(mon, "query-block-jobs")):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            with contextlib.suppress(QMPError):
                mon.execute("job-dismiss", {"id": f"mig-{dev}"})
            with contextlib.suppress(QMPError):
                mon.execute("blockdev-del", {"node-name": f"mig-{dev}"})


def resume_source(src: QemuDriver, uuid: str) -> None:
    """After ``abort_source``: the guest runs again on the source (a failed migration's
    ``postmigrate``/paused source, or force-complete's pause)."""
    with contextlib.suppress(Exception), src._lock(uuid), _monitor(src, uuid) as mon:
        if mon.execute("query-migrate").get("status") == "completed" \
                and mon.execute("query-status")["status"] == "postmigrate":
            return  # the guest runs on the destination: never two of it
        if mon.execute("query-status")["status"] in ("postmigrate", "paused",
                                                     "finish-migrate"):
            mon.execute("cont")


def abort_dest(dest: QemuDriver, uuid: str) -> None:
    """On the destination host: nothing of the guest stays (its new disks are the
    caller's to remove)."""
    if uuid in dest.list_instances() or dest.paths(uuid).dir.exists():
        dest.destroy(uuid)


def abort(src: QemuDriver, dest: QemuDriver, uuid: str, incoming: Incoming | None,
          resume: bool = True) -> None:
    """Undo a migration that has not finished, both halves: the guest keeps running on
    the source, nothing of it stays on the destination."""
    abort_source(src, uuid, incoming)
    if resume:
        resume_source(src, uuid)
    abort_dest(dest, uuid)
