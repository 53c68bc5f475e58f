"""Compute microversions 2.80-2.92 where strato has the resource: 2.83 list filters for
every user, 2.84 action event ``details``, 2.85 PUT of a volume attachment, 2.89 its
view, 2.90 ``hostname``.
(2.92 is os-keypairs: tests/compute/test_keypairs.py.)"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.compute.conftest import Nova, wait_volume
from tests.compute.test_api import _huge_flavor
from tests.support import Server
from tests.tenants import Tenant, make_tenant

ATTACHMENT_V289 = {"serverId", "volumeId", "device", "tag", "delete_on_termination",
                   "attachment_id", "bdm_uuid"}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Member:
    def __init__(self, t: Tenant) -> None:
        self.t = t
        self.c = t.server.client(t.token())

    def req(self, method: str, path: str, version: str, **kw: object) -> httpx.Response:
        return self.c.request(method, f"/compute/v2.1{path}", headers={
            "OpenStack-API-Version": f"compute {version}"}, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def member(compute_server: Server) -> Member:
    return Member(make_tenant(compute_server, "mv"))


def _error_server(m: Member, nova: Nova, srv: Server, version: str = "2.92",
                  **extra: object) -> str:
    """A server no host can take (huge flavor): ERROR at once, no guest."""
    image = srv.openstack_json("image", "show", "strato-guest")["id"]  # type: ignore[index]
    r = m.req("POST", "/servers", version, json={"server": {
        "name": _name("mv"), "flavorRef": _huge_flavor(nova), "imageRef": image,
        "networks": "none", **extra}})
    assert r.status_code == 202, r.text
    return str(r.json()["server"]["id"])


def test_v290_hostname(compute_server: Server, nova: Nova, member: Member) -> None:
    sid = _error_server(member, nova, compute_server, hostname="my-host-1")
    shown = member.req("GET", f"/servers/{sid}", "2.90").json()["server"]
    assert shown["OS-EXT-SRV-ATTR:hostname"] == "my-host-1"
    # a member sees the hostname and none of the other admin attributes
    assert [k for k in shown if k.startswith("OS-EXT-SRV-ATTR:")] == [
        "OS-EXT-SRV-ATTR:hostname"]
    assert "OS-EXT-SRV-ATTR:hostname" not in member.req(
        "GET", f"/servers/{sid}", "2.89").json()["server"]
    listed = member.req("GET", "/servers/detail", "2.90").json()["servers"]
    assert next(s for s in listed if s["id"] == sid)["OS-EXT-SRV-ATTR:hostname"] == \
        "my-host-1"
    assert nova.server(sid, "2.3")["OS-EXT-SRV-ATTR:hostname"] == "my-host-1"  # admin

    r = member.req("PUT", f"/servers/{sid}", "2.90", json={"server": {"hostname": "new-1"}})
    assert r.status_code == 200, r.text
    assert r.json()["server"]["OS-EXT-SRV-ATTR:hostname"] == "new-1"
    r = member.req("PUT", f"/servers/{sid}", "2.89", json={"server": {"hostname": "n2"}})
    assert r.status_code == 400 and "hostname" in r.text
    for bad in ("-lead", "trail-", "a", "x" * 64, "under_score", "dot.ted", 5):
        r = member.req("PUT", f"/servers/{sid}", "2.90", json={"server": {"hostname": bad}})
        assert r.status_code == 400, bad
    image = compute_server.openstack_json("image", "show", "strato-guest")["id"]  # type: ignore
    r = member.req("POST", "/servers", "2.89", json={"server": {
        "name": _name("mv"), "flavorRef": "1", "imageRef": image, "networks": "none",
        "hostname": "too-early"}})
    assert r.status_code == 400 and "hostname" in r.text
    # 2.90 filters on it (a regular expression, as Nova); before, the filter is ignored
    def listed_ids(version: str, pattern: str) -> set[str]:
        return {s["id"] for s in member.req("GET", "/servers", version, params={
            "hostname": pattern}).json()["servers"]}

    assert sid in listed_ids("2.90", "^new-") and sid not in listed_ids("2.90", "^zzz")
    assert sid in listed_ids("2.89", "^zzz")
    # without one, the hostname is made from the name
    other = _error_server(member, nova, compute_server)
    made = member.req("GET", f"/servers/{other}", "2.90").json()["server"]
    assert made["OS-EXT-SRV-ATTR:hostname"] == made["name"]
    for s in (sid, other):
        assert member.req("DELETE", f"/servers/{s}", "2.90").status_code == 204


def test_v283_filters_for_members(compute_server: Server, nova: Nova, member: Member) -> None:
    sid = _error_server(member, nova, compute_server)
    mine = member.t.user_id
    other = uuid.uuid4().hex

    def ids(version: str, **params: str) -> set[str]:
        r = member.req("GET", "/servers", version, params=params)
        assert r.status_code == 200, r.text
        return {s["id"] for s in r.json()["servers"]}

    assert sid in ids("2.82", user_id=other)  # ignored before 2.83
    assert sid not in ids("2.83", user_id=other)
    assert sid in ids("2.83", user_id=mine)
    assert sid in ids("2.83", vm_state="error") and sid not in ids("2.83", vm_state="active")
    assert sid in ids("2.83", availability_zone="^nov") and sid not in ids(
        "2.83", availability_zone="^elsewhere$")
    assert sid not in ids("2.83", key_name="no-such-key")
    assert sid in ids("2.82", key_name="no-such-key")
    assert member.req("GET", "/servers", "2.83",
                      params={"power_state": "x"}).status_code == 400
    assert member.req("DELETE", f"/servers/{sid}", "2.83").status_code == 204


def test_v284_event_details_and_v289_attachments(compute_server: Server, nova: Nova) -> None:
    srv = compute_server
    # a build that fails on the host: its root volume is over the gigabytes quota
    t = make_tenant(srv, "mvq")
    srv.openstack("quota", "set", "--gigabytes", "0", t.project)
    m = Member(t)
    image = srv.openstack_json("image", "show", "strato-guest")["id"]  # type: ignore[index]
    r = m.req("POST", "/servers", "2.84", json={"server": {
        "name": _name("mvq"), "flavorRef": "1", "networks": "none",
        "block_device_mapping_v2": [{"boot_index": 0, "uuid": image, "source_type": "image",
                                     "destination_type": "volume", "volume_size": 1,
                                     "delete_on_termination": True}]}})
    assert r.status_code == 202, r.text
    sid = r.json()["server"]["id"]
    fault = nova.wait(sid, "ERROR")["fault"]
    rid = nova.req("GET", f"/servers/{sid}/os-instance-actions").json()[
        "instanceActions"][0]["request_id"]
    path = f"/servers/{sid}/os-instance-actions/{rid}"
    event = nova.req("GET", path, "2.84").json()["instanceAction"]["events"][0]
    assert event["result"] == "Error" and event["details"] == fault["message"]
    assert "details" not in nova.req("GET", path, "2.83").json()["instanceAction"]["events"][0]
    # a member sees the events (2.51) but not their details
    assert "details" not in m.req("GET", path, "2.84").json()["instanceAction"]["events"][0]
    nova.req("DELETE", f"/servers/{sid}")

    # 2.89: attachment_id and bdm_uuid, no id
    sid = srv.openstack_json("server", "create", "--image", "strato-guest", "--flavor",
                             "m1.tiny", "--nic", "none", "--wait", _name("att"))["id"]  # type: ignore
    vol = srv.openstack_json("volume", "create", "--size", "1", _name("att"))["id"]  # type: ignore
    try:
        wait_volume(nova, vol, "available")
        srv.openstack("server", "add", "volume", sid, vol)
        cinder = wait_volume(nova, vol, "in-use")
        old = nova.req("GET", f"/servers/{sid}/os-volume_attachments", "2.88").json()[
            "volumeAttachments"][0]
        assert old["id"] == vol and "attachment_id" not in old and "bdm_uuid" not in old
        for got in (nova.req("GET", f"/servers/{sid}/os-volume_attachments", "2.89").json()[
                "volumeAttachments"][0], nova.req(
                "GET", f"/servers/{sid}/os-volume_attachments/{vol}", "2.89").json()[
                "volumeAttachment"]):
            assert set(got) == ATTACHMENT_V289
            assert got["attachment_id"] == cinder["attachments"][0]["attachment_id"]
            assert str(uuid.UUID(got["bdm_uuid"])) == got["bdm_uuid"]
        # 2.85: PUT changes delete_on_termination; the other fields only echo
        att = f"/servers/{sid}/os-volume_attachments/{vol}"
        put = {"volumeAttachment": {"volumeId": vol, "delete_on_termination": True,
                                    "device": got["device"], "serverId": sid}}
        assert nova.req("PUT", att, "2.85", json=put).status_code == 202
        assert nova.req("GET", att, "2.85").json()["volumeAttachment"][
            "delete_on_termination"] is True
        assert nova.server(sid)["os-extended-volumes:volumes_attached"] == [
            {"id": vol, "delete_on_termination": True}]
        r = nova.req("PUT", att, "2.85", json={"volumeAttachment": {
            "volumeId": vol, "device": "/dev/vdz"}})
        assert r.status_code == 400 and "device property is not mutable" in r.text
        r = nova.req("PUT", att, "2.85", json={"volumeAttachment": {
            "volumeId": vol, "delete_on_termination": "maybe"}})
        assert r.status_code == 400
        # a different volume, or any PUT before 2.85, is a swap: refused, nothing changed
        for version, body in (("2.84", {"volumeId": vol}),
                              ("2.85", {"volumeId": str(uuid.uuid4())})):
            r = nova.req("PUT", att, version, json={"volumeAttachment": body})
            assert r.status_code == 400 and "not supported" in r.text
        stranger = str(uuid.uuid4())
        r = nova.req("PUT", f"/servers/{sid}/os-volume_attachments/{stranger}", "2.85",
                     json={"volumeAttachment": {"volumeId": stranger}})
        assert r.status_code == 404
        nova.req("PUT", att, "2.85", json={"volumeAttachment": {
            "volumeId": vol, "delete_on_termination": False}})
        srv.openstack("server", "remove", "volume", sid, vol)
        wait_volume(nova, vol, "available")
    finally:
        srv.openstack("server", "delete", "--wait", sid)
        srv.openstack("volume", "delete", vol)
