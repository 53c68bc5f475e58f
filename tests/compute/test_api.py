"""Compute API details over HTTP: microversioned views, lists, metadata, flavors, quota."""

from __future__ import annotations

import uuid

from tests.compute.conftest import Nova
from tests.support import Server


def _boot_error(nova: Nova, srv: Server, **extra: object) -> str:
    """A server that never reaches a host (huge flavor): cheap, no guest."""
    r = nova.req("POST", "/servers", json={"server": {
        "name": f"api-{uuid.uuid4().hex[:6]}", "flavorRef": _huge_flavor(nova),
        "imageRef": srv.openstack_json("image", "show", "strato-guest")["id"],  # type: ignore[index]
        "networks": "none", **extra}})
    assert r.status_code == 202, r.text
    return str(r.json()["server"]["id"])


def _huge_flavor(nova: Nova) -> str:
    r = nova.req("GET", "/flavors/huge-api")
    if r.status_code == 404:
        r = nova.req("POST", "/flavors", json={"flavor": {
            "name": "huge-api", "id": "huge-api", "ram": 10 ** 8, "vcpus": 1, "disk": 1}})
        assert r.status_code == 200, r.text
    return "huge-api"


def test_discovery_and_unknown_ids(compute_server: Server, nova: Nova) -> None:
    doc = compute_server.client().get("/compute/v2.1").json()["version"]
    assert doc["version"] == "2.92" and doc["min_version"] == "2.1"
    r = nova.req("GET", "/servers/strato-no-such")
    assert r.status_code == 404 and "itemNotFound" in r.json()
    assert r.headers["OpenStack-API-Version"] == "compute 2.79"
    assert nova.req("GET", "/flavors/m1.tiny").status_code == 404


def test_views_follow_the_microversion(compute_server: Server, nova: Nova) -> None:
    sid = _boot_error(nova, compute_server, description="d1")
    old = nova.server(sid, "2.1")
    for later in ("locked", "description", "tags", "host_status", "locked_reason",
                  "server_groups"):
        assert later not in old
    assert set(old["flavor"]) == {"id", "links"}
    assert old["fault"]["code"] == 500
    assert nova.server(sid, "2.9")["locked"] is False
    assert "description" not in nova.server(sid, "2.18")
    mid = nova.server(sid, "2.47")
    assert mid["flavor"]["original_name"] == "huge-api" and "id" not in mid["flavor"]
    assert "tags" in mid and "locked_reason" not in mid
    new = nova.server(sid, "2.79")
    assert new["description"] == "d1" and new["locked_reason"] is None
    assert new["host_status"] == "" and new["OS-EXT-SRV-ATTR:hostname"]
    assert "delete_on_termination" not in str(nova.req(
        "GET", f"/servers/{sid}", "2.1").json())
    r = nova.req("POST", "/servers", "2.1", json={"server": {
        "name": "x", "flavorRef": "1", "imageRef": "x", "networks": "none"}})
    assert r.status_code == 400  # 'none' needs 2.37
    nova.req("DELETE", f"/servers/{sid}")
    nova.wait(sid, "gone")


def test_list_filters_limit_marker_metadata(compute_server: Server, nova: Nova) -> None:
    ids = [_boot_error(nova, compute_server, metadata={"k": str(i)}) for i in range(3)]
    listed = nova.req("GET", "/servers/detail?status=ERROR").json()["servers"]
    assert set(ids) <= {s["id"] for s in listed}
    page = nova.req("GET", "/servers?limit=2").json()
    assert len(page["servers"]) == 2 and "servers_links" in page
    marker = page["servers"][-1]["id"]
    rest = nova.req("GET", f"/servers?marker={marker}").json()["servers"]
    assert marker not in {s["id"] for s in rest}
    assert nova.req("GET", "/servers?marker=nope").status_code == 400
    one = nova.req("GET", f"/servers/detail?name=^{nova.server(ids[0])['name']}$").json()
    assert [s["id"] for s in one["servers"]] == [ids[0]]
    assert nova.req("GET", "/servers?status=ACTIVE&name=^nothing$").json()["servers"] == []

    sid = ids[0]
    r = nova.req("POST", f"/servers/{sid}/metadata", json={"metadata": {"a": "1"}})
    assert r.json()["metadata"] == {"k": "0", "a": "1"}
    r = nova.req("PUT", f"/servers/{sid}/metadata/b", json={"meta": {"b": "2"}})
    assert r.json() == {"meta": {"b": "2"}}
    assert nova.req("GET", f"/servers/{sid}/metadata/b").json() == {"meta": {"b": "2"}}
    assert nova.req("DELETE", f"/servers/{sid}/metadata/a").status_code == 204
    r = nova.req("PUT", f"/servers/{sid}/metadata", json={"metadata": {"z": "9"}})
    assert nova.req("GET", f"/servers/{sid}/metadata").json() == {"metadata": {"z": "9"}}
    r = nova.req("PUT", f"/servers/{sid}", json={"server": {"name": "renamed",
                                                             "description": "x"}})
    assert r.status_code == 200 and r.json()["server"]["name"] == "renamed"
    for i in ids:
        nova.req("DELETE", f"/servers/{i}")
    for i in ids:
        nova.wait(i, "gone")


