"""Block storage against a real `strato serve`: the CLI, HTTP, and the store's contents."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from strato.storage import open_engine
from tests.support import Server, free_port

GiB = 1 << 30


def _blocks(server: Server):  # type: ignore[no-untyped-def]
    return open_engine("local", root=server.state / "blocks", repair=False)


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _read(server: Server, pool: str, name: str, length: int,
          snapshot: str | None = None) -> bytes:
    with _blocks(server).open(pool, name, snapshot=snapshot, read_only=True) as image:
        return image.read(0, length)


def _wait(c: httpx.Client, path: str, key: str, want: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = c.get(path)
        if r.status_code == 404 and want == "gone":
            return {}
        body = r.json()[key]
        if body["status"] == want:
            return body
        if body["status"] == "error" and want != "error":
            raise AssertionError(f"{path} went to error: {body}")
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {want}: {body}")


class Cinder:
    """A small client for one project's volumes."""

    def __init__(self, server: Server, token: str, project_id: str) -> None:
        self.c = server.client(token)
        self.c.headers["OpenStack-API-Version"] = "volume 3.65"
        self.base = f"/volume/v3/{project_id}"

    def create(self, wait: str | None = "available", **fields) -> dict:  # type: ignore[no-untyped-def]
        r = self.c.post(f"{self.base}/volumes", json={"volume": {"name": _uniq("v"),
                                                                 **fields}})
        assert r.status_code == 202, r.text
        vol = r.json()["volume"]
        return self.wait(vol["id"], wait) if wait else vol

    def wait(self, volume_id: str, status: str) -> dict:
        return _wait(self.c, f"{self.base}/volumes/{volume_id}", "volume", status)

    def snapshot(self, volume_id: str, **fields) -> dict:  # type: ignore[no-untyped-def]
        r = self.c.post(f"{self.base}/snapshots", json={"snapshot": {
            "volume_id": volume_id, "name": _uniq("s"), **fields}})
        assert r.status_code == 202, r.text
        return _wait(self.c, f"{self.base}/snapshots/{r.json()['snapshot']['id']}",
                     "snapshot", "available")

    def delete(self, volume_id: str, expect: str = "gone") -> httpx.Response:
        r = self.c.delete(f"{self.base}/volumes/{volume_id}")
        if r.status_code == 202:
            if expect == "gone":
                _wait(self.c, f"{self.base}/volumes/{volume_id}", "volume", "gone")
            else:
                self.wait(volume_id, expect)
        return r

    def delete_snapshot(self, snapshot_id: str, expect: str = "gone") -> httpx.Response:
        r = self.c.delete(f"{self.base}/snapshots/{snapshot_id}")
        if r.status_code == 202:
            _wait(self.c, f"{self.base}/snapshots/{snapshot_id}", "snapshot", expect)
        return r


@pytest.fixture
def cinder(server: Server, admin_token: str) -> Cinder:
    with server.client(admin_token) as c:
        project = c.get("/identity/v3/auth/tokens",
                        headers={"X-Subject-Token": admin_token}).json()["token"]["project"]
    return Cinder(server, admin_token, project["id"])


