"""A guest without its agent (kernel parameter ``strato.noagent``): the paths that need
the agent fall back or fail cleanly, and the block store is never left half-way."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato.storage import Engine
from strato.virt.guestbuild import READY_MARKER, GuestFiles
from strato.virt.qemu import AgentUnavailable, PowerState, QemuDriver

from .conftest import BOOT_TIMEOUT, make_spec


@pytest.fixture(scope="module")
def bare(driver: QemuDriver, guest: GuestFiles, store: Engine) -> Iterator[str]:
    spec = make_spec(guest, store, extra_cmdline="strato.noagent")
    driver.spawn(spec)
    try:
        driver.wait_for_console(spec.uuid, f"{READY_MARKER} bootcount=1", 1, BOOT_TIMEOUT)
        yield spec.uuid
    finally:  # the last test destroys it; a failure before that must not leak it
        if spec.uuid in driver.list_instances():
            driver.destroy(spec.uuid)


def test_required_quiesce_fails_and_aborts(driver: QemuDriver, bare: str,
                                           store: Engine) -> None:
    with store.open("vms", f"{bare}_disk") as img:
        with pytest.raises(AgentUnavailable):
            driver.snapshot_disk(bare, "vda", img, "quiet", quiesce=True)
        assert img.list_snaps() == []  # aborted: nothing half-made in the store
    assert driver.power_state(bare) is PowerState.RUNNING


def test_crash_consistent_snapshot(driver: QemuDriver, bare: str, store: Engine,
                                   tmp_path: Path) -> None:
    with store.open("vms", f"{bare}_disk") as img:
        assert driver.snapshot_disk(bare, "vda", img, "crash") is False  # not frozen
        assert [s.name for s in img.list_snaps()] == ["crash"]
    with store.open("vms", f"{bare}_disk", snapshot="crash") as snap:
        snap.export_to(tmp_path / "crash.raw")
    cat = subprocess.run(["debugfs", "-R", "cat /bootcount", str(tmp_path / "crash.raw")],
                         capture_output=True, text=True)
    assert cat.stdout == "1\n"  # synced at boot, so there even without a freeze


def test_soft_reboot_without_agent_is_clean_restart(driver: QemuDriver, bare: str) -> None:
    pid = driver.pid(bare)
    assert driver.reboot(bare) == "clean"  # ACPI power-off, then a new QEMU
    driver.wait_for_console(bare, f"{READY_MARKER} bootcount=2", 1, BOOT_TIMEOUT)
    assert driver.pid(bare) != pid
    assert "STRATO-GUEST-poweroff" in driver.console_output(bare)
    driver.destroy(bare)
