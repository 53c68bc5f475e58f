"""Nova's ``createBackup`` with the real client and a real guest: rotation keeps the
newest ``rotation`` backups per server and type (0 keeps none, the new one neither),
the 2.45 and pre-2.45 response forms, Nova's refusals (400 body, 404 other project,
403 reader, 409 state, 400 volume-backed), and a ``kill -9`` before the rotation (and
one inside the snapshot) converges after the restart with exactly ``rotation`` backups
and nothing orphaned."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from strato.config import load
from strato.db import Database
from strato.storage import open_engine
from strato.storage.crash import FAULT_FILE_ENV
from strato.virt.qemu import QemuDriver
from tests.api_schemas import UUID, assert_shape, strict
from tests.compute.conftest import Nova, boot_ready, guest_server, wait_volume
from tests.support import Server
from tests.tenants import make_tenant

ACTION_245 = strict({"image_id": UUID})


@pytest.fixture(scope="module")
def guest(compute_server: Server) -> Iterator[str]:
    """One guest for this module's backups on the shared server."""
    sid = boot_ready(compute_server, "--image", "strato-guest", prefix="bk")
    yield sid
    compute_server.openstack("server", "delete", "--wait", sid)


def _backups(srv: Server, sid: str, backup_type: str) -> list[dict]:
    """The server's backups of a type, oldest first, as Glance lists them."""
    c = srv.client(srv.token())
    r = c.get("/image/v2/images", params={
        "instance_uuid": sid, "image_type": "backup", "backup_type": backup_type,
        "sort_key": "created_at", "sort_dir": "asc"})
    assert r.status_code == 200, r.text
    return list(r.json()["images"])


def _wait_backups(srv: Server, sid: str, backup_type: str, names: list[str],
                  timeout: float = 60) -> list[dict]:
    """Until the server's active backups of the type are exactly ``names``."""
    deadline = time.monotonic() + timeout
    got: list[dict] = []
    while time.monotonic() < deadline:
        got = _backups(srv, sid, backup_type)
        if [i["name"] for i in got] == names and all(i["status"] == "active" for i in got):
            return got
        time.sleep(0.2)
    raise AssertionError(f"{backup_type} backups of {sid}: "
                         f"{[(i['name'], i['status']) for i in got]}, not {names}")


def _cli_backup(srv: Server, sid: str, name: str, kind: str, rotate: int) -> None:
    srv.openstack("server", "backup", "create", "--name", name, "--type", kind,
                  "--rotate", str(rotate), "--wait", sid)
    Nova(srv).wait(sid, "ACTIVE")  # task state none again: the rotation follows


def test_cli_backups_rotate_per_type(compute_server: Server, guest: str) -> None:
    """Three daily backups with --rotate 2 keep the two newest; weekly ones rotate on
    their own.  (Distinct names: the client finds the new image by name, and two
    images of one name make it fail, as it would against Nova.)"""
    srv, sid = compute_server, guest
    for n in (1, 2, 3):
        _cli_backup(srv, sid, f"daily-{n}", "daily", 2)
    kept = _wait_backups(srv, sid, "daily", ["daily-2", "daily-3"])
    for image in kept:
        assert image["image_type"] == "backup" and image["instance_uuid"] == sid
        assert image["backup_type"] == "daily" and image["visibility"] == "private"
        assert image["base_image_ref"]
    _cli_backup(srv, sid, "weekly-1", "weekly", 1)
    _cli_backup(srv, sid, "weekly-2", "weekly", 1)
    _wait_backups(srv, sid, "weekly", ["weekly-2"])
    _wait_backups(srv, sid, "daily", ["daily-2", "daily-3"])  # untouched
    # the action and its event, as Nova records them
    nova = Nova(srv)
    r = nova.req("GET", f"/servers/{sid}/os-instance-actions")
    actions = [a for a in r.json()["instanceActions"] if a["action"] == "createBackup"]
    assert len(actions) == 5
    r = nova.req("GET", f"/servers/{sid}/os-instance-actions/{actions[0]['request_id']}")
    events = r.json()["instanceAction"]["events"]
    assert [(e["event"], e["result"]) for e in events] == [
        ("compute_backup_instance", "Success")]