def _upload_image(server: Server, data: bytes, disk_format: str = "raw") -> dict:
    with server.client(server.token()) as c:
        image = c.post("/image/v2/images", json={
            "name": _uniq("img"), "disk_format": disk_format, "container_format": "bare",
            "os_distro": "busybox"}).json()
        r = c.put(f"/image/v2/images/{image['id']}/file", content=data,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        return c.get(f"/image/v2/images/{image['id']}").json()


def _pattern(n: int, seed: str) -> bytes:
    block = hashlib.sha512(seed.encode()).digest() * 64
    return (block * (n // len(block) + 1))[:n]


# ------------------------------------------------------------------ the real client
def test_cli_volume_paths(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "img.raw"
    data.write_bytes(_pattern(3 << 20, "cli"))
    image = server.openstack_json("image", "create", "--file", str(data), "--disk-format",
                                  "raw", "--container-format", "bare", _uniq("img"))
    name = _uniq("vol")
    vol = server.openstack_json("volume", "create", "--image", image["id"], "--size", "1",
                                name)
    server.openstack("volume", "show", name)  # name lookup works
    deadline = time.monotonic() + 60
    while server.openstack_json("volume", "show", name)["status"] != "available":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    shown = server.openstack_json("volume", "show", name)
    assert shown["bootable"] is True and shown["size"] == 1
    assert shown["volume_image_metadata"]["image_id"] == image["id"]
    # Cloned, not copied: the volume's parent is the image's protected snapshot.
    with _blocks(server).open("volumes", f"volume-{vol['id']}") as v:
        assert v.parent_info() == ("images", image["id"], "snap")
    assert _read(server, "volumes", f"volume-{vol['id']}", 3 << 20) == data.read_bytes()

    snap = _uniq("snap")
    server.openstack("volume", "snapshot", "create", "--volume", name, snap)
    deadline = time.monotonic() + 60
    while server.openstack_json("volume", "snapshot", "show", snap)["status"] != "available":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    from_snap = _uniq("fromsnap")
    server.openstack("volume", "create", "--snapshot", snap, from_snap)
    from_vol = _uniq("fromvol")
    server.openstack("volume", "create", "--source", name, from_vol)
    for vname in (from_snap, from_vol):
        deadline = time.monotonic() + 60
        while (v := server.openstack_json("volume", "show", vname))["status"] != "available":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert v["size"] == 1
        assert _read(server, "volumes", f"volume-{v['id']}", 3 << 20) == data.read_bytes()
    server.openstack("volume", "set", "--name", name + "-renamed", "--property", "k=v", name)
    assert server.openstack_json("volume", "show", name + "-renamed")["properties"] == {
        "k": "v"}
    listed = {v["Name"] for v in server.openstack_json("volume", "list")}
    assert {name + "-renamed", from_snap, from_vol} <= listed

    # Deletes, children first, then everything is gone from the store.
    server.openstack("volume", "delete", from_snap, from_vol)
    server.openstack("volume", "snapshot", "delete", snap)
    server.openstack("volume", "delete", name + "-renamed")
    deadline = time.monotonic() + 60
    while any(n.startswith("volume-") and vol["id"] in n
              for n in _blocks(server).list("volumes")):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    server.openstack("image", "delete", image["id"])
    assert image["id"] not in _blocks(server).list("images")


# ------------------------------------------------------------------ delete rules
def test_delete_rules_in_every_order(server: Server, cinder: Cinder) -> None:
    blocks = _blocks(server)
    a = cinder.create(size=1)
    sa = cinder.snapshot(a["id"])
    # A volume with snapshots cannot go; the request fails and nothing changes.
    r = cinder.delete(a["id"])
    assert r.status_code == 400 and "dependent snapshots" in r.json()["badRequest"]["message"]
    b = cinder.create(snapshot_id=sa["id"])
    # The snapshot has a clone: delete refused, snapshot back to available.
    cinder.delete_snapshot(sa["id"], expect="available")
    assert f"snapshot-{sa['id']}" in [s.name for s in blocks.open(
        "volumes", f"volume-{a['id']}").list_snaps()]
    c = cinder.create(source_volid=b["id"])  # b@volume-c.clone_snap → c
    # Deleting b while c needs it: b is renamed .deleted and kept.
    cinder.delete(b["id"])
    names = blocks.list("volumes")
    assert f"volume-{b['id']}.deleted" in names and f"volume-{b['id']}" not in names
    # c still reads its data through b.deleted and a@snapshot.
    assert _read(server, "volumes", f"volume-{c['id']}", 4096) == bytes(4096)
    # Deleting c walks up: b.deleted goes, and then a's snapshot is free.
    cinder.delete(c["id"])
    assert not [n for n in blocks.list("volumes") if b["id"] in n or c["id"] in n]
    cinder.delete_snapshot(sa["id"])
    assert blocks.open("volumes", f"volume-{a['id']}").list_snaps() == []
    cinder.delete(a["id"])
    assert not [n for n in blocks.list("volumes") if a["id"] in n]


def test_volume_already_missing_from_store_deletes_cleanly(server: Server,
                                                           cinder: Cinder) -> None:
    v = cinder.create(size=1)
    _blocks(server).remove("volumes", f"volume-{v['id']}")
    assert cinder.delete(v["id"]).status_code == 202


def test_clone_depth_flattens_the_source(server: Server, cinder: Cinder) -> None:
    """rbd_max_clone_depth = 5: cloning a volume that is 5 clones deep flattens it first."""
    chain = [cinder.create(size=1)]
    for _ in range(5):
        chain.append(cinder.create(source_volid=chain[-1]["id"]))
    with _blocks(server).open("volumes", f"volume-{chain[-1]['id']}") as deep:
        assert deep.clone_depth() == 5
    extra = cinder.create(source_volid=chain[-1]["id"])
    blocks = _blocks(server)
    with blocks.open("volumes", f"volume-{chain[-1]['id']}") as src:
        assert src.clone_depth() == 0  # flattened
    with blocks.open("volumes", f"volume-{extra['id']}") as new:
        assert new.clone_depth() == 1
    for vol in [extra, *reversed(chain)]:
        cinder.delete(vol["id"])
    leftovers = [n for n in blocks.list("volumes")
                 if any(v["id"] in n for v in [extra, *chain])]
    assert leftovers == []


def test_data_through_every_path(server: Server, cinder: Cinder, tmp_path: Path) -> None:
    """qcow2 image → (download and convert) volume → snapshot → volume: same bytes."""
    raw = tmp_path / "d.raw"
    raw.write_bytes(_pattern(2 << 20, "qcow"))
    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(qcow)],
                   check=True)
    image = _upload_image(server, qcow.read_bytes(), "qcow2")
    v1 = cinder.create(imageRef=image["id"], size=1)
    assert v1["bootable"] == "true" and v1["volume_image_metadata"]["os_distro"] == "busybox"
    with _blocks(server).open("volumes", f"volume-{v1['id']}") as vol:
        assert vol.clone_depth() == 0  # qcow2 cannot be cloned: it was converted
    want = hashlib.sha256(raw.read_bytes()).hexdigest()
    assert hashlib.sha256(_read(server, "volumes", f"volume-{v1['id']}", 2 << 20)
                          ).hexdigest() == want
    snap = cinder.snapshot(v1["id"])
    v2 = cinder.create(snapshot_id=snap["id"], size=2)
    assert v2["size"] == 2 and v2["bootable"] == "true"
    with _blocks(server).open("volumes", f"volume-{v2['id']}") as vol:
        assert vol.size() == 2 * GiB
    assert hashlib.sha256(_read(server, "volumes", f"volume-{v2['id']}", 2 << 20)
                          ).hexdigest() == want
    # ... → image, as qcow2 this time: the copy path, converted, through the image store.
    r = cinder.c.post(f"{cinder.base}/volumes/{v2['id']}/action", json={
        "os-volume_upload_image": {"image_name": _uniq("back"), "disk_format": "qcow2"}})
    assert r.status_code == 202, r.text
    back_id = r.json()["os-volume_upload_image"]["image_id"]
    cinder.wait(v2["id"], "available")
    with server.client(server.token()) as c:
        back = c.get(f"/image/v2/images/{back_id}").json()
        assert back["status"] == "active" and back["disk_format"] == "qcow2"
        assert back["virtual_size"] == 2 * GiB
        out = tmp_path / "back.qcow2"
        out.write_bytes(c.get(f"/image/v2/images/{back_id}/file").content)
        c.delete(f"/image/v2/images/{back_id}")
    subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", str(out), str(tmp_path / "b")],
                   check=True)
    with open(tmp_path / "b", "rb") as fh:
        assert hashlib.sha256(fh.read(2 << 20)).hexdigest() == want
    cinder.delete(v2["id"])
    cinder.delete_snapshot(snap["id"])
    cinder.delete(v1["id"])
    assert not list((server.state / "conversion").glob("*"))


@pytest.fixture(scope="module")
def file_store_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Images in the `file` store: nothing can be cloned between images and volumes."""
    srv = Server(tmp_path_factory.mktemp("filestore"), free_port(), extra_conf={
        "glance_store": {"default_store": "file"}})
    srv.setup()
    srv.start()
    yield srv
    srv.stop()


def test_raw_data_between_stores_is_streamed(file_store_server: Server) -> None:
    """raw image (file store) → volume by copy → raw image by copy: the data goes
    between the stores as a stream, with nothing staged on disk; the volume reads as the
    image, and the new image's size and hashes are those of the whole volume."""
    srv = file_store_server
    token = srv.token()
    with srv.client(token) as c:
        project = c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]
    cinder = Cinder(srv, token, project)
    data = _pattern(2 << 20, "streamed")
    image = _upload_image(srv, data)
    # No room to stage anything: the conversion directory is a file.
    conversion = srv.state / "conversion"
    shutil.rmtree(conversion, ignore_errors=True)
    conversion.write_text("not a directory")
    try:
        v = cinder.create(imageRef=image["id"], size=1)
        with _blocks(srv).open("volumes", f"volume-{v['id']}") as vol:
            assert vol.clone_depth() == 0  # another store: copied, not cloned
        r = cinder.c.post(f"{cinder.base}/volumes/{v['id']}/action", json={
            "os-volume_upload_image": {"image_name": _uniq("back"), "disk_format": "raw"}})
        assert r.status_code == 202, r.text
        back_id = r.json()["os-volume_upload_image"]["image_id"]
        cinder.wait(v["id"], "available")
    finally:
        conversion.unlink()
        conversion.mkdir()
    assert _read(srv, "volumes", f"volume-{v['id']}", len(data)) == data
    md5, sha = hashlib.md5(data), hashlib.sha512(data)
    zeros = bytes(8 << 20)
    for _ in range((GiB - len(data)) // len(zeros)):
        md5.update(zeros)
        sha.update(zeros)
    rest = (GiB - len(data)) % len(zeros)
    md5.update(zeros[:rest])
    sha.update(zeros[:rest])
    with srv.client(token) as c:
        back = c.get(f"/image/v2/images/{back_id}").json()
        assert back["status"] == "active", back
        assert (back["size"], back["checksum"], back["os_hash_value"]) == (
            GiB, md5.hexdigest(), sha.hexdigest())
        with c.stream("GET", f"/image/v2/images/{back_id}/file") as resp:
            assert next(resp.iter_bytes(2 << 20))[:len(data)] == data
        c.delete(f"/image/v2/images/{back_id}")
        c.delete(f"/image/v2/images/{image['id']}")
    cinder.delete(v["id"])


# ------------------------------------------------------------------ refusals
def test_bad_requests(cinder: Cinder) -> None:
    for body, needle in (
        ({"volume": {"size": 0}}, "size"),
        ({"volume": {"size": "x"}}, "size"),
        ({"volume": {}}, "size"),
        ({"volume": {"size": 1, "name": "n" * 256}}, "name"),
        ({"volume": {"size": 1, "metadata": {"k": 1}}}, "metadata"),
        ({"volume": {"size": 1, "snapshot_id": "a", "source_volid": "b"}}, "Only one"),
        ({"volume": {"size": 1, "imageRef": str(uuid.uuid4())}}, "image"),
        ({"volume": {"size": 1, "availability_zone": "mars"}}, "zone"),
        ({"nothing": {}}, "volume"),
    ):
        r = cinder.c.post(f"{cinder.base}/volumes", json=body)
        assert r.status_code == 400, (body, r.text)
        assert needle in r.json()["badRequest"]["message"]
    r = cinder.c.post(f"{cinder.base}/volumes", json={"volume": {
        "size": 1, "volume_type": "no-such-type"}})
    assert r.status_code == 404 and "itemNotFound" in r.json()
    assert cinder.c.get(f"{cinder.base}/volumes/{uuid.uuid4()}").status_code == 404
    r = cinder.c.post(f"{cinder.base}/snapshots", json={"snapshot": {
        "volume_id": str(uuid.uuid4())}})
    assert r.status_code == 404


def test_snapshot_force_rules(server: Server, cinder: Cinder) -> None:
    v = cinder.create(size=1)
    from strato.db import Database
    from strato.volume.models import Volume

    db = Database(f"sqlite:///{server.state}/strato.db")
    with db.session() as s:  # as if attached (attachments come with compute)
        s.get(Volume, v["id"]).status = "in-use"
    try:
        r = cinder.c.post(f"{cinder.base}/snapshots", json={"snapshot": {
            "volume_id": v["id"], "force": False}})
        assert r.status_code == 400 and "in-use" in r.json()["badRequest"]["message"]
        snap = cinder.snapshot(v["id"])  # no force given (3.66 clients): allowed
        r = cinder.c.post(f"{cinder.base}/snapshots", json={"snapshot": {
            "volume_id": v["id"], "name": "x" * 256}})
        assert r.status_code == 400
        with db.session() as s:
            s.get(Volume, v["id"]).status = "maintenance"
        r = cinder.c.post(f"{cinder.base}/snapshots", json={"snapshot": {
            "volume_id": v["id"], "force": True}})
        assert r.status_code == 400 and "maintenance" in r.json()["badRequest"]["message"]
    finally:
        with db.session() as s:
            s.get(Volume, v["id"]).status = "available"
        db.dispose()
    cinder.delete_snapshot(snap["id"])
    cinder.delete(v["id"])


# ------------------------------------------------------------------ quotas
@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = Server(tmp_path_factory.mktemp("quota"), free_port(), extra_conf={
        "volume": {"quota_volumes": "10", "quota_gigabytes": "1000"},
        "jobs": {"workers": "2"}})
    srv.setup()
    srv.start()
    yield srv
    srv.stop()


def test_concurrent_creates_against_quota_are_exact(quota_server: Server) -> None:
    token = quota_server.token()
    with quota_server.client(token) as c:
        project = c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]
    base = f"{quota_server.url}/volume/v3/{project}"

    def create(i: int) -> int:
        r = httpx.post(f"{base}/volumes", json={"volume": {"size": 1, "name": f"q{i}"}},
                       headers={"X-Auth-Token": token}, timeout=60)
        return r.status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(create, range(100)))
    assert codes.count(202) == 10 and codes.count(413) == 90, sorted(set(codes))
    cinder = Cinder(quota_server, token, project)
    vols = cinder.c.get(f"{cinder.base}/volumes/detail").json()["volumes"]
    assert len(vols) == 10
    for vol in vols:
        cinder.wait(vol["id"], "available")
    usage = cinder.c.get(f"{cinder.base}/os-quota-sets/{project}",
                         params={"usage": "true"}).json()["quota_set"]
    assert usage["volumes"] == {"limit": 10, "in_use": 10, "reserved": 0, "allocated": 0}
    assert usage["gigabytes"]["in_use"] == 10
    for vol in vols:
        cinder.delete(vol["id"])
    usage = cinder.c.get(f"{cinder.base}/os-quota-sets/{project}",
                         params={"usage": "true"}).json()["quota_set"]
    assert usage["volumes"]["in_use"] == 0 and usage["gigabytes"]["in_use"] == 0


