"""rescue/unrescue and shelve/shelveOffload/unshelve through the real `openstack`
client, checked inside the guest and in the block store; a server killed in the
middle of an offload converges after restart with nothing orphaned."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from strato.storage import open_engine
from strato.storage.crash import FAULT_FILE_ENV
from strato.virt.qemu import QemuDriver
from tests.api_schemas import assert_shape, strict
from tests.api_schemas import compute_servers as cs
from tests.compute.conftest import Nova, boot_ready, guest_server, wait_console, wait_volume
from tests.support import Server

READY = "STRATO-GUEST-READY bootcount="


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    state = tmp_path_factory.mktemp("rs")
    os.environ[FAULT_FILE_ENV] = str(state / "fault")  # the server inherits it
    try:
        with guest_server(state, {"compute": {"shelved_offload_time": "-1",
                                              "shutdown_timeout": "5"},
                                  "jobs": {"lease_seconds": "3"}}) as server:
            yield server
    finally:
        os.environ.pop(FAULT_FILE_ENV, None)


@pytest.fixture(scope="module")
def guest(srv: Server) -> str:
    """One guest shared by the tests, with a marker file on its root disk."""
    sid = boot_ready(srv, "--image", "strato-guest", prefix="rs")
    _sh(srv, sid, "echo kept-$((6*7)) > /mnt/root/marker && sync")
    return sid


def _drv(srv: Server) -> QemuDriver:
    return QemuDriver(srv.state / "instances")


def _sh(srv: Server, sid: str, script: str) -> str:
    drv = _drv(srv)
    drv.wait_for_agent(sid)
    with drv.agent(sid) as ga:
        r = ga.sh(script, timeout=60)
    assert r.exitcode == 0, (script, r.stdout, r.stderr)
    return r.stdout.decode()


def _pool(srv: Server, pool: str) -> list[str]:
    return open_engine("local", root=srv.state / "blocks", repair=False).list(pool)


def _snaps(srv: Server, sid: str) -> list[str]:
    with open_engine("local", root=srv.state / "blocks", repair=False).open(
            "vms", f"{sid}_disk", read_only=True) as disk:
        return [s.name for s in disk.list_snaps()]


def _boots(srv: Server, sid: str) -> list[str]:
    return [line.split(READY, 1)[1].split()[0] for line in
            _drv(srv).console_output(sid).splitlines() if READY in line]


def _wait_boots(srv: Server, sid: str, n: int, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(boots := _boots(srv, sid)) >= n:
            return boots
        time.sleep(0.2)
    raise AssertionError(f"{n} boots not on the console of {sid}: {_boots(srv, sid)}")


def _image_status(nova: Nova, image_id: str) -> str | None:
    r = nova.c.get(f"/image/v2/images/{image_id}")
    return None if r.status_code == 404 else str(r.json()["status"])


def test_rescue_boots_a_fresh_disk_and_unrescue_the_original(srv: Server, guest: str) -> None:
    nova, sid = Nova(srv, "2.87"), guest
    before = len(_boots(srv, sid))
    r = nova.action(sid, {"unrescue": None}, expect=409)
    assert f"Cannot 'unrescue' instance {sid} while it is in vm_state active" in r.text
    r = nova.action(sid, {"rescue": {"rescue_image_ref": str(uuid.uuid4())}}, expect=400)
    assert "is not supported" in r.text
    srv.openstack("server", "rescue", "--image", "strato-guest", sid)
    body = nova.wait(sid, "RESCUE", **{"OS-EXT-STS:power_state": 1})
    assert body["OS-EXT-STS:vm_state"] == "rescued"
    # booted again, from a fresh clone of the image (its counter starts over) ...
    assert _wait_boots(srv, sid, before + 1)[-1] == "1"
    assert f"{sid}_disk.rescue" in _pool(srv, "vms")
    # ... with the original root disk as the second disk
    _sh(srv, sid, "test ! -e /mnt/root/marker")
    out = _sh(srv, sid, "mkdir -p /mnt/orig && mount -t ext4 /dev/vdb /mnt/orig && "
                        "cat /mnt/orig/marker && umount /mnt/orig")
    assert out.strip() == "kept-42"
    r = nova.action(sid, {"rescue": None}, expect=409)
    assert "while it is in vm_state rescued" in r.text
    r = nova.action(sid, {"os-stop": None}, expect=409)

    srv.openstack("server", "unrescue", sid)
    nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})
    boots = _wait_boots(srv, sid, before + 2)
    assert int(boots[-1]) >= 2  # the original disk's counter goes on
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "kept-42"
    assert f"{sid}_disk.rescue" not in _pool(srv, "vms")  # nothing orphaned
    assert not (_drv(srv).paths(sid).dir / "unrescue.json").exists()
    actions = [a["action"] for a in nova.req(
        "GET", f"/servers/{sid}/os-instance-actions").json()["instanceActions"]]
    assert actions[:2] == ["unrescue", "rescue"]


def _user_token(srv: Server, role: str) -> str:
    """A user with ``role`` in the admin project (it sees the admin's servers)."""
    user, password = f"{role}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    srv.openstack("user", "create", "--domain", "default", "--password", password, user)
    srv.openstack("role", "add", "--project", "admin", "--user", user, role)
    return srv.token(user, password)


def test_roles(srv: Server, guest: str) -> None:
    """Nova's defaults: a reader may not rescue or shelve; shelveOffload and unshelve to
    a host are the admin's."""
    sid = guest
    headers = {"OpenStack-API-Version": "compute 2.91"}
    with srv.client(_user_token(srv, "reader")) as c:
        for body in ({"rescue": None}, {"unrescue": None}, {"shelve": None},
                     {"unshelve": None}):
            r = c.post(f"/compute/v2.1/servers/{sid}/action", json=body, headers=headers)
            assert r.status_code == 403, (body, r.text)
    with srv.client(_user_token(srv, "member")) as c:
        r = c.post(f"/compute/v2.1/servers/{sid}/action", json={"shelveOffload": None},
                   headers=headers)
        assert r.status_code == 403, r.text
        r = c.post(f"/compute/v2.1/servers/{uuid.uuid4()}/action", json={"shelve": None},
                   headers=headers)
        assert r.status_code == 404, r.text  # 404 before 403/409
        r = c.post(f"/compute/v2.1/servers/{sid}/action",
                   json={"unshelve": {"bogus": 1}}, headers=headers)
        assert r.status_code == 400, r.text


@pytest.fixture(scope="module")
def rescue_image(srv: Server) -> Iterator[str]:
    """A copy of the guest image with Nova's stable device rescue properties."""
    name = f"rescue-{uuid.uuid4().hex[:6]}"
    img = srv.openstack_json("image", "show", "strato-guest")
    data = srv.state / "rescue.img"
    srv.openstack("image", "save", "--file", str(data), "strato-guest")
    made = srv.openstack_json(
        "image", "create", "--file", str(data), "--disk-format", "raw", "--container-format",
        "bare", "--property", f"kernel_id={img['properties']['kernel_id']}",  # type: ignore[index]
        "--property", f"ramdisk_id={img['properties']['ramdisk_id']}",  # type: ignore[index]
        "--property", "hw_rescue_device=disk", "--property", "hw_rescue_bus=virtio", name)
    data.unlink()
    yield str(made["id"])  # type: ignore[index]
    srv.openstack("image", "delete", name, check=False)


def test_stable_device_rescue_keeps_the_disks_in_place(srv: Server, guest: str,
                                                       rescue_image: str) -> None:
    """2.87: an image with hw_rescue_device/hw_rescue_bus is added as a new disk, the
    root stays vda."""
    nova, sid = Nova(srv, "2.87"), guest
    before = len(_boots(srv, sid))
    r = nova.action(sid, {"rescue": {"rescue_image_ref": rescue_image}}, expect=200)
    assert_shape(r.json(), strict({"adminPass": {"type": "string"}}))
    # [api] enable_instance_password (Nova's default: on): the password, nothing else
    assert list(r.json()) == ["adminPass"] and isinstance(r.json()["adminPass"], str)
    nova.wait(sid, "RESCUE")
    _wait_boots(srv, sid, before + 1)
    # the guest's vda is still its own root disk; the rescue disk came after it
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "kept-42"
    assert _sh(srv, sid, "test -b /dev/vdb && echo yes").strip() == "yes"
    nova.action(sid, {"unrescue": None})
    nova.wait(sid, "ACTIVE")
    _wait_boots(srv, sid, before + 2)
    assert f"{sid}_disk.rescue" not in _pool(srv, "vms")


def test_volume_backed_rescue_and_shelve(srv: Server, rescue_image: str) -> None:
    """A volume-backed server: rescue only from 2.87 with a stable-rescue image (the
    volume stays vda); shelve offloads at once without an image; unshelve attaches
    the volume again."""
    sid = boot_ready(srv, "--image", "strato-guest", "--boot-from-volume", "1",
                     prefix="bfv")
    nova = Nova(srv, "2.86")
    _sh(srv, sid, "echo bfv > /mnt/root/marker && sync")
    r = nova.action(sid, {"rescue": {"rescue_image_ref": rescue_image}}, expect=400)
    assert "Cannot rescue a volume-backed instance" in r.text
    nova = Nova(srv, "2.87")
    r = nova.action(sid, {"rescue": None}, expect=400)  # its image has no rescue device
    before = len(_boots(srv, sid))
    nova.action(sid, {"rescue": {"rescue_image_ref": rescue_image}}, expect=200)
    nova.wait(sid, "RESCUE")
    _wait_boots(srv, sid, before + 1)
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "bfv"
    nova.action(sid, {"unrescue": None})
    nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})
    _wait_boots(srv, sid, before + 2)

    images = {i["id"] for i in nova.c.get("/image/v2/images").json()["images"]}
    srv.openstack("server", "shelve", "--wait", sid)
    body = nova.wait(sid, "SHELVED_OFFLOADED")
    assert body["OS-EXT-SRV-ATTR:host"] is None and sid not in _drv(srv).list_instances()
    assert {i["id"] for i in nova.c.get("/image/v2/images").json()["images"]} == images
    assert "shelved_image_id" not in _sysmeta(srv, sid)
    volume_id = body["os-extended-volumes:volumes_attached"][0]["id"]
    srv.openstack("server", "unshelve", "--wait", sid)
    nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})
    wait_console(_drv(srv), sid, READY)
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "bfv"
    assert nova.volume(volume_id)["status"] == "in-use"
    srv.openstack("server", "delete", "--wait", sid)


