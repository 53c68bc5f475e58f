"""Honest deletes: a failure (or a SIGKILL) injected at each step of an image, volume
and snapshot delete, and after the retry or the restart the record and the store agree:
a record that says ``active``/``available`` has its data, a delete that went through
leaves neither record nor data, and nothing it held on a parent is left behind."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from strato.storage import open_engine
from strato.storage.crash import FAULT_FILE_ENV
from tests.support import Server, free_port

IMAGE_POINTS = ["before-data", "after-unprotect", "after-remove-snap", "release-parent",
                "before-record"]
VOLUME_POINTS = ["before-store", "before-remove", "release-parent", "before-record"]
SNAPSHOT_POINTS = ["before-store", "after-unprotect", "before-record"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("delfault")
    os.environ[FAULT_FILE_ENV] = str(state / "fault")  # the server (and restarts) inherit it
    server = Server(state, free_port(), extra_conf={
        "jobs": {"lease_seconds": "2", "retry_backoff": "0.5"}})
    try:
        server.setup()
        server.start()
        yield server
    finally:
        server.stop()
        os.environ.pop(FAULT_FILE_ENV, None)


class Cloud:
    def __init__(self, server: Server) -> None:
        self.srv = server
        token = server.token()
        self.c = server.client(token)
        project = self.c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]
        self.vbase = f"/volume/v3/{project}"
        self.c.headers["OpenStack-API-Version"] = "volume 3.65"

    @property
    def blocks(self):  # type: ignore[no-untyped-def]
        return open_engine("local", root=self.srv.state / "blocks", repair=False)

    def inject(self, how: str, point: str) -> None:
        (self.srv.state / "fault").write_text(f"{how} {point}")

    def consumed(self) -> bool:
        return not (self.srv.state / "fault").exists()

    def request(self, method: str, path: str, **kw) -> httpx.Response | None:  # type: ignore[no-untyped-def]
        """The request; None when the server died answering it (an injected kill)."""
        try:
            return self.c.request(method, path, **kw)
        except httpx.TransportError:
            return None

    def restart_after_kill(self) -> None:
        assert self.srv.proc is not None
        assert self.srv.proc.wait(30) == -9, "the server was not killed at the point"
        self.srv.start()

    def until(self, what, timeout: float = 30):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    # ---------------------------------------------------------------- images
    def image(self, image_id: str) -> dict | None:
        r = self.c.get(f"/image/v2/images/{image_id}")
        return None if r.status_code == 404 else r.json()

    def image_with_data(self) -> str:
        r = self.c.post("/image/v2/images", json={
            "name": f"img-{uuid.uuid4().hex[:6]}", "disk_format": "raw",
            "container_format": "bare"})
        assert r.status_code == 201, r.text
        image_id = r.json()["id"]
        r = self.c.put(f"/image/v2/images/{image_id}/file", content=b"d" * (1 << 20),
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        return str(image_id)

    def image_from_volume(self) -> tuple[str, str]:
        """An image that is a clone of a volume's ``<image>.clone_snap``; (image, volume)."""
        vol = self.volume(size=1)
        r = self.c.post(f"{self.vbase}/volumes/{vol}/action", json={
            "os-volume_upload_image": {"image_name": f"fv-{uuid.uuid4().hex[:6]}",
                                       "disk_format": "raw"}})
        assert r.status_code == 202, r.text
        image_id = r.json()["os-volume_upload_image"]["image_id"]
        assert self.until(lambda: (self.image(image_id) or {}).get("status") == "active")
        self.wait_volume(vol, "available")
        with self.blocks.open("images", image_id) as data:
            assert data.parent_info()[1:] == (f"volume-{vol}", f"{image_id}.clone_snap")
        return str(image_id), vol

    def image_agrees(self, image_id: str) -> None:
        """A record that offers the data has it; no record, no data."""
        body = self.image(image_id)
        in_store = image_id in self.blocks.list("images")
        if body is None:
            assert not in_store, f"image {image_id} has no record but its data is stored"
        elif body["status"] in ("active", "deactivated"):
            assert in_store, f"image {image_id} says {body['status']} without its data"
            r = self.c.get(f"/image/v2/images/{image_id}/file")
            assert r.status_code == 200 and len(r.content) == body["size"]
        else:
            assert body["status"] == "pending_delete", body

    # ---------------------------------------------------------------- volumes
    def volume(self, **fields) -> str:  # type: ignore[no-untyped-def]
        r = self.c.post(f"{self.vbase}/volumes", json={"volume": {
            "name": f"v-{uuid.uuid4().hex[:6]}", **fields}})
        assert r.status_code == 202, r.text
        vol = str(r.json()["volume"]["id"])
        self.wait_volume(vol, "available")
        return vol

    def volume_status(self, vol: str) -> str | None:
        r = self.c.get(f"{self.vbase}/volumes/{vol}")
        return None if r.status_code == 404 else str(r.json()["volume"]["status"])

    def wait_volume(self, vol: str, status: str | None, timeout: float = 30) -> None:
        got = self.until(lambda: self.volume_status(vol) == status, timeout)
        assert got, f"volume {vol} is {self.volume_status(vol)}, not {status}"

    def snapshot(self, vol: str) -> str:
        r = self.c.post(f"{self.vbase}/snapshots", json={"snapshot": {"volume_id": vol}})
        assert r.status_code == 202, r.text
        snap = str(r.json()["snapshot"]["id"])
        self.wait_snapshot(snap, "available")
        return snap

    def snapshot_status(self, snap: str) -> str | None:
        r = self.c.get(f"{self.vbase}/snapshots/{snap}")
        return None if r.status_code == 404 else str(r.json()["snapshot"]["status"])

    def wait_snapshot(self, snap: str, status: str | None, timeout: float = 30) -> None:
        got = self.until(lambda: self.snapshot_status(snap) == status, timeout)
        assert got, f"snapshot {snap} is {self.snapshot_status(snap)}, not {status}"

    def snaps_of(self, vol: str) -> list[str]:
        with self.blocks.open("volumes", f"volume-{vol}", read_only=True) as image:
            return [s.name for s in image.list_snaps()]