def test_failed_create_counts_until_deleted(quota_server: Server, tmp_path: Path) -> None:
    token = quota_server.token()
    with quota_server.client(token) as c:
        project = c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]
    cinder = Cinder(quota_server, token, project)
    image = _upload_image(quota_server, _pattern(1 << 20, "img"))
    # The image's data vanishes from the store behind Glance's back: the clone fails.
    blocks = _blocks(quota_server)
    with blocks.open("images", image["id"]) as img:
        img.unprotect_snap("snap")
        img.remove_snap("snap")
    vol = cinder.create(wait="error", imageRef=image["id"], size=1)
    assert vol["status"] == "error"
    assert f"volume-{vol['id']}" not in blocks.list("volumes")

    def usage() -> dict:  # type: ignore[type-arg]
        return cinder.c.get(f"{cinder.base}/os-quota-sets/{project}",
                            params={"usage": "true"}).json()["quota_set"]["volumes"]

    # As in Cinder, an errored volume counts until it is deleted, and its user learns
    # why from a message.
    assert (usage()["in_use"], usage()["reserved"]) == (1, 0)
    messages = cinder.c.get(f"{cinder.base}/messages", headers={
        "OpenStack-API-Version": "volume 3.5"}, params={"resource_uuid": vol["id"]}
                            ).json()["messages"]
    assert [m["user_message"] for m in messages] == [
        "copy image to volume:An unknown error occurred."]
    cinder.delete(vol["id"])
    assert (usage()["in_use"], usage()["reserved"]) == (0, 0)