def test_shelve_offload_unshelve_keeps_the_data(srv: Server, guest: str) -> None:
    nova, sid = Nova(srv, "2.91"), guest
    name = nova.server(sid)["name"]
    srv.openstack("server", "shelve", "--wait", sid)
    body = nova.wait(sid, "SHELVED")
    assert _drv(srv).pid(sid) is None
    image_id = _shelved_image(srv, sid)
    image = nova.c.get(f"/image/v2/images/{image_id}").json()
    assert image["name"] == f"{name}-shelved" and image["status"] == "active"
    assert image["image_type"] == "snapshot" and image["instance_uuid"] == sid
    assert body["OS-EXT-SRV-ATTR:host"]
    r = nova.action(sid, {"shelve": None}, expect=409)
    assert "while it is in vm_state shelved" in r.text
    nova.action(sid, {"unshelve": {"availability_zone": "nova"}}, expect=409)

    nova.action(sid, {"shelveOffload": None})
    body = nova.wait(sid, "SHELVED_OFFLOADED")
    assert body["OS-EXT-SRV-ATTR:host"] is None
    assert_shape(body, cs.server((2, 91), admin=True))  # exactly the reference's fields
    assert f"{sid}_disk" not in _pool(srv, "vms") and sid not in _drv(srv).list_instances()
    r = nova.action(sid, {"createImage": {"name": "no"}}, expect=409)
    assert "Cannot 'createImage' instance" in r.text
    nova.action(sid, {"unshelve": {"host": "nowhere"}}, expect=400)
    # 2.20: a volume attaches to an offloaded server (recorded; connected at unshelve)
    vol = srv.openstack_json("volume", "create", "--size", "1", f"v-{uuid.uuid4().hex[:6]}")
    wait_volume(nova, vol["id"], "available")  # type: ignore[index]
    r = nova.req("POST", f"/servers/{sid}/os-volume_attachments",
                 json={"volumeAttachment": {"volumeId": vol["id"]}})  # type: ignore[index]
    assert r.status_code == 200, r.text
    wait_volume(nova, vol["id"], "in-use")  # type: ignore[index]

    srv.openstack("server", "unshelve", "--wait", sid)
    body = nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})
    assert body["OS-EXT-SRV-ATTR:host"]
    wait_console(_drv(srv), sid, READY)
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "kept-42"
    assert _sh(srv, sid, "test -b /dev/vdb && echo yes").strip() == "yes"  # the volume
    assert _image_status(nova, image_id) is None  # the shelved image went
    assert [n for n in _pool(srv, "vms") if sid in n] == [f"{sid}_disk"]
    assert image_id not in " ".join(_pool(srv, "images"))
    assert "shelved_image_id" not in _sysmeta(srv, sid)


