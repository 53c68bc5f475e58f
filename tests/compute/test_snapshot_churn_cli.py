"""Snapshots of running guests deleted online, with the real client (issue: delete them
online, keep layer chains short, never lose an image's data).

On the local engine the layer a snapshot froze lies under the guest's active layer: its
removal is merged by the guest's own QEMU (block-commit / block-stream), so every delete
answers at once, the chain shrinks back, and the guest never stops.
"""

from __future__ import annotations

import time
import uuid

from strato.storage import open_engine
from strato.storage.local import LocalEngine
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, boot_ready
from tests.support import Server

CYCLES = 20


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _blocks(server: Server) -> LocalEngine:
    engine = open_engine("local", root=server.state / "blocks", repair=False)
    assert isinstance(engine, LocalEngine)
    return engine


def _depth(server: Server, pool: str, name: str) -> int:
    meta = _blocks(server).load(pool, name)
    assert not any(s.get("removed") for s in meta["snaps"]), "a merge was left waiting"
    return len(meta["layers"])


def _sh(driver: QemuDriver, sid: str, script: str) -> str:
    with driver.agent(sid) as ga:
        return ga.sh(script).stdout.decode()


def _wait_snapshot(srv: Server, snap_id: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        r = srv.openstack("volume", "snapshot", "show", "-f", "value", "-c", "status", snap_id,
                          check=False)
        now = r.stdout.strip() if r.returncode == 0 else "gone"
        if now == status:
            return
        assert now not in ("error", "error_deleting"), f"snapshot {snap_id}: {now}"
        assert time.monotonic() < deadline, f"snapshot {snap_id} still {now}"
        time.sleep(0.3)


def test_snapshot_delete_cycles_on_a_running_guest(compute_server: Server, nova: Nova,
                                                   driver: QemuDriver) -> None:
    srv = compute_server
    quota = f"/os-quota-sets/{nova.project_id}/detail"
    before = nova.req("GET", quota).json()["quota_set"]["instances"]
    sid = boot_ready(srv, "--image", "strato-guest")
    running = nova.req("GET", quota).json()["quota_set"]["instances"]
    # a built server's reservation is committed, not left reserved for ever
    assert (running["in_use"], running["reserved"]) == (before["in_use"] + 1,
                                                          before["reserved"])
    disk = f"{sid}_disk"
    start, pid = _depth(srv, "vms", disk), driver.pid(sid)
    for i in range(CYCLES):
        _sh(driver, sid, f"echo {i} > /mnt/root/cycle-{i}")
        snap = srv.openstack_json("server", "image", "create", "--wait", "--name",
                                  _name(f"cycle{i}"), sid)
        r = srv.openstack("image", "delete", snap["id"], check=False)  # type: ignore[index]
        assert r.returncode == 0, f"cycle {i}: {r.stderr}"
        gone = srv.openstack("image", "show", snap["id"], check=False)  # type: ignore[index]
        assert gone.returncode != 0, f"cycle {i}: image still there"
        assert _depth(srv, "vms", disk) == start, f"cycle {i}: chain grew"
        assert driver.pid(sid) == pid, "the guest stopped"
    listed = _sh(driver, sid, f"sync; for i in $(seq 0 {CYCLES - 1}); do "
                 "cat /mnt/root/cycle-$i; done").split()
    assert listed == [str(i) for i in range(CYCLES)]

    # a snapshot that survives (and is booted from) while older ones come and go
    keep = srv.openstack_json("server", "image", "create", "--wait", "--name", _name("keep"),
                              sid)
    _sh(driver, sid, "echo after > /mnt/root/after-keep; sync")
    extra = srv.openstack_json("server", "image", "create", "--wait", "--name",
                               _name("extra"), sid)
    srv.openstack("image", "delete", extra["id"])  # type: ignore[index]
    child = boot_ready(srv, "--image", keep["id"])  # type: ignore[index]
    seen = _sh(driver, child, "ls /mnt/root").split()
    assert f"cycle-{CYCLES - 1}" in seen and "after-keep" not in seen
    assert "after-keep" in _sh(driver, sid, "ls /mnt/root").split()
    assert driver.pid(sid) == pid
    srv.openstack("server", "delete", "--wait", child)
    srv.openstack("image", "delete", keep["id"])  # type: ignore[index]
    assert _depth(srv, "vms", disk) == start
    srv.openstack("server", "delete", "--wait", sid)
    assert nova.req("GET", quota).json()["quota_set"]["instances"] == before


def test_volume_snapshots_of_a_running_guest_deleted_online(
        compute_server: Server, nova: Nova, driver: QemuDriver) -> None:
    srv = compute_server
    sid = boot_ready(srv, "--image", "strato-guest", "--boot-from-volume", "1")
    vol_id = nova.server(sid)["os-extended-volumes:volumes_attached"][0]["id"]
    vol = f"volume-{vol_id}"
    start, pid = _depth(srv, "volumes", vol), driver.pid(sid)
    for i in range(3):
        _sh(driver, sid, f"echo {i} > /mnt/root/vsnap-{i}; sync")
        snap = srv.openstack_json("volume", "snapshot", "create", "--force", "--volume",
                                  vol_id, _name("forced"))
        _wait_snapshot(srv, snap["id"], "available")  # type: ignore[index]
        srv.openstack("volume", "snapshot", "delete", snap["id"])  # type: ignore[index]
        _wait_snapshot(srv, snap["id"], "gone")  # type: ignore[index]
        assert _depth(srv, "volumes", vol) == start
    # the volume snapshots a volume-backed createImage takes go online too
    image = srv.openstack_json("server", "image", "create", "--wait", "--name", _name("bfv"),
                               sid)
    taken = [s["ID"] for s in srv.openstack_json("volume", "snapshot", "list", "--volume",
                                                  vol_id)]  # type: ignore[union-attr]
    assert len(taken) == 1
    srv.openstack("image", "delete", image["id"])  # type: ignore[index]
    srv.openstack("volume", "snapshot", "delete", *taken)
    for s in taken:
        _wait_snapshot(srv, s, "gone")
    assert _depth(srv, "volumes", vol) == start
    assert driver.pid(sid) == pid
    assert _sh(driver, sid, "cat /mnt/root/vsnap-*").split() == ["0", "1", "2"]
    srv.openstack("server", "delete", "--wait", sid)