def test_cli_quota_show_and_set(quota_server: Server) -> None:
    def limits() -> dict:  # type: ignore[type-arg]
        rows = quota_server.openstack_json("quota", "show", "--volume")
        return {row["Resource"]: row["Limit"] for row in rows}

    assert limits()["volumes"] == 10 and limits()["gigabytes"] == 1000
    quota_server.openstack("quota", "set", "--volumes", "12", "--snapshots", "3", "admin")
    assert (limits()["volumes"], limits()["snapshots"]) == (12, 3)
    quota_server.openstack("quota", "set", "--volumes", "10", "admin")


# ------------------------------------------------------------------ actions
def test_extend_bootable_readonly_reset(server: Server, cinder: Cinder) -> None:
    v = cinder.create(size=1)
    url = f"{cinder.base}/volumes/{v['id']}/action"
    assert cinder.c.post(url, json={"os-extend": {"new_size": 1}}).status_code == 400
    assert cinder.c.post(url, json={"os-extend": {"new_size": 3}}).status_code == 202
    v = cinder.wait(v["id"], "available")
    deadline = time.monotonic() + 30
    while cinder.c.get(f"{cinder.base}/volumes/{v['id']}").json()["volume"]["size"] != 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with _blocks(server).open("volumes", f"volume-{v['id']}") as image:
        assert image.size() == 3 * GiB
    # Cinder (and Tempest) answer set-bootable 200, unlike the other actions.
    assert cinder.c.post(url, json={"os-set_bootable": {"bootable": True}}).status_code == 200
    assert cinder.c.get(f"{cinder.base}/volumes/{v['id']}").json()["volume"][
        "bootable"] == "true"
    assert cinder.c.post(url, json={"os-set_bootable": {"bootable": "maybe"}}
                         ).status_code == 400
    assert cinder.c.post(url, json={"os-reset_status": {"status": "error"}}).status_code == 202
    assert cinder.c.get(f"{cinder.base}/volumes/{v['id']}").json()["volume"][
        "status"] == "error"
    assert cinder.c.post(url, json={"os-reset_status": {"status": "bogus"}}).status_code == 400
    assert cinder.c.post(url, json={"no-such-action": {}}).status_code == 400
    cinder.delete(v["id"])  # an errored volume can be deleted
    usage = cinder.c.get(f"{cinder.base}/os-quota-sets/{cinder.base.split('/')[-1]}",
                         params={"usage": "true"}).json()["quota_set"]
    assert usage["gigabytes"]["reserved"] == 0


