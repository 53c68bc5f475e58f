"""The lineage API (docs/lineage.md) against a real `strato serve`: SQLite, the local
engine, one tiny guest where a server is needed.  Every delete blocker is checked against
the real delete's answer."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strato.virt.qemu import QemuDriver
from tests.compute.conftest import guest_server, wait_console
from tests.support import Server
from tests.tenants import Tenant, make_tenant

NODE_KEYS = {"id", "kind", "resource_id", "name", "status", "size", "project_id",
             "location", "engine", "holds_data_for", "opaque"}
OPAQUE_KEYS = {"id", "kind", "opaque", "label", "holds_data_for"}
KINDS = {"image", "volume", "snapshot", "server", "backup", "store"}
RELATIONS = {"clone", "snapshot", "copy", "boot", "backup"}
REASONS = {"protected", "has_clones", "attached", "has_snapshots", "locked", "busy",
           "has_dependent_backups", "not_owner"}


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ shape checks
def check_graph(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"lineage"}, body
    g = body["lineage"]
    assert set(g) == {"root", "nodes", "edges", "truncated"}, g
    assert isinstance(g["truncated"], bool)
    ids = [n["id"] for n in g["nodes"]]
    assert len(ids) == len(set(ids)), ids
    assert g["root"] in ids
    for n in g["nodes"]:
        assert n["kind"] in KINDS, n
        assert isinstance(n["holds_data_for"], list)
        assert all(h in ids for h in n["holds_data_for"]), n
        if n["opaque"] is True:
            assert set(n) == OPAQUE_KEYS, n
            assert n["id"].startswith("opaque:") and n["label"] == "in use by another project"
            continue
        assert n["opaque"] is False and set(n) == NODE_KEYS, n
        assert n["id"] == f"{n['kind']}:{n['resource_id']}" or (
            n["kind"] == "store" and n["resource_id"] is None
            and n["id"] == "store:" + n["location"].split("/", 3)[3]
            and n["status"] == "deleted-kept"), n
        assert n["size"] is None or isinstance(n["size"], int)
        if n["location"] is not None and n["location"].startswith("rbd://"):
            assert n["engine"] in ("local", "rbd"), n
    for e in g["edges"]:
        assert set(e) == {"from", "to", "relation"}, e
        assert e["from"] in ids and e["to"] in ids and e["relation"] in RELATIONS, e
    return g


def check_blockers(body: dict[str, Any], resource: str) -> dict[str, Any]:
    assert set(body) == {"delete_blockers"}, body
    b = body["delete_blockers"]
    assert set(b) == {"resource", "deletable", "blockers", "deferred"}, b
    assert b["resource"] == resource
    assert b["deletable"] is (not b["blockers"])
    for item in b["blockers"]:
        assert set(item) == {"reason", "message", "nodes"}, item
        assert item["reason"] in REASONS and isinstance(item["message"], str) and \
            item["message"], item
        assert all(isinstance(n, str) for n in item["nodes"])
    assert all(isinstance(n, str) for n in b["deferred"])
    return b


def edges(g: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(e["from"], e["to"], e["relation"]) for e in g["edges"]}


def node(g: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in g["nodes"] if n["id"] == node_id)


def reasons(b: dict[str, Any]) -> dict[str, list[str]]:
    return {item["reason"]: item["nodes"] for item in b["blockers"]}


# ------------------------------------------------------------------ clients
def _wait(c: httpx.Client, path: str, key: str, want: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = c.get(path)
        if r.status_code == 404 and want == "gone":
            return {}
        assert r.status_code == 200, r.text
        body = r.json()[key] if key else r.json()
        if body["status"] == want:
            return body
        if body["status"] in ("error", "ERROR", "killed") and want not in ("error", "gone"):
            raise AssertionError(f"{path} went to {body['status']}: {body}")
        time.sleep(0.1)
    raise AssertionError(f"{path} did not reach {want}: {body}")


class Cloud:
    """One project's calls: Glance, Cinder, Nova, lineage."""

    def __init__(self, server: Server, token: str) -> None:
        self.c = server.client(token)
        self.c.headers["OpenStack-API-Version"] = "volume 3.65"
        info = self.c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
        self.project_id = info.json()["token"]["project"]["id"]
        self.v = f"/volume/v3/{self.project_id}"

    # lineage
    def lineage(self, kind: str, rid: str) -> dict[str, Any]:
        r = self.c.get(f"/lineage/v1/{kind}/{rid}")
        assert r.status_code == 200, r.text
        return check_graph(r.json())

    def blockers(self, kind: str, rid: str) -> dict[str, Any]:
        r = self.c.get(f"/lineage/v1/{kind}/{rid}/delete-blockers")
        assert r.status_code == 200, r.text
        return check_blockers(r.json(), f"{kind[:-1]}:{rid}")

    # images
    def upload(self, data: bytes, **fields: Any) -> dict[str, Any]:
        image = self.c.post("/image/v2/images", json={
            "name": _uniq("img"), "disk_format": "raw", "container_format": "bare",
            **fields}).json()
        r = self.c.put(f"/image/v2/images/{image['id']}/file", content=data,
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        return self.c.get(f"/image/v2/images/{image['id']}").json()

    # servers
    def nova(self, method: str, path: str, expect: int | None = None,
             **kw: Any) -> httpx.Response:
        r = self.c.request(method, f"/compute/v2.1{path}",
                           headers={"OpenStack-API-Version": "compute 2.79"}, **kw)
        assert expect is None or r.status_code == expect, r.text
        return r

    def boot(self, srv: Server, image_id: str) -> str:
        flavor = next(f["id"] for f in self.nova("GET", "/flavors", 200).json()["flavors"]
                      if f["name"] == "m1.tiny")
        r = self.nova("POST", "/servers", 202, json={"server": {
            "name": _uniq("srv"), "imageRef": image_id, "flavorRef": flavor,
            "networks": "none"}})
        sid = r.json()["server"]["id"]
        _wait(self.c, f"/compute/v2.1/servers/{sid}", "server", "ACTIVE")
        drv = QemuDriver(srv.state / "instances")
        wait_console(drv, sid, "STRATO-GUEST-READY bootcount=")
        drv.wait_for_agent(sid)
        return sid

    # volumes
    def volume(self, wait: str = "available", **fields: Any) -> dict[str, Any]:
        r = self.c.post(f"{self.v}/volumes", json={"volume": {"name": _uniq("v"),
                                                              **fields}})
        assert r.status_code == 202, r.text
        return self.wait_volume(r.json()["volume"]["id"], wait)

    def wait_volume(self, vid: str, want: str) -> dict[str, Any]:
        return _wait(self.c, f"{self.v}/volumes/{vid}", "volume", want)

    def snapshot(self, volume_id: str) -> dict[str, Any]:
        r = self.c.post(f"{self.v}/snapshots", json={"snapshot": {
            "volume_id": volume_id, "name": _uniq("s")}})
        assert r.status_code == 202, r.text
        return _wait(self.c, f"{self.v}/snapshots/{r.json()['snapshot']['id']}",
                     "snapshot", "available")

    def backup(self, volume_id: str, incremental: bool = False) -> dict[str, Any]:
        r = self.c.post(f"{self.v}/backups", json={"backup": {
            "volume_id": volume_id, "name": _uniq("b"), "incremental": incremental}})
        assert r.status_code == 202, r.text
        return _wait(self.c, f"{self.v}/backups/{r.json()['backup']['id']}", "backup",
                     "available")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server with the tiny guest registered, for every test here."""
    with guest_server(tmp_path_factory.mktemp("lin"), {"compute": {
            "quota_ram": "-1", "quota_cores": "-1"}}) as server:
        yield server


@pytest.fixture(scope="module")
def tenant_a(srv: Server) -> Tenant:
    return make_tenant(srv, "lina")


@pytest.fixture(scope="module")
def tenant_b(srv: Server) -> Tenant:
    return make_tenant(srv, "linb")


@pytest.fixture(scope="module")
def a(srv: Server, tenant_a: Tenant) -> Cloud:
    return Cloud(srv, tenant_a.token())


@pytest.fixture(scope="module")
def b(srv: Server, tenant_b: Tenant) -> Cloud:
    return Cloud(srv, tenant_b.token())


# ------------------------------------------------------------------ tests
def test_route_errors(srv: Server, a: Cloud) -> None:
    r = a.c.get("/lineage/v1/disks/x")
    assert r.status_code == 400 and set(r.json()) == {"badRequest"}, r.text
    r = a.c.get(f"/lineage/v1/volumes/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404, r.text
    r = a.c.get(f"/lineage/v1/images/{uuid.uuid4()}/delete-blockers")
    assert r.status_code == 404 and set(r.json()) == {"itemNotFound"}, r.text
    r = httpx.get(f"{srv.url}/lineage/v1/volumes/{uuid.uuid4()}")  # no token
    assert r.status_code == 401 and set(r.json()) == {"unauthorized"}, r.text
    # an unscoped token (a user with no project at all): the rules refuse it
    name, password = _uniq("loner"), uuid.uuid4().hex
    with srv.client(srv.token()) as admin:
        r = admin.post("/identity/v3/users", json={"user": {"name": name,
                                                             "password": password}})
        assert r.status_code == 201, r.text
    unscoped = srv.token(name, password, project=None)
    r = httpx.get(f"{srv.url}/lineage/v1/volumes/{uuid.uuid4()}",
                  headers={"X-Auth-Token": unscoped})
    assert r.status_code == 403 and set(r.json()) == {"forbidden"}, r.text


def test_volume_chain_and_its_blockers(a: Cloud) -> None:
    """image -> volume (clone) -> snapshot -> volume (clone) -> backup -> incremental;
    each blocker the API lists is what the real delete answers."""
    image = a.upload(b"\x5a" * (1 << 20))
    v1 = a.volume(size=1, imageRef=image["id"])
    s1 = a.snapshot(v1["id"])
    v2 = a.volume(snapshot_id=s1["id"])
    b1 = a.backup(v2["id"])
    b2 = a.backup(v2["id"], incremental=True)
    im, vo1, sn1, vo2 = (f"image:{image['id']}", f"volume:{v1['id']}",
                         f"snapshot:{s1['id']}", f"volume:{v2['id']}")
    bk1, bk2 = f"backup:{b1['id']}", f"backup:{b2['id']}"

    g = a.lineage("volumes", v2["id"])
    assert g["root"] == vo2
    assert {im, vo1, sn1, vo2, bk1, bk2} <= {n["id"] for n in g["nodes"]}
    assert {(im, vo1, "clone"), (vo1, sn1, "snapshot"), (sn1, vo2, "clone"),
            (vo2, bk1, "backup"), (bk1, bk2, "backup")} <= edges(g)
    assert node(g, im)["holds_data_for"] == [vo1]
    assert node(g, sn1)["holds_data_for"] == [vo2]
    assert node(g, vo2)["holds_data_for"] == []
    v2n = node(g, vo2)
    assert v2n["engine"] == "local" and v2n["location"].startswith("rbd://")
    assert v2n["location"].endswith(f"/volume-{v2['id']}")
    assert v2n["size"] == 1 << 30 and v2n["project_id"] == a.project_id
    assert node(g, sn1)["location"].endswith(f"/volume-{v1['id']}/snapshot-{s1['id']}")
    assert node(g, im)["location"] == f"{node(g, im)['location'].rsplit('/', 2)[0]}/" \
        f"{image['id']}/snap"
    # from the image down: the whole chain
    g = a.lineage("images", image["id"])
    assert {(im, vo1, "clone"), (sn1, vo2, "clone"), (vo2, bk1, "backup")} <= edges(g)
    # from the middle and from the end: ancestors up to the image
    g = a.lineage("snapshots", s1["id"])
    assert g["root"] == sn1 and {(im, vo1, "clone"), (vo1, sn1, "snapshot"),
                                 (sn1, vo2, "clone")} <= edges(g)
    g = a.lineage("backups", b2["id"])
    assert g["root"] == bk2 and {(im, vo1, "clone"), (sn1, vo2, "clone"),
                                 (vo2, bk1, "backup"), (bk1, bk2, "backup")} <= edges(g)
    assert node(g, bk2)["location"] is None and node(g, bk2)["engine"] is None

    # image: its data carries a clone -> 409
    bl = a.blockers("images", image["id"])
    assert reasons(bl) == {"has_clones": [vo1]}
    r = a.c.delete(f"/image/v2/images/{image['id']}")
    assert r.status_code == 409, r.text
    # protected -> 403 (listed first, as the delete checks it first)
    a.c.patch(f"/image/v2/images/{image['id']}", json=[
        {"op": "replace", "path": "/protected", "value": True}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
    bl = a.blockers("images", image["id"])
    assert [x["reason"] for x in bl["blockers"]] == ["protected", "has_clones"]
    assert a.c.delete(f"/image/v2/images/{image['id']}").status_code == 403
    a.c.patch(f"/image/v2/images/{image['id']}", json=[
        {"op": "replace", "path": "/protected", "value": False}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})

    # volume with a snapshot -> 400
    bl = a.blockers("volumes", v1["id"])
    assert reasons(bl) == {"has_snapshots": [sn1]} and bl["deferred"] == []
    r = a.c.delete(f"{a.v}/volumes/{v1['id']}")
    assert r.status_code == 400 and "snapshots" in r.json()["badRequest"]["message"]

    # snapshot with a clone: accepted, then refused by the volume service
    bl = a.blockers("snapshots", s1["id"])
    assert reasons(bl) == {"has_clones": [vo2]}
    assert a.c.delete(f"{a.v}/snapshots/{s1['id']}").status_code == 202
    _wait(a.c, f"{a.v}/snapshots/{s1['id']}", "snapshot", "available")

    # backup with an incremental -> 400; the incremental itself goes
    bl = a.blockers("backups", b1["id"])
    assert reasons(bl) == {"has_dependent_backups": [bk2]}
    r = a.c.delete(f"{a.v}/backups/{b1['id']}")
    assert r.status_code == 400, r.text
    bl = a.blockers("backups", b2["id"])
    assert bl["deletable"] and bl["blockers"] == []
    assert a.c.delete(f"{a.v}/backups/{b2['id']}").status_code == 202
    _wait(a.c, f"{a.v}/backups/{b2['id']}", "backup", "gone")

    # a volume being backed up is busy -> 400
    r = a.c.post(f"{a.v}/backups", json={"backup": {"volume_id": v2["id"]}})
    assert r.status_code == 202
    bid = r.json()["backup"]["id"]
    bl = a.blockers("backups", bid)
    if bl["blockers"]:  # still creating: the delete refuses it too
        assert reasons(bl) == {"busy": []}
        assert a.c.delete(f"{a.v}/backups/{bid}").status_code == 400
    _wait(a.c, f"{a.v}/backups/{bid}", "backup", "available")

    # empty lists: every delete goes, leaf first
    for bkid in (bid, b1["id"]):
        assert a.blockers("backups", bkid)["deletable"]
        assert a.c.delete(f"{a.v}/backups/{bkid}").status_code == 202
        _wait(a.c, f"{a.v}/backups/{bkid}", "backup", "gone")
    bl = a.blockers("volumes", v2["id"])
    assert bl["deletable"] and bl["deferred"] == []
    assert a.c.delete(f"{a.v}/volumes/{v2['id']}").status_code == 202
    a.wait_volume(v2["id"], "gone")
    assert a.blockers("snapshots", s1["id"])["deletable"]
    assert a.c.delete(f"{a.v}/snapshots/{s1['id']}").status_code == 202
    _wait(a.c, f"{a.v}/snapshots/{s1['id']}", "snapshot", "gone")
    assert a.blockers("volumes", v1["id"])["deletable"]
    assert a.c.delete(f"{a.v}/volumes/{v1['id']}").status_code == 202
    a.wait_volume(v1["id"], "gone")
    bl = a.blockers("images", image["id"])
    assert bl["deletable"], bl
    assert a.c.delete(f"/image/v2/images/{image['id']}").status_code == 204


def test_volume_clone_is_deferred_not_blocked(a: Cloud) -> None:
    """A volume with a clone (source_volid) is kept as .deleted: deletable, deferred."""
    v1 = a.volume(size=1)
    v2 = a.volume(source_volid=v1["id"])
    vo1, vo2 = f"volume:{v1['id']}", f"volume:{v2['id']}"
    g = a.lineage("volumes", v1["id"])
    assert (vo1, vo2, "clone") in edges(g) and node(g, vo1)["holds_data_for"] == [vo2]
    bl = a.blockers("volumes", v1["id"])
    assert bl["deletable"] and bl["deferred"] == [vo2]
    assert a.c.delete(f"{a.v}/volumes/{v1['id']}").status_code == 202
    a.wait_volume(v1["id"], "gone")
    g = a.lineage("volumes", v2["id"])
    kept = [n for n in g["nodes"] if n["kind"] == "store"]
    assert len(kept) == 1 and kept[0]["name"] == f"volume-{v1['id']}.deleted", g
    assert kept[0]["status"] == "deleted-kept" and kept[0]["holds_data_for"] == [vo2]
    assert kept[0]["project_id"] == a.project_id
    a.c.delete(f"{a.v}/volumes/{v2['id']}")
    a.wait_volume(v2["id"], "gone")


def _json_text(body: dict[str, Any]) -> str:
    return json.dumps(body)


def test_not_owner_of_a_public_image(a: Cloud, srv: Server) -> None:
    admin = Cloud(srv, srv.token())
    image = admin.upload(b"\x11" * 4096, visibility="public")
    bl = a.blockers("images", image["id"])
    assert reasons(bl) == {"not_owner": []}
    assert a.c.delete(f"/image/v2/images/{image['id']}").status_code == 403
    assert admin.blockers("images", image["id"])["deletable"]
    assert admin.c.delete(f"/image/v2/images/{image['id']}").status_code == 204


def test_server_chain_deleted_disk_and_project_scope(srv: Server, a: Cloud, b: Cloud,
                                                     tenant_a: Tenant) -> None:
    """image -> server -> its snapshot image -> volume -> snapshot -> volume -> backup;
    the deleted server's disk, kept for the image, is a ``store`` node; project B sees
    none of it."""
    admin = Cloud(srv, srv.token())
    guest = admin.c.get("/image/v2/images?name=strato-guest").json()["images"][0]["id"]
    sid = a.boot(srv, guest)
    gi, sv = f"image:{guest}", f"server:{sid}"

    # locked: 409 for the member, as the blocker says
    a.nova("POST", f"/servers/{sid}/action", 202, json={"lock": None})
    bl = a.blockers("servers", sid)
    assert reasons(bl) == {"locked": []}
    a.nova("DELETE", f"/servers/{sid}", 409)
    a.nova("POST", f"/servers/{sid}/action", 202, json={"unlock": None})

    r = a.nova("POST", f"/servers/{sid}/action", 202,
               json={"createImage": {"name": _uniq("snap")}})
    snap_id = r.json()["image_id"]
    _wait(a.c, f"/image/v2/images/{snap_id}", "", "active")
    si = f"image:{snap_id}"
    g = a.lineage("servers", sid)
    assert {(gi, sv, "boot"), (sv, si, "snapshot")} <= edges(g)
    assert node(g, sv)["holds_data_for"] == [si]
    assert sv in node(g, gi)["holds_data_for"]
    assert node(g, sv)["location"].endswith(f"/vms/{sid}_disk")
    assert node(g, gi)["project_id"] == admin.project_id  # public: an ordinary node

    v3 = a.volume(imageRef=snap_id)
    s3 = a.snapshot(v3["id"])
    v4 = a.volume(snapshot_id=s3["id"])
    bk = a.backup(v4["id"])
    vo3, sn3, vo4, bkk = (f"volume:{v3['id']}", f"snapshot:{s3['id']}",
                          f"volume:{v4['id']}", f"backup:{bk['id']}")

    # attached (and with a snapshot): 400 from the real delete
    a.nova("POST", f"/servers/{sid}/os-volume_attachments", 200,
           json={"volumeAttachment": {"volumeId": v3["id"]}})
    a.wait_volume(v3["id"], "in-use")
    bl = a.blockers("volumes", v3["id"])
    assert reasons(bl) == {"attached": [sv], "has_snapshots": [sn3]}
    assert [x["reason"] for x in bl["blockers"]][0] == "attached"
    r = a.c.delete(f"{a.v}/volumes/{v3['id']}")
    assert r.status_code == 400 and "in-use" in r.json()["badRequest"]["message"]

    # project B: 404 for every one of A's resources, opaque nodes only
    secrets = [sid, snap_id, v3["id"], s3["id"], v4["id"], bk["id"], a.project_id,
               v3["name"], v4["name"], s3["name"], bk["name"]]
    for kind, rid in (("servers", sid), ("images", snap_id), ("volumes", v3["id"]),
                      ("snapshots", s3["id"]), ("backups", bk["id"])):
        for tail in ("", "/delete-blockers"):
            r = b.c.get(f"/lineage/v1/{kind}/{rid}{tail}")
            assert r.status_code == 404 and set(r.json()) == {"itemNotFound"}, r.text
    body = b.c.get(f"/lineage/v1/images/{guest}").json()
    g = check_graph(body)
    hidden = [n for n in g["nodes"] if n["opaque"]]
    assert [n["kind"] for n in hidden] == ["server"], g
    assert hidden[0]["id"] in node(g, gi)["holds_data_for"]
    assert not any(s in _json_text(body) for s in secrets), body
    body = b.c.get(f"/lineage/v1/images/{guest}/delete-blockers").json()
    bl = check_blockers(body, gi)
    assert reasons(bl)["not_owner"] == [] and reasons(bl)["has_clones"] == ["opaque:1"]
    assert not any(s in _json_text(body) for s in secrets), body

    # the server goes (its disk carries the image: kept, not refused)
    bl = a.blockers("servers", sid)
    assert bl["deletable"] and bl["deferred"] == [si]
    a.nova("DELETE", f"/servers/{sid}", 204)
    _wait(a.c, f"/compute/v2.1/servers/{sid}", "server", "gone")
    a.wait_volume(v3["id"], "available")

    kept = f"store:vms/{sid}_disk.deleted"
    g = a.lineage("volumes", v4["id"])
    assert {(gi, kept, "clone"), (kept, si, "snapshot"), (si, vo3, "clone"),
            (vo3, sn3, "snapshot"), (sn3, vo4, "clone"), (vo4, bkk, "backup")} <= edges(g)
    store = node(g, kept)
    assert store["status"] == "deleted-kept" and store["name"] == f"{sid}_disk.deleted"
    assert store["holds_data_for"] == [si] and store["project_id"] == a.project_id
    assert store["engine"] == "local" and store["location"].endswith(
        f"/vms/{sid}_disk.deleted")
    assert node(g, gi)["holds_data_for"] == [kept] or kept in node(g, gi)["holds_data_for"]

    # B: the kept disk is A's, so opaque too
    body = b.c.get(f"/lineage/v1/images/{guest}").json()
    g = check_graph(body)
    assert [n["kind"] for n in g["nodes"] if n["opaque"]] == ["store"], g
    assert not any(s in _json_text(body) for s in secrets), body
    # the admin sees it all
    g = admin.lineage("images", guest)
    assert kept in {n["id"] for n in g["nodes"]} and not any(n["opaque"] for n in g["nodes"])

    # cleanup, leaf first; the kept disk goes with its last clone
    a.c.delete(f"{a.v}/backups/{bk['id']}")
    _wait(a.c, f"{a.v}/backups/{bk['id']}", "backup", "gone")
    for vid in (v4["id"],):
        a.c.delete(f"{a.v}/volumes/{vid}")
        a.wait_volume(vid, "gone")
    a.c.delete(f"{a.v}/snapshots/{s3['id']}")
    _wait(a.c, f"{a.v}/snapshots/{s3['id']}", "snapshot", "gone")
    a.c.delete(f"{a.v}/volumes/{v3['id']}")
    a.wait_volume(v3["id"], "gone")
    assert a.blockers("images", snap_id)["deletable"]
    assert a.c.delete(f"/image/v2/images/{snap_id}").status_code == 204
    g = admin.lineage("images", guest)
    assert kept not in {n["id"] for n in g["nodes"]}


# ------------------------------------------------------------------ the same on every engine
def chain_shape(cloud: Cloud) -> tuple[str, tuple[Any, ...]]:
    """image -> volume clone -> snapshot -> volume clone on ``cloud``'s server: its
    engine, and the graphs' and blockers' shape with every id replaced by its role
    (compared across engines); the resources are deleted again."""
    image = cloud.upload(b"\x33" * (1 << 20))
    v1 = cloud.volume(size=1, imageRef=image["id"])
    s1 = cloud.snapshot(v1["id"])
    v2 = cloud.volume(snapshot_id=s1["id"])
    roles = {f"image:{image['id']}": "I", f"volume:{v1['id']}": "V1",
             f"snapshot:{s1['id']}": "S1", f"volume:{v2['id']}": "V2"}
    names = {image["id"]: "<I>", v1["id"]: "<V1>", s1["id"]: "<S1>", v2["id"]: "<V2>"}
    shapes: list[Any] = []
    engines: set[str] = set()
    for kind, rid in (("volumes", v2["id"]), ("images", image["id"])):
        g = cloud.lineage(kind, rid)
        engines |= {n["engine"] for n in g["nodes"]}
        assert len(engines) == 1, g
        fsid = g["nodes"][0]["location"].split("/")[2]

        def loc(text: str | None, fsid: str = fsid) -> str | None:
            if text is None:
                return None
            for real, role in names.items():
                text = text.replace(real, role)
            return text.replace(fsid, "<fsid>")

        shapes.append((
            roles[g["root"]],
            sorted((roles[n["id"]], n["kind"], n["status"], n["size"] if n["kind"] != "image"
                    else "-", loc(n["location"]),
                    tuple(sorted(roles[h] for h in n["holds_data_for"])))
                   for n in g["nodes"]),
            sorted((roles[e["from"]], roles[e["to"]], e["relation"]) for e in g["edges"])))
    for kind, rid in (("snapshots", s1["id"]), ("images", image["id"])):
        bl = cloud.blockers(kind, rid)
        shapes.append(sorted((x["reason"], tuple(roles[n] for n in x["nodes"]))
                             for x in bl["blockers"]))
    cloud.c.delete(f"{cloud.v}/volumes/{v2['id']}")
    cloud.wait_volume(v2["id"], "gone")
    cloud.c.delete(f"{cloud.v}/snapshots/{s1['id']}")
    _wait(cloud.c, f"{cloud.v}/snapshots/{s1['id']}", "snapshot", "gone")
    cloud.c.delete(f"{cloud.v}/volumes/{v1['id']}")
    cloud.wait_volume(v1["id"], "gone")
    assert cloud.c.delete(f"/image/v2/images/{image['id']}").status_code == 204
    return engines.pop(), tuple(shapes)


def test_chain_shape_on_local(a: Cloud) -> None:
    engine, shape = chain_shape(a)
    assert engine == "local"
    assert shape[0][0] == "V2" and ("I", "V1", "clone") in shape[0][2]
    assert shape[2] == [("has_clones", ("V2",))] and shape[3] == [("has_clones", ("V1",))]


def test_busy_is_what_the_real_delete_refuses(srv: Server) -> None:
    """A volume or snapshot in a state the delete refuses (an admin's reset puts it
    there, as a stuck operation would) is ``busy``; back in ``available`` it goes."""
    admin = Cloud(srv, srv.token())
    vol = admin.volume(size=1)
    snap = admin.snapshot(vol["id"])
    for status in ("maintenance", "attaching", "uploading"):
        r = admin.c.post(f"{admin.v}/volumes/{vol['id']}/action",
                         json={"os-reset_status": {"status": status}})
        assert r.status_code == 202, r.text
        bl = admin.blockers("volumes", vol["id"])
        assert reasons(bl)["busy"] == [], bl
        r = admin.c.delete(f"{admin.v}/volumes/{vol['id']}")
        assert r.status_code == 400 and status in r.json()["badRequest"]["message"], r.text
    admin.c.post(f"{admin.v}/volumes/{vol['id']}/action",
                 json={"os-reset_status": {"status": "available"}})
    r = admin.c.post(f"{admin.v}/snapshots/{snap['id']}/action",
                     json={"os-reset_status": {"status": "backing-up"}})
    assert r.status_code == 202, r.text
    bl = admin.blockers("snapshots", snap["id"])
    assert reasons(bl) == {"busy": []}
    assert admin.c.delete(f"{admin.v}/snapshots/{snap['id']}").status_code == 400
    admin.c.post(f"{admin.v}/snapshots/{snap['id']}/action",
                 json={"os-reset_status": {"status": "available"}})
    assert admin.blockers("snapshots", snap["id"])["deletable"]
    assert admin.c.delete(f"{admin.v}/snapshots/{snap['id']}").status_code == 202
    _wait(admin.c, f"{admin.v}/snapshots/{snap['id']}", "snapshot", "gone")
    bl = admin.blockers("volumes", vol["id"])
    assert bl["deletable"] and bl["blockers"] == [] and bl["deferred"] == []
    assert admin.c.delete(f"{admin.v}/volumes/{vol['id']}").status_code == 202
    admin.wait_volume(vol["id"], "gone")


def test_policy_defaults() -> None:
    """Any role on a project may ask (the walk cuts the answer to that project); a token
    without a project may not, unless it is an admin's."""
    from strato.context import RequestContext
    from strato.policy import Enforcer

    enforcer = Enforcer()
    for rule in ("lineage:show", "lineage:delete_blockers"):
        for roles in (["reader"], ["member"], ["admin"]):
            ctx = RequestContext(user_id="u", project_id="p1", roles=roles)
            assert enforcer.allowed(ctx, rule), (rule, roles)
        unscoped = RequestContext(user_id="u", project_id=None, roles=["reader"])
        assert not enforcer.allowed(unscoped, rule, {"project_id": ""})
    assert '"lineage:show"' in enforcer.defaults_yaml()


def test_volume_backed_server_snapshot(srv: Server, a: Cloud) -> None:
    """The links only the records hold: a boot volume, a volume-backed server snapshot
    image (its ``block_device_mapping`` names the Cinder snapshot), a volume created
    from that image (a clone of the snapshot, a copy of the image)."""
    admin = Cloud(srv, srv.token())
    guest = admin.c.get("/image/v2/images?name=strato-guest").json()["images"][0]["id"]
    root = a.volume(size=1, imageRef=guest)
    flavor = next(f["id"] for f in a.nova("GET", "/flavors", 200).json()["flavors"]
                  if f["name"] == "m1.tiny")
    sid = a.nova("POST", "/servers", 202, json={"server": {
        "name": _uniq("bfv"), "flavorRef": flavor, "imageRef": "", "networks": "none",
        "block_device_mapping_v2": [{
            "uuid": root["id"], "source_type": "volume", "destination_type": "volume",
            "boot_index": "0", "delete_on_termination": False}]}}).json()["server"]["id"]
    _wait(a.c, f"/compute/v2.1/servers/{sid}", "server", "ACTIVE")
    drv = QemuDriver(srv.state / "instances")
    wait_console(drv, sid, "STRATO-GUEST-READY bootcount=")
    drv.wait_for_agent(sid)
    image_id = a.nova("POST", f"/servers/{sid}/action", 202, json={
        "createImage": {"name": _uniq("bfv-snap")}}).json()["image_id"]
    image = _wait(a.c, f"/image/v2/images/{image_id}", "", "active")
    snap_id = json.loads(image["block_device_mapping"])[0]["snapshot_id"]
    im, sn, sv, vo, gi = (f"image:{image_id}", f"snapshot:{snap_id}", f"server:{sid}",
                          f"volume:{root['id']}", f"image:{guest}")

    g = a.lineage("images", image_id)
    assert {(gi, vo, "clone"), (vo, sv, "boot"), (vo, sn, "snapshot"),
            (sn, im, "snapshot"), (sv, im, "snapshot")} <= edges(g), g
    assert node(g, im)["location"] is None and node(g, im)["engine"] is None
    assert node(g, sn)["holds_data_for"] == [] and node(g, vo)["holds_data_for"] == []

    v2 = a.volume(imageRef=image_id)
    vo2 = f"volume:{v2['id']}"
    g = a.lineage("volumes", v2["id"])
    assert {(sn, vo2, "clone"), (im, vo2, "copy")} <= edges(g), g
    assert node(g, sn)["holds_data_for"] == [vo2]
    bl = a.blockers("snapshots", snap_id)
    assert reasons(bl) == {"has_clones": [vo2]}
    bl = a.blockers("volumes", root["id"])
    assert set(reasons(bl)) == {"attached", "has_snapshots"} and \
        reasons(bl)["attached"] == [sv]

    a.c.delete(f"{a.v}/volumes/{v2['id']}")
    a.wait_volume(v2["id"], "gone")
    a.nova("DELETE", f"/servers/{sid}", 204)
    _wait(a.c, f"/compute/v2.1/servers/{sid}", "server", "gone")
    assert a.c.delete(f"/image/v2/images/{image_id}").status_code == 204
    if a.c.get(f"{a.v}/snapshots/{snap_id}").status_code == 200:
        a.c.delete(f"{a.v}/snapshots/{snap_id}")
        _wait(a.c, f"{a.v}/snapshots/{snap_id}", "snapshot", "gone")
    a.wait_volume(root["id"], "available")
    assert a.blockers("volumes", root["id"])["deletable"]
    a.c.delete(f"{a.v}/volumes/{root['id']}")
    a.wait_volume(root["id"], "gone")


# ------------------------------------------------------------------ the walk's bounds
def _walk_world(tmp: Path, depth: int) -> tuple[Any, Any, str]:
    """A real local engine and SQLite database: an image record whose data carries a
    chain of ``depth`` clones no record owns (``store`` nodes).  The services container
    is a stand-in holding the real engine (a unit test of the walk alone)."""
    from types import SimpleNamespace

    from strato.db import Database, migrate
    from strato.image.models import Image
    from strato.storage import open_engine

    url = f"sqlite:///{tmp}/walk.db"
    migrate.upgrade(url)
    db = Database(url)
    engine = open_engine("local", root=tmp / "blocks")
    image_id = str(uuid.uuid4())
    engine.create("images", image_id, 1 << 20)
    parent = ("images", image_id, "snap")
    with engine.open("images", image_id) as img:
        img.create_snap("snap")
        img.protect_snap("snap")
    for _ in range(depth):
        name = f"volume-{uuid.uuid4()}.deleted"
        engine.clone(*parent, "volumes", name)
        with engine.open("volumes", name) as img:
            img.create_snap("s")
            img.protect_snap("s")
        parent = ("volumes", name, "s")
    with db.session() as s:
        s.add(Image(id=image_id, name="base", status="active", owner="p1", size=1 << 20,
                    visibility="private", location=engine.location("images", image_id,
                                                                   "snap")))
    services = SimpleNamespace(
        stores=SimpleNamespace(by_pool={p: engine for p in ("images", "vms", "volumes")},
                               vms_pool="vms", images_pool="images"),
        image=SimpleNamespace(stores={}),
        volume=SimpleNamespace(backends={"b": SimpleNamespace(pool="volumes")}))
    return services, db, f"image:{image_id}"


def test_walk_is_bounded_and_stops_at_what_the_caller_cannot_see(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from strato.context import RequestContext
    from strato.lineage import graph as lineage_graph
    from strato.lineage.api import render

    services, db, start = _walk_world(tmp_path, 6)
    admin = RequestContext(user_id="a", project_id="p0", roles=["admin"])
    owner = RequestContext(user_id="u", project_id="p1", roles=["member"])

    def walk(ctx: RequestContext) -> dict[str, Any]:
        with db.session(readonly=True) as session:
            return check_graph({"lineage": render(
                lineage_graph.Walker(services, ctx, session).walk(start))})

    g = walk(admin)
    assert len(g["nodes"]) == 7 and not g["truncated"]
    assert all(n["kind"] == "store" for n in g["nodes"][1:])
    assert len(edges(g)) == 6 and {r for _, _, r in edges(g)} == {"clone"}
    monkeypatch.setattr(lineage_graph, "MAX_NODES", 4)
    g = walk(admin)
    assert len(g["nodes"]) == 4 and g["truncated"]
    monkeypatch.setattr(lineage_graph, "MAX_NODES", 300)
    monkeypatch.setattr(lineage_graph, "MAX_DEPTH", 3)
    g = walk(admin)
    assert len(g["nodes"]) == 4 and g["truncated"]
    monkeypatch.setattr(lineage_graph, "MAX_DEPTH", 64)
    # nobody's known to own the kept clones: opaque to a project, and the walk stops
    g = walk(owner)
    assert [n["opaque"] for n in g["nodes"]] == [False, True]
    assert g["nodes"][0]["holds_data_for"] == ["opaque:1"]
    db.dispose()
