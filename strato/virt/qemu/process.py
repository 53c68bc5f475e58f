"""QEMU processes: the command line, spawning detached guests, finding them again.

Guests run ``-daemonize``d: QEMU forks, the child calls setsid and is reparented to
init, so restarting the compute agent never takes guests down.  The parent returns
once the child has opened its sockets and written its pidfile, so a successful spawn
means QMP is ready.  A pid is only trusted when ``/proc/<pid>/cmdline`` still names
the instance's QMP socket (pids get reused) and the process is not a zombie.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from strato.storage.online import monitor_args

from . import devices
from .devices import Placement
from .errors import SpawnError
from .spec import GuestSpec

SOCKET_PATH_MAX = 107  # sun_path, minus the NUL


def qemu_binary() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise SpawnError("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    return path


@functools.cache
def qemu_version() -> int:
    """QEMU's version as Nova's libvirt driver reports it (major*1e6 + minor*1e3 +
    micro); 0 when no QEMU is installed."""
    path = shutil.which("qemu-system-x86_64")
    if not path:
        return 0
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not m:
        return 0
    return int(m.group(1)) * 1000000 + int(m.group(2)) * 1000 + int(m.group(3) or 0)


#: QEMU with the fix for lost TCG stores during live migration (commit 03bfc2188f,
#: "physmem: Fix migration dirty bitmap coherency with TCG memory access", 9.0)
TCG_DIRTY_FIX = 9_000_000


def memory_arg(memory_mb: int) -> str:
    """``-m`` for a guest of ``memory_mb`` MiB.  Under TCG, QEMU before 9.0 loses guest
    stores while it live-migrates: the fast path of its dirty-bitmap sync (taken when
    the RAM block is a whole number of 64-page words) clears dirty bits without
    resetting the TCG TLB, so a store through a TLB entry cached before the sync is
    never sent -- the guest's kernel oopses on the destination seconds after the move
    (seen here in 1 of ~4 slow moves; 0 of 15 with this).  8 KiB less RAM makes the
    block ragged, and QEMU takes its page-by-page path, which does reset the TLB."""
    if accel().kvm or qemu_version() >= TCG_DIRTY_FIX:
        return str(memory_mb)
    return f"{memory_mb * 1024 - 8}k"


@dataclass(frozen=True)
class Accel:
    """The accelerator guests run under, and why."""

    kvm: bool
    reason: str

    @property
    def name(self) -> str:
        return "KVM" if self.kvm else "TCG"


def choose_accel(sys_module: Path = Path("/sys/module"), dev: Path = Path("/dev/kvm")
                 ) -> Accel:
    """KVM only on real hardware virtualisation: the kvm_intel or kvm_amd module is
    loaded and /dev/kvm opens.  /dev/kvm alone proves nothing: a software virtualiser
    (kvm_pvm, no vmx/svm in the CPU) also provides it, and guests under it are far slower
    than under TCG, and crash with ``-cpu host``."""
    hw = [m for m in ("kvm_intel", "kvm_amd") if (sys_module / m).exists()]
    if not hw:
        other = sorted(p.name for p in sys_module.glob("kvm_*")) if sys_module.is_dir() \
            else []
        why = f"only {', '.join(other)} is loaded, not hardware virtualisation" if other \
            else "no KVM module is loaded"
        return Accel(False, f"neither kvm_intel nor kvm_amd is in {sys_module} ({why})")
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Accel(False, f"{hw[0]} is loaded but {dev} does not open: "
                            f"{exc.strerror or exc}")
    os.close(fd)
    return Accel(True, f"{hw[0]} is loaded and {dev} opens")


_ACCEL: Accel | None = None


def accel() -> Accel:
    """``choose_accel()``, decided once per process (the log says which, and why)."""
    global _ACCEL
    if _ACCEL is None:
        _ACCEL = choose_accel()
    return _ACCEL


def kvm_usable() -> bool:
    return accel().kvm


def accel_args() -> list[str]:
    if kvm_usable():
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi,tb-size=32"]


@dataclass(frozen=True)
class InstancePaths:
    """Files of one instance under ``<state_dir>/<uuid>/``."""

    dir: Path

    @property
    def spec(self) -> Path:
        return self.dir / "spec.json"

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def qmp(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def store_qmp(self) -> Path:
        """The block store's own monitor (layer merges: ``strato.storage.online``)."""
        return self.dir / "store.sock"

    @property
    def qga(self) -> Path:
        return self.dir / "qga.sock"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def serial(self) -> Path:
        """The serial port's socket (one client at a time: the console proxy)."""
        return self.dir / "serial.sock"

    @property
    def efivars(self) -> Path:
        """This instance's UEFI variable store (a copy of OVMF_VARS)."""
        return self.dir / "efivars.fd"

    @property
    def suspend_image(self) -> Path:
        return self.dir / "suspended.state"