def test_attach_bookkeeping_and_attachments_api(server: Server, cinder: Cinder) -> None:
    v = cinder.create(size=1)
    url = f"{cinder.base}/volumes/{v['id']}/action"
    server_id = str(uuid.uuid4())
    # The classic sequence Nova used: reserve, initialize_connection, attach, detach.
    assert cinder.c.post(url, json={"os-reserve": None}).status_code == 202
    assert cinder.wait(v["id"], "attaching")
    r = cinder.c.post(url, json={"os-initialize_connection": {"connector": {"host": "h"}}})
    info = r.json()["connection_info"]
    assert info["driver_volume_type"] == "blockstore"
    assert info["data"]["name"] == f"volume-{v['id']}"
    blockdev = info["data"]["blockdev"]  # what QEMU opens: the layer chain, absolute paths
    assert blockdev["driver"] == "raw" and blockdev["file"]["filename"].startswith("/")
    assert blockdev["read-only"] is False
    # A read-only volume refuses a read-write attach.
    assert cinder.c.post(url, json={"os-update_readonly_flag": {"readonly": True}}
                         ).status_code == 202
    assert cinder.c.post(url, json={"os-attach": {"instance_uuid": server_id}}
                         ).status_code == 400
    r = cinder.c.post(url, json={"os-initialize_connection": {"connector": {"host": "h"}}})
    assert r.json()["connection_info"]["data"]["access_mode"] == "ro"
    assert cinder.c.post(url, json={"os-update_readonly_flag": {"readonly": False}}
                         ).status_code == 202
    assert cinder.c.post(url, json={"os-attach": {"instance_uuid": server_id,
                                                  "mountpoint": "/dev/vdb"}}).status_code == 202
    shown = cinder.wait(v["id"], "in-use")
    assert [a["server_id"] for a in shown["attachments"]] == [server_id]
    assert cinder.delete(v["id"]).status_code == 400  # attached: refused
    assert cinder.c.post(url, json={"os-begin_detaching": None}).status_code == 202
    assert cinder.c.post(url, json={"os-roll_detaching": None}).status_code == 202
    assert cinder.wait(v["id"], "in-use")
    assert cinder.c.post(url, json={"os-detach": {}}).status_code == 202
    assert cinder.wait(v["id"], "available")["attachments"] == []
    # The attachments API (3.27+): reserve, connect, complete, delete.
    r = cinder.c.post(f"{cinder.base}/attachments", json={"attachment": {
        "volume_id": v["id"], "instance_uuid": server_id}})
    att = r.json()["attachment"]
    assert att["status"] == "reserved" and cinder.wait(v["id"], "reserved")
    r = cinder.c.put(f"{cinder.base}/attachments/{att['id']}", json={"attachment": {
        "connector": {"host": "h", "mountpoint": "/dev/vdc"}}})
    assert r.json()["attachment"]["connection_info"]["data"]["volume_id"] == v["id"]
    assert cinder.c.post(f"{cinder.base}/attachments/{att['id']}/action",
                         json={"os-complete": None}).status_code == 204
    assert cinder.wait(v["id"], "in-use")["attachments"][0]["attachment_id"] == att["id"]
    assert cinder.c.delete(f"{cinder.base}/attachments/{att['id']}").status_code == 200
    assert cinder.wait(v["id"], "available")
    cinder.delete(v["id"])


