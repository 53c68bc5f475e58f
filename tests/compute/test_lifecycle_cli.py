"""A guest's whole life through the real `openstack` client, checked inside the guest."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from strato.storage import open_engine
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, wait_console, wait_guest_serial, wait_volume
from tests.support import Server


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _blocks(server: Server):  # type: ignore[no-untyped-def]
    return open_engine("local", root=server.state / "blocks", repair=False)


def _status(server: Server, name: str) -> dict:
    return server.openstack_json("server", "show", name)  # type: ignore[return-value]


def test_boot_from_image_and_every_power_action(compute_server: Server, nova: Nova,
                                                driver: QemuDriver) -> None:
    srv = compute_server
    name = _name("img")
    created = srv.openstack_json("server", "create", "--image", "strato-guest", "--flavor",
                                 "m1.tiny", "--nic", "auto", "--wait", name)
    assert created["status"] == "ACTIVE"  # type: ignore[index]
    sid = created["id"]  # type: ignore[index]
    body = nova.server(sid)
    assert body["addresses"]["private"][0]["addr"] == "169.254.169.15"
    assert body["OS-EXT-STS:power_state"] == 1 and body["image"]["id"]
    wait_console(driver, sid, "STRATO-GUEST-READY bootcount=1")
    # the root disk is a copy-on-write clone of the image, grown to the flavor's 1 GiB
    with _blocks(srv).open("vms", f"{sid}_disk", read_only=True) as disk:
        assert disk.parent_info() == ("images", body["image"]["id"], "snap")
        assert disk.size() == 1 << 30
    log = srv.openstack("console", "log", "show", name).stdout
    assert "STRATO-GUEST-READY bootcount=1" in log

    srv.openstack("server", "stop", name)
    nova.wait(sid, "SHUTOFF", **{"OS-EXT-STS:power_state": 4})
    assert driver.pid(sid) is None
    r = nova.action(sid, {"os-stop": None}, expect=409)
    assert "conflictingRequest" in r.json()
    srv.openstack("server", "start", name)
    nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})
    wait_console(driver, sid, "STRATO-GUEST-READY bootcount=2")  # the disk's counter

    srv.openstack("server", "pause", name)
    nova.wait(sid, "PAUSED", **{"OS-EXT-STS:power_state": 3})
    nova.action(sid, {"pause": None}, expect=409)
    nova.action(sid, {"suspend": None}, expect=409)
    srv.openstack("server", "unpause", name)
    nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})

    srv.openstack("server", "suspend", name)
    nova.wait(sid, "SUSPENDED", **{"OS-EXT-STS:power_state": 7})
    assert driver.pid(sid) is None
    nova.action(sid, {"os-start": None}, expect=409)
    srv.openstack("server", "resume", name)
    nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})
    with driver.agent(sid) as ga:  # resumed where it was: same boot, agent answers
        assert ga.sh("cat /mnt/root/bootcount").stdout.decode().strip() == "2"

    srv.openstack("server", "reboot", name)
    nova.wait(sid, "ACTIVE")
    wait_console(driver, sid, "STRATO-GUEST-READY bootcount=3")
    srv.openstack("server", "reboot", "--hard", name)
    nova.wait(sid, "ACTIVE")
    wait_console(driver, sid, "STRATO-GUEST-READY bootcount=4")
    # two stops at once: the conditional state change lets exactly one through
    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(lambda _: nova.req(
            "POST", f"/servers/{sid}/action", json={"os-stop": None}).status_code, (0, 1)))
    assert codes == [202, 409]
    nova.wait(sid, "SHUTOFF")
    srv.openstack("server", "start", name)
    nova.wait(sid, "ACTIVE")
    wait_console(driver, sid, "STRATO-GUEST-READY bootcount=5")

    # hot-plug a volume over QMP; the guest sees it with the volume's serial
    vol = srv.openstack_json("volume", "create", "--size", "1", _name("data"))
    wait_volume(nova, vol["id"], "available")  # type: ignore[index]
    srv.openstack("server", "add", "volume", name, vol["id"])  # type: ignore[index]
    wait_volume(nova, vol["id"], "in-use")  # type: ignore[index]
    wait_guest_serial(driver, sid, vol["id"][:20])  # type: ignore[index]
    atts = nova.req("GET", f"/servers/{sid}/os-volume_attachments").json()
    assert atts["volumeAttachments"][0]["device"] == "/dev/vdb"
    srv.openstack("server", "remove", "volume", name, vol["id"])  # type: ignore[index]
    wait_volume(nova, vol["id"], "available")  # type: ignore[index]
    wait_guest_serial(driver, sid, vol["id"][:20], present=False)  # type: ignore[index]

    actions = [a["action"] for a in nova.req(
        "GET", f"/servers/{sid}/os-instance-actions").json()["instanceActions"]]
    for expected in ("create", "stop", "start", "pause", "unpause", "suspend", "resume",
                     "reboot", "attach_volume", "detach_volume"):
        assert expected in actions
    create = nova.req("GET", f"/servers/{sid}/os-instance-actions").json()[
        "instanceActions"][-1]
    shown = nova.req("GET", f"/servers/{sid}/os-instance-actions/{create['request_id']}")
    assert shown.json()["instanceAction"]["events"][0]["result"] == "Success"

    srv.openstack("server", "delete", "--wait", name)
    assert nova.req("GET", f"/servers/{sid}").status_code == 404
    assert not _blocks(srv).exists("vms", f"{sid}_disk")
    assert not (srv.state / "instances" / sid).exists()
    srv.openstack("volume", "delete", vol["id"])  # type: ignore[index]


def test_boot_from_volume_all_four_sources(compute_server: Server, nova: Nova,
                                           driver: QemuDriver) -> None:
    """image, volume and snapshot as the boot volume; blank as a second disk."""
    srv = compute_server
    image_id = srv.openstack_json("image", "show", "strato-guest")["id"]  # type: ignore[index]
    # source volume (kept: delete_on_termination false) and a snapshot to boot from
    src = srv.openstack_json("volume", "create", "--size", "1", "--image", "strato-guest",
                             _name("src"))
    wait_volume(nova, src["id"], "available")  # type: ignore[index]
    base = srv.openstack_json("volume", "create", "--size", "1", "--image", "strato-guest",
                              _name("base"))
    wait_volume(nova, base["id"], "available")  # type: ignore[index]
    snap = srv.openstack_json("volume", "snapshot", "create", "--volume",
                              base["id"], _name("snap"))  # type: ignore[index]

    a = _name("bfv-img")
    srv.openstack("server", "create", "--image", "strato-guest", "--flavor", "m1.tiny",
                  "--boot-from-volume", "1", "--block-device",
                  "source_type=blank,destination_type=volume,volume_size=1,"
                  "delete_on_termination=true", "--nic", "none", a)
    b = _name("bfv-vol")
    srv.openstack("server", "create", "--volume", src["id"], "--flavor",  # type: ignore[index]
                  "m1.tiny", "--nic", "none", b)
    for _ in range(300):
        s = nova.c.get(f"/volume/v3/{nova.project_id}/snapshots/{snap['id']}")  # type: ignore[index]
        if s.json()["snapshot"]["status"] == "available":
            break
        time.sleep(0.2)
    r = nova.req("POST", "/servers", json={"server": {
        "name": _name("bfv-snap"), "flavorRef": "1", "imageRef": "", "networks": "none",
        "block_device_mapping_v2": [{
            "uuid": snap["id"], "source_type": "snapshot",  # type: ignore[index]
            "destination_type": "volume", "boot_index": "0", "volume_size": "1",
            "delete_on_termination": "true"}]}})
    assert r.status_code == 202, r.text
    c_id = r.json()["server"]["id"]
    ids = {_status(srv, a)["id"]: "a", _status(srv, b)["id"]: "b", c_id: "c"}
    bodies = {}
    for sid in ids:
        bodies[sid] = nova.wait(sid, "ACTIVE")
        assert bodies[sid]["image"] == ""
        wait_console(driver, sid, "STRATO-GUEST-READY bootcount=")
    a_id = next(k for k, v in ids.items() if v == "a")
    a_vols = bodies[a_id]["os-extended-volumes:volumes_attached"]
    assert len(a_vols) == 2
    with driver.agent(a_id) as ga:
        assert len(ga.sh("ls -d /sys/block/vd*").stdout.split()) == 2
        # --nic none: the guest has no NIC at all (as Nova gives it), so no address
        assert [n for n in ga.sh("ls /sys/class/net").stdout.split() if n != b"lo"] == []
    assert b"-netdev" not in Path(f"/proc/{driver.pid(a_id)}/cmdline").read_bytes()
    assert bodies[a_id]["addresses"] == {}
    for sid in ids:
        nova.req("DELETE", f"/servers/{sid}")
    for sid in ids:
        nova.wait(sid, "gone")
    for v in a_vols:  # --boot-from-volume keeps its volume; the blank one goes
        wait_volume(nova, v["id"], "gone" if v["delete_on_termination"] else "available")
    wait_volume(nova, src["id"], "available")  # type: ignore[index]
    for v in bodies[c_id]["os-extended-volumes:volumes_attached"]:
        wait_volume(nova, v["id"], "gone")
    assert image_id


@pytest.mark.parametrize("flavor_ram", [10 ** 7])
def test_no_valid_host_is_error_with_fault(compute_server: Server, nova: Nova,
                                           flavor_ram: int) -> None:
    srv = compute_server
    fname = _name("huge")
    srv.openstack("flavor", "create", "--ram", str(flavor_ram), "--disk", "1", "--vcpus",
                  "1", "--property", "hw:cpu_policy=shared", fname)
    shown = srv.openstack_json("flavor", "show", fname)
    assert shown["properties"] == {"hw:cpu_policy": "shared"}  # type: ignore[index]
    before = nova.req("GET", f"/os-quota-sets/{nova.project_id}/detail").json()
    r = nova.req("POST", "/servers", json={"server": {
        "name": _name("nohost"), "flavorRef": shown["id"],  # type: ignore[index]
        "imageRef": srv.openstack_json("image", "show", "strato-guest")["id"],  # type: ignore[index]
        "networks": "none"}})
    assert r.status_code == 202
    body = nova.server(r.json()["server"]["id"])
    assert body["status"] == "ERROR"
    assert "No valid host" in body["fault"]["message"]
    after = nova.req("GET", f"/os-quota-sets/{nova.project_id}/detail").json()
    assert after["quota_set"]["ram"] == before["quota_set"]["ram"]  # rolled back
    nova.req("DELETE", f"/servers/{body['id']}")
    nova.wait(body["id"], "gone")
    srv.openstack("flavor", "delete", fname)
