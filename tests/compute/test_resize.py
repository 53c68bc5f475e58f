"""Same-host resize with the real `openstack` client and one real guest: the new vCPUs,
RAM and disk in the guest, revert restoring the old disk exactly (a block-store
snapshot), confirm, refusals, os-migrations, delete in VERIFY_RESIZE, the automatic
confirm, and a server killed mid-resize and mid-revert that converges after restart."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strato.compute.models import Instance
from strato.config import load
from strato.db import Database
from strato.storage import open_engine
from strato.storage.crash import FAULT_FILE_ENV
from strato.virt.qemu import QemuDriver
from tests.api_schemas import (
    DATETIME,
    INTEGER,
    NULLABLE_DATETIME,
    STRING,
    UUID,
    assert_shape,
    strict,
)
from tests.compute.conftest import Nova, boot_ready, guest_server
from tests.support import Server, free_port
from tests.tenants import make_tenant

GiB = 1 << 30


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("rsz")
    os.environ[FAULT_FILE_ENV] = str(state / "fault")  # the server (and restarts) inherit it
    try:
        with guest_server(state, {"compute": {"sync_power_state_interval": "1"},
                                  "jobs": {"lease_seconds": "3"}}) as server:
            yield server
    finally:
        os.environ.pop(FAULT_FILE_ENV, None)


@pytest.fixture(scope="module")
def flavors(srv: Server) -> dict[str, str]:
    """m1.tiny is 512 MiB, 1 vCPU, 1 GiB: a bigger one and one with a smaller disk."""
    out = {}
    for name, ram, vcpus, disk in (("rs-big", 640, 2, 2), ("rs-nodisk", 512, 1, 0)):
        out[name] = str(srv.openstack_json("flavor", "create", "--ram", str(ram), "--vcpus",
                                           str(vcpus), "--disk", str(disk), name)["id"])
    return out


@pytest.fixture(scope="module")
def sid(srv: Server) -> str:
    return boot_ready(srv, "--image", "strato-guest", prefix="rsz")


def _blocks(srv: Server):  # type: ignore[no-untyped-def]
    return open_engine("local", root=srv.state / "blocks", repair=False)


def _disk(srv: Server, sid: str) -> tuple[int, list[str]]:
    with _blocks(srv).open("vms", f"{sid}_disk", read_only=True) as disk:
        return disk.size(), [s.name for s in disk.list_snaps()]


def _guest(srv: Server, sid: str, script: str) -> str:
    drv = QemuDriver(srv.state / "instances")
    drv.wait_for_agent(sid, timeout=120)
    with drv.agent(sid) as ga:
        return ga.sh(script, timeout=60).stdout.decode().strip()


def _usage(nova: Nova) -> dict[str, tuple[int, int]]:
    """cores and ram: (in_use, reserved) of the project."""
    r = nova.req("GET", f"/os-quota-sets/{nova.project_id}/detail")
    q = r.json()["quota_set"]
    return {k: (q[k]["in_use"], q[k]["reserved"]) for k in ("cores", "ram")}


def _inject(srv: Server, what: str) -> None:
    (srv.state / "fault").write_text(what)


def _settled(nova: Nova, sid: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = nova.server(sid)
        if body["OS-EXT-STS:task_state"] is None:
            return body
        time.sleep(0.2)
    raise AssertionError(f"server {sid} stuck: {body}")


def _migrations(nova: Nova, sid: str) -> list[dict]:
    r = nova.req("GET", f"/os-migrations?instance_uuid={sid}", "2.80")
    assert r.status_code == 200, r.text
    return list(r.json()["migrations"])


MIGRATION_2_80 = strict({
    "id": INTEGER, "uuid": UUID, "status": STRING, "instance_uuid": UUID,
    "source_node": STRING, "source_compute": STRING, "dest_node": STRING,
    "dest_compute": STRING, "dest_host": {"type": "null"},
    "old_instance_type_id": {"type": "null"}, "new_instance_type_id": {"type": "null"},
    "created_at": DATETIME, "updated_at": NULLABLE_DATETIME, "migration_type": STRING,
    "user_id": STRING, "project_id": STRING})


def test_refusals(srv: Server, sid: str, flavors: dict[str, str]) -> None:
    nova = Nova(srv)
    r = nova.action(sid, {"resize": {"flavorRef": "1"}}, expect=400)  # m1.tiny: the same
    assert "must change flavor" in r.text
    r = nova.action(sid, {"resize": {"flavorRef": flavors["rs-nodisk"]}}, expect=400)
    assert "resize disk down" in r.text.lower() or "zero disk" in r.text
    nova.action(sid, {"resize": {"flavorRef": "no-such-flavor"}}, expect=400)
    nova.action(sid, {"resize": {}}, expect=400)
    nova.action(sid, {"resize": {"flavorRef": flavors["rs-big"], "x": 1}}, expect=400)
    for action in ("confirmResize", "revertResize"):
        r = nova.action(sid, {action: None}, expect=409)
        assert f"Cannot '{action}' instance {sid} while it is in vm_state active" in r.text
    r = nova.req("POST", f"/servers/{uuid.uuid4()}/action",
                 json={"resize": {"flavorRef": flavors["rs-big"]}})
    assert r.status_code == 404
    reader = make_tenant(srv, "rsz-reader")
    srv.openstack("role", "add", "--project", "admin", "--user", reader.user, "reader")
    with srv.client(srv.token(reader.user, reader.password, "admin")) as c:
        r = c.post(f"/compute/v2.1/servers/{sid}/action",
                   json={"resize": {"flavorRef": flavors["rs-big"]}})
        assert r.status_code == 403, r.text
        assert "os_compute_api:servers:resize" in r.text
    with srv.client(srv.token()) as c:  # os-migrations is the admin's
        r = c.get("/compute/v2.1/os-migrations")
        assert r.status_code == 200
        r = c.get(f"/compute/v2.1/servers/{sid}/migrations")  # live ones: none here
        assert (r.status_code, r.json()) == (200, {"migrations": []})
    with srv.client(srv.token(reader.user, reader.password, "admin")) as c:
        assert c.get("/compute/v2.1/os-migrations").status_code == 403
        assert c.get(f"/compute/v2.1/servers/{sid}/migrations").status_code == 403


def test_resize_revert_restores_the_disk_then_confirm(srv: Server, sid: str,
                                                      flavors: dict[str, str]) -> None:
    nova = Nova(srv)
    _guest(srv, sid, "echo old > /mnt/root/marker; sync")
    assert _disk(srv, sid) == (1 * GiB, [])

    assert _usage(nova) == {"cores": (1, 0), "ram": (512, 0)}
    srv.openstack("server", "resize", "--flavor", "rs-big", "--wait", sid)
    body = nova.wait(sid, "VERIFY_RESIZE")
    assert body["OS-EXT-STS:vm_state"] == "resized"
    assert _usage(nova) == {"cores": (2, 0), "ram": (640, 0)}
    shown = nova.server(sid, "2.47")["flavor"]
    assert (shown["original_name"], shown["vcpus"], shown["ram"], shown["disk"]) == (
        "rs-big", 2, 640, 2)
    mig = _migrations(nova, sid)[0]
    assert_shape(mig, MIGRATION_2_80)
    assert (mig["status"], mig["migration_type"]) == ("finished", "resize")
    size, snaps = _disk(srv, sid)
    assert size == 2 * GiB and snaps == [f"resize-{mig['id']}"]
    # the guest restarted with the new flavor: 2 vCPUs, more RAM, a 2 GiB vda
    seen = _guest(srv, sid, "nproc; grep MemTotal /proc/meminfo; cat /sys/block/vda/size")
    cpus, mem, sectors = seen.splitlines()
    assert cpus == "2" and int(sectors) * 512 == 2 * GiB
    assert int(mem.split()[1]) > 520 * 1024  # kB: above what 512 MiB could show
    # Nova: no snapshot while the resize waits for its verdict
    r = nova.action(sid, {"createImage": {"name": "during-resize"}}, expect=409)
    assert "vm_state resized" in r.text
    _guest(srv, sid, "echo new > /mnt/root/marker; echo x > /mnt/root/after; sync")

    srv.openstack("server", "resize", "revert", sid)
    body = nova.wait(sid, "ACTIVE")
    assert body["flavor"]["original_name"] == "m1.tiny"
    assert _disk(srv, sid) == (1 * GiB, [])  # old size, snapshot gone
    assert _guest(srv, sid, "cat /mnt/root/marker; ls /mnt/root/after 2>&1; nproc") \
        .splitlines()[::2] == ["old", "1"]
    assert "No such file" in _guest(srv, sid, "ls /mnt/root/after 2>&1; true")
    assert _migrations(nova, sid)[0]["status"] == "reverted"
    assert _usage(nova) == {"cores": (1, 0), "ram": (512, 0)}

    srv.openstack("server", "resize", "--flavor", "rs-big", "--wait", sid)
    nova.wait(sid, "VERIFY_RESIZE")
    srv.openstack("server", "resize", "confirm", sid)
    body = nova.wait(sid, "ACTIVE")
    assert body["flavor"]["original_name"] == "rs-big"
    assert _disk(srv, sid) == (2 * GiB, [])
    assert [m["status"] for m in _migrations(nova, sid)] == ["confirmed", "reverted"]
    actions = nova.req("GET", f"/servers/{sid}/os-instance-actions").json()[
        "instanceActions"]
    assert [a["action"] for a in actions[:4]] == [
        "confirmResize", "resize", "revertResize", "resize"]
    events = nova.req("GET", f"/servers/{sid}/os-instance-actions/{actions[1]['request_id']}"
                      ).json()["instanceAction"]["events"]
    assert sorted((e["event"], e["result"]) for e in events) == [
        ("compute_finish_resize", "Success"), ("compute_prep_resize", "Success"),
        ("compute_resize_instance", "Success")]
    # and a snapshot now works
    r = nova.action(sid, {"createImage": {"name": f"after-{sid[:6]}"}})
    image_id = r.json()["image_id"]
    _settled(nova, sid)
    srv.openstack("image", "delete", image_id)


def test_stopped_server_resizes_stopped_and_a_kill_mid_resize_converges(
        srv: Server, sid: str, flavors: dict[str, str]) -> None:
    nova = Nova(srv)
    srv.openstack("server", "stop", sid)
    nova.wait(sid, "SHUTOFF")
    # killed after the snapshot, before the disk grows: the restart finishes the resize
    nova.action(sid, {"resize": {"flavorRef": "1"}}, expect=400)  # rs-big -> tiny: disk down
    srv.openstack("flavor", "create", "--ram", "768", "--vcpus", "1", "--disk", "3", "rs-3")
    _inject(srv, "kill resize:after-snap")
    srv.openstack("server", "resize", "--flavor", "rs-3", sid)
    assert srv.proc is not None and srv.proc.wait(60) == -9
    srv.start()
    nova = Nova(srv)
    body = nova.wait(sid, "VERIFY_RESIZE")
    assert body["OS-EXT-STS:power_state"] == 4  # still off
    assert QemuDriver(srv.state / "instances").pid(sid) is None
    mig = _migrations(nova, sid)[0]
    assert _disk(srv, sid) == (3 * GiB, [f"resize-{mig['id']}"])  # one snapshot, reused
    # killed mid-revert, after the rollback: the restart finishes the revert
    _inject(srv, "kill resize:after-rollback")
    srv.openstack("server", "resize", "revert", sid)
    assert srv.proc.wait(60) == -9
    srv.start()
    nova = Nova(srv)
    body = nova.wait(sid, "SHUTOFF")
    assert body["flavor"]["original_name"] == "rs-big"
    assert _disk(srv, sid) == (2 * GiB, [])
    assert _migrations(nova, sid)[0]["status"] == "reverted"
    srv.openstack("server", "start", sid)
    nova.wait(sid, "ACTIVE")
    assert _guest(srv, sid, "nproc") == "2"


def test_delete_in_verify_resize_leaves_nothing(srv: Server, sid: str) -> None:
    nova = Nova(srv)
    srv.openstack("server", "resize", "--flavor", "rs-3", "--wait", sid)
    nova.wait(sid, "VERIFY_RESIZE")
    assert len(_disk(srv, sid)[1]) == 1
    srv.openstack("server", "delete", "--wait", sid)
    assert [n for n in _blocks(srv).list("vms") if n.startswith(sid)] == []
    assert _usage(nova) == {"cores": (0, 0), "ram": (0, 0)}


def test_automatic_confirm(tmp_path: Path) -> None:
    """``[compute] resize_confirm_window``: a resize left in VERIFY_RESIZE longer is
    confirmed by the host's periodic task (a stopped server's row: no guest needed)."""
    server = Server(tmp_path, free_port(), extra_conf={"compute": {
        "resize_confirm_window": "1"}})
    server.setup()
    try:
        server.start()
        nova = Nova(server)
        sid = str(uuid.uuid4())
        tiny = {"id": "1", "name": "m1.tiny", "root_gb": 1, "memory_mb": 512, "vcpus": 1,
                "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}
        db = Database(load(server.conf).database.connection)
        with db.session() as session:
            session.add(Instance(
                id=sid, name="auto", project_id=nova.project_id, user_id=None,
                host=load(server.conf).DEFAULT.host, image_ref="", flavor_id="1",
                flavor=tiny, vm_state="resized", task_state=None, power_state=4,
                system_metadata={"old_flavor": tiny, "new_flavor": tiny,
                                 "old_vm_state": "stopped", "resize_snap": "resize-0",
                                 "migration_id": None},
                updated_at=datetime.now(UTC) - timedelta(seconds=5)))
            # and one whose confirm job was lost: the restart gives it one again
            lost = str(uuid.uuid4())
            session.add(Instance(
                id=lost, name="lost", project_id=nova.project_id, user_id=None,
                host=load(server.conf).DEFAULT.host, image_ref="", flavor_id="1",
                flavor=tiny, vm_state="resized", task_state="resize_confirming",
                power_state=4, system_metadata={"resize_snap": "resize-0"}))
        body = nova.wait(sid, "SHUTOFF", timeout=30)  # confirmed on its own, still off
        assert body["OS-EXT-STS:vm_state"] == "stopped"
        actions = nova.req("GET", f"/servers/{sid}/os-instance-actions").json()
        assert [a["action"] for a in actions["instanceActions"]] == ["confirmResize"]
        with db.session(readonly=True) as session:
            assert session.get(Instance, sid).system_metadata == {}
        assert nova.server(lost)["OS-EXT-STS:task_state"] == "resize_confirming"
        server.stop()
        server.start()
        Nova(server).wait(lost, "SHUTOFF", timeout=30)
    finally:
        server.stop()


def test_delete_during_the_resize_leaves_nothing(srv: Server, flavors: dict[str, str]) -> None:
    """Deleted while the resize job holds after its snapshot: the job gives up, the
    growth's reservation goes back, the delete removes the disk and its snapshot."""
    nova = Nova(srv)
    before = _usage(nova)
    sid = boot_ready(srv, "--image", "strato-guest", prefix="rszdel")
    _inject(srv, "sleep=4 resize:after-snap")
    srv.openstack("server", "resize", "--flavor", "rs-big", sid)
    deadline = time.monotonic() + 60
    while nova.server(sid)["OS-EXT-STS:task_state"] != "resize_migrating":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    srv.openstack("server", "delete", "--wait", sid)
    assert [n for n in _blocks(srv).list("vms") if n.startswith(sid)] == []
    deadline = time.monotonic() + 30
    while _usage(nova) != before:  # nothing in use, nothing reserved
        assert time.monotonic() < deadline, _usage(nova)
        time.sleep(0.2)