def test_rotation_zero_and_the_response_forms(compute_server: Server, guest: str) -> None:
    """2.45+: 202 with exactly {"image_id"} and no Location; before: an empty body and
    a Location at the compute API's images only when the backup is kept (rotation > 0);
    rotation 0 deletes every backup of the type, the new one too."""
    srv, sid = compute_server, guest
    nova = Nova(srv)
    r = nova.req("POST", f"/servers/{sid}/action", "2.45", json={"createBackup": {
        "name": "zero-1", "backup_type": "zero", "rotation": 1,
        "metadata": {"purpose": "test"}}})
    assert r.status_code == 202, r.text
    assert_shape(r.json(), ACTION_245)
    assert "Location" not in r.headers
    kept = _wait_backups(srv, sid, "zero", ["zero-1"])
    assert kept[0]["id"] == r.json()["image_id"] and kept[0]["purpose"] == "test"
    nova.wait(sid, "ACTIVE")
    r = nova.req("POST", f"/servers/{sid}/action", "2.44", json={"createBackup": {
        "name": "zero-2", "backup_type": "zero", "rotation": "1"}})  # Nova takes "1"
    assert r.status_code == 202, r.text
    assert r.content == b""
    image_id = r.headers["Location"].rsplit("/", 1)[1]
    assert r.headers["Location"] == f"{srv.url}/compute/v2.1/images/{image_id}"
    assert nova.req("GET", f"/images/{image_id}", "2.35").status_code == 200  # proxy
    _wait_backups(srv, sid, "zero", ["zero-2"])
    nova.wait(sid, "ACTIVE")
    r = nova.req("POST", f"/servers/{sid}/action", "2.44", json={"createBackup": {
        "name": "zero-3", "backup_type": "zero", "rotation": 0}})
    assert r.status_code == 202, r.text
    assert r.content == b"" and "Location" not in r.headers
    nova.wait(sid, "ACTIVE")
    _wait_backups(srv, sid, "zero", [])


def test_rotation_keeps_a_backup_a_volume_was_cloned_from(compute_server: Server,
                                                          guest: str) -> None:
    """Rotation deletes by Glance's rules: a backup a volume was cloned from refuses
    (409, as Nova logs and goes on) and stays, its data with it; once the volume is
    gone the next rotation deletes it."""
    srv, sid = compute_server, guest
    nova = Nova(srv)
    held = nova.action(sid, {"createBackup": {"name": "held-1", "backup_type": "held",
                                              "rotation": 1}}).json()["image_id"]
    nova.wait(sid, "ACTIVE")
    _wait_backups(srv, sid, "held", ["held-1"])
    vol = srv.openstack_json("volume", "create", "--image", held, "--size", "1",
                             f"held-{uuid.uuid4().hex[:6]}")["id"]  # type: ignore[index]
    wait_volume(nova, vol, "available")
    nova.action(sid, {"createBackup": {"name": "held-2", "backup_type": "held",
                                       "rotation": 0}})
    nova.wait(sid, "ACTIVE")
    kept = _wait_backups(srv, sid, "held", ["held-1"])  # held-2 went, held-1 could not
    assert kept[0]["id"] == held
    srv.openstack("volume", "delete", vol)
    wait_volume(nova, vol, "gone")
    nova.action(sid, {"createBackup": {"name": "held-3", "backup_type": "held",
                                       "rotation": 0}})
    nova.wait(sid, "ACTIVE")
    _wait_backups(srv, sid, "held", [])


@pytest.mark.parametrize(("body", "words"), [
    ({"createBackup": {"name": "b", "backup_type": "daily"}}, "rotation"),
    ({"createBackup": {"name": "b", "backup_type": "daily", "rotation": -1}}, "rotation"),
    ({"createBackup": {"name": "b", "backup_type": "daily", "rotation": "x"}}, "rotation"),
    ({"createBackup": {"name": "b", "backup_type": "daily", "rotation": 1.5}}, "rotation"),
    ({"createBackup": {"name": "b", "rotation": 1}}, "backup_type"),
    ({"createBackup": {"backup_type": "daily", "rotation": 1}}, "name"),
    ({"createBackup": {"name": "", "backup_type": "daily", "rotation": 1}}, "name"),
    ({"createBackup": {"name": " b", "backup_type": "daily", "rotation": 1}}, "name"),
    ({"createBackup": {"name": "b", "backup_type": 1, "rotation": 1}}, "backup_type"),
    ({"createBackup": {"name": "b", "backup_type": "d", "rotation": 1, "x": 1}}, "x"),
    ({"createBackup": {"name": "b", "backup_type": "d", "rotation": 1,
                       "metadata": {"k": 1}}}, "metadata"),
    ({"createBackup": None}, "createBackup"),
])
def test_bad_bodies_are_400_before_404(compute_server: Server, guest: str, body: dict,
                                       words: str) -> None:
    nova = Nova(compute_server)
    for server_id in (guest, str(uuid.uuid4())):  # Nova checks the body first
        r = nova.req("POST", f"/servers/{server_id}/action", json=body)
        assert r.status_code == 400, r.text
        assert words in r.json()["badRequest"]["message"]


