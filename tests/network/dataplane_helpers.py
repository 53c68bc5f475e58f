"""Tiny guests on a strato network's taps, started by hand (QEMU + a tap fd), and the
host-side checks of what the Linux data plane leaves behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from strato.virt.guestbuild import GuestFiles
from strato.virt.qemu.agent import GuestAgent, wait_for_agent
from strato.virt.qemu.process import accel_args, qemu_binary

BOOT_TIMEOUT = 120.0


@dataclass
class TapGuest:
    name: str
    proc: subprocess.Popen[bytes]
    serial: Path
    qga: Path

    def console(self) -> str:
        try:
            return self.serial.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, text: str, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.console():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name}: QEMU exited {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} within {timeout}s; "
                                     f"console: {self.console()[-800:]!r}")
            time.sleep(0.2)

    def sh(self, script: str, timeout: float = 30.0) -> tuple[int | None, str]:
        with GuestAgent(self.qga, timeout=30.0) as ga:
            res = ga.sh(script, timeout=timeout)
        return res.exitcode, (res.stdout + res.stderr).decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def start_guest(guest: GuestFiles, workdir: Path, name: str, tap_fd: int, mac: str,
                ) -> TapGuest:
    """QEMU with the guest's NIC on ``tap_fd`` (closed here once QEMU has it)."""
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    disk = d / "disk.raw"
    shutil.copyfile(guest.disk, disk)
    serial, qga = d / "serial.log", d / "qga.sock"
    argv = [qemu_binary(), "-name", name, "-machine", "pc", *accel_args(),
            "-m", "128", "-smp", "1", "-display", "none", "-nodefaults", "-no-user-config",
            "-kernel", str(guest.kernel), "-initrd", str(guest.initramfs),
            "-append", guest.cmdline,
            "-drive", f"file={disk},format=raw,if=virtio",
            "-serial", f"file:{serial}",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=qga0,path={qga},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
            "-netdev", f"tap,id=n0,fd={tap_fd},vhost=off",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile="]
    try:
        proc = subprocess.Popen(argv, pass_fds=(tap_fd,), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(d / "qemu.err", "wb"))
    finally:
        os.close(tap_fd)
    return TapGuest(name, proc, serial, qga)


def wait_agent(g: TapGuest) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while not g.qga.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{g.name}: no agent socket")
        time.sleep(0.1)
    wait_for_agent(g.qga, BOOT_TIMEOUT)


def host_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                          check=True).stdout


def host_links(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[0].split("@")[0] for line in out.splitlines()
            if line.split() and line.split()[0].startswith(prefix)]


def namespaces(tag: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.split() and f"-{tag}-" in line.split()[0]]


def dnsmasqs(state_path: Path) -> list[str]:
    """Live dnsmasq processes serving from ``state_path`` (zombies are not running)."""
    out = subprocess.run(["pgrep", "-fa", "dnsmasq"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(state_path) in line]