def test_cli_image_create_from_volume(server: Server, cinder: Cinder) -> None:
    """Volume → image by clone (same block store, raw); the data reads back the same."""
    image = _upload_image(server, _pattern(2 << 20, "roundtrip"))
    v = cinder.create(imageRef=image["id"], size=1)
    name = _uniq("fromvol")
    server.openstack("image", "create", "--volume", v["id"], name)
    deadline = time.monotonic() + 120
    while (img := server.openstack_json("image", "show", name))["status"] != "active":
        assert time.monotonic() < deadline, img
        time.sleep(0.5)
    assert cinder.wait(v["id"], "available")
    assert img["size"] == GiB and img["properties"]["os_distro"] == "busybox"
    with _blocks(server).open("images", img["id"]) as data:
        assert data.parent_info() == ("volumes", f"volume-{v['id']}",
                                      f"{img['id']}.clone_snap")
    with server.client(server.token()) as c, c.stream(
            "GET", f"/image/v2/images/{img['id']}/file") as r:
        head = next(r.iter_bytes(2 << 20))
    assert head[:4096] == _pattern(2 << 20, "roundtrip")[:4096]
    # The volume goes first: kept as .deleted while the image needs it, then the image
    # goes and takes the rest with it.
    cinder.delete(v["id"])
    assert f"volume-{v['id']}.deleted" in _blocks(server).list("volumes")
    server.openstack("image", "delete", name)
    assert not [n for n in _blocks(server).list("volumes") if v["id"] in n]
    server.openstack("image", "delete", image["id"])


