"""strato on a real Ceph cluster, end to end with the openstack client: image upload →
volume clone → boot from volume → instance snapshot → boot from the snapshot, and an
image-backed server the same way.  ``rbd`` shows exactly the objects the seeds' naming
predicts, and nothing is left when the resources go."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, boot_ready, guest_server, wait_volume
from tests.storage.conftest import ceph_conf
from tests.support import Server


@pytest.fixture(scope="module")
def ceph_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    conf = ceph_conf()
    with guest_server(tmp_path_factory.mktemp("ceph"), {
            "storage": {"engine": "rbd"},
            "glance_store": {"rbd_store_ceph_conf": conf},
            "volume": {"rbd_ceph_conf": conf, "enabled_backends": "ceph:volumes"},
            "compute": {"images_rbd_ceph_conf": conf,
                        "sync_power_state_interval": "1"}}) as srv:
        yield srv


def _rbd(*args: str) -> str:
    return subprocess.run(["rbd", "-c", ceph_conf(), *args], check=True, capture_output=True,
                          text=True).stdout


def _ls(pool: str) -> set[str]:
    return set(_rbd("ls", "-p", pool).split())


def _snaps(pool: str, name: str) -> set[str]:
    return {s["name"] for s in json.loads(_rbd("snap", "ls", "--format", "json",
                                               f"{pool}/{name}"))}


def _sh(srv: Server, sid: str, script: str) -> str:
    with QemuDriver(srv.state / "instances").agent(sid) as ga:
        return ga.sh(script).stdout.decode()


def _checksum_matches(srv: Server, image_id: str) -> None:
    deadline = time.monotonic() + 60
    while not (image := srv.openstack_json("image", "show", image_id)).get("checksum"):  # type: ignore[union-attr]  (omitted until hashed)
        assert time.monotonic() < deadline, "never hashed"
        time.sleep(0.3)
    data = srv.state / f"{image_id}.raw"
    srv.openstack("image", "save", "--file", str(data), image_id)
    assert hashlib.md5(data.read_bytes()).hexdigest() == image["checksum"]  # type: ignore[index]
    data.unlink()


def test_volume_backed_on_ceph(ceph_server: Server) -> None:
    srv, nova = ceph_server, Nova(ceph_server)
    image = srv.openstack_json("image", "show", "strato-guest")
    image_id = str(image["id"])  # type: ignore[index]
    assert image_id in _ls("images") and _snaps("images", image_id) == {"snap"}

    vol = srv.openstack_json("volume", "create", "--image", "strato-guest", "--size", "1",
                             f"v-{uuid.uuid4().hex[:6]}")
    vol_id = str(vol["id"])  # type: ignore[index]
    wait_volume(nova, vol_id, "available")
    info = json.loads(_rbd("info", "--format", "json", f"volumes/volume-{vol_id}"))
    assert info["parent"]["pool"] == "images" and info["parent"]["image"] == image_id

    sid = boot_ready(srv, "--volume", vol_id)
    _sh(srv, sid, "echo one > /mnt/root/marker-before")
    snap = srv.openstack_json("server", "image", "create", "--wait", "--name",
                              f"s-{uuid.uuid4().hex[:6]}", sid)
    snap_id = str(snap["id"])  # type: ignore[index]
    _sh(srv, sid, "echo two > /mnt/root/marker-after; sync")
    props = srv.openstack_json("image", "show", snap_id)["properties"]  # type: ignore[index]
    assert props["strato_quiesced"] == "true"  # frozen, RBD snapshot, thawed
    mapping = json.loads(props["block_device_mapping"])
    vsnap = mapping[0]["snapshot_id"]
    assert _snaps("volumes", f"volume-{vol_id}") == {f"snapshot-{vsnap}"}

    child = boot_ready(srv, "--image", snap_id)
    seen = _sh(srv, child, "ls /mnt/root")
    assert "marker-before" in seen and "marker-after" not in seen
    child_vol = nova.server(child)["os-extended-volumes:volumes_attached"][0]["id"]
    info = json.loads(_rbd("info", "--format", "json", f"volumes/volume-{child_vol}"))
    assert info["parent"]["image"] == f"volume-{vol_id}"
    assert info["parent"]["snapshot"] == f"snapshot-{vsnap}"

    for s in (child, sid):
        srv.openstack("server", "delete", "--wait", s)
    for v in (child_vol, vol_id):
        wait_volume(nova, v, "available")
    srv.openstack("volume", "delete", child_vol)
    wait_volume(nova, child_vol, "gone")
    srv.openstack("image", "delete", snap_id)
    srv.openstack("volume", "snapshot", "delete", vsnap)
    deadline = time.monotonic() + 30
    while _snaps("volumes", f"volume-{vol_id}"):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    srv.openstack("volume", "delete", vol_id)
    wait_volume(nova, vol_id, "gone")
    assert not {f"volume-{vol_id}", f"volume-{vol_id}.deleted",
                f"volume-{child_vol}"} & _ls("volumes")
    assert _snaps("images", image_id) == {"snap"}


def test_image_backed_on_ceph(ceph_server: Server) -> None:
    srv = ceph_server
    image_id = str(srv.openstack_json("image", "show", "strato-guest")["id"])  # type: ignore[index]
    sid = boot_ready(srv, "--image", "strato-guest")
    info = json.loads(_rbd("info", "--format", "json", f"vms/{sid}_disk"))
    assert info["parent"]["pool"] == "images" and info["parent"]["image"] == image_id
    _sh(srv, sid, "echo one > /mnt/root/marker-before")
    snap = srv.openstack_json("server", "image", "create", "--wait", "--name",
                              f"s-{uuid.uuid4().hex[:6]}", sid)
    snap_id = str(snap["id"])  # type: ignore[index]
    _sh(srv, sid, "echo two > /mnt/root/marker-after; sync")
    # the snapshot image is a clone of the disk's <image>.clone_snap: nothing copied
    assert _snaps("vms", f"{sid}_disk") == {f"{snap_id}.clone_snap"}
    info = json.loads(_rbd("info", "--format", "json", f"images/{snap_id}"))
    assert info["parent"] == {**info["parent"], "pool": "vms", "image": f"{sid}_disk",
                              "snapshot": f"{snap_id}.clone_snap"}
    assert _snaps("images", snap_id) == {"snap"}
    assert srv.openstack_json("image", "show", snap_id)[  # type: ignore[index]
        "properties"]["strato_quiesced"] == "true"
    _checksum_matches(srv, snap_id)

    child = boot_ready(srv, "--image", snap_id)
    seen = _sh(srv, child, "ls /mnt/root")
    assert "marker-before" in seen and "marker-after" not in seen
    children = _rbd("children", f"images/{snap_id}@snap").split()
    assert children == [f"vms/{child}_disk"]

    srv.openstack("server", "delete", "--wait", sid)
    assert f"{sid}_disk.deleted" in _ls("vms")  # its snapshot still has a clone
    srv.openstack("server", "delete", "--wait", child)
    srv.openstack("image", "delete", snap_id)
    left = {n for n in _ls("vms") | _ls("images") if sid in n or child in n or snap_id in n}
    assert left == set()


def test_mixed_engines_copy_across_clusters(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Image data on the local engine, volumes and instance disks on Ceph: nothing can
    be cloned across (different fsids), so volumes and root disks are copies and an
    instance snapshot takes the standard path (extract, upload)."""
    conf = ceph_conf()
    with guest_server(tmp_path_factory.mktemp("mixed"), {
            "storage": {"engine": "rbd", "images_engine": "local"},
            "volume": {"rbd_ceph_conf": conf, "enabled_backends": "mixed:volumes"},
            "compute": {"images_rbd_ceph_conf": conf}}) as srv:
        nova = Nova(srv)
        image_id = str(srv.openstack_json("image", "show", "strato-guest")["id"])  # type: ignore[index]
        assert image_id not in _ls("images")  # on the local engine
        vol = srv.openstack_json("volume", "create", "--image", "strato-guest", "--size", "1",
                                 f"m-{uuid.uuid4().hex[:6]}")
        vol_id = str(vol["id"])  # type: ignore[index]
        wait_volume(nova, vol_id, "available")
        info = json.loads(_rbd("info", "--format", "json", f"volumes/volume-{vol_id}"))
        assert "parent" not in info  # a copy
        sid = boot_ready(srv, "--image", "strato-guest")
        assert "parent" not in json.loads(_rbd("info", "--format", "json", f"vms/{sid}_disk"))
        _sh(srv, sid, "echo one > /mnt/root/marker-before")
        snap = srv.openstack_json("server", "image", "create", "--wait", "--name",
                                  f"m-{uuid.uuid4().hex[:6]}", sid)
        snap_id = str(snap["id"])  # type: ignore[index]
        image = srv.openstack_json("image", "show", snap_id)
        assert image["checksum"] and snap_id not in _ls("images")  # type: ignore[index]
        child = boot_ready(srv, "--image", snap_id)
        assert "marker-before" in _sh(srv, child, "ls /mnt/root")
        for s in (child, sid):
            srv.openstack("server", "delete", "--wait", s)
        srv.openstack("image", "delete", snap_id)
        srv.openstack("volume", "delete", vol_id)
        wait_volume(nova, vol_id, "gone")
        assert not {f"{sid}_disk", f"{child}_disk"} & _ls("vms")