@pytest.fixture
def cloud(srv: Server) -> Iterator[Cloud]:
    if srv.proc is None or srv.proc.poll() is not None:
        srv.start()  # an earlier test left it dead
    (srv.state / "fault").unlink(missing_ok=True)
    cloud = Cloud(srv)
    yield cloud
    cloud.c.close()


# -------------------------------------------------------------------- images
@pytest.mark.parametrize("how", ["fail", "kill"])
@pytest.mark.parametrize("point", IMAGE_POINTS)
def test_image_delete_fault(cloud: Cloud, point: str, how: str) -> None:
    parent = point == "release-parent"
    if parent:
        image_id, vol = cloud.image_from_volume()
    else:
        image_id, vol = cloud.image_with_data(), ""
    cloud.inject(how, f"image.delete:{point}")
    r = cloud.request("DELETE", f"/image/v2/images/{image_id}")
    assert cloud.consumed(), "the fault point was never reached"
    if how == "kill":
        assert r is None
        cloud.restart_after_kill()
        cloud = Cloud(cloud.srv)
    else:
        assert r is not None and r.status_code == 204, r.text if r else None
    # at every moment: never active without data
    cloud.image_agrees(image_id)
    assert cloud.until(lambda: cloud.image(image_id) is None), cloud.image(image_id)
    cloud.image_agrees(image_id)
    if parent:  # what the image held on the volume is released too (job or retry)
        assert cloud.until(lambda: cloud.snaps_of(vol) == []), cloud.snaps_of(vol)
        assert cloud.c.delete(f"{cloud.vbase}/volumes/{vol}").status_code == 202
        cloud.wait_volume(vol, None)
        assert not [n for n in cloud.blocks.list("volumes") if vol in n]