def test_notifications_are_kept_as_events(server: Server, cinder: Cinder) -> None:
    v = cinder.create(size=1)
    s = cinder.snapshot(v["id"])
    cinder.delete_snapshot(s["id"])
    cinder.delete(v["id"])
    from tests.support import strato

    out = strato("events", "--config", str(server.conf), "--resource", v["id"]).stdout
    kinds = [line.split()[2] for line in out.splitlines()]
    assert kinds == ["volume.create.start", "volume.create.end", "volume.delete.start",
                     "volume.delete.end"]
    out = strato("events", "--config", str(server.conf), "--type", "snapshot.",
                 "--resource", s["id"]).stdout
    assert [line.split()[2] for line in out.splitlines()] == [
        "snapshot.create.start", "snapshot.create.end", "snapshot.delete.start",
        "snapshot.delete.end"]


def test_cli_revert_to_the_latest_snapshot(server: Server, cinder: Cinder) -> None:
    v = cinder.create(size=1)
    name = f"volume-{v['id']}"
    with _blocks(server).open("volumes", name) as image:
        image.write(b"before" * 100, 0)
    older = cinder.snapshot(v["id"])
    snap = cinder.snapshot(v["id"])
    with _blocks(server).open("volumes", name) as image:
        image.write(b"after!" * 100, 0)
    r = cinder.c.post(f"{cinder.base}/volumes/{v['id']}/action",
                      json={"revert": {"snapshot_id": older["id"]}})
    assert r.status_code == 400 and "latest" in r.json()["badRequest"]["message"]
    server.openstack("--os-volume-api-version", "3.40", "volume", "revert", snap["id"])
    cinder.wait(v["id"], "available")
    assert _read(server, "volumes", name, 600) == b"before" * 100
    for s in (snap, older):
        cinder.delete_snapshot(s["id"])
    cinder.delete(v["id"])