def _opt(value: str) -> str:
    """Escape a value for QEMU's key=value option syntax (commas are doubled)."""
    return value.replace(",", ",,")


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def firmware_args(firmware: str, paths: InstancePaths) -> list[str]:
    """SeaBIOS is QEMU's default; UEFI is Debian's OVMF with a per-instance copy of the
    variable store (boot entries the guest writes survive its restarts)."""
    if firmware != "uefi":
        return []
    if not OVMF_CODE.exists():
        raise SpawnError(f"UEFI firmware {OVMF_CODE} is missing (apt-get install ovmf)")
    if not paths.efivars.exists():
        shutil.copyfile(OVMF_VARS, paths.efivars)
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt(str(OVMF_CODE))}",
            "-drive", f"if=pflash,format=raw,unit=1,file={_opt(str(paths.efivars))}"]


def build_command(spec: GuestSpec, paths: InstancePaths, places: dict[str, Placement],
                  *, incoming: str | None = None,
                  nic_fds: dict[str, int] | None = None,
                  memory: str | None = None) -> list[str]:
    """The full argv of ``spec``; ``places`` has every disk's, CD-ROM's and NIC's
    placement (see ``devices.assign``), ``nic_fds`` the open tap fd of each NIC's port
    (the caller passes them to the process).  Without a kernel the firmware boots the
    first disk, then the CD-ROMs in order.  ``memory``: the ``-m`` value (default
    :func:`memory_arg`; an incoming guest must have its source's)."""
    name, machine, kernel = spec.name, spec.machine, spec.kernel
    disks = [(d.device_id, d.blockdev, places[d.device_id], d.serial) for d in spec.disks]
    cdroms = spec.cdroms
    for sock in (paths.qmp, paths.qga, paths.store_qmp, paths.serial):
        if len(str(sock)) > SOCKET_PATH_MAX:
            raise SpawnError(f"socket path too long for AF_UNIX: {sock}")
    argv = [
        qemu_binary(), "-name", f"guest={_opt(name)},debug-threads=on",
        "-machine", _opt(machine), *accel_args(), *firmware_args(spec.firmware, paths),
        "-m", memory or memory_arg(spec.memory_mb), "-smp", str(spec.vcpus),
        "-display", "none", "-nodefaults", "-no-user-config",
        "-daemonize", "-pidfile", str(paths.pidfile),
        "-qmp", f"unix:{_opt(str(paths.qmp))},server=on,wait=off",
        *monitor_args(paths.store_qmp),
        # the serial port: a socket for the console proxy, every byte the guest writes
        # also logged (os-getConsoleOutput), whether or not a client is connected
        "-chardev", f"socket,id=serial0,path={_opt(str(paths.serial))},server=on,wait=off,"
                    f"logfile={_opt(str(paths.console))},logappend=on",
        "-serial", "chardev:serial0",
        "-device", f"virtio-serial-pci,id=vser0,bus={devices.root_bus(machine)},addr=0x3",
        "-chardev", f"socket,id=qga0,path={_opt(str(paths.qga))},server=on,wait=off",
        "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
        # a guest kernel panic pauses the VM (status guest-panicked = CRASHED)
        "-device", "pvpanic", "-action", "panic=pause",
    ]
    if spec.os_type == "windows":  # Windows keeps the hardware clock in local time (as Nova)
        argv += ["-rtc", "base=localtime"]
    if kernel is not None:
        argv += ["-kernel", str(kernel), "-append", spec.cmdline]
        if spec.initramfs is not None:
            argv += ["-initrd", str(spec.initramfs)]
    buses = {p.bus for _, _, p, _ in disks} | {places[c.device_id].bus for c in cdroms}
    argv += devices.controllers(machine, buses, spec.scsi_model)
    argv += devices.rng_args(spec.rng, machine)
    for i, (device_id, opts, place, serial) in enumerate(disks):
        argv += ["-blockdev", json.dumps(opts, separators=(",", ":"))]
        boot = 0 if i == 0 and kernel is None else None
        for dev in devices.device(device_id, opts["node-name"], place, machine,
                                  serial=serial, bootindex=boot):
            argv += ["-device", devices.arg(dev)]
    for i, cd in enumerate(cdroms):
        argv += ["-blockdev", json.dumps({
            "driver": "raw", "node-name": f"{cd.device_id}-cd", "read-only": True,
            "file": {"driver": "file", "filename": str(cd.path), "read-only": True}},
            separators=(",", ":"))]
        # A boot index (after the disks) under firmware boot: OVMF only connects the
        # devices in its boot order and leaves the IDE channels of others disabled,
        # and Linux's ata_piix then never sees the CD (the config drive).
        boot = len(disks) + i if kernel is None else None
        for dev in devices.device(cd.device_id, f"{cd.device_id}-cd", places[cd.device_id],
                                  machine, cdrom=True, bootindex=boot):
            argv += ["-device", devices.arg(dev)]
    fds = nic_fds or {}
    for nic in spec.nics:
        if nic.port_id not in fds:
            raise SpawnError(f"no open tap for port {nic.port_id}")
        argv += ["-netdev", devices.netdev_arg(nic.netdev_id, fds[nic.port_id]),
                 "-device", devices.arg(devices.nic_device(nic, places[nic.device_id],
                                                           machine))]
    argv += list(spec.extra_args)
    if incoming is not None:
        argv += ["-incoming", incoming]
    return argv