def test_flavors_and_extra_specs(compute_server: Server, nova: Nova) -> None:
    names = {f["Name"] for f in compute_server.openstack_json("flavor", "list")}  # type: ignore[union-attr]
    assert {"m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"} <= names
    r = nova.req("GET", "/flavors/detail?is_public=None", "2.61")
    tiny = next(f for f in r.json()["flavors"] if f["name"] == "m1.tiny")
    assert tiny["extra_specs"] == {} and tiny["ram"] == 512
    assert "extra_specs" not in nova.req("GET", "/flavors/1", "2.60").json()["flavor"]
    r = nova.req("POST", "/flavors/1/os-extra_specs", json={"extra_specs": {"a": "b"}})
    assert r.json() == {"extra_specs": {"a": "b"}}
    assert nova.req("GET", "/flavors/1/os-extra_specs/a").json() == {"a": "b"}
    assert nova.req("DELETE", "/flavors/1/os-extra_specs/a").status_code == 200
    assert nova.req("GET", "/flavors/1/os-extra_specs").json() == {"extra_specs": {}}
    member = compute_server.client(compute_server.token())
    assert member.get("/compute/v2.1/flavors/1").status_code == 200


def test_quota_refuses_with_403(compute_server: Server, nova: Nova) -> None:
    pid = nova.project_id
    before = nova.req("GET", f"/os-quota-sets/{pid}").json()["quota_set"]["instances"]
    assert nova.req("PUT", f"/os-quota-sets/{pid}", json={
        "quota_set": {"instances": 0}}).status_code == 200
    try:
        r = nova.req("POST", "/servers", json={"server": {
            "name": "over", "flavorRef": "1", "networks": "none",
            "imageRef": compute_server.openstack_json(
                "image", "show", "strato-guest")["id"]}})  # type: ignore[index]
        assert r.status_code == 403 and "Quota exceeded" in r.text
    finally:
        nova.req("PUT", f"/os-quota-sets/{pid}", json={"quota_set": {"instances": before}})


def test_failed_build_is_error_and_leaves_nothing(compute_server: Server, nova: Nova,
                                                  tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An image whose kernel_id names no image passes the API but cannot be built
    on the host: ERROR with a fault, the root clone removed, the quota given back."""
    from strato.storage import open_engine

    srv = compute_server
    raw = tmp_path / "plain.raw"
    raw.write_bytes(b"\0" * (1 << 20))
    missing = str(uuid.uuid4())
    image = srv.openstack_json("image", "create", "--file", str(raw), "--disk-format",
                               "raw", "--container-format", "bare", "--property",
                               f"kernel_id={missing}", "no-kernel")
    before = nova.req("GET", f"/os-quota-sets/{nova.project_id}/detail").json()
    r = nova.req("POST", "/servers", json={"server": {
        "name": "kernelless", "flavorRef": "1", "networks": "auto",
        "imageRef": image["id"]}})  # type: ignore[index]
    assert r.status_code == 202, r.text
    sid = r.json()["server"]["id"]
    body = nova.wait(sid, "ERROR")
    assert missing in body["fault"]["message"] and body["addresses"] == {}
    blocks = open_engine("local", root=srv.state / "blocks", repair=False)
    assert not blocks.exists("vms", f"{sid}_disk")
    after = nova.req("GET", f"/os-quota-sets/{nova.project_id}/detail").json()
    assert after["quota_set"]["instances"] == before["quota_set"]["instances"]
    events = nova.req("GET", f"/servers/{sid}/os-instance-actions").json()
    rid = events["instanceActions"][0]["request_id"]
    shown = nova.req("GET", f"/servers/{sid}/os-instance-actions/{rid}").json()
    assert shown["instanceAction"]["events"][0]["result"] == "Error"
    nova.req("DELETE", f"/servers/{sid}")
    nova.wait(sid, "gone")
    srv.openstack("image", "delete", image["id"])  # type: ignore[index]


def test_create_image_refuses_bad_input_and_states(compute_server: Server, nova: Nova) -> None:
    sid = _boot_error(nova, compute_server)  # ERROR: not a state createImage accepts
    images_before = compute_server.openstack_json("image", "list")

    def create(body: object, version: str = "2.79") -> object:
        return nova.req("POST", f"/servers/{sid}/action", version,
                        json={"createImage": body})

    for bad in ({"name": ""}, {"name": "   "}, {"name": "x" * 256}, {},
                {"name": "ok", "metadata": {"k": 1}}, {"name": "ok", "metadata": []},
                {"name": "ok", "bogus": 1}, "name"):
        r = create(bad)
        assert r.status_code == 400 and "badRequest" in r.json(), (bad, r.text)  # type: ignore[attr-defined]
    r = create({"name": "ok", "metadata": {f"k{i}": "v" for i in range(129)}})
    assert r.status_code == 403, r.text  # type: ignore[attr-defined]
    r = create({"name": "ok"})
    assert r.status_code == 409, r.text  # type: ignore[attr-defined]
    assert "vm_state error" in r.json()["conflictingRequest"]["message"]  # type: ignore[attr-defined]
    assert nova.req("POST", "/servers/strato-no-such/action",
                    json={"createImage": {"name": "x"}}).status_code == 404
    # a refused createImage leaves no image behind
    assert compute_server.openstack_json("image", "list") == images_before
    nova.req("DELETE", f"/servers/{sid}")
