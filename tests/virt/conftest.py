"""Real QEMU guests for the driver tests: the tiny guest is built once per session."""

from __future__ import annotations

import subprocess
import sys
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato.storage import Engine, open_engine
from strato.virt.guestbuild import READY_MARKER, GuestFiles, build_guest
from strato.virt.qemu import DiskSpec, GuestSpec, QemuDriver, node_prefix, storage_resolver

BOOT_TIMEOUT = 90.0


@pytest.fixture(scope="session")
def guest(tmp_path_factory: pytest.TempPathFactory) -> GuestFiles:
    return build_guest(tmp_path_factory.mktemp("guest"))


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return open_engine("local", root=tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inst")


@pytest.fixture(scope="session")
def driver(state_dir: Path, store: Engine) -> Iterator[QemuDriver]:
    drv = QemuDriver(state_dir, resolve=storage_resolver(store))
    yield drv
    for uuid in drv.list_instances():
        drv.destroy(uuid)


def make_spec(guest: GuestFiles, store: Engine, uuid: str | None = None,
              extra_cmdline: str = "") -> GuestSpec:
    """A spec whose root disk is a fresh store image ``vms/<uuid>_disk`` of the guest disk."""
    uuid = uuid or uuidlib.uuid4().hex
    store.import_from("vms", f"{uuid}_disk", guest.disk)
    with store.open("vms", f"{uuid}_disk") as img:
        opts = img.blockdev_options(node_prefix("vda"))
    return GuestSpec(uuid=uuid, name=f"test-{uuid[:8]}", memory_mb=128, vcpus=1,
                     kernel=guest.kernel, initramfs=guest.initramfs,
                     cmdline=f"{guest.cmdline} {extra_cmdline}".strip(),
                     disks=(DiskSpec("vda", opts, source=f"vms/{uuid}_disk"),))


def wait_ready(driver: QemuDriver, uuid: str, boots: int = 1) -> None:
    """READY printed ``boots`` times (the console log spans boots) and the agent answers."""
    driver.wait_for_console(uuid, f"{READY_MARKER} bootcount={boots}", 1, BOOT_TIMEOUT)
    driver.wait_for_agent(uuid, BOOT_TIMEOUT)


def boot(driver: QemuDriver, guest: GuestFiles, store: Engine) -> str:
    spec = make_spec(guest, store)
    driver.spawn(spec)
    wait_ready(driver, spec.uuid)
    return spec.uuid


@pytest.fixture(scope="module")
def vm(driver: QemuDriver, guest: GuestFiles, store: Engine, state_dir: Path) -> Iterator[str]:
    """A running guest, spawned by another Python process that has exited since
    (so every test on it also shows guests outlive the process that started them);
    destroyed with the module."""
    spec = make_spec(guest, store)
    code = (
        "import sys; from strato.virt.qemu import GuestSpec, QemuDriver;"
        "QemuDriver(sys.argv[1]).spawn(GuestSpec.from_json(sys.stdin.read()))"
    )
    subprocess.run([sys.executable, "-c", code, str(state_dir)], input=spec.to_json(),
                   text=True, check=True, timeout=60)
    try:
        wait_ready(driver, spec.uuid)
        yield spec.uuid
    finally:
        if spec.uuid in driver.list_instances():
            driver.destroy(spec.uuid)


def guest_sh(driver: QemuDriver, uuid: str, script: str) -> str:
    with driver.agent(uuid) as ga:
        res = ga.sh(script)
    assert res.exitcode == 0, res.stderr
    return res.stdout.decode()