def spawn(argv: list[str], paths: InstancePaths, timeout: float = 30.0,
          pass_fds: tuple[int, ...] = ()) -> int:
    """Start a daemonized QEMU; return its pid once the pidfile is there.  ``pass_fds``
    (tap fds named on the command line) are inherited: the daemon keeps them."""
    paths.pidfile.unlink(missing_ok=True)
    for sock in (paths.qmp, paths.qga, paths.store_qmp, paths.serial):
        sock.unlink(missing_ok=True)
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, cwd=paths.dir, pass_fds=pass_fds)
    except subprocess.TimeoutExpired as exc:
        raise SpawnError(f"QEMU did not daemonize within {timeout}s") from exc
    if res.returncode != 0:
        raise SpawnError(f"QEMU failed to start: {res.stderr.strip() or res.returncode}")
    pid = read_pid(paths)
    if pid is None:
        raise SpawnError(f"QEMU started but is gone: {res.stderr.strip()}")
    return pid


def read_pid(paths: InstancePaths) -> int | None:
    """The pid of this instance's live QEMU, or None (no pidfile, dead, or reused pid)."""
    try:
        pid = int(paths.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_is_ours(pid, paths) else None


def _state(stat: Path) -> str:
    return stat.read_text().rsplit(")", 1)[-1].split()[0]


def _state_of(pid: int) -> str | None:
    """The state letter of ``pid``'s leader; None when there is no such process."""
    try:
        return _state(Path(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _threads_alive(pid: int) -> bool:
    """Some thread of ``pid`` other than its leader has not exited yet.  A killed
    QEMU's leader turns zombie first; its vCPU and I/O threads still share the fd
    table (taps, disks) until the last of them is out."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    for task in tasks:
        if task.name == str(pid):
            continue
        try:
            if _state(task / "stat") not in ("Z", "X"):
                return True
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return False


def _proc(pid: int) -> tuple[bytes, str] | None:
    """A live process's command line and state letter; None when it is gone (or only a
    zombie whose threads are all out: its files are closed).  A zombie leader with
    threads still exiting reads as an empty command line, like any process on its
    way out."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = _state(Path(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if state in ("Z", "X"):
        return (b"", state) if _threads_alive(pid) else None
    return (cmdline, state)


def pid_is_ours(pid: int, paths: InstancePaths) -> bool:
    proc = _proc(pid)
    return proc is not None and f"unix:{_opt(str(paths.qmp))},".encode() in proc[0]


def _exiting(pid: int) -> bool:
    """The process is still on its way out: its memory is gone (an empty cmdline), its
    open files (tap fds, disks, sockets) maybe not yet; the kernel drops those later."""
    proc = _proc(pid)
    return proc is not None and not proc[0]


def wait_exit(pid: int, paths: InstancePaths, timeout: float) -> bool:
    """Wait up to ``timeout`` for the process to go, files closed; True if it did."""
    deadline = time.monotonic() + timeout
    while pid_is_ours(pid, paths) or _exiting(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill(pid: int, paths: InstancePaths, timeout: float = 10.0) -> None:
    """SIGKILL the instance's QEMU (if it is still ours) and wait until it is gone."""
    if pid_is_ours(pid, paths):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_exit(pid, paths, timeout)
    paths.pidfile.unlink(missing_ok=True)
