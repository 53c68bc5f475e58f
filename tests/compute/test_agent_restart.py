"""The agent restarts under running guests; a guest killed from outside shows SHUTOFF."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, guest_server, wait_console
from tests.support import Server


@pytest.fixture(scope="module")
def restart_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with guest_server(tmp_path_factory.mktemp("rst"),
                      {"compute": {"sync_power_state_interval": "1"}}) as srv:
        yield srv


def _boot(nova: Nova, srv: Server, name: str) -> str:
    image = srv.openstack_json("image", "show", "strato-guest")["id"]  # type: ignore[index]
    r = nova.req("POST", "/servers", json={"server": {
        "name": name, "flavorRef": "42", "imageRef": image, "networks": "none"}})
    assert r.status_code == 202, r.text
    return str(r.json()["server"]["id"])


def test_restart_keeps_guests_and_states(restart_server: Server) -> None:
    srv = restart_server
    nova = Nova(srv)
    drv = QemuDriver(srv.state / "instances")
    running, paused = _boot(nova, srv, "keep-running"), _boot(nova, srv, "keep-paused")
    for sid in (running, paused):
        nova.wait(sid, "ACTIVE")
        wait_console(drv, sid, "STRATO-GUEST-READY bootcount=1")
    nova.action(paused, {"pause": None})
    nova.wait(paused, "PAUSED")
    pids = {sid: drv.pid(sid) for sid in (running, paused)}

    assert srv.stop() == 0
    srv.start()
    nova = Nova(srv)
    assert {sid: drv.pid(sid) for sid in pids} == pids  # same QEMU processes
    assert nova.server(running)["status"] == "ACTIVE"
    assert nova.server(paused)["status"] == "PAUSED"
    nova.action(paused, {"unpause": None})
    nova.wait(paused, "ACTIVE", **{"OS-EXT-STS:power_state": 1})

    # a guest killed behind the agent's back: power state sync makes it SHUTOFF
    os.kill(pids[running], signal.SIGKILL)
    body = nova.wait(running, "SHUTOFF", timeout=30, **{"OS-EXT-STS:power_state": 4})
    assert body["OS-EXT-STS:vm_state"] == "stopped"
    nova.action(running, {"os-start": None})
    nova.wait(running, "ACTIVE")
    wait_console(drv, running, "STRATO-GUEST-READY bootcount=2")


def test_half_done_task_is_resolved_at_start(restart_server: Server) -> None:
    """A task state with no job left (a crash between the two) is resolved from the
    hypervisor's truth when the agent starts."""
    from strato.compute.models import Instance
    from strato.config import load
    from strato.db import Database

    srv = restart_server
    nova = Nova(srv)
    drv = QemuDriver(srv.state / "instances")
    sid = _boot(nova, srv, "half-done")
    nova.wait(sid, "ACTIVE")
    assert srv.stop() == 0
    db = Database.from_config(load(srv.conf))
    with db.session() as session:
        session.get(Instance, sid).task_state = "powering-off"
    db.dispose()
    srv.start()
    body = Nova(srv).wait(sid, "ACTIVE", timeout=10)
    assert body["OS-EXT-STS:power_state"] == 1 and drv.pid(sid) is not None
    time.sleep(0)