def test_shelve_unshelve_without_offload(srv: Server, guest: str) -> None:
    nova, sid = Nova(srv), guest
    nova.action(sid, {"shelve": None})
    nova.wait(sid, "SHELVED")
    image_id = _shelved_image(srv, sid)
    nova.action(sid, {"unshelve": None})
    nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})
    assert _image_status(nova, image_id) is None
    assert not [s for s in _snaps(srv, sid) if s.startswith(image_id)]
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "kept-42"


def test_cli_shelve_offload_in_one_go(srv: Server, guest: str) -> None:
    nova, sid = Nova(srv), guest
    srv.openstack("server", "shelve", "--offload", "--wait", sid)
    assert nova.server(sid)["status"] == "SHELVED_OFFLOADED"
    image_id = _shelved_image(srv, sid)
    srv.openstack("server", "unshelve", "--wait", sid)
    nova.wait(sid, "ACTIVE", **{"OS-EXT-STS:power_state": 1})
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "kept-42"
    assert _image_status(nova, image_id) is None


def _offload_time(srv: Server, value: str) -> None:
    """Restart the server with another ``shelved_offload_time`` (the guest lives on)."""
    srv.stop()
    text = srv.conf.read_text()
    old = next(line for line in text.splitlines() if line.startswith("shelved_offload_time"))
    srv.conf.write_text(text.replace(old, f"shelved_offload_time = {value}"))
    srv.start()


