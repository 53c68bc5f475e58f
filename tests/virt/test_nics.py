"""NICs on taps with a real QEMU guest: cold-plugged at spawn, hot-plugged over QMP
(the tap fd sent with SCM_RIGHTS), unplugged, and reopened at every start.

The taps live in a scratch network namespace this test creates and deletes; nothing
here sends a packet anywhere."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato.compute import guestnet
from strato.network.linux.netns import open_tap
from strato.storage import Engine
from strato.virt.guestbuild import GuestFiles
from strato.virt.qemu import NicSpec, QemuDriver, storage_resolver

from .conftest import guest_sh, make_spec, wait_ready


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"strato-nic-{uuidlib.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        for tap in ("tapnica", "tapnicb"):
            _ip("-n", name, "tuntap", "add", tap, "mode", "tap", "vnet_hdr")
            _ip("-n", name, "link", "set", tap, "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def nic_driver(tmp_path_factory: pytest.TempPathFactory, store: Engine,
               netns: str) -> Iterator[QemuDriver]:
    # a short directory: the guests' socket paths must fit AF_UNIX's 108 bytes
    drv = QemuDriver(tmp_path_factory.mktemp("nic") / "i", resolve=storage_resolver(store),
                     open_tap=lambda nic: open_tap(netns, nic.tap))
    yield drv
    for uuid in drv.list_instances():
        drv.destroy(uuid)


def _pci_nics(drv: QemuDriver, uuid: str) -> dict[str, int]:
    """qdev id -> slot of every port NIC (behind a root port too: slot 0 there)."""
    out: dict[str, int] = {}

    def walk(devices: list[dict]) -> None:
        for dev in devices:
            if dev.get("qdev_id", "").startswith(("nic-", "net")):
                out[dev["qdev_id"]] = dev["slot"]
            walk((dev.get("pci_bridge") or {}).get("devices") or [])

    for bus in drv.qmp(uuid, "query-pci"):
        walk(bus["devices"])
    return {k: v for k, v in out.items() if k.startswith("nic-")}


def _info_network(drv: QemuDriver, uuid: str) -> str:
    return str(drv.qmp(uuid, "human-monitor-command", {"command-line": "info network"}))


def test_nics_cold_hot_and_across_restart(nic_driver: QemuDriver, guest: GuestFiles,
                                          store: Engine, netns: str) -> None:
    drv = nic_driver
    port_a, port_b = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    nic_a = NicSpec(port_a, "net-1", "fa:16:3e:00:00:0a", "tapnica")
    nic_b = NicSpec(port_b, "net-1", "fa:16:3e:00:00:0b", "tapnicb")
    spec = make_spec(guest, store).with_nics([nic_a])
    drv.spawn(spec)
    uuid = spec.uuid
    wait_ready(drv, uuid)
    assert _pci_nics(drv, uuid) == {nic_a.device_id: 2}  # the first NIC's slot
    info = _info_network(drv, uuid)
    assert "fa:16:3e:00:00:0a" in info and nic_a.netdev_id in info
    # the tap is QEMU's now: it is up with a carrier ("LOWER_UP") only while QEMU has it
    state = subprocess.run(["ip", "-n", netns, "link", "show", "tapnica"],
                           capture_output=True, text=True, check=True).stdout
    assert "LOWER_UP" in state
    assert "fa:16:3e:00:00:0a" in guest_sh(drv, uuid, "cat /sys/class/net/*/address")

    drv.attach_nic(uuid, nic_b)  # hot-plug: the fd goes over QMP
    nics = _pci_nics(drv, uuid)
    assert set(nics) == {nic_a.device_id, nic_b.device_id}
    assert "fa:16:3e:00:00:0b" in _info_network(drv, uuid)
    assert drv.spec(uuid).nics == (nic_a, nic_b)

    drv.stop(uuid, timeout=0)
    drv.start(uuid)  # both taps reopened, same slots
    wait_ready(drv, uuid, boots=2)
    assert _pci_nics(drv, uuid) == nics
    info = _info_network(drv, uuid)
    assert "fa:16:3e:00:00:0a" in info and "fa:16:3e:00:00:0b" in info

    # suspend and resume: the restored QEMU gets both taps again (``-incoming``)
    drv.suspend(uuid)
    drv.resume(uuid)
    assert _pci_nics(drv, uuid) == nics
    assert "fa:16:3e:00:00:0b" in guest_sh(drv, uuid, "cat /sys/class/net/*/address")

    drv.detach_nic(uuid, port_b, timeout=60)
    assert set(_pci_nics(drv, uuid)) == {nic_a.device_id}
    assert nic_b.netdev_id not in _info_network(drv, uuid)
    assert drv.spec(uuid).nics == (nic_a,)
    # the hot-plug again: a detached port's tap can come back
    drv.attach_nic(uuid, nic_b)
    assert set(_pci_nics(drv, uuid)) == {nic_a.device_id, nic_b.device_id}
    drv.destroy(uuid)
    # no copy of a tap fd outlived QEMU (on failure: who holds one)
    assert _carrier(netns) == [], _tap_holders()


def _carrier(netns: str) -> list[str]:
    """The scratch taps with a carrier: some process holds their fd."""
    out = subprocess.run(["ip", "-n", netns, "link", "show"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if "LOWER_UP" in line and "tapnic" in line]


def _tap_holders() -> list[str]:
    """Every thread with an fd on a scratch tap (``iff:`` in its fdinfo), with its
    state and command line."""
    held = []
    for proc in Path("/proc").glob("[0-9]*/task/[0-9]*"):  # threads: a zombie leader's
        try:                                              # fd table is its threads'
            for info in (proc / "fdinfo").iterdir():
                text = info.read_text()
                if "iff:" in text and "tapnic" in text:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:120]
                    stat = (proc / "stat").read_text().split(") ")[1][:1]
                    held.append(f"{proc.parent.parent.name}/{proc.name} [{stat}] "
                                f"fd {info.name}: {cmd!r}")
        except OSError:
            continue
    return held


def test_spawn_without_open_tap_refuses(tmp_path: Path, guest: GuestFiles,
                                        store: Engine) -> None:
    drv = QemuDriver(tmp_path / "inst", resolve=storage_resolver(store))
    nic = NicSpec(str(uuidlib.uuid4()), "net-1", "fa:16:3e:00:00:0c", "tapnone")
    spec = make_spec(guest, store).with_nics([nic])
    with pytest.raises(Exception, match="cannot open taps"):
        drv.spawn(spec)
    assert drv.pid(spec.uuid) is None
    drv.destroy(spec.uuid)


def test_q35_beside_the_user_mode_nic(nic_driver: QemuDriver, guest: GuestFiles,
                                      store: Engine, netns: str) -> None:
    """A guest that has the user-mode NIC (slot 2) and gets ports (interface attach on
    such a guest): its port NICs take other slots; on q35 a hot-plugged one goes to a
    free PCIe root port, and keeps it across a restart."""
    drv = nic_driver
    nic_a = NicSpec(str(uuidlib.uuid4()), "net-1", "fa:16:3e:00:00:1a", "tapnica")
    nic_b = NicSpec(str(uuidlib.uuid4()), "net-1", "fa:16:3e:00:00:1b", "tapnicb")
    base = make_spec(guest, store)
    user = guestnet.netdev_args("fa:16:3e:00:00:99", drv.paths(base.uuid).dir)
    spec = dataclasses.replace(base, machine="q35", extra_args=user).with_nics([nic_a])
    drv.spawn(spec)
    uuid = spec.uuid
    wait_ready(drv, uuid)
    slots = _pci_nics(drv, uuid)
    assert set(slots) == {nic_a.device_id} and slots[nic_a.device_id] != 2
    drv.attach_nic(uuid, nic_b)
    assert set(_pci_nics(drv, uuid)) == {nic_a.device_id, nic_b.device_id}
    port = drv._state(uuid)["ports"][nic_b.device_id]
    info = _info_network(drv, uuid)
    assert all(m in info for m in ("fa:16:3e:00:00:1a", "fa:16:3e:00:00:1b",
                                   "fa:16:3e:00:00:99"))
    drv.stop(uuid, timeout=0)
    drv.start(uuid)
    wait_ready(drv, uuid, boots=2)
    assert drv._state(uuid)["ports"][nic_b.device_id] == port
    assert set(_pci_nics(drv, uuid)) == {nic_a.device_id, nic_b.device_id}
    drv.detach_nic(uuid, nic_b.port_id, timeout=60)
    assert set(_pci_nics(drv, uuid)) == {nic_a.device_id}
    drv.destroy(uuid)
