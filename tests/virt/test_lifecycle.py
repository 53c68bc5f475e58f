"""Power life cycle of one guest, in order: reboots, stop/start, suspend/resume, a kill
from outside, destroy.  The root disk's boot counter proves each real boot."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from strato.storage import Engine
from strato.virt.guestbuild import GuestFiles
from strato.virt.qemu import InstanceNotRunning, PowerState, QemuDriver, node_prefix

from .conftest import boot, guest_sh, wait_ready


@pytest.fixture(scope="module")
def life(driver: QemuDriver, guest: GuestFiles, store: Engine) -> str:
    return boot(driver, guest, store)


def bootcount(driver: QemuDriver, uuid: str) -> int:
    return int(guest_sh(driver, uuid, "cat /mnt/root/bootcount"))


def test_soft_reboot_in_place(driver: QemuDriver, life: str) -> None:
    pid = driver.pid(life)
    assert driver.reboot(life) == "soft"
    wait_ready(driver, life, boots=2)
    assert driver.pid(life) == pid  # the guest reset itself; same QEMU
    assert "STRATO-GUEST-reboot" in driver.console_output(life)
    assert bootcount(driver, life) == 2


def test_hard_reboot_new_process(driver: QemuDriver, life: str) -> None:
    pid = driver.pid(life)
    assert driver.reboot(life, hard=True) == "hard"
    wait_ready(driver, life, boots=3)
    assert driver.pid(life) != pid
    assert bootcount(driver, life) == 3


def test_stop_start(driver: QemuDriver, life: str, store: Engine, tmp_path: Path) -> None:
    assert driver.stop(life, timeout=60) is True  # ACPI power button honoured
    assert driver.power_state(life) is PowerState.SHUTDOWN
    assert driver.pid(life) is None
    assert "STRATO-GUEST-poweroff" in driver.console_output(life)
    with pytest.raises(InstanceNotRunning):
        driver.agent(life)
    # while it is off the store snapshots the disk offline, moving its top layer
    with store.open("vms", f"{life}_disk") as img:
        img.create_snap("offline")
        top = img.blockdev_options(node_prefix("vda"))["node-name"]
    driver.start(life)  # re-reads the disk from the store: boots on the new top
    wait_ready(driver, life, boots=4)
    assert bootcount(driver, life) == 4
    vda = driver.spec(life).disk("vda")
    assert vda is not None and vda.node == top
    with store.open("vms", f"{life}_disk", snapshot="offline") as snap:
        snap.export_to(tmp_path / "offline.raw")
    cat = subprocess.run(["debugfs", "-R", "cat /bootcount", str(tmp_path / "offline.raw")],
                         capture_output=True, text=True)
    assert cat.stdout == "3\n"  # the snapshot kept its content


def test_suspend_resume_keeps_memory(driver: QemuDriver, life: str) -> None:
    guest_sh(driver, life, "echo in-ram > /tmp/mark")  # initramfs: RAM only
    driver.suspend(life)
    assert driver.pid(life) is None
    assert driver.power_state(life) is PowerState.SUSPENDED
    driver.resume(life)
    assert driver.power_state(life) is PowerState.RUNNING
    driver.wait_for_agent(life, 30)
    assert guest_sh(driver, life, "cat /tmp/mark") == "in-ram\n"
    assert bootcount(driver, life) == 4  # restored, not rebooted


def test_killed_guest_is_shut_down(driver: QemuDriver, life: str) -> None:
    pid = driver.pid(life)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if driver.power_state(life) is PowerState.SHUTDOWN:
            break
        time.sleep(0.05)
    assert driver.power_state(life) is PowerState.SHUTDOWN
    assert driver.reattach()[life] is PowerState.SHUTDOWN
    driver.start(life)  # ext4 replays its journal; the counter survived
    wait_ready(driver, life, boots=5)


def test_guest_panic_is_crashed(driver: QemuDriver, life: str) -> None:
    with driver.agent(life) as ga:  # fire and forget: the kernel dies right away
        ga.execute("guest-exec", {"path": "/bin/sh",
                                  "arg": ["-c", "echo c > /proc/sysrq-trigger"]})
    for _ in range(200):
        if driver.power_state(life) is PowerState.CRASHED:
            break
        time.sleep(0.05)
    assert driver.power_state(life) is PowerState.CRASHED  # pvpanic + -action panic=pause
    assert "Kernel panic" in driver.console_output(life)
    assert driver.stop(life, timeout=5) is False  # no ACPI for a dead kernel: quit
    assert driver.power_state(life) is PowerState.SHUTDOWN


def test_destroy(driver: QemuDriver, life: str) -> None:
    driver.destroy(life)
    assert driver.power_state(life) is PowerState.NOSTATE
    assert life not in driver.list_instances()
    assert not driver.paths(life).dir.exists()
