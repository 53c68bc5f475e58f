"""createImage end to end with the real client and real guests (seeds 000, 001):
a marker written before the snapshot is in a server booted from it, one written after
is not; nothing is copied on the way."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

from strato.storage import open_engine
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, boot_ready, wait_volume
from tests.support import Server


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _blocks(server: Server):  # type: ignore[no-untyped-def]
    return open_engine("local", root=server.state / "blocks", repair=False)


def _sh(driver: QemuDriver, sid: str, script: str) -> str:
    with driver.agent(sid) as ga:
        r = ga.sh(script)
        return r.stdout.decode()


def _markers(driver: QemuDriver, sid: str) -> str:
    return _sh(driver, sid, "ls /mnt/root")


def _wait_checksum(srv: Server, image_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = srv.openstack_json("image", "show", image_id)
        if image.get("checksum"):  # type: ignore[union-attr]  (the CLI omits it until hashed)
            return image  # type: ignore[return-value]
        time.sleep(0.3)
    raise AssertionError(f"image {image_id} was never hashed")


def _wait_active(srv: Server, nova: Nova, sid: str, image_id: str,
                 timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = srv.openstack_json("image", "show", image_id)
        if image["status"] == "active" and nova.server(sid)[  # type: ignore[index]
                "OS-EXT-STS:task_state"] is None:
            return image  # type: ignore[return-value]
        time.sleep(0.3)
    raise AssertionError(f"image {image_id} not active")


def test_image_backed_running_and_stopped(compute_server: Server, nova: Nova,
                                          driver: QemuDriver) -> None:
    srv = compute_server
    base = srv.openstack_json("image", "show", "strato-guest")
    sid = boot_ready(srv, "--image", "strato-guest")
    _sh(driver, sid, "echo one > /mnt/root/marker-before")  # page cache: the freeze syncs

    snap = srv.openstack_json("server", "image", "create", "--wait", "--name",
                              _name("live"), sid)
    image_id = str(snap["id"])  # type: ignore[index]
    _sh(driver, sid, "echo two > /mnt/root/marker-after; sync")
    image = srv.openstack_json("image", "show", image_id)
    assert image["status"] == "active"  # type: ignore[index]
    props = image["properties"]  # type: ignore[index]
    assert props["image_type"] == "snapshot" and props["instance_uuid"] == sid
    assert props["base_image_ref"] == base["id"]  # type: ignore[index]
    assert props["strato_quiesced"] == "true"  # the image asks for the guest agent
    assert props["kernel_id"] == base["properties"]["kernel_id"]  # type: ignore[index]
    assert props["hw_qemu_guest_agent"] == "yes"  # inherited
    assert image["min_disk"] == 1 and image["disk_format"] == "raw"  # type: ignore[index]
    assert nova.server(sid)["OS-EXT-STS:task_state"] is None

    # a direct snapshot: the image is a clone of the root disk's snapshot, no copy
    with _blocks(srv).open("images", image_id, read_only=True) as clone:
        assert clone.parent_info() == ("vms", f"{sid}_disk", f"{image_id}.clone_snap")
    hashed = _wait_checksum(srv, image_id)
    data = srv.state / "snap.raw"
    srv.openstack("image", "save", "--file", str(data), image_id)
    assert hashlib.md5(data.read_bytes()).hexdigest() == hashed["checksum"]
    data.unlink()

    # the action and its event
    actions = nova.req("GET", f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    act = next(a for a in actions if a["action"] == "createImage")
    events = nova.req("GET", f"/servers/{sid}/os-instance-actions/{act['request_id']}"
                      ).json()["instanceAction"]["events"]
    assert [(e["event"], e["result"]) for e in events] == [
        ("compute_snapshot_instance", "Success")]

    # a server booted from the snapshot has the first marker and not the second
    child = boot_ready(srv, "--image", image_id)
    seen = _markers(driver, child)
    assert "marker-before" in seen and "marker-after" not in seen
    with _blocks(srv).open("vms", f"{child}_disk", read_only=True) as disk:
        assert disk.parent_info() == ("images", image_id, "snap")

    # stopped: a snapshot of the closed disk, not quiesced
    srv.openstack("server", "stop", sid)
    nova.wait(sid, "SHUTOFF")
    # before 2.45 the image is named by Location; from 2.45 by the body
    r = nova.req("POST", f"/servers/{sid}/action", "2.44",
                 json={"createImage": {"name": _name("cold"), "metadata": {"k": "v"}}})
    assert r.status_code == 202 and not r.content
    cold_id = r.headers["Location"].rsplit("/", 1)[1]
    assert r.headers["Location"].endswith(f"/image/v2/images/{cold_id}")
    cold = _wait_active(srv, nova, sid, cold_id)
    assert cold["properties"]["strato_quiesced"] == "false"  # stopped: nothing to freeze
    assert cold["properties"]["k"] == "v"
    r = nova.req("POST", f"/servers/{sid}/action", "2.45",
                 json={"createImage": {"name": _name("cold")}})
    assert r.status_code == 202 and "Location" not in r.headers
    cold2_id = r.json()["image_id"]
    _wait_active(srv, nova, sid, cold2_id)
    srv.openstack("image", "delete", cold2_id)

    # the image is in use by the child: 409, nothing lost
    r = srv.openstack("image", "delete", image_id, check=False)
    assert r.returncode != 0
    assert srv.openstack_json("image", "show", image_id)["status"] == "active"  # type: ignore[index]
    # the instance goes while its snapshots' clones live: its disk is kept as .deleted
    srv.openstack("server", "delete", "--wait", sid)
    engine = _blocks(srv)
    assert engine.exists("vms", f"{sid}_disk.deleted")
    srv.openstack("server", "delete", "--wait", child)
    srv.openstack("image", "delete", image_id, cold_id)
    assert not engine.exists("vms", f"{sid}_disk.deleted")
    assert not engine.exists("images", image_id) and not engine.exists("images", cold_id)


def test_volume_backed_running(compute_server: Server, nova: Nova,
                               driver: QemuDriver) -> None:
    srv = compute_server
    sid = boot_ready(srv, "--image", "strato-guest", "--boot-from-volume", "1")
    body = nova.server(sid)
    assert body["image"] == ""
    vol_id = body["os-extended-volumes:volumes_attached"][0]["id"]
    data = srv.openstack_json("volume", "create", "--size", "1", _name("data"))
    wait_volume(nova, data["id"], "available")  # type: ignore[index]
    srv.openstack("server", "add", "volume", sid, data["id"])  # type: ignore[index]
    wait_volume(nova, data["id"], "in-use")  # type: ignore[index]
    _sh(driver, sid, "echo one > /mnt/root/marker-before")

    name = _name("bfv")
    snap = srv.openstack_json("server", "image", "create", "--wait", "--name", name, sid)
    image_id = str(snap["id"])  # type: ignore[index]
    _sh(driver, sid, "echo two > /mnt/root/marker-after; sync")
    image = srv.openstack_json("image", "show", image_id)
    assert image["status"] == "active" and image["size"] == 0  # type: ignore[index]
    assert image.get("disk_format") is None  # type: ignore[union-attr]
    props = image["properties"]  # type: ignore[index]
    assert props["bdm_v2"] == "True" and props["root_device_name"] == "/dev/vda"
    assert props["strato_quiesced"] == "true" and "image_id" not in props
    assert props["kernel_id"]  # from the image the boot volume was made from
    mapping = json.loads(props["block_device_mapping"])
    assert [(x["device_name"], x["boot_index"]) for x in mapping] == [
        ("/dev/vda", 0), ("/dev/vdb", None)]  # both volumes, one QMP transaction
    m = mapping[0]
    assert m["source_type"] == "snapshot" and m["destination_type"] == "volume"
    assert m["boot_index"] == 0 and m["device_name"] == "/dev/vda" and m["volume_size"] == 1
    vsnap = srv.openstack_json("volume", "snapshot", "show", m["snapshot_id"])
    assert vsnap["name"] == f"snapshot for {name}"  # type: ignore[index]
    assert vsnap["status"] == "available" and vsnap["volume_id"] == vol_id  # type: ignore[index]

    # a volume from that image is a volume from its boot snapshot (as Cinder makes one)
    from_image = srv.openstack_json("volume", "create", "--image", image_id, "--size", "1",
                                    _name("fromimg"))
    wait_volume(nova, from_image["id"], "available")  # type: ignore[index]
    made = srv.openstack_json("volume", "show", from_image["id"])  # type: ignore[index]
    assert made["snapshot_id"] == m["snapshot_id"] and made["bootable"] in (True, "true")
    srv.openstack("volume", "delete", from_image["id"])  # type: ignore[index]

    child = boot_ready(srv, "--image", image_id)
    seen = _markers(driver, child)
    assert "marker-before" in seen and "marker-after" not in seen
    child_vols = [v["id"] for v in nova.server(child)["os-extended-volumes:volumes_attached"]]
    assert sorted(srv.openstack_json("volume", "show", v)[  # type: ignore[index]
        "snapshot_id"] for v in child_vols) == sorted(x["snapshot_id"] for x in mapping)

    # a forced snapshot of the running guest's volume: taken by its QEMU (assisted)
    forced = srv.openstack_json("volume", "snapshot", "create", "--force", "--volume",
                                vol_id, _name("forced"))
    deadline = time.monotonic() + 30
    while srv.openstack_json("volume", "snapshot", "show", forced["id"])[  # type: ignore[index]
            "status"] != "available":
        assert time.monotonic() < deadline
        time.sleep(0.3)

    # stopped: nothing to freeze
    srv.openstack("server", "stop", sid)
    nova.wait(sid, "SHUTOFF")
    cold = srv.openstack_json("server", "image", "create", "--wait", "--name", _name("cold"),
                              sid)
    cold_img = srv.openstack_json("image", "show", cold["id"])  # type: ignore[index]
    assert cold_img["properties"]["strato_quiesced"] == "false"  # type: ignore[index]
    cold_map = json.loads(cold_img["properties"]["block_device_mapping"])  # type: ignore[index]

    for s in (child, sid):
        srv.openstack("server", "delete", "--wait", s)
    for v in child_vols:  # kept, as the original's mapping says
        wait_volume(nova, v, "available")
        srv.openstack("volume", "delete", v)
        wait_volume(nova, v, "gone")
    srv.openstack("image", "delete", image_id, cold["id"])  # type: ignore[index]
    snaps = [x["snapshot_id"] for x in mapping + cold_map] + [forced["id"]]  # type: ignore[index]
    srv.openstack("volume", "snapshot", "delete", *snaps)
    for v in (vol_id, data["id"]):  # type: ignore[index]
        wait_volume(nova, v, "available")
