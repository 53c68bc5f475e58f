"""One `strato serve` with the tiny guest registered, shared by the compute tests."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strato.virt.qemu import QemuDriver
from tests.support import Server, free_port, strato

BOOT_TIMEOUT = 120.0


@contextlib.contextmanager
def guest_server(root: Path, extra_conf: dict[str, dict[str, str]]) -> Iterator[Server]:
    """A `strato serve` with the tiny guest registered; on the way out it stops and
    every guest it left behind is destroyed."""
    srv = Server(root, free_port(), extra_conf=extra_conf)
    srv.setup()
    strato("guest", "--config", str(srv.conf))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        drv = QemuDriver(srv.state / "instances")
        for sid in drv.list_instances():
            drv.destroy(sid)


@pytest.fixture(scope="session")
def compute_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with guest_server(tmp_path_factory.mktemp("cmp"), {"compute": {
            "sync_power_state_interval": "1", "quota_ram": "-1", "quota_cores": "-1"}}) as srv:
        yield srv


def boot_ready(srv: Server, *args: str, prefix: str = "srv", nic: str = "none") -> str:
    """``openstack server create --wait``, then until the guest has booted and its agent
    answers; the server's id.  ``nic``: "none" (no NIC at all) or "auto" (a NIC: the
    user-mode one when the project has no network)."""
    created = srv.openstack_json("server", "create", "--flavor", "m1.tiny", "--nic", nic,
                                 "--wait", *args, f"{prefix}-{uuid.uuid4().hex[:6]}")
    sid = str(created["id"])  # type: ignore[index]
    drv = QemuDriver(srv.state / "instances")
    wait_console(drv, sid, "STRATO-GUEST-READY bootcount=")
    drv.wait_for_agent(sid)
    return sid


class Nova:
    """A small REST client for the tests that need exact requests and versions."""

    def __init__(self, server: Server, version: str = "2.79") -> None:
        self.srv = server
        self.token = server.token()
        self.c = server.client(self.token)
        self.version = version

    def req(self, method: str, path: str, version: str | None = None,
            **kw: Any) -> httpx.Response:
        headers = {"OpenStack-API-Version": f"compute {version or self.version}"}
        return self.c.request(method, f"/compute/v2.1{path}", headers=headers, **kw)

    def server(self, server_id: str, version: str | None = None) -> dict:
        r = self.req("GET", f"/servers/{server_id}", version)
        assert r.status_code == 200, r.text
        return r.json()["server"]

    def wait(self, server_id: str, status: str, timeout: float = BOOT_TIMEOUT,
             **fields: Any) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            r = self.req("GET", f"/servers/{server_id}")
            if r.status_code == 404 and status == "gone":
                return {}
            body = r.json()["server"]
            if body["status"] == status and body["OS-EXT-STS:task_state"] is None and all(
                    body.get(k) == v for k, v in fields.items()):
                return body
            if body["status"] == "ERROR" and status not in ("ERROR", "gone"):
                raise AssertionError(f"server went to ERROR: {json.dumps(body)}")
            time.sleep(0.2)
        raise AssertionError(f"server {server_id} not {status} {fields}: {body}")

    def action(self, server_id: str, body: dict, expect: int = 202) -> httpx.Response:
        r = self.req("POST", f"/servers/{server_id}/action", json=body)
        assert r.status_code == expect, r.text
        return r

    def volume(self, volume_id: str) -> dict:
        r = self.c.get(f"/volume/v3/{self.project_id}/volumes/{volume_id}")
        if r.status_code == 404:
            return {}
        return r.json()["volume"]

    @property
    def project_id(self) -> str:
        r = self.c.get("/identity/v3/auth/tokens",
                       headers={"X-Subject-Token": self.token})
        return r.json()["token"]["project"]["id"]


@pytest.fixture(scope="session")
def nova(compute_server: Server) -> Nova:
    return Nova(compute_server)


@pytest.fixture(scope="session")
def driver(compute_server: Server) -> QemuDriver:
    """The host's guests seen from the test process (console, agent, pids)."""
    return QemuDriver(compute_server.state / "instances")


def wait_console(driver: QemuDriver, server_id: str, needle: str,
                 timeout: float = BOOT_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = driver.console_output(server_id)
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not on the console of {server_id}")


def wait_volume(nova: Nova, volume_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    vol: dict = {}
    while time.monotonic() < deadline:
        vol = nova.volume(volume_id)
        if (status == "gone" and not vol) or vol.get("status") == status:
            return vol
        time.sleep(0.2)
    raise AssertionError(f"volume {volume_id} not {status}: {vol}")


def wait_guest_serial(driver: QemuDriver, server_id: str, serial: str, present: bool = True,
                      timeout: float = 30) -> None:
    """The guest kernel probes a hot-plugged disk (and lets one go) a moment after QMP returns."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        with driver.agent(server_id) as ga:
            seen = ga.sh("cat /sys/block/vd*/serial 2>/dev/null; true").stdout.decode()
        if (serial in seen) == present:
            return
        time.sleep(0.3)
    raise AssertionError(f"serial {serial!r} {'not ' if present else ''}in the guest: {seen!r}")
