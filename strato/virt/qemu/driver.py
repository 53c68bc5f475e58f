"""The QEMU hypervisor driver: one ``QemuDriver`` per compute host.

State lives on disk, one directory per instance (``<state_dir>/<uuid>/``): the
``spec.json`` the guest was (and will again be) started from, ``state.json`` (PCI
slots, root ports and controller units: see ``devices``; nodes QEMU's monitor owns;
suspended flag), the pidfile, the QMP and guest agent sockets and ``console.log``.
QEMU runs daemonized, so a new driver over the same ``state_dir`` (an agent restart)
finds its guests with ``reattach()``.

One driver process owns a ``state_dir``; within it, operations on one instance are
serialised by a per-instance lock (QMP and the agent channel serve one client).

Choices worth knowing:

* ``stop``: ACPI ``system_powerdown`` (the guest syncs and unmounts), then QMP
  ``quit`` (QEMU flushes and closes the images), then SIGKILL.
* ``reboot``: soft asks the guest agent (``guest-shutdown mode=reboot``, the guest
  resets in place); without an agent it is a clean stop + start, as Nova's libvirt
  driver does; hard kills the process and starts a fresh one from the spec.
* ``suspend``: like Nova's libvirt managed save: vCPUs stopped, RAM and device state
  migrated to ``suspended.state``, process ended; ``resume`` restores it with
  ``-incoming``.  Works under TCG and frees the guest's memory.
* disks get fixed PCI slots (recorded), so a restored or restarted guest sees the
  same devices at the same addresses, hot-plugged ones included.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strato.storage import crash

from . import devices, disks, nics, process, throttle
from .agent import GuestAgent, wait_for_agent
from .errors import (
    AgentError,
    AgentUnavailable,
    InstanceNotFound,
    InstanceNotRunning,
    InstanceRunning,
    QMPError,
    VirtError,
)
from .process import InstancePaths
from .qmp import Monitor
from .spec import QMP_STATUS, DiskSpec, GuestSpec, NicSpec, PowerState, node_prefix

if TYPE_CHECKING:
    from strato.storage.base import Engine, Image, LiveSnapshot

LOG = logging.getLogger(__name__)

#: ``(source, node_prefix) -> blockdev options``, e.g. ``storage_resolver(engine)``.
Resolver = Callable[[str, str], dict[str, Any]]
#: a NIC's port -> a new open fd of its tap (the caller of QEMU closes it after spawn)
OpenTap = Callable[[NicSpec], int]

CONSOLE_KEEP = 1 << 20  # console.log is trimmed to its last MiB when a guest starts


class QemuDriver:
    """Spawn, control and find QEMU guests whose state lives under ``state_dir``."""

    def __init__(self, state_dir: Path | str, qmp_timeout: float = 10.0,
                 resolve: Resolver | None = None, open_tap: OpenTap | None = None) -> None:
        """``resolve(source, node_prefix)`` gives current blockdev options of a disk's
        ``source`` (see ``storage_resolver``); without it, stored options are used.
        ``open_tap(nic)`` opens a NIC's tap at every QEMU start (guests with NICs on
        ports need it)."""
        self.state_dir = Path(state_dir).absolute()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.qmp_timeout = qmp_timeout
        self.resolve = resolve
        self.open_tap = open_tap
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()

    # --- plumbing ---------------------------------------------------------------------
    def paths(self, uuid: str) -> InstancePaths:
        return InstancePaths(self.state_dir / uuid)

    def _lock(self, uuid: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(uuid, threading.RLock())

    def spec(self, uuid: str) -> GuestSpec:
        """The spec the instance runs (or will next start) with."""
        try:
            return GuestSpec.from_json(self.paths(uuid).spec.read_text())
        except FileNotFoundError:
            raise InstanceNotFound(uuid) from None

    def _save_spec(self, spec: GuestSpec) -> None:
        _write_atomic(self.paths(spec.uuid).spec, spec.to_json())

    def _state(self, uuid: str) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.paths(uuid).state.read_text())
        except FileNotFoundError:
            state = {}
        state.setdefault("slots", {})
        state.setdefault("owned", {})
        state.setdefault("suspended", False)
        return state

    def _save_state(self, uuid: str, state: dict[str, Any]) -> None:
        _write_atomic(self.paths(uuid).state, json.dumps(state, indent=1))

    def pid(self, uuid: str) -> int | None:
        """The live QEMU pid of the instance, or None."""
        return process.read_pid(self.paths(uuid))

    def _require_pid(self, uuid: str) -> int:
        if not self.paths(uuid).dir.exists():
            raise InstanceNotFound(uuid)
        pid = self.pid(uuid)
        if pid is None:
            raise InstanceNotRunning(uuid)
        return pid

    def monitor(self, uuid: str) -> Monitor:
        """A connected QMP session (use as a context manager; hold the instance lock)."""
        self._require_pid(uuid)
        return Monitor(self.paths(uuid).qmp, self.qmp_timeout).connect()

    def qmp(self, uuid: str, command: str, arguments: dict[str, Any] | None = None,
            timeout: float | None = None) -> Any:
        """Run one QMP command on the instance."""
        with self._lock(uuid), self.monitor(uuid) as mon:
            return mon.execute(command, arguments, timeout)

    # --- life cycle -------------------------------------------------------------------
    def spawn(self, spec: GuestSpec) -> int:
        """Create (or re-create) the instance from ``spec`` and boot it; returns the pid.

        Kernel, initramfs and disk files must be absolute paths.  A suspended image
        left from an earlier life is discarded (this is a fresh boot).
        """
        with self._lock(spec.uuid):
            paths = self.paths(spec.uuid)
            paths.dir.mkdir(parents=True, exist_ok=True)
            if self.pid(spec.uuid) is not None:
                raise InstanceRunning(spec.uuid)
            self._save_spec(spec)
            state = self._state(spec.uuid)
            state["suspended"] = False
            self._save_state(spec.uuid, state)
            paths.suspend_image.unlink(missing_ok=True)
            return self._launch(spec)

    def _launch(self, spec: GuestSpec, incoming: str | None = None,
                paused: bool = False) -> int:
        """``paused``: QEMU held at ``-S`` (an incoming migration's destination stays
        paused after the switch-over until ``migration.finish`` runs it)."""
        paths = self.paths(spec.uuid)
        if self.resolve is not None and any(d.source for d in spec.disks):
            spec = spec.with_disks([
                d.with_blockdev(self.resolve(d.source, node_prefix(d.device_id)))
                if d.source else d for d in spec.disks
            ])
            self._save_spec(spec)
        for f in (spec.kernel, spec.initramfs):
            if f is not None and not Path(f).is_absolute():
                raise VirtError(f"not an absolute path: {f}")
        state = self._state(spec.uuid)
        places = devices.assign(state, spec.machine, spec.scsi_model, devices.spec_devices(spec))
        state["owned"] = {d.device_id: d.node for d in spec.disks}
        # an incoming guest keeps the RAM size it was saved or migrated with
        if incoming is None or not state.get("memory"):
            state["memory"] = process.memory_arg(spec.memory_mb)
        self._save_state(spec.uuid, state)
        _trim(paths.console, CONSOLE_KEEP)
        fds: dict[str, int] = {}
        try:
            for nic in spec.nics:  # reopened at every start: QEMU's copies died with it
                if self.open_tap is None:
                    raise VirtError(f"instance {spec.uuid} has NICs on ports but this "
                                    "driver cannot open taps")
                fds[nic.port_id] = self.tap_fd(nic)
            argv = process.build_command(spec, paths, places, incoming=incoming,
                                         nic_fds=fds, memory=state["memory"])
            throttled = [d for d in spec.disks if d.throttle]
            if (throttled and incoming is None) or paused:
                argv.append("-S")  # limits in place before the guest's first I/O
            pid = process.spawn(argv, paths, pass_fds=tuple(fds.values()))
        finally:
            for fd in fds.values():  # the daemon has its own copies
                os.close(fd)
        if throttled:
            crash.point("launch", "before-throttle")
            try:
                self._throttle(spec, cont=incoming is None)
            except BaseException:
                process.kill(pid, paths)  # never a guest running without its limits
                raise
        LOG.info("instance %s: QEMU pid %d", spec.uuid, pid)
        return pid

    def _throttle(self, spec: GuestSpec, cont: bool) -> None:
        """The disks' I/O limits (``throttle``); ``cont``: then run the guest, which
        QEMU holds at ``-S`` until its limits are set."""
        with self.monitor(spec.uuid) as mon:
            for d in spec.disks:
                if d.throttle:
                    throttle.apply(mon, d.device_id, d.throttle)
            if cont:
                mon.execute("cont")

    def tap_fd(self, nic: NicSpec, timeout: float = 10.0) -> int:
        """A new fd of ``nic``'s tap.  EBUSY is retried: a QEMU just killed may still
        hold the tap for a moment (its leader is a zombie while other threads exit)."""
        if self.open_tap is None:
            raise VirtError(f"cannot open the tap of port {nic.port_id}: this driver "
                            "cannot open taps")
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.open_tap(nic)
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def start(self, uuid: str, spec: GuestSpec | None = None) -> int:
        """Start a shut-down instance from its stored spec, or from ``spec`` (which then
        replaces it); a suspended instance is restored instead (``spec`` not allowed)."""
        with self._lock(uuid):
            if self.pid(uuid) is not None:
                raise InstanceRunning(uuid)
            if self._state(uuid)["suspended"]:
                if spec is not None:
                    raise VirtError(f"instance {uuid} is suspended: resume it as it was")
                return self.resume(uuid)
            if spec is not None:
                if spec.uuid != uuid:
                    raise VirtError(f"spec of {spec.uuid} given to start {uuid}")
                self._save_spec(spec)
            return self._launch(self.spec(uuid))

    def power_state(self, uuid: str) -> PowerState:
        """NOSTATE for an unknown instance (or a monitor that does not answer),
        SHUTDOWN/SUSPENDED when no process runs, else mapped from ``query-status``."""
        paths = self.paths(uuid)
        if not paths.spec.exists():
            return PowerState.NOSTATE
        with self._lock(uuid):
            if self.pid(uuid) is None:
                if self._state(uuid)["suspended"]:
                    return PowerState.SUSPENDED
                return PowerState.SHUTDOWN
            try:
                status = self.qmp(uuid, "query-status")["status"]
            except (QMPError, InstanceNotRunning):
                return PowerState.SHUTDOWN if self.pid(uuid) is None else PowerState.NOSTATE
            return QMP_STATUS.get(status, PowerState.PAUSED)

    def stop(self, uuid: str, timeout: float = 60.0) -> bool:
        """Power off: ACPI first (if running), then ``quit``, then SIGKILL.

        Returns True when the guest shut down by itself.  A suspended instance loses
        its saved state and is simply off.
        """
        with self._lock(uuid):
            paths = self.paths(uuid)
            if not paths.dir.exists():
                raise InstanceNotFound(uuid)
            state = self._state(uuid)
            if state["suspended"]:
                state["suspended"] = False
                self._save_state(uuid, state)
                paths.suspend_image.unlink(missing_ok=True)
            pid = self.pid(uuid)
            if pid is None:
                return True
            graceful = False
            try:
                with self.monitor(uuid) as mon:
                    running = mon.execute("query-status")["status"] == "running"
                    if running and timeout > 0:
                        mon.execute("system_powerdown")
                        graceful = process.wait_exit(pid, paths, timeout)
                    if not graceful:
                        with contextlib.suppress(QMPError):
                            mon.execute("quit")
            except (QMPError, InstanceNotRunning):
                pass
            if not process.wait_exit(pid, paths, 10.0):
                LOG.warning("instance %s: QEMU ignored quit, killing it", uuid)
            process.kill(pid, paths)
            return graceful

    def reboot(self, uuid: str, hard: bool = False, timeout: float = 60.0) -> str:
        """Reboot; returns ``"soft"`` (guest rebooted itself), ``"clean"`` (clean stop and
        start) or ``"hard"`` (process killed and started afresh)."""
        with self._lock(uuid):
            self._require_pid(uuid)
            if not hard:
                try:
                    with self.monitor(uuid) as mon:
                        with GuestAgent(self.paths(uuid).qga, timeout=3.0) as ga:
                            ga.shutdown("reboot")
                        mon.wait_event(["RESET"], timeout)
                    return "soft"
                except (AgentUnavailable, AgentError, QMPError) as exc:
                    LOG.info("instance %s: no soft reboot via agent (%s)", uuid, exc)
                if self.pid(uuid) is not None and self.stop(uuid, timeout):
                    self._launch(self.spec(uuid))
                    return "clean"
            pid = self.pid(uuid)
            if pid is not None:
                process.kill(pid, self.paths(uuid))
            self._launch(self.spec(uuid))
            return "hard"

    def pause(self, uuid: str) -> None:
        """Stop the vCPUs (QMP ``stop``); memory stays allocated."""
        self.qmp(uuid, "stop")

    def unpause(self, uuid: str) -> None:
        self.qmp(uuid, "cont")

    def suspend(self, uuid: str, timeout: float = 120.0) -> None:
        """Save the guest's RAM and device state to disk and end the process."""
        with self._lock(uuid):
            pid = self._require_pid(uuid)
            paths = self.paths(uuid)
            tmp = paths.suspend_image.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            with self.monitor(uuid) as mon:
                mon.execute("stop")
                try:
                    mon.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(tmp))}"})
                    deadline = time.monotonic() + timeout
                    while True:
                        st = mon.execute("query-migrate").get("status")
                        if st == "completed":
                            break
                        if st in ("failed", "cancelled") or time.monotonic() > deadline:
                            raise VirtError(f"suspend of {uuid}: migration {st}")
                        time.sleep(0.05)
                except BaseException:
                    with contextlib.suppress(QMPError):
                        mon.execute("cont")
                    tmp.unlink(missing_ok=True)
                    raise
                os.replace(tmp, paths.suspend_image)
                state = self._state(uuid)
                state["suspended"] = True
                self._save_state(uuid, state)
                with contextlib.suppress(QMPError):
                    mon.execute("quit")
            process.wait_exit(pid, paths, 10.0)
            process.kill(pid, paths)

    def resume(self, uuid: str, timeout: float = 120.0) -> int:
        """Restore a suspended guest where it stopped; returns the new pid."""
        with self._lock(uuid):
            paths = self.paths(uuid)
            if not self._state(uuid)["suspended"] or not paths.suspend_image.exists():
                raise VirtError(f"instance {uuid} is not suspended")
            if self.pid(uuid) is not None:
                raise InstanceRunning(uuid)
            state = self._state(uuid)
            if not state.get("memory"):  # saved by a strato that gave QEMU whole MiB
                state["memory"] = str(self.spec(uuid).memory_mb)
                self._save_state(uuid, state)
            src = f"exec:cat {shlex.quote(str(paths.suspend_image))}"
            pid = self._launch(self.spec(uuid), incoming=src)
            with self.monitor(uuid) as mon:
                deadline = time.monotonic() + timeout
                while (status := mon.execute("query-status")["status"]) == "inmigrate":
                    if time.monotonic() > deadline:
                        raise VirtError(f"resume of {uuid}: restore takes over {timeout}s")
                    time.sleep(0.05)
                if status != "running":
                    mon.execute("cont")
            state = self._state(uuid)
            state["suspended"] = False
            self._save_state(uuid, state)
            paths.suspend_image.unlink(missing_ok=True)
            return pid

    def destroy(self, uuid: str) -> None:
        """Kill the guest (if any) and delete its directory; disks are the store's."""
        with self._lock(uuid):
            paths = self.paths(uuid)
            pid = self.pid(uuid)
            if pid is not None:
                process.kill(pid, paths)
            shutil.rmtree(paths.dir, ignore_errors=True)

    # --- discovery --------------------------------------------------------------------
    def list_instances(self) -> list[str]:
        """Every instance with a directory here, running or not."""
        return sorted(p.name for p in self.state_dir.iterdir() if (p / "spec.json").exists())

    def list_running(self) -> list[str]:
        return [u for u in self.list_instances() if self.pid(u) is not None]

    def reattach(self) -> dict[str, PowerState]:
        """After an agent restart: the power state of every instance found here.

        Nothing is started or stopped; leftovers of a crash (stale pidfiles, a
        half-written suspend image) are cleaned so later calls see the truth.
        """
        found: dict[str, PowerState] = {}
        for uuid in self.list_instances():
            paths = self.paths(uuid)
            if self.pid(uuid) is None:
                paths.pidfile.unlink(missing_ok=True)
                paths.suspend_image.with_suffix(".tmp").unlink(missing_ok=True)
            else:
                self._finish_launch(uuid)
            found[uuid] = self.power_state(uuid)
        return found

    def _finish_launch(self, uuid: str) -> None:
        """A start the agent died inside: QEMU still held at ``-S`` (``prelaunch``)
        before its disks' limits were set.  Set them and run it, as the start would
        have."""
        with self._lock(uuid):
            spec = self.spec(uuid)
            if not any(d.throttle for d in spec.disks):
                return
            try:
                with self.monitor(uuid) as mon:
                    if mon.execute("query-status")["status"] != "prelaunch":
                        return
                self._throttle(spec, cont=True)
                LOG.info("instance %s: start finished after a restart (I/O limits set)",
                         uuid)
            except (QMPError, VirtError) as exc:
                LOG.warning("instance %s: cannot finish its start: %s", uuid, exc)

    def console_output(self, uuid: str, length: int | None = None) -> str:
        """The serial console log (all boots), or its last ``length`` lines."""
        paths = self.paths(uuid)
        if not paths.dir.exists():
            raise InstanceNotFound(uuid)
        try:
            with open(paths.console, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - CONSOLE_KEEP))
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        if length is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-length:]) if length > 0 else ""
        return text

    def wait_for_console(self, uuid: str, needle: str, count: int = 1,
                         timeout: float = 60.0) -> str:
        """Wait until ``needle`` appears ``count`` times in the console log."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.console_output(uuid)
            if text.count(needle) >= count:
                return text
            if time.monotonic() > deadline:
                raise VirtError(f"{needle!r} x{count} not on {uuid}'s console after {timeout}s")
            if self.pid(uuid) is None:
                raise InstanceNotRunning(f"{uuid} exited while waiting for {needle!r}")
            time.sleep(0.1)

    # --- guest agent ------------------------------------------------------------------
    def agent(self, uuid: str, timeout: float = 10.0, sync_timeout: float = 5.0) -> GuestAgent:
        """A connected guest agent (use as a context manager); AgentUnavailable if it
        does not answer the initial sync within ``sync_timeout``."""
        self._require_pid(uuid)
        return GuestAgent(self.paths(uuid).qga, timeout).connect(sync_timeout)

    def wait_for_agent(self, uuid: str, timeout: float = 60.0) -> None:
        self._require_pid(uuid)
        wait_for_agent(self.paths(uuid).qga, timeout)

    @contextlib.contextmanager
    def frozen(self, uuid: str, timeout: float = 30.0) -> Iterator[GuestAgent]:
        """Freeze the guest's filesystems for the block; always thaw on the way out."""
        with self._lock(uuid):
            ga = self.agent(uuid, timeout)
            try:
                try:
                    ga.fsfreeze_freeze()
                except BaseException:
                    self._thaw(uuid, ga)  # a timed-out freeze may have frozen some
                    raise
                try:
                    yield ga
                finally:
                    self._thaw(uuid, ga)
            finally:
                ga.close()

    def _thaw(self, uuid: str, ga: GuestAgent, attempts: int = 5) -> None:
        last: Exception | None = None
        for i in range(attempts):
            try:
                if i:
                    ga.close()
                    ga.connect()
                ga.fsfreeze_thaw()
                return
            except (AgentUnavailable, AgentError) as exc:
                last = exc
                time.sleep(0.5 * (i + 1))
        LOG.error("instance %s: could not thaw the guest: %s", uuid, last)
        raise VirtError(f"instance {uuid} may be left frozen: {last}")

    # --- disks and live snapshots (see disks.py) --------------------------------------
    def attach_disk(self, uuid: str, disk: DiskSpec) -> None:
        """Hot-plug ``disk`` into a running guest, or add it to a stopped one's spec."""
        disks.attach(self, uuid, disk)

    def detach_disk(self, uuid: str, device_id: str, timeout: float = 60.0) -> None:
        """Unplug a disk (the guest must release it: ``DEVICE_DELETED``), then close it."""
        disks.detach(self, uuid, device_id, timeout)

    # --- NICs on network ports (see nics.py) -----------------------------------------
    def attach_nic(self, uuid: str, nic: NicSpec) -> None:
        """Hot-plug ``nic`` into a running guest (its tap sent over QMP), or add it to a
        stopped one's spec."""
        nics.attach(self, uuid, nic)

    def detach_nic(self, uuid: str, port_id: str, timeout: float = 60.0) -> None:
        """Unplug a port's NIC (``DEVICE_DELETED``), then its netdev; drop it from the spec."""
        nics.detach(self, uuid, port_id, timeout)

    def live_snapshot(self, uuid: str, device_id: str, live: LiveSnapshot) -> None:
        """Send the store's snapshot command (``live.qmp``) to QEMU and record the new
        top layer in the spec, so later starts open the overlay, not the snapshot."""
        disks.live_snapshot(self, uuid, device_id, live)

    def snapshot_disk(self, uuid: str, device_id: str, image: Image, name: str,
                      quiesce: bool | None = None) -> bool:
        """Snapshot a running guest's disk ``image`` (open in the store) as ``name``.

        ``quiesce``: True requires a guest-agent freeze, None tries it and falls back
        to a crash-consistent snapshot, False skips it.  Returns whether the guest was
        frozen.  The store is told the outcome (commit or abort) before returning.
        """
        return disks.snapshot(self, uuid, device_id, image, name, quiesce)

    def snapshot_disks(self, uuid: str, items: list[tuple[str, Image, str]],
                       quiesce: bool | None = None) -> bool:
        """``snapshot_disk`` for several ``(device_id, image, name)`` of one guest at one
        instant (one freeze, one QMP transaction); returns whether it was frozen."""
        return disks.snapshot_many(self, uuid, items, quiesce)


# --- helpers ---------------------------------------------------------------------------
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _trim(path: Path, keep: int) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size > keep:
        with open(path, "rb") as f:
            f.seek(size - keep // 2)
            tail = f.read()
        _write_atomic(path, tail.decode("utf-8", "replace"))


def storage_resolver(engine: Engine | dict[str, Engine]) -> Resolver:
    """A resolver reading disks from ``strato.storage`` engines (source ``pool/image``):
    one engine, or the engine of each pool."""

    def resolve(source: str, prefix: str) -> dict[str, Any]:
        pool, _, name = source.partition("/")
        eng = engine[pool] if isinstance(engine, dict) else engine
        with eng.open(pool, name) as img:
            return img.blockdev_options(prefix)

    return resolve