def test_cli_bootable_force_snapshot_and_paging(server: Server, cinder: Cinder) -> None:
    name = _uniq("boot")
    server.openstack("volume", "create", "--size", "1", "--bootable", name)
    vol = server.openstack_json("volume", "show", name)
    vol = cinder.wait(vol["id"], "available")
    deadline = time.monotonic() + 30
    while server.openstack_json("volume", "show", name)["bootable"] is not True:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    snap = _uniq("snap")
    server.openstack("volume", "snapshot", "create", "--volume", name, "--force", snap)
    listed = server.openstack_json("volume", "snapshot", "list", "--long")
    assert snap in [s["Name"] for s in listed]
    _wait(cinder.c, f"{cinder.base}/snapshots/"
          f"{next(s['ID'] for s in listed if s['Name'] == snap)}", "snapshot", "available")
    # limit/marker pages over the detailed list, newest first.
    extra = [cinder.create(size=1) for _ in range(2)]
    r = cinder.c.get(f"{cinder.base}/volumes/detail", params={"limit": 1})
    first = r.json()["volumes"]
    assert [v["id"] for v in first] == [extra[1]["id"]] and "volumes_links" in r.json()
    r = cinder.c.get(f"{cinder.base}/volumes/detail", params={"limit": 1,
                                                              "marker": first[0]["id"]})
    assert [v["id"] for v in r.json()["volumes"]] == [extra[0]["id"]]
    r = cinder.c.get(f"{cinder.base}/volumes/detail", params={"sort": "name:asc",
                                                              "name": name})
    assert [v["id"] for v in r.json()["volumes"]] == [vol["id"]]
    assert cinder.c.get(f"{cinder.base}/volumes/detail", params={"sort": "secret:asc"}
                        ).status_code == 400
    server.openstack("volume", "snapshot", "delete", snap)
    for v in extra:
        cinder.delete(v["id"])
    deadline = time.monotonic() + 30
    while server.openstack("volume", "delete", name, check=False).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_views_follow_the_microversion(cinder: Cinder) -> None:
    v = cinder.create(size=1)
    url = f"{cinder.base}/volumes/{v['id']}"
    base = cinder.c.get(url, headers={"OpenStack-API-Version": "volume 3.0"})
    assert base.headers["OpenStack-API-Version"] == "volume 3.0"
    assert not {"group_id", "provider_id", "volume_type_id", "consumes_quota"} & set(
        base.json()["volume"])
    mid = cinder.c.get(url, headers={"OpenStack-API-Version": "volume 3.48"}).json()["volume"]
    assert {"group_id", "provider_id", "shared_targets"} <= set(mid)
    assert "volume_type_id" not in mid
    new = cinder.c.get(url, headers={"OpenStack-API-Version": "volume 3.71"}).json()["volume"]
    assert new["consumes_quota"] is True and new["volume_type_id"]
    cinder.delete(v["id"])