def test_refusals(compute_server: Server, guest: str) -> None:
    """Another project's member: 404 (Nova looks servers up in the caller's project);
    a reader of the server's project: 403 naming the rule; too much metadata before
    2.39: 403; a second backup while the first runs: Nova's 409."""
    srv, sid = compute_server, guest
    body = {"createBackup": {"name": "r", "backup_type": "refused", "rotation": 1}}
    other = make_tenant(srv, "bko")
    with srv.client(other.token()) as c:
        r = c.post(f"/compute/v2.1/servers/{sid}/action", json=body)
    assert r.status_code == 404, r.text
    reader = make_tenant(srv, "bkr")
    srv.openstack("role", "add", "--project", "admin", "--user", reader.user, "reader")
    with srv.client(srv.token(reader.user, reader.password, "admin")) as c:
        r = c.post(f"/compute/v2.1/servers/{sid}/action", json=body)
    assert r.status_code == 403, r.text
    assert "os_compute_api:os-create-backup" in r.json()["forbidden"]["message"]
    nova = Nova(srv)
    many = {f"k{n}": "v" for n in range(129)}  # [compute] quota_metadata_items: 128
    r = nova.req("POST", f"/servers/{sid}/action", "2.38", json={"createBackup": {
        **body["createBackup"], "metadata": many}})
    assert r.status_code == 403, r.text  # before 2.39 only (Nova stopped checking)
    assert "metadata" in r.json()["forbidden"]["message"]
    nova.wait(sid, "ACTIVE")
    nova.action(sid, {"createBackup": {"name": "r1", "backup_type": "busy", "rotation": 0}})
    r = nova.req("POST", f"/servers/{sid}/action", json={"createBackup": {
        "name": "r2", "backup_type": "busy", "rotation": 0}})
    assert r.status_code == 409, r.text
    assert r.json()["conflictingRequest"]["message"] == (
        f"Cannot 'createBackup' instance {sid} while it is in task_state image_backup")
    nova.wait(sid, "ACTIVE")
    _wait_backups(srv, sid, "busy", [])


# ---------------------------------------------------------------- crash convergence
@pytest.fixture(scope="module")
def crash_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # a short directory: a guest's sockets must fit AF_UNIX's 108 bytes
    tmp_path = tmp_path_factory.mktemp("bkc")
    os.environ[FAULT_FILE_ENV] = str(tmp_path / "fault")
    try:
        with guest_server(tmp_path, {"jobs": {"lease_seconds": "3"}}) as srv:
            yield srv
    finally:
        os.environ.pop(FAULT_FILE_ENV, None)


def test_volume_backed_is_400_as_nova(crash_srv: Server) -> None:
    """Nova's ``backup()`` refuses volume-backed servers; the server is a row here (the
    refusal comes before any work)."""
    from strato.compute.models import Instance

    srv = crash_srv
    db = Database(load(srv.conf).database.connection)
    nova = Nova(srv)
    sid = str(uuid.uuid4())
    with db.session() as session:
        session.add(Instance(
            id=sid, name="bfv", project_id=nova.project_id, user_id=None, host="elsewhere",
            image_ref="", flavor_id="m1.tiny",
            flavor={"root_gb": 1, "memory_mb": 64, "vcpus": 1},
            vm_state="active", task_state=None, power_state=1))
    try:
        r = nova.req("POST", f"/servers/{sid}/action", json={"createBackup": {
            "name": "v", "backup_type": "daily", "rotation": 1}})
        assert r.status_code == 400, r.text
        assert r.json()["badRequest"]["message"] == (
            "Backup is not supported for volume-backed instances.")
    finally:
        with db.session() as session:
            session.delete(session.get(Instance, sid))
        db.dispose()