def test_image_delete_refused_while_cloned_names_the_clone(cloud: Cloud) -> None:
    image_id = cloud.image_with_data()
    vol = cloud.volume(imageRef=image_id, size=1)
    with cloud.blocks.open("volumes", f"volume-{vol}", read_only=True) as v:
        assert v.parent_info()[1] == image_id  # a clone, so the data is needed
    r = cloud.c.delete(f"/image/v2/images/{image_id}")
    assert r.status_code == 409, r.text
    assert "in use" in r.json()["message"] and f"volume {vol}" in r.json()["message"]
    assert cloud.image(image_id)["status"] == "active"  # type: ignore[index]
    cloud.image_agrees(image_id)
    time.sleep(3)  # longer than the job's delay: the cancelled job does not run
    assert cloud.image(image_id)["status"] == "active"  # type: ignore[index]
    assert cloud.c.delete(f"{cloud.vbase}/volumes/{vol}").status_code == 202
    cloud.wait_volume(vol, None)
    assert cloud.c.delete(f"/image/v2/images/{image_id}").status_code == 204
    assert cloud.image(image_id) is None
    cloud.image_agrees(image_id)


# -------------------------------------------------------------------- volumes
@pytest.mark.parametrize("how", ["fail", "kill"])
@pytest.mark.parametrize("point", VOLUME_POINTS)
def test_volume_delete_fault(cloud: Cloud, point: str, how: str) -> None:
    src = cloud.volume(size=1)
    vol = cloud.volume(source_volid=src)  # a clone: holds src@volume-<vol>.clone_snap
    assert cloud.snaps_of(src) == [f"volume-{vol}.clone_snap"]
    cloud.inject(how, f"volume.delete:{point}")
    r = cloud.request("DELETE", f"{cloud.vbase}/volumes/{vol}")
    # a kill can come from the worker before the 202 is on the wire: accepted all the same
    assert (r is None and how == "kill") or (r is not None and r.status_code == 202), r
    assert cloud.until(cloud.consumed), "the fault point was never reached"
    if how == "kill":
        cloud.restart_after_kill()
        cloud = Cloud(cloud.srv)
    elif point == "before-remove":  # failed with the volume whole: error_deleting
        cloud.wait_volume(vol, "error_deleting")
        assert f"volume-{vol}" in cloud.blocks.list("volumes")
        with cloud.blocks.open("volumes", f"volume-{vol}", read_only=True) as image:
            assert image.size() == 1 << 30
        r = cloud.c.delete(f"{cloud.vbase}/volumes/{vol}")  # the retry
        assert r.status_code == 202, r.text
    cloud.wait_volume(vol, None)
    assert not [n for n in cloud.blocks.list("volumes") if vol in n]
    assert cloud.until(lambda: cloud.snaps_of(src) == []), cloud.snaps_of(src)
    assert cloud.c.delete(f"{cloud.vbase}/volumes/{src}").status_code == 202
    cloud.wait_volume(src, None)


# -------------------------------------------------------------------- snapshots
@pytest.mark.parametrize("how", ["fail", "kill"])
@pytest.mark.parametrize("point", SNAPSHOT_POINTS)
def test_snapshot_delete_fault(cloud: Cloud, point: str, how: str) -> None:
    vol = cloud.volume(size=1)
    snap = cloud.snapshot(vol)
    cloud.inject(how, f"snapshot.delete:{point}")
    r = cloud.request("DELETE", f"{cloud.vbase}/snapshots/{snap}")
    # a kill can come from the worker before the 202 is on the wire: accepted all the same
    assert (r is None and how == "kill") or (r is not None and r.status_code == 202), r
    assert cloud.until(cloud.consumed), "the fault point was never reached"
    if how == "kill":
        cloud.restart_after_kill()
        cloud = Cloud(cloud.srv)
    elif point == "after-unprotect":  # the snapshot is still there: error_deleting
        cloud.wait_snapshot(snap, "error_deleting")
        assert cloud.snaps_of(vol) == [f"snapshot-{snap}"]
        r = cloud.c.delete(f"{cloud.vbase}/snapshots/{snap}")  # the retry
        assert r.status_code == 202, r.text
    cloud.wait_snapshot(snap, None)
    assert cloud.snaps_of(vol) == []
    assert cloud.c.delete(f"{cloud.vbase}/volumes/{vol}").status_code == 202
    cloud.wait_volume(vol, None)
