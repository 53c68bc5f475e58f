"""One running guest (started by another process): console, agent, pause, hot-plug,
live snapshot, and a driver restart that finds it again."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from strato.storage import Engine
from strato.virt.guestbuild import READY_MARKER, GuestFiles
from strato.virt.qemu import DiskSpec, PowerState, QemuDriver, node_prefix

from .conftest import guest_sh, wait_ready


def test_console_shows_ready(driver: QemuDriver, vm: str) -> None:
    out = driver.console_output(vm)
    assert f"{READY_MARKER} bootcount=1" in out
    assert driver.console_output(vm, length=1).count("\n") <= 1
    assert driver.power_state(vm) is PowerState.RUNNING


def test_agent_ping_and_exec(driver: QemuDriver, vm: str) -> None:
    with driver.agent(vm) as ga:
        ga.ping()
        res = ga.exec("/bin/cat", ["/mnt/root/bootcount"])
        assert (res.exitcode, res.stdout) == (0, b"1\n")
        assert ga.sh("exit 3").exitcode == 3


def test_agent_file_round_trip(driver: QemuDriver, vm: str) -> None:
    data = bytes(range(256)) * 400  # several guest-file-read chunks
    with driver.agent(vm) as ga:
        ga.write_file("/mnt/root/blob.bin", data)
        assert ga.read_file("/mnt/root/blob.bin") == data
    assert guest_sh(driver, vm, "md5sum /mnt/root/blob.bin").split()[0] == \
        hashlib.md5(data).hexdigest()


def test_pause_unpause(driver: QemuDriver, vm: str) -> None:
    driver.pause(vm)
    try:
        assert driver.power_state(vm) is PowerState.PAUSED
    finally:
        driver.unpause(vm)
    assert driver.power_state(vm) is PowerState.RUNNING
    with driver.agent(vm) as ga:
        ga.ping()


def test_hotplug_disk(driver: QemuDriver, vm: str, guest: GuestFiles, store: Engine,
                     tmp_path: Path) -> None:
    store.import_from("volumes", f"volume-{vm}", guest.disk)
    with store.open("volumes", f"volume-{vm}") as img:
        opts = img.blockdev_options(node_prefix("vdb"))
    before = guest_sh(driver, vm, "cat /proc/partitions")
    assert "vdb" not in before
    driver.attach_disk(vm, DiskSpec("vdb", opts, serial="vol-test-1"))
    # the guest's PCI hotplug takes a moment under TCG
    out = guest_sh(driver, vm, "for i in $(seq 250); do [ -b /dev/vdb ] && break; sleep 0.1; "
                               "done; cat /proc/partitions /sys/block/vdb/serial")
    assert "vdb" in out and "vol-test-1" in out
    assert [d.device_id for d in driver.spec(vm).disks] == ["vda", "vdb"]
    guest_sh(driver, vm, "mkdir -p /mnt/v && mount /dev/vdb /mnt/v && cat /mnt/v/README "
                         "&& echo on-volume > /mnt/v/vol.txt")
    # a live snapshot of the hot-plugged disk: QEMU then runs on an overlay it created
    with store.open("volumes", f"volume-{vm}") as img:
        assert driver.snapshot_disk(vm, "vdb", img, "vsnap") is True
    guest_sh(driver, vm, "umount /mnt/v")
    driver.detach_disk(vm, "vdb")
    assert "vdb" not in guest_sh(driver, vm, "cat /proc/partitions")
    assert [d.device_id for d in driver.spec(vm).disks] == ["vda"]
    nodes = [n["node-name"] for n in driver.qmp(vm, "query-named-block-nodes")]
    assert not [n for n in nodes if n.startswith("vdb")], nodes
    # QEMU let go of every layer: the store can snapshot the volume offline now
    with store.open("volumes", f"volume-{vm}") as img:
        img.create_snap("after-detach")
    with store.open("volumes", f"volume-{vm}", snapshot="vsnap") as snap:
        snap.export_to(tmp_path / "vsnap.raw")
    cat = subprocess.run(["debugfs", "-R", "cat /vol.txt", str(tmp_path / "vsnap.raw")],
                         capture_output=True, text=True)
    assert cat.stdout == "on-volume\n"


def test_live_snapshot_frozen(driver: QemuDriver, vm: str, store: Engine,
                              tmp_path: Path) -> None:
    guest_sh(driver, vm, "echo before-snapshot > /mnt/root/hello.txt")  # page cache only
    with store.open("vms", f"{vm}_disk") as img:
        assert driver.snapshot_disk(vm, "vda", img, "snap1", quiesce=True) is True
    with driver.agent(vm) as ga:
        assert ga.fsfreeze_status() == "thawed"
    guest_sh(driver, vm, "echo after-snapshot > /mnt/root/later.txt && sync")

    # the driver's spec follows QEMU onto the overlay, as the store computes it
    with store.open("vms", f"{vm}_disk") as img:
        assert [s.name for s in img.list_snaps()] == ["snap1"]
        vda = driver.spec(vm).disk("vda")
        assert vda is not None
        assert vda.node == img.blockdev_options(node_prefix("vda"))["node-name"]
    with store.open("vms", f"{vm}_disk", snapshot="snap1") as snap:
        snap.export_to(tmp_path / "snap.raw")
    fsck = subprocess.run(["e2fsck", "-fn", str(tmp_path / "snap.raw")],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr  # clean: taken while frozen
    cat = subprocess.run(["debugfs", "-R", "cat /hello.txt", str(tmp_path / "snap.raw")],
                         capture_output=True, text=True)
    assert cat.stdout == "before-snapshot\n"
    ls = subprocess.run(["debugfs", "-R", "ls /", str(tmp_path / "snap.raw")],
                        capture_output=True, text=True)
    assert "later.txt" not in ls.stdout and "bootcount" in ls.stdout
    # the guest keeps running on the overlay
    assert guest_sh(driver, vm, "cat /mnt/root/later.txt") == "after-snapshot\n"


def test_new_driver_reattaches(driver: QemuDriver, vm: str, state_dir: Path) -> None:
    pid = driver.pid(vm)
    fresh = QemuDriver(state_dir)  # what a restarted compute agent builds
    assert fresh.reattach()[vm] is PowerState.RUNNING
    assert vm in fresh.list_running()
    assert fresh.pid(vm) == pid
    with fresh.agent(vm) as ga:
        ga.ping()
    assert fresh.power_state(vm) is PowerState.RUNNING


def test_restart_after_snapshot_runs_on_overlay(driver: QemuDriver, vm: str, store: Engine,
                                                tmp_path: Path) -> None:
    assert driver.reboot(vm, hard=True) == "hard"  # a fresh QEMU from the stored spec
    wait_ready(driver, vm, boots=2)
    assert guest_sh(driver, vm, "cat /mnt/root/later.txt") == "after-snapshot\n"
    assert guest_sh(driver, vm, "cat /mnt/root/bootcount") == "2\n"
    with store.open("vms", f"{vm}_disk", snapshot="snap1") as snap:  # untouched
        snap.export_to(tmp_path / "snap.raw")
    cat = subprocess.run(["debugfs", "-R", "cat /bootcount", str(tmp_path / "snap.raw")],
                         capture_output=True, text=True)
    assert cat.stdout == "1\n"