def test_kill_inside_the_request_leaves_nothing(crash_srv: Server) -> None:
    """The image, the task state, the action and the job commit together: a SIGKILL
    just before the job leaves none of them (the server is a row on another host)."""
    from sqlalchemy import select

    from strato.compute.models import Instance, InstanceAction
    from strato.image.models import Image, ImageProperty
    from strato.jobs.models import Job

    srv = crash_srv
    db = Database(load(srv.conf).database.connection)
    nova = Nova(srv)
    sid = str(uuid.uuid4())
    with db.session() as session:
        session.add(Instance(
            id=sid, name="row", project_id=nova.project_id, user_id=None, host="elsewhere",
            image_ref=str(uuid.uuid4()), flavor_id="m1.tiny",
            flavor={"root_gb": 1, "memory_mb": 64, "vcpus": 1},
            vm_state="active", task_state=None, power_state=1))
    Path(os.environ[FAULT_FILE_ENV]).write_text("kill createBackup:before-job\n")
    with pytest.raises(httpx.TransportError):
        nova.req("POST", f"/servers/{sid}/action", json={"createBackup": {
            "name": "k", "backup_type": "daily", "rotation": 1}})
    assert srv.proc is not None and srv.proc.wait(60) == -9
    try:
        with db.session(readonly=True) as session:
            assert session.get(Instance, sid).task_state is None
            assert not list(session.scalars(select(Image.id).join(
                ImageProperty, ImageProperty.image_id == Image.id).where(
                ImageProperty.name == "instance_uuid", ImageProperty.value == sid)))
            assert not list(session.scalars(select(InstanceAction).where(
                InstanceAction.instance_uuid == sid)))
            assert not list(session.scalars(select(Job).where(Job.name == "compute.backup")))
    finally:
        srv.start()
        with db.session() as session:
            session.delete(session.get(Instance, sid))
        db.dispose()


def _pool(srv: Server, pool: str) -> list[str]:
    return open_engine("local", root=srv.state / "blocks", repair=False).list(pool)


def test_kill_during_backup_converges(crash_srv: Server) -> None:
    """SIGKILL inside the snapshot (after the disk snapshot) and then between the
    active image and the rotation: each time, after the restart the job is claimed
    again, the backup finishes or the rotation runs, and exactly ``rotation`` backups
    are left, with no image data or disk snapshot of the rotated ones behind."""
    srv = crash_srv
    sid = boot_ready(srv, "--image", "strato-guest", prefix="bkc")
    fault = Path(os.environ[FAULT_FILE_ENV])
    body = {"createBackup": {"name": "c1", "backup_type": "daily", "rotation": 1}}
    nova = Nova(srv)
    first = nova.action(sid, body).json()["image_id"]
    nova.wait(sid, "ACTIVE")
    _wait_backups(srv, sid, "daily", ["c1"])
    names = {"c2": "kill snapshot:after-disk-snap", "c3": "kill backup:before-rotation"}
    ids = {"c1": first}
    for name, point in names.items():
        fault.write_text(point + "\n")
        ids[name] = Nova(srv).action(sid, {"createBackup": {**body["createBackup"],
                                                            "name": name}}).json()["image_id"]
        assert srv.proc is not None and srv.proc.wait(120) == -9
        srv.start()
        Nova(srv).wait(sid, "ACTIVE", timeout=180)
        _wait_backups(srv, sid, "daily", [name])
    assert not fault.exists()
    # the rotated backups' data (hidden from lists at once, removed right after) and
    # their disk snapshots go with their clones
    engine = open_engine("local", root=srv.state / "blocks", repair=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        images = [i for i in _pool(srv, "images") if i in ids.values()]
        with engine.open("vms", f"{sid}_disk") as disk:
            snaps = sorted(s.name for s in disk.list_snaps())
        if images == [ids["c3"]] and snaps == [f"{ids['c3']}.clone_snap"]:
            break
        time.sleep(0.5)
    assert images == [ids["c3"]] and snaps == [f"{ids['c3']}.clone_snap"]
    drv = QemuDriver(srv.state / "instances")
    assert drv.pid(sid) is not None  # the guest ran on through it all
    srv.openstack("image", "delete", ids["c3"])
    srv.openstack("server", "delete", "--wait", sid)
    assert not [n for n in _pool(srv, "vms") if n.startswith(sid)]
    assert ids["c3"] not in _pool(srv, "images")
