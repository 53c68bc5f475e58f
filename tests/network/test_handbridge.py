"""The network bench's baseline on its own: two tiny guests started straight with QEMU
(no strato), a second NIC hot-plugged into each onto a bridge made by hand in a scratch
namespace, addressed through the guest agent; they reach each other and a TCP stream
flows; afterwards nothing of it is left on the machine."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._handnet import HandBridge, tcp_throughput
from strato.virt.guestbuild import build_guest
from strato.virt.qemu.agent import GuestAgent, wait_for_agent
from strato.virt.qemu.process import accel_args, qemu_binary
from tests.network.leaks import Snapshot

if shutil.which("ip") is None or not Path("/dev/net/tun").exists():
    pytest.skip("needs iproute2 and /dev/net/tun", allow_module_level=True)


def start_guest(files, root: Path) -> tuple[subprocess.Popen, Path, Path]:  # type: ignore[no-untyped-def]
    """One tiny guest under QEMU with a QMP socket and the agent; no NIC, and no DHCP
    client (strato.nonet): the NIC plugged later is eth0, which the guest's DHCP would
    otherwise claim and flush if it appeared within its first seconds."""
    root.mkdir(parents=True)
    disk = root / "disk.raw"
    shutil.copy(files.disk, disk)
    qmp, ga = root / "qmp.sock", root / "ga.sock"
    proc = subprocess.Popen([
        qemu_binary(), *accel_args(), "-m", "128", "-smp", "1", "-display", "none",
        "-nodefaults", "-no-user-config", "-kernel", str(files.kernel),
        "-initrd", str(files.initramfs), "-append", files.cmdline + " strato.nonet",
        "-drive", f"file={disk},if=virtio,format=raw",
        "-serial", f"file:{root / 'console.log'}",
        "-qmp", f"unix:{qmp},server=on,wait=off",
        "-chardev", f"socket,id=ga,path={ga},server=on,wait=off",
        "-device", "virtio-serial", "-device",
        "virtserialport,chardev=ga,name=org.qemu.guest_agent.0"],
        stdout=subprocess.DEVNULL, stderr=(root / "qemu.log").open("wb"))
    return proc, qmp, ga


@pytest.fixture(scope="module")
def two_guests(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[list[tuple[Path, Path]]]:
    root = tmp_path_factory.mktemp("hand")
    files = build_guest(root / "guest")
    procs = []
    try:
        guests = []
        for i in range(2):
            proc, qmp, ga = start_guest(files, root / f"g{i}")
            procs.append(proc)
            guests.append((qmp, ga))
        for _, ga in guests:
            wait_for_agent(ga, timeout=120)
        yield guests
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_two_guests_on_a_hand_made_bridge(two_guests: list[tuple[Path, Path]]) -> None:
    before = Snapshot.take()
    with HandBridge(two_guests) as hb:
        assert hb.ns in Snapshot.take().namespaces
        with GuestAgent(two_guests[0][1]).connect(5) as a, \
                GuestAgent(two_guests[1][1]).connect(5) as b:
            ping = a.sh(f"ping -c 2 -W 5 {hb.addresses[1]}", timeout=30)
            assert ping.exitcode == 0, ping.stdout + ping.stderr
            rate = tcp_throughput(a, b, hb.addresses[1], 32)
            print(f"hand bridge: {rate:.1f} MB/s")
            assert rate > 0.1  # MB/s: it flowed (the bench measures for real)
    leaks = Snapshot.take().leaked_since(before, tag=hb.ns.split("-")[1])
    assert not leaks, str(leaks)
    assert hb.ns not in Snapshot.take().namespaces