def test_shelved_offload_time_offloads_later(srv: Server, guest: str) -> None:
    _offload_time(srv, "2")
    nova, sid = Nova(srv), guest
    srv.openstack("server", "shelve", "--wait", sid)
    assert nova.server(sid)["status"] in ("SHELVED", "SHELVED_OFFLOADED")
    body = nova.wait(sid, "SHELVED_OFFLOADED", timeout=60)  # nobody asked: the timer
    assert body["OS-EXT-SRV-ATTR:host"] is None
    srv.openstack("server", "unshelve", "--wait", sid)
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "kept-42"


def test_kill_mid_offload_converges_and_delete_leaves_nothing(srv: Server,
                                                             guest: str) -> None:
    """``shelved_offload_time = 0`` (Nova's default): shelve offloads at once; the
    server killed between the image and the disk's removal converges on restart."""
    _offload_time(srv, "0")
    nova, sid = Nova(srv), guest
    # killed with the image's data half made: the job makes it again, nothing doubled
    (srv.state / "fault").write_text("kill shelve:after-disk-snap")
    nova.action(sid, {"shelve": None})
    assert srv.proc is not None and srv.proc.wait(90) == -9
    srv.start()
    nova = Nova(srv)
    nova.wait(sid, "SHELVED_OFFLOADED", timeout=90)
    image_id = _shelved_image(srv, sid)
    assert _image_status(nova, image_id) == "active"
    srv.openstack("server", "unshelve", "--wait", sid)
    assert _sh(srv, sid, "cat /mnt/root/marker").strip() == "kept-42"
    assert _image_status(nova, image_id) is None
    assert [n for n in _pool(srv, "vms") if sid in n] == [f"{sid}_disk"]
    assert not [n for n in _pool(srv, "images") if image_id in n]

    (srv.state / "fault").write_text("kill shelve:before-offload")
    nova.action(sid, {"shelve": None})
    assert srv.proc is not None and srv.proc.wait(90) == -9
    image_id = _shelved_image(srv, sid)
    assert f"{sid}_disk" in _pool(srv, "vms")  # killed after the image, before the disk
    srv.start()
    nova = Nova(srv)
    body = nova.wait(sid, "SHELVED_OFFLOADED", timeout=90)
    assert body["OS-EXT-SRV-ATTR:host"] is None
    assert f"{sid}_disk" not in _pool(srv, "vms") and sid not in _drv(srv).list_running()
    assert _image_status(nova, image_id) == "active"
    # deleting the offloaded server deletes its shelved image: nothing left anywhere
    srv.openstack("server", "delete", "--wait", sid)
    assert _image_status(nova, image_id) is None
    assert not [n for n in _pool(srv, "vms") if sid in n]
    assert not [n for n in _pool(srv, "images") if image_id in n]


def _shelved_image(srv: Server, sid: str) -> str:
    return str(_sysmeta(srv, sid)["shelved_image_id"])


def _sysmeta(srv: Server, sid: str) -> dict:
    from strato.compute.models import Instance
    from strato.config import load
    from strato.db import Database

    db = Database(load(srv.conf).database.connection)
    with db.session(readonly=True) as session:
        return dict(session.get(Instance, sid).system_metadata or {})
