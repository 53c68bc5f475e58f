"""createImage when things go wrong: failures injected at each step, the server killed
mid-way, a freeze that cannot happen, the standard (extract and upload) path."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from strato.storage import open_engine
from strato.storage.crash import FAULT_FILE_ENV
from strato.storage.errors import ImageNotFound
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, boot_ready, guest_server
from tests.support import Server


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("snapfault")
    os.environ[FAULT_FILE_ENV] = str(state / "fault")  # the server inherits it
    try:
        with guest_server(state, {"compute": {"sync_power_state_interval": "0"},
                                  "jobs": {"lease_seconds": "3"}}) as srv:
            yield srv
    finally:
        os.environ.pop(FAULT_FILE_ENV, None)


def _inject(srv: Server, what: str) -> None:
    (srv.state / "fault").write_text(what)


def _blocks(srv: Server):  # type: ignore[no-untyped-def]
    return open_engine("local", root=srv.state / "blocks", repair=False)


def _create_image(nova: Nova, sid: str) -> str:
    r = nova.req("POST", f"/servers/{sid}/action",
                 json={"createImage": {"name": f"snap-{uuid.uuid4().hex[:6]}"}})
    assert r.status_code == 202, r.text
    return str(r.json()["image_id"])


def _settled(nova: Nova, sid: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = nova.server(sid)
        if body["OS-EXT-STS:task_state"] is None:
            return body
        time.sleep(0.2)
    raise AssertionError(f"server {sid} stuck in {body['OS-EXT-STS:task_state']}")


def _image_status(nova: Nova, image_id: str) -> str | None:
    r = nova.c.get(f"/image/v2/images/{image_id}")
    return None if r.status_code == 404 else str(r.json()["status"])


def _last_event(nova: Nova, sid: str) -> dict:
    actions = nova.req("GET", f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    act = next(a for a in actions if a["action"] == "createImage")  # newest first
    return nova.req("GET", f"/servers/{sid}/os-instance-actions/{act['request_id']}"
                    ).json()["instanceAction"]["events"][0]


def _snaps(srv: Server, sid: str) -> list[str]:
    with _blocks(srv).open("vms", f"{sid}_disk", read_only=True) as disk:
        return [s.name for s in disk.list_snaps()]


def test_failure_at_each_step_leaves_nothing(fault_server: Server) -> None:
    srv, nova = fault_server, Nova(fault_server)
    sid = boot_ready(srv, "--image", "strato-guest")
    for point in ("after-disk-snap", "after-clone"):
        _inject(srv, f"fail snapshot:{point}")
        image_id = _create_image(nova, sid)
        body = _settled(nova, sid)
        assert body["status"] == "ACTIVE"
        assert _image_status(nova, image_id) is None, point  # the image is gone
        assert not _blocks(srv).exists("images", image_id), point  # and its clone
        event = _last_event(nova, sid)
        assert event["result"] == "Error" and "injected fault" in event["traceback"]
    # the running guest writes above those snapshots: they go when it stops
    srv.openstack("server", "stop", sid)
    Nova(srv).wait(sid, "SHUTOFF")
    assert _snaps(srv, sid) == []
    # and a snapshot after the failures works
    image_id = _create_image(nova, sid)
    _settled(nova, sid)
    assert _image_status(nova, image_id) == "active"
    assert _snaps(srv, sid) == [f"{image_id}.clone_snap"]
    srv.openstack("server", "delete", "--wait", sid)
    srv.openstack("image", "delete", image_id)
    assert not _blocks(srv).exists("vms", f"{sid}_disk.deleted")


def test_killed_mid_snapshot_resumes_after_restart(fault_server: Server) -> None:
    srv, nova = fault_server, Nova(fault_server)
    sid = boot_ready(srv, "--image", "strato-guest")
    _inject(srv, "kill snapshot:after-clone")
    image_id = _create_image(nova, sid)
    assert srv.proc is not None
    assert srv.proc.wait(60) == -9  # SIGKILL, mid-way
    srv.start()
    nova = Nova(srv)
    body = _settled(nova, sid)
    assert body["status"] == "ACTIVE"
    assert _image_status(nova, image_id) == "active"
    assert _snaps(srv, sid) == [f"{image_id}.clone_snap"]  # one snapshot, reused
    assert [n for n in _blocks(srv).list("images") if n.startswith(image_id)] == [image_id]
    assert _last_event(nova, sid)["result"] == "Success"
    srv.openstack("server", "delete", "--wait", sid)
    srv.openstack("image", "delete", image_id)


def test_freeze_that_cannot_happen(fault_server: Server) -> None:
    """The guest agent does not answer (vCPUs stopped behind strato's back): with
    os_require_quiesce the snapshot is refused; without, it is taken unquiesced."""
    srv, nova = fault_server, Nova(fault_server)
    drv = QemuDriver(srv.state / "instances")
    sid = boot_ready(srv, "--image", "strato-guest")
    srv.openstack("image", "set", "--property", "os_require_quiesce=yes", "strato-guest")
    try:
        drv.qmp(sid, "stop")
        image_id = _create_image(nova, sid)
        _settled(nova, sid)
        assert _image_status(nova, image_id) is None
        assert _last_event(nova, sid)["result"] == "Error"
        drv.qmp(sid, "cont")
        with drv.agent(sid) as ga:
            assert ga.fsfreeze_status() == "thawed"
    finally:
        srv.openstack("image", "unset", "--property", "os_require_quiesce", "strato-guest")
    drv.qmp(sid, "stop")
    image_id = _create_image(nova, sid)
    _settled(nova, sid)
    drv.qmp(sid, "cont")
    image = srv.openstack_json("image", "show", image_id)
    assert image["status"] == "active"  # type: ignore[index]
    assert image["properties"]["strato_quiesced"] == "false"  # type: ignore[index]
    with drv.agent(sid) as ga:
        assert ga.fsfreeze_status() == "thawed"
    srv.openstack("server", "delete", "--wait", sid)
    srv.openstack("image", "delete", image_id)


def test_volume_backed_failure_leaves_no_volume_snapshot(fault_server: Server) -> None:
    srv, nova = fault_server, Nova(fault_server)
    sid = boot_ready(srv, "--image", "strato-guest", "--boot-from-volume", "1")
    srv.openstack("server", "stop", sid)
    nova.wait(sid, "SHUTOFF")
    _inject(srv, "fail snapshot:after-volume-snaps")
    image_id = _create_image(nova, sid)
    _settled(nova, sid)
    assert _image_status(nova, image_id) is None
    deadline = time.monotonic() + 30
    while srv.openstack_json("volume", "snapshot", "list") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert srv.openstack_json("volume", "snapshot", "list") == []
    vol = nova.server(sid)["os-extended-volumes:volumes_attached"][0]["id"]
    with _blocks(srv).open("volumes", f"volume-{vol}", read_only=True) as image:
        assert image.list_snaps() == []
    srv.openstack("server", "delete", "--wait", sid)
    srv.openstack("volume", "delete", vol)


def test_standard_path_extracts_and_uploads(fault_server: Server) -> None:
    """snapshot_image_format=qcow2: no clone; the snapshot is converted in
    snapshots_directory, uploaded, and the temp file removed, on failure too."""
    srv = fault_server
    conf = srv.conf.read_text()
    srv.stop()
    srv.conf.write_text(conf.replace("[compute]\n", "[compute]\nsnapshot_image_format = qcow2\n",
                                     1))
    srv.start()
    try:
        nova = Nova(srv)
        drv = QemuDriver(srv.state / "instances")
        sid = boot_ready(srv, "--image", "strato-guest")
        with drv.agent(sid) as ga:
            ga.sh("echo one > /mnt/root/marker-before")
        workdir = srv.state / "instances" / "snapshots"
        _inject(srv, "fail snapshot:before-upload")
        image_id = _create_image(nova, sid)
        _settled(nova, sid)
        assert _image_status(nova, image_id) is None
        assert not list(workdir.glob("*"))

        image_id = _create_image(nova, sid)
        _settled(nova, sid)
        image = srv.openstack_json("image", "show", image_id)
        assert image["status"] == "active" and image["disk_format"] == "qcow2"  # type: ignore[index]
        assert image["checksum"]  # type: ignore[index]
        with _blocks(srv).open("images", image_id, read_only=True) as stored:
            with pytest.raises(ImageNotFound):  # uploaded data, not a clone
                stored.parent_info()
        assert not list(workdir.glob("*"))
        data = Path(srv.state / "std.qcow2")
        srv.openstack("image", "save", "--file", str(data), image_id)
        info = subprocess.run(["qemu-img", "info", str(data)], capture_output=True, text=True)
        assert "file format: qcow2" in info.stdout
        data.unlink()
        child = boot_ready(srv, "--image", image_id)
        with drv.agent(child) as ga:
            assert "marker-before" in ga.sh("ls /mnt/root").stdout.decode()
        for s in (child, sid):
            srv.openstack("server", "delete", "--wait", s)
        srv.openstack("image", "delete", image_id)
    finally:
        srv.stop()
        srv.conf.write_text(conf)
        srv.start()


def test_instance_deleted_mid_snapshot(fault_server: Server) -> None:
    srv, nova = fault_server, Nova(fault_server)
    sid = boot_ready(srv, "--image", "strato-guest")
    _inject(srv, "sleep=4 snapshot:after-disk-snap")
    image_id = _create_image(nova, sid)
    deadline = time.monotonic() + 30
    while nova.server(sid)["OS-EXT-STS:task_state"] != "image_snapshot":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert nova.req("DELETE", f"/servers/{sid}").status_code == 204
    nova.wait(sid, "gone")
    assert _image_status(nova, image_id) is None
    engine = _blocks(srv)
    assert not engine.exists("images", image_id)
    assert not engine.exists("vms", f"{sid}_disk")
    assert not engine.exists("vms", f"{sid}_disk.deleted")


def test_image_delete_under_a_running_guest_is_honest(fault_server: Server) -> None:
    """The user's report: a snapshot image deleted while its guest runs.  Whether or not
    the store can release the root disk's ``<image>.clone_snap`` under the running guest,
    the delete answers 204 and the image is gone with its data (never 500, never
    ``active`` without data); the disk snapshot goes by the release job or when the
    guest stops."""
    srv, nova = fault_server, Nova(fault_server)
    sid = boot_ready(srv, "--image", "strato-guest")
    image_id = _create_image(nova, sid)
    _settled(nova, sid)
    assert _image_status(nova, image_id) == "active"
    r = nova.c.delete(f"/image/v2/images/{image_id}")
    assert r.status_code == 204, r.text
    assert _image_status(nova, image_id) is None
    assert image_id not in _blocks(srv).list("images")
    srv.openstack("server", "stop", sid)
    Nova(srv).wait(sid, "SHUTOFF")
    deadline = time.monotonic() + 30
    while _snaps(srv, sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _snaps(srv, sid) == []
    srv.openstack("server", "delete", "--wait", sid)


def test_strato_killed_mid_online_merge(fault_server: Server) -> None:
    """strato SIGKILLed at each step of merging a deleted snapshot's layer under the
    running guest: after the restart the merge is finished (the guest's QEMU went on
    with its block job), the image delete completes, the chain is back to its depth, and
    the guest's files read back with the checksums they had (taken inside the guest)."""
    srv, nova = fault_server, Nova(fault_server)
    driver = QemuDriver(srv.state / "instances")
    sid = boot_ready(srv, "--image", "strato-guest")
    pid = driver.pid(sid)
    disk = f"{sid}_disk"
    start = len(_blocks(srv).load("vms", disk)["layers"])

    def sums() -> str:
        with driver.agent(sid) as ga:
            return ga.sh("sync; md5sum /mnt/root/data-*").stdout.decode()

    for k, point in enumerate(("job-started", "before-pivot", "job-concluded",
                               "after-merge")):
        with driver.agent(sid) as ga:  # data above the snapshot: the commit copies it
            assert ga.sh(f"dd if=/dev/urandom of=/mnt/root/data-{k} bs=64k count=64 "
                         "2>/dev/null").exitcode == 0
        image_id = _create_image(nova, sid)
        _settled(nova, sid)
        with driver.agent(sid) as ga:
            assert ga.sh(f"dd if=/dev/urandom of=/mnt/root/data-{k}b bs=64k count=64 "
                         "2>/dev/null").exitcode == 0
        before = sums()
        _inject(srv, f"kill remove_snap:{point}")
        try:
            nova.c.delete(f"/image/v2/images/{image_id}")
        except httpx.HTTPError:
            pass  # the server died under the request
        assert srv.proc is not None and srv.proc.wait(60) == -9, point
        assert not (srv.state / "fault").exists(), f"{point} never reached"
        srv.start()
        nova = Nova(srv)
        deadline = time.monotonic() + 60
        while _image_status(nova, image_id) is not None:  # the job finishes the delete
            assert time.monotonic() < deadline, f"{point}: image never deleted"
            time.sleep(0.3)
        meta = _blocks(srv).load("vms", disk)
        assert not meta["snaps"] and len(meta["layers"]) == start, point
        assert driver.pid(sid) == pid, f"{point}: the guest stopped"
        assert sums() == before, f"{point}: the guest's data changed"
    srv.openstack("server", "delete", "--wait", sid)
