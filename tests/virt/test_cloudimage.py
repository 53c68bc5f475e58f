"""The Debian cloud image on real QEMU: one disk boots under SeaBIOS and under OVMF,
and cloud-init applies a config drive (user-data and the ssh key from meta-data).

One guest, under OVMF (a boot is ~30-60 s under TCG), with its own config drive; the
tests read its serial console and ask its guest agent.  The same image under SeaBIOS,
with cloud-init reading a config drive and the metadata service through the API, is
``test_workloads_e2e``'s job (one guest less in CI).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strato.storage import Engine
from strato.virt.cloudimage import CloudImage
from strato.virt.qemu import CdromSpec, DiskSpec, GuestSpec, QemuDriver, node_prefix

#: SeaBIOS boots of this image are proven end to end in test_workloads_e2e
FIRMWARES = ("uefi",)
BOOT_TIMEOUT = 420.0
LOGIN = " login: "
FINAL = " finished at "  # "Cloud-init v. 22.4.2 finished at ...": its final message
#: guest programs start slowly under TCG on a loaded machine (python3 especially)
EXEC_TIMEOUT = 180.0
CHECK_PASSWORD = (
    "import crypt, sys\n"
    "h = [l.split(':')[1] for l in open('/etc/shadow') if l.startswith('debian:')][0]\n"
    "sys.exit(0 if crypt.crypt(sys.argv[1], h) == h else 3)\n")


@dataclass(frozen=True)
class Booted:
    """A guest booted from the cloud image with a config drive, and what it was given."""

    uuid: str
    instance_id: str
    firmware: str
    hostname: str
    token: str
    password: str
    public_key: str
    started: float


def config_drive(directory: Path, meta: dict[str, object], user_data: str) -> Path:
    """An OpenStack config drive ISO (label config-2), as Nova writes one."""
    latest = directory / "drive" / "openstack" / "latest"
    latest.mkdir(parents=True)
    (latest / "meta_data.json").write_text(json.dumps(meta))
    (latest / "user_data").write_text(user_data)
    iso = directory / "config.iso"
    subprocess.run(["genisoimage", "-quiet", "-o", str(iso), "-V", "config-2", "-J", "-R",
                    str(directory / "drive")], check=True, capture_output=True)
    return iso


def spawn(driver: QemuDriver, store: Engine, image: CloudImage, firmware: str,
          tmp: Path) -> Booted:
    uuid = str(uuidlib.uuid4())
    token = secrets.token_hex(6)
    hostname = f"ci-{firmware}-{token[:4]}"
    password = secrets.token_urlsafe(12)
    public_key = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHr4bNN2mF6mC9VXk7n2cP0o3k1u4"
                  f"E8Yz0X0lT2C6dQm strato-test-{token}")
    user_data = (
        "#cloud-config\n"
        f"password: {password}\n"
        "chpasswd: {expire: false}\n"
        "ssh_pwauth: true\n"
        "write_files:\n"
        "  - path: /var/lib/strato-test/marker\n"
        f"    content: \"{token}\\n\"\n"
        "runcmd:\n"
        f"  - echo STRATO-RUNCMD-{token} > /dev/ttyS0\n"
    )
    meta = {"uuid": uuid, "hostname": hostname, "name": hostname,
            "public_keys": {"test": public_key}, "launch_index": 0,
            "availability_zone": "nova", "files": [], "meta": {}}
    iso = config_drive(tmp / firmware, meta, user_data)
    name = uuid.replace("-", "")
    store.import_from("vms", f"{name}_disk", image.path, fmt="qcow2")
    with store.open("vms", f"{name}_disk") as img:
        opts = img.blockdev_options(node_prefix("vda"))
    spec = GuestSpec(
        uuid=name, name=f"cloud-{firmware}", memory_mb=512, vcpus=1, kernel=None,
        initramfs=None, cmdline="", firmware=firmware,
        disks=(DiskSpec("vda", opts, source=f"vms/{name}_disk"),),
        cdroms=(CdromSpec("cd0", iso),),
        extra_args=("-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"))
    started = time.monotonic()
    driver.spawn(spec)
    return Booted(name, uuid, firmware, hostname, token, password, public_key, started)


@pytest.fixture(scope="module")
def guests(driver: QemuDriver, store: Engine, cloud_image: CloudImage,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Booted]]:
    """The guests, booting at the same time (UEFI only: see the module docstring)."""
    tmp = tmp_path_factory.mktemp("cloud")
    booted: dict[str, Booted] = {}
    try:
        for firmware in FIRMWARES:
            booted[firmware] = spawn(driver, store, cloud_image, firmware, tmp)
        yield booted
    finally:
        for g in booted.values():
            driver.destroy(g.uuid)


def _waited(driver: QemuDriver, g: Booted, needle: str) -> float:
    driver.wait_for_console(g.uuid, needle, 1, BOOT_TIMEOUT)
    return time.monotonic() - g.started


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_boots_to_a_login_prompt(driver: QemuDriver, guests: dict[str, Booted],
                                 firmware: str) -> None:
    g = guests[firmware]
    login = _waited(driver, g, LOGIN)
    text = driver.console_output(g.uuid)
    # the kernel came up on the serial console from the disk's own bootloader
    assert "Command line: BOOT_IMAGE=/vmlinuz root=LABEL=strato-root" in text
    assert ("BdsDxe" in text) == (firmware == "uefi")
    print(f"{firmware}: login prompt {login:.0f} s after spawn", file=sys.stderr)


@pytest.mark.parametrize("firmware", FIRMWARES)
def test_cloud_init_applies_the_config_drive(driver: QemuDriver, guests: dict[str, Booted],
                                             firmware: str) -> None:
    g = guests[firmware]
    runcmd = _waited(driver, g, f"STRATO-RUNCMD-{g.token}")
    final = _waited(driver, g, FINAL)
    driver.wait_for_agent(g.uuid, BOOT_TIMEOUT)
    print(f"{firmware}: runcmd {runcmd:.0f} s, cloud-init final {final:.0f} s after spawn",
          file=sys.stderr)
    with driver.agent(g.uuid, timeout=60.0) as ga:
        marker = ga.read_file("/var/lib/strato-test/marker").decode()
        keys = ga.read_file("/home/debian/.ssh/authorized_keys").decode()
        status = json.loads(ga.read_file("/run/cloud-init/status.json"))
        instance = json.loads(ga.read_file("/run/cloud-init/instance-data.json"))
        hostname = ga.exec("/usr/bin/hostname", timeout=EXEC_TIMEOUT)
        # the password from user-data is debian's: check it against /etc/shadow's hash
        good = ga.exec("/usr/bin/python3", ["-W", "ignore", "-c", CHECK_PASSWORD,
                                            g.password], timeout=EXEC_TIMEOUT)
        wrong = ga.exec("/usr/bin/python3", ["-W", "ignore", "-c", CHECK_PASSWORD,
                                             "not-" + g.password], timeout=EXEC_TIMEOUT)
        sudo = ga.exec("/usr/bin/sudo", ["-n", "-u", "debian", "sudo", "-n", "true"],
                       timeout=EXEC_TIMEOUT)
    assert marker == f"{g.token}\n"
    assert g.public_key in keys.splitlines()
    # the config drive was the datasource, and its meta-data's uuid the instance id
    assert status["v1"]["datasource"].startswith("DataSourceConfigDrive")
    stages = {k: v for k, v in status["v1"].items() if isinstance(v, dict) and "errors" in v}
    assert {"init-local", "init", "modules-config", "modules-final"} <= stages.keys()
    assert not any(st["errors"] for st in stages.values()), stages
    assert instance["v1"]["instance_id"] == g.instance_id
    assert hostname.stdout.decode().strip() == g.hostname
    assert good.exitcode == 0, good.stderr
    assert wrong.exitcode == 3, wrong.stderr
    assert sudo.exitcode == 0, sudo.stderr  # the default user may sudo without a password
