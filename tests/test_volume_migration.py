"""Volume migration between backends (``os-migrate_volume``, ``os-retype`` on-demand)
and volume transfers, with the real ``openstack`` client on a server with two backends
(``a`` on pool ``pool1``, ``b`` on ``pool2``).  The data is compared byte for byte after
each move; a SIGKILL at each step of a migration and inside a transfer accept
converges after the restart with nothing orphaned in the block store."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from strato.storage import open_engine
from strato.storage.crash import FAULT_FILE_ENV
from tests.support import Server, free_port
from tests.tenants import Tenant, make_tenant

POOLS = ("images", "vms", "volumes", "pool1", "pool2")
DATA_LEN = 3 << 20


def _pattern(n: int, seed: str) -> bytes:
    block = hashlib.sha512(seed.encode()).digest() * 64
    return (block * (n // len(block) + 1))[:n]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("vmig")
    os.environ[FAULT_FILE_ENV] = str(state / "fault")  # the server (and restarts) inherit it
    server = Server(state, free_port(), extra_conf={
        "volume": {"enabled_backends": "a:pool1:100,b:pool2:100"},
        "jobs": {"lease_seconds": "2", "retry_backoff": "0.5"}})
    try:
        server.setup()
        server.start()
        server.openstack("volume", "type", "create", "--property", "volume_backend_name=a",
                         "type-a")
        server.openstack("volume", "type", "create", "--property", "volume_backend_name=b",
                         "type-b")
        yield server
    finally:
        server.stop()
        os.environ.pop(FAULT_FILE_ENV, None)


class Cloud:
    def __init__(self, server: Server) -> None:
        self.srv = server
        token = server.token()
        self.c = server.client(token)
        self.project = self.c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]
        self.base = f"/volume/v3/{self.project}"
        self.c.headers["OpenStack-API-Version"] = "volume 3.65"

    @property
    def blocks(self):  # type: ignore[no-untyped-def]
        return open_engine("local", root=self.srv.state / "blocks", repair=False, pools=POOLS)

    def show(self, vid: str) -> dict[str, Any]:
        r = self.c.get(f"{self.base}/volumes/{vid}")
        assert r.status_code == 200, r.text
        return r.json()["volume"]

    def snapshot(self, sid: str) -> dict[str, Any]:
        return self.c.get(f"{self.base}/snapshots/{sid}").json()["snapshot"]

    def action(self, vid: str, body: dict[str, Any]) -> httpx.Response:
        return self.c.post(f"{self.base}/volumes/{vid}/action", json=body)

    def until(self, what, timeout: float = 60):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    def settled(self, vid: str) -> dict[str, Any]:
        vol = self.until(lambda: (v := self.show(vid))["migration_status"] in (
            "success", "error") and v["status"] in ("available", "error") and v)
        assert vol, self.show(vid)
        return vol

    def volume_from_data(self, seed: str, vtype: str) -> str:
        """A 1 GiB volume whose first 3 MiB are known bytes."""
        path = self.srv.state / f"{seed}.raw"
        path.write_bytes(_pattern(DATA_LEN, seed))
        image = self.srv.openstack_json("image", "create", "--file", str(path),
                                        "--disk-format", "raw", "--container-format",
                                        "bare", f"img-{seed}")
        vol = self.srv.openstack_json("volume", "create", "--image", image["id"], "--size",
                                      "1", "--type", vtype, f"vol-{seed}")
        assert self.until(lambda: self.show(vol["id"])["status"] == "available")
        return vol["id"]

    def where(self, vid: str) -> list[str]:
        """Every block-store image of this volume, as ``pool/name``."""
        blocks = self.blocks
        return [f"{pool}/{name}" for pool in POOLS for name in blocks.list(pool)
                if name.startswith(f"volume-{vid}")]

    def assert_data(self, vid: str, pool: str, seed: str) -> None:
        with self.blocks.open(pool, f"volume-{vid}", read_only=True) as image:
            assert image.size() == 1 << 30
            assert image.read(0, DATA_LEN) == _pattern(DATA_LEN, seed)
            assert image.read(DATA_LEN, 1 << 20) == bytes(1 << 20)

    def inject(self, how: str, point: str) -> None:
        (self.srv.state / "fault").write_text(f"{how} {point}")

    def restart_after_kill(self) -> None:
        assert self.srv.proc is not None
        assert self.srv.proc.wait(60) == -9, "the server was not killed at the point"
        assert not (self.srv.state / "fault").exists()
        self.srv.start()


@pytest.fixture(scope="module")
def cloud(srv: Server) -> Cloud:
    return Cloud(srv)


def test_migrate_and_retype_with_the_cli(cloud: Cloud) -> None:
    srv = cloud.srv
    vid = cloud.volume_from_data("mig", "type-a")
    before = cloud.show(vid)
    host = before["os-vol-host-attr:host"]
    assert host.endswith("@a#pool1") and before["migration_status"] is None
    node = host.split("@")[0]
    assert cloud.where(vid) == [f"pool1/volume-{vid}"]

    # os-migrate_volume with the real client; the volume stays available meanwhile.
    srv.openstack("volume", "migrate", "--host", f"{node}@b", vid)
    vol = cloud.settled(vid)
    assert vol["migration_status"] == vol["os-vol-mig-status-attr:migstat"] == "success"
    assert vol["os-vol-host-attr:host"] == f"{node}@b#pool2"
    assert vol["os-vol-mig-status-attr:name_id"] is None
    assert vol["volume_type"] == "type-a" and vol["status"] == "available"
    assert cloud.until(lambda: cloud.where(vid) == [f"pool2/volume-{vid}"]), cloud.where(vid)
    cloud.assert_data(vid, "pool2", "mig")

    # Refusals: same backend, unknown backend, bad body, a member, snapshots, never.
    for body, code in (({"host": f"{node}@b"}, 400), ({"host": f"{node}@nowhere"}, 400),
                       ({"host": "elsewhere@a"}, 400), ({}, 400),
                       ({"host": f"{node}@a", "lock_volume": "maybe"}, 400)):
        r = cloud.action(vid, {"os-migrate_volume": body})
        assert r.status_code == code, (body, r.text)
    member = make_tenant(srv, "mig", "member")
    with srv.client(member.token()) as c:
        r = c.post(f"/volume/v3/{member.project_id}/volumes/{vid}/action",
                   json={"os-migrate_volume": {"host": f"{node}@a"}})
        assert r.status_code == 404, r.text  # not theirs: not found before forbidden
        own = c.post(f"/volume/v3/{member.project_id}/volumes",
                     json={"volume": {"size": 1, "volume_type": "type-a"}}).json()["volume"]
        assert cloud.until(lambda: cloud.show(own["id"])["status"] == "available")
        r = c.post(f"/volume/v3/{member.project_id}/volumes/{own['id']}/action",
                   json={"os-migrate_volume": {"host": f"{node}@b"}})
        assert r.status_code == 403, r.text
        r = c.post(f"/volume/v3/{member.project_id}/volumes/{uuid.uuid4()}/action",
                   json={"os-migrate_volume": {"host": f"{node}@b"}})
        assert r.status_code == 404, r.text
        assert c.delete(f"/volume/v3/{member.project_id}/volumes/{own['id']}"
                        ).status_code == 202
    snap = srv.openstack_json("volume", "snapshot", "create", "--volume", vid, "s-mig")
    assert cloud.until(lambda: cloud.snapshot(snap["id"])["status"] == "available")
    r = cloud.action(vid, {"os-migrate_volume": {"host": f"{node}@a"}})
    assert r.status_code == 400 and "snapshots" in r.text
    srv.openstack("volume", "snapshot", "delete", snap["id"])
    assert cloud.until(lambda: cloud.c.get(f"{cloud.base}/snapshots/{snap['id']}")
                       .status_code == 404)

    # A retype its backend satisfies moves nothing; one that needs the other backend
    # migrates (the real client): type and host change with migration_status success.
    srv.openstack("volume", "set", "--type", "type-b", "--migration-policy", "never", vid)
    vol = cloud.show(vid)
    assert vol["volume_type"] == "type-b" and vol["os-vol-host-attr:host"] == \
        f"{node}@b#pool2"
    never = srv.openstack("volume", "set", "--type", "type-a", "--migration-policy",
                          "never", vid, check=False)  # type-a lives on backend a only
    assert never.returncode != 0 and "migration_policy is never" in never.stderr
    srv.openstack("volume", "set", "--type", "type-a", "--retype-policy", "on-demand", vid)
    vol = cloud.until(lambda: (v := cloud.show(vid))["volume_type"] == "type-a" and v)
    assert vol["migration_status"] == "success" and vol["status"] == "available", vol
    assert vol["os-vol-host-attr:host"] == f"{node}@a#pool1", vol
    assert cloud.until(lambda: cloud.where(vid) == [f"pool1/volume-{vid}"]), cloud.where(vid)
    cloud.assert_data(vid, "pool1", "mig")
    quota = cloud.c.get(f"{cloud.base}/os-quota-sets/{cloud.project}",
                        params={"usage": "true"}).json()["quota_set"]
    assert quota["volumes_type-a"]["in_use"] >= 1 and quota["volumes_type-a"]["reserved"] == 0
    assert quota["gigabytes_type-b"]["reserved"] == 0
    assert quota["volumes"]["in_use"] == quota["volumes_type-a"]["in_use"] + \
        quota["volumes_type-b"]["in_use"] and quota["volumes"]["reserved"] == 0

    # The migrated volume works: it deletes cleanly from its new backend.
    srv.openstack("volume", "delete", vid)
    assert cloud.until(lambda: cloud.c.get(f"{cloud.base}/volumes/{vid}").status_code == 404)
    assert cloud.until(lambda: cloud.where(vid) == [])


def test_migrating_volume_refuses_other_changes(cloud: Cloud) -> None:
    """While the copy runs (held there by the fault file), delete, extend, snapshot,
    transfer and a second migration are refused with 400."""
    vid = cloud.volume_from_data("hold", "type-a")
    node = cloud.show(vid)["os-vol-host-attr:host"].split("@")[0]
    cloud.inject("sleep=4", "volume.migrate:after-copy")
    r = cloud.action(vid, {"os-migrate_volume": {"host": f"{node}@b", "lock_volume": True}})
    assert r.status_code == 202, r.text
    assert cloud.until(lambda: not (cloud.srv.state / "fault").exists(), 30)
    vol = cloud.show(vid)
    assert vol["status"] == "maintenance" and vol["migration_status"] == "migrating"
    assert cloud.c.delete(f"{cloud.base}/volumes/{vid}").status_code == 400
    assert cloud.action(vid, {"os-extend": {"new_size": 2}}).status_code == 400
    assert cloud.action(vid, {"os-migrate_volume": {"host": f"{node}@a"}}).status_code == 400
    r = cloud.c.post(f"{cloud.base}/snapshots", json={"snapshot": {"volume_id": vid}})
    assert r.status_code == 400, r.text
    r = cloud.c.post(f"{cloud.base}/volume-transfers", json={"transfer": {"volume_id": vid}})
    assert r.status_code == 400, r.text
    vol = cloud.settled(vid)
    assert vol["status"] == "available" and vol["os-vol-host-attr:host"].endswith("@b#pool2")
    cloud.assert_data(vid, "pool2", "hold")
    assert cloud.until(lambda: cloud.where(vid) == [f"pool2/volume-{vid}"]), cloud.where(vid)


@pytest.mark.parametrize("point", ["after-copy", "before-swap", "after-swap"])
def test_kill_mid_migration_converges(cloud: Cloud, point: str) -> None:
    """SIGKILL after the copy (before its rename), after the copy is whole (before the
    record's swap), and after the swap (before the source goes): after the restart the
    retried job finishes — one image, on the backend the record names, data intact."""
    seed = f"crash-{point}"
    vid = cloud.volume_from_data(seed, "type-a")
    node = cloud.show(vid)["os-vol-host-attr:host"].split("@")[0]
    cloud.inject("kill", f"volume.migrate:{point}")
    r = cloud.action(vid, {"os-retype": {"new_type": "type-b",
                                         "migration_policy": "on-demand"}})
    assert r.status_code == 202, r.text
    cloud.restart_after_kill()
    vol = cloud.settled(vid)
    assert vol["migration_status"] == "success", vol
    assert vol["volume_type"] == "type-b" and vol["status"] == "available"
    assert vol["os-vol-host-attr:host"] == f"{node}@b#pool2"
    assert cloud.until(lambda: cloud.where(vid) == [f"pool2/volume-{vid}"]), cloud.where(vid)
    cloud.assert_data(vid, "pool2", seed)
    quota = cloud.c.get(f"{cloud.base}/os-quota-sets/{cloud.project}",
                        params={"usage": "true"}).json()["quota_set"]
    assert quota["gigabytes_type-b"]["reserved"] == 0


@pytest.fixture(scope="module")
def tenants(srv: Server) -> tuple[Tenant, Tenant]:
    return make_tenant(srv, "give"), make_tenant(srv, "take")


def test_transfer_with_the_cli(cloud: Cloud, tenants: tuple[Tenant, Tenant]) -> None:
    """Ownership moves with the quota (volumes, gigabytes and the snapshots that follow);
    ``--no-snapshots`` leaves the snapshots' quota with the giver."""
    srv = cloud.srv
    giver, taker = tenants

    def usage(project_id: str) -> dict[str, int]:
        q = cloud.c.get(f"{cloud.base}/os-quota-sets/{project_id}",
                        params={"usage": "true"}).json()["quota_set"]
        return {k: q[k]["in_use"] for k in ("volumes", "gigabytes", "snapshots")}

    for no_snapshots in (False, True):
        vol = giver.openstack_json("volume", "create", "--size", "1", "--type", "type-a",
                                   f"tv-{no_snapshots}")
        vid = vol["id"]
        assert cloud.until(lambda vid=vid: cloud.show(vid)["status"] == "available")
        snap = giver.openstack_json("volume", "snapshot", "create", "--volume", vid,
                                    f"ts-{no_snapshots}")
        sid = snap["id"]
        assert cloud.until(lambda sid=sid: cloud.snapshot(sid)["status"] == "available")
        if not no_snapshots:  # a snapshot that follows must be available (Cinder)
            reset = f"{cloud.base}/snapshots/{sid}/action"
            cloud.c.post(reset, json={"os-reset_status": {"status": "error"}})
            r = cloud.c.post(f"{cloud.base}/volume-transfers",
                             json={"transfer": {"volume_id": vid}})
            assert r.status_code == 400 and "must be available" in r.text, r.text
            cloud.c.post(reset, json={"os-reset_status": {"status": "available"}})
        before_g, before_t = usage(giver.project_id), usage(taker.project_id)
        args = ["--os-volume-api-version", "3.57", "volume", "transfer", "request",
                "create", "--name", f"t-{no_snapshots}", vol["id"]]
        if no_snapshots:
            args.insert(-1, "--no-snapshots")
        req = giver.openstack_json(*args)
        assert req["auth_key"] and req["volume_id"] == vol["id"]
        listed = giver.openstack_json("volume", "transfer", "request", "list")
        assert [t["ID"] for t in listed] == [req["id"]]
        shown = giver.openstack_json("volume", "transfer", "request", "show", req["id"])
        assert shown["volume_id"] == vid and shown["name"] == f"t-{no_snapshots}"
        with srv.client(giver.token()) as c:  # the CLI shows no 3.55/3.57 fields
            shown = c.get(f"/volume/v3/{giver.project_id}/volume-transfers/{req['id']}",
                          headers={"OpenStack-API-Version": "volume 3.57"}).json()["transfer"]
        assert shown["no_snapshots"] is no_snapshots and shown["accepted"] is False
        assert shown["source_project_id"] == giver.project_id
        bad = taker.openstack("volume", "transfer", "request", "accept", "--auth-key",
                              "wrong", req["id"], check=False)
        assert bad.returncode != 0
        taker.openstack_json("volume", "transfer", "request", "accept", "--auth-key",
                             req["auth_key"], req["id"])
        moved = taker.openstack_json("volume", "show", vol["id"])
        assert moved["status"] == "available"
        snaps_moved = 0 if no_snapshots else 1
        assert usage(taker.project_id) == {
            "volumes": before_t["volumes"] + 1, "gigabytes": before_t["gigabytes"] + 1
            + snaps_moved, "snapshots": before_t["snapshots"] + snaps_moved}
        assert usage(giver.project_id) == {
            "volumes": before_g["volumes"] - 1, "gigabytes": before_g["gigabytes"] - 1
            - snaps_moved, "snapshots": before_g["snapshots"] - snaps_moved}
        owner = cloud.c.get(f"{cloud.base}/snapshots/{snap['id']}").json()["snapshot"]
        assert owner["os-extended-snapshot-attributes:project_id"] == (
            giver.project_id if no_snapshots else taker.project_id)
    # A request that is deleted gives the volume back.
    vol = giver.openstack_json("volume", "create", "--size", "1", "tv-del")
    assert cloud.until(lambda: cloud.show(vol["id"])["status"] == "available")
    req = giver.openstack_json("volume", "transfer", "request", "create", vol["id"])
    assert giver.openstack_json("volume", "show", vol["id"])["status"] == "awaiting-transfer"
    giver.openstack("volume", "transfer", "request", "delete", req["id"])
    assert giver.openstack_json("volume", "show", vol["id"])["status"] == "available"


def test_kill_during_transfer_accept_leaves_no_half_state(
        cloud: Cloud, tenants: tuple[Tenant, Tenant]) -> None:
    """The accept is one transaction: killed just before it commits, nothing of it
    happened (owner, status, quota, transfer); accepted again after the restart."""
    giver, taker = tenants
    vol = giver.openstack_json("volume", "create", "--size", "1", "tv-kill")
    assert cloud.until(lambda: cloud.show(vol["id"])["status"] == "available")
    req = giver.openstack_json("volume", "transfer", "request", "create", vol["id"])

    def quota(project_id: str) -> dict[str, Any]:
        return cloud.c.get(f"{cloud.base}/os-quota-sets/{project_id}",
                           params={"usage": "true"}).json()["quota_set"]

    before = (quota(giver.project_id), quota(taker.project_id))
    cloud.inject("kill", "transfer.accept:before-commit")
    died = taker.openstack("volume", "transfer", "request", "accept", "--auth-key",
                           req["auth_key"], req["id"], check=False)
    assert died.returncode != 0
    cloud.restart_after_kill()
    shown = cloud.show(vol["id"])
    assert shown["status"] == "awaiting-transfer"
    assert shown["os-vol-tenant-attr:tenant_id"] == giver.project_id
    assert (quota(giver.project_id), quota(taker.project_id)) == before
    taker.openstack_json("volume", "transfer", "request", "accept", "--auth-key",
                         req["auth_key"], req["id"])
    shown = cloud.show(vol["id"])
    assert shown["status"] == "available"
    assert shown["os-vol-tenant-attr:tenant_id"] == taker.project_id
    assert quota(taker.project_id)["volumes"]["in_use"] == \
        before[1]["volumes"]["in_use"] + 1



def test_migrate_on_rbd(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same migration on Ceph (engine ``rbd``): a clone of a Glance image in pool
    ``volumes`` moves to ``volumes2`` as an independent image with the same data, and
    the clone's hold on the image's snapshot is released."""
    import subprocess

    from tests.storage.conftest import ceph_conf

    conf = ceph_conf()

    def rbd(*args: str) -> bytes:
        return subprocess.run(["rbd", "-c", conf, *args], check=True,
                              capture_output=True).stdout

    subprocess.run(["ceph", "-c", conf, "osd", "pool", "create", "volumes2", "8"],
                   check=True, capture_output=True)
    rbd("pool", "init", "volumes2")
    server = Server(tmp_path_factory.mktemp("vmigrbd"), free_port(), extra_conf={
        "storage": {"engine": "rbd"},
        "glance_store": {"rbd_store_ceph_conf": conf},
        "volume": {"rbd_ceph_conf": conf, "enabled_backends": "c1:volumes,c2:volumes2"},
        "compute": {"images_rbd_ceph_conf": conf}})
    try:
        server.setup()
        server.start()
        server.openstack("volume", "type", "create", "--property",
                         "volume_backend_name=c1", "rbd-c1")
        cloud = Cloud(server)
        path = server.state / "rbd.raw"
        path.write_bytes(_pattern(DATA_LEN, "rbd"))
        image = server.openstack_json("image", "create", "--file", str(path),
                                      "--disk-format", "raw", "--container-format", "bare",
                                      "img-rbd")
        vol = server.openstack_json("volume", "create", "--image", image["id"], "--size",
                                    "1", "--type", "rbd-c1", "vol-rbd")
        vid = vol["id"]
        assert cloud.until(lambda: cloud.show(vid)["status"] == "available")
        assert f"volume-{vid}" in rbd("ls", "volumes").decode().split()
        assert rbd("children", f"images/{image['id']}@snap").strip()  # a clone
        node = cloud.show(vid)["os-vol-host-attr:host"].split("@")[0]
        server.openstack("volume", "migrate", "--host", f"{node}@c2", vid)
        moved = cloud.settled(vid)
        assert moved["migration_status"] == "success"
        assert moved["os-vol-host-attr:host"] == f"{node}@c2#volumes2"
        assert cloud.until(lambda: f"volume-{vid}" not in rbd("ls", "volumes").decode())
        assert rbd("ls", "volumes2").decode().split() == [f"volume-{vid}"]
        data = rbd("export", f"volumes2/volume-{vid}", "-")
        assert data[:DATA_LEN] == _pattern(DATA_LEN, "rbd")
        assert data[DATA_LEN:] == bytes(len(data) - DATA_LEN)
        assert not rbd("children", f"images/{image['id']}@snap").strip()
        server.openstack("volume", "delete", vid)
        assert cloud.until(lambda: not rbd("ls", "volumes2").strip())
        server.openstack("image", "delete", image["id"])
    finally:
        server.stop()
        subprocess.run(["ceph", "-c", conf, "osd", "pool", "rm", "volumes2", "volumes2",
                        "--yes-i-really-really-mean-it"], capture_output=True)
