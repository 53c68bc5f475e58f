"""Issue 14 end to end, as a user does it with the real ``openstack`` client.

A Debian cloud image (built from Debian's packages, uploaded as qcow2) boots from its
own bootloader with ``--key-name`` and ``--user-data``; cloud-init inside finds both on
the config drive (one server) and from the metadata service (another). Through the
serial console websocket a user logs in and reads the server's own metadata.  (The
snapshot round trips of issue 14, image-backed and boot-from-volume, are proven over SSH
by ``tests/network/test_network_e2e.py``.) Here under ``tests/virt`` so that it runs
last: the cloud image build overlaps everything before it.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from strato.virt.cloudimage import CloudImage
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import guest_server
from tests.console import SerialConsole
from tests.support import Server, strato

BOOT = 900.0  # a cloud-init boot under TCG on 2 loaded cores takes minutes
PASSWORD = "e2e-" + uuid.uuid4().hex[:10]
USER_DATA = f"""#cloud-config
password: {PASSWORD}
chpasswd: {{expire: false}}
runcmd:
  - [sh, -c, 'echo "E2E-KEYS $(tr -d "\\n" < /home/debian/.ssh/authorized_keys) ::" > /dev/ttyS0']
  - [sh, -c, 'echo "E2E-SUB $(cloud-init query v1.subplatform) ::" > /dev/ttyS0']
  - [sh, -c, 'echo "E2E-IID $(cloud-init query v1.instance_id) ::" > /dev/ttyS0']
"""


@dataclass
class Cloud:
    srv: Server
    drv: QemuDriver
    key: str  # the public key's text
    user_data: Path

    def create(self, name: str, *args: str) -> str:
        body = self.srv.openstack_json("server", "create", "--flavor", "m1.tiny", "--wait",
                                       *args, name)
        assert isinstance(body, dict)
        return str(body["id"])

    def console(self, server_id: str) -> SerialConsole:
        shown = self.srv.openstack_json("console", "url", "show", "--serial", server_id)
        assert isinstance(shown, dict)
        assert shown["type"] == "serial" and shown["url"].startswith("ws://")
        return SerialConsole(shown["url"], timeout=60.0)

    def wait_console(self, server_id: str, needle: str, timeout: float = BOOT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.drv.console_output(server_id)
            if needle in text:
                return text
            time.sleep(1.0)
        raise AssertionError(f"{needle!r} not on {server_id}'s console after {timeout:.0f}s:"
                             f"\n{self.drv.console_output(server_id)[-3000:]}")


def _line(text: str, tag: str) -> str:
    """What a runcmd line ``<tag> ... ::`` printed on the console."""
    for line in text.splitlines():
        if line.startswith(tag + " ") and line.rstrip().endswith("::"):
            return line[len(tag) + 1:].rstrip().removesuffix("::").strip()
    raise AssertionError(f"no {tag} line on the console")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, cloud_image: CloudImage
          ) -> Iterator[Cloud]:
    root = tmp_path_factory.mktemp("e2e")
    with guest_server(root / "srv", {"compute": {
            "sync_power_state_interval": "2", "quota_ram": "-1", "quota_cores": "-1"}}) as srv:
        # the image a user uploads first: a qcow2 disk with a bootloader
        out = strato("cloud-image", "--config", str(srv.conf), "--dest",
                     str(cloud_image.path.parent.parent), "--register", timeout=900)
        assert "image strato-cloud: " in out.stdout, out.stdout
        key = root / "id_e2e"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e@strato",
                        "-f", str(key)], check=True)
        srv.openstack("keypair", "create", "--public-key", f"{key}.pub", "e2e-key")
        user_data = root / "user-data.yaml"
        user_data.write_text(USER_DATA)
        yield Cloud(srv, QemuDriver(srv.state / "instances"),
                    Path(f"{key}.pub").read_text().strip(), user_data)


@pytest.fixture(scope="module")
def booted(cloud: Cloud) -> dict[str, str]:
    """Two cloud-image servers booting at once: one with a config drive, one that must
    use the metadata service."""
    common = ("--image", "strato-cloud", "--key-name", "e2e-key", "--user-data",
              str(cloud.user_data), "--property", "e2e=yes")
    with ThreadPoolExecutor(2) as pool:
        cd = pool.submit(cloud.create, "e2e-cd", *common, "--config-drive", "true")
        md = pool.submit(cloud.create, "e2e-md", *common)
        ids = {"config-drive": cd.result(), "metadata": md.result()}
    for sid in ids.values():
        cloud.wait_console(sid, "E2E-IID ")
    return ids


def test_cloud_init_gets_the_key_and_user_data(cloud: Cloud, booted: dict[str, str]) -> None:
    for source, sid in booted.items():
        shown = cloud.srv.openstack_json("server", "show", sid)
        assert isinstance(shown, dict)
        assert shown["status"] == "ACTIVE" and shown["key_name"] == "e2e-key"
        assert shown["config_drive"] == ("True" if source == "config-drive" else "")
        log = cloud.srv.openstack("console", "log", "show", sid).stdout
        assert _line(log, "E2E-KEYS") == cloud.key  # the keypair reached ~debian
        assert _line(log, "E2E-IID") == sid  # cloud-init knows which server it is
        sub = _line(log, "E2E-SUB")
        if source == "config-drive":
            assert sub.startswith("config-disk"), sub
        else:
            assert sub.startswith("metadata") and "169.254.169.254" in sub, sub


def test_metadata_service_answers_the_serial_console_user(
        cloud: Cloud, booted: dict[str, str]) -> None:
    """Log in on the serial console with the password user-data set, read this
    server's own documents from 169.254.169.254 and write a file.  (The snapshot round
    trips, image-backed and boot-from-volume, are proven over SSH in
    ``tests/network/test_network_e2e.py``.)"""
    sid = booted["metadata"]
    marker = "marker-" + uuid.uuid4().hex
    fetch = ("python3 -c \"import urllib.request as u; print(u.urlopen("
             "'http://169.254.169.254/openstack/latest/meta_data.json').read().decode())\"")
    with cloud.console(sid) as con:
        con.login("debian", PASSWORD, timeout=BOOT)
        meta = json.loads(con.run(fetch, timeout=120).strip().splitlines()[-1])
        assert meta["uuid"] == sid and meta["meta"] == {"e2e": "yes"}
        assert {k: v.strip() for k, v in meta["public_keys"].items()} == {"e2e-key": cloud.key}
        assert "admin_pass" not in meta  # only ever on a config drive
        con.run(f"echo {marker} > /home/debian/marker && sync")
        assert con.run("cat /home/debian/marker").strip() == marker
