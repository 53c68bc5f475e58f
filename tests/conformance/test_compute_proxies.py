"""Nova's proxy APIs on a real server: images (+ metadata), os-volumes,
os-volumes_boot, os-snapshots and the network proxies, each response checked against
the strict shapes of ``tests/api_schemas/compute_proxies.py``, and their microversion
ceilings (404 from 2.36; image metadata from 2.39)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from strato.config import load
from strato.db import Database
from strato.network.models import FloatingIP, Network
from tests.api_schemas import assert_shape
from tests.api_schemas import compute_proxies as S
from tests.support import Server
from tests.tenants import Tenant, make_tenant

C = "/compute/v2.1"


def mv(version: str) -> dict[str, str]:
    return {"OpenStack-API-Version": f"compute {version}"}


@pytest.fixture(scope="module")
def admin(server: Server, admin_token: str) -> Iterator[httpx.Client]:
    with server.client(admin_token) as client:
        yield client


@pytest.fixture(scope="module")
def member(server: Server) -> Tenant:
    return make_tenant(server, "proxy")


@pytest.fixture(scope="module")
def member_client(server: Server, member: Tenant) -> Iterator[httpx.Client]:
    with server.client(member.token()) as client:
        yield client


def _image(client: httpx.Client, **extra: str) -> str:
    r = client.post("/image/v2/images", json={
        "name": f"proxy-{uuid.uuid4().hex[:8]}", "disk_format": "raw",
        "container_format": "bare", "visibility": "private", **extra})
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    r = client.put(f"/image/v2/images/{image_id}/file", content=b"*" * 1024,
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    return image_id


def _wait(client: httpx.Client, path: str, key: str, until: str = "available") -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.get(path).json()[key]
        if body["status"] not in ("creating", "downloading"):
            assert body["status"] == until, body
            return body
        time.sleep(0.3)
    raise AssertionError(f"{path} still creating after 60 s")


# ---------------------------------------------------------------- images
def test_images_list_show_and_filters(admin: httpx.Client) -> None:
    snap = _image(admin, instance_uuid=str(uuid.uuid4()), image_type="snapshot",
                  auto_disk_config="true")
    plain = _image(admin, os_distro="cirros")
    listing = admin.get(f"{C}/images")
    assert listing.status_code == 200
    assert_shape(listing.json(), S.IMAGES)
    assert {snap, plain} <= {i["id"] for i in listing.json()["images"]}

    detail = admin.get(f"{C}/images/detail").json()
    assert_shape(detail, S.IMAGES_DETAIL)
    shown = admin.get(f"{C}/images/{snap}")
    assert shown.status_code == 200
    assert_shape(shown.json(), S.SHOW_IMAGE)
    image = shown.json()["image"]
    assert image["status"] == "ACTIVE" and image["progress"] == 100
    assert image["OS-EXT-IMG-SIZE:size"] == 1024
    assert image["server"]["id"] == image["metadata"]["instance_uuid"]
    assert image["OS-DCF:diskConfig"] == "AUTO"
    # Glance's base attributes are not metadata; extra properties are
    plain_view = admin.get(f"{C}/images/{plain}").json()["image"]
    assert plain_view["metadata"] == {"os_distro": "cirros"}
    assert "server" not in plain_view and "OS-DCF:diskConfig" not in plain_view

    server_id = image["metadata"]["instance_uuid"]
    by_server = admin.get(f"{C}/images", params={"server": f"http://x/servers/{server_id}"})
    assert [i["id"] for i in by_server.json()["images"]] == [snap]
    by_type = admin.get(f"{C}/images/detail", params={"type": "snapshot"}).json()
    assert [i["id"] for i in by_type["images"]] == [snap]
    by_name = admin.get(f"{C}/images", params={"name": plain_view["name"]}).json()
    assert [i["id"] for i in by_name["images"]] == [plain]
    active = admin.get(f"{C}/images", params={"status": "ACTIVE"}).json()["images"]
    assert {snap, plain} <= {i["id"] for i in active}
    saving = admin.get(f"{C}/images", params={"status": "SAVING"}).json()["images"]
    assert not {snap, plain} & {i["id"] for i in saving}
    since = admin.get(f"{C}/images", params={"changes-since": "2999-01-01T00:00:00Z"})
    assert since.json()["images"] == []
    big = admin.get(f"{C}/images", params={"minDisk": "1"}).json()["images"]
    assert not {snap, plain} & {i["id"] for i in big}
    assert admin.get(f"{C}/images", params={"minRam": "x"}).status_code == 400


def test_images_limit_marker_and_links(admin: httpx.Client) -> None:
    _image(admin)
    _image(admin)
    page = admin.get(f"{C}/images/detail", params={"limit": "1"})
    assert page.status_code == 200
    assert_shape(page.json(), S.IMAGES_DETAIL)
    body = page.json()
    assert len(body["images"]) == 1
    nxt = body["images_links"][0]
    assert nxt["rel"] == "next" and nxt["href"].startswith("http")
    assert f"marker={body['images'][0]['id']}" in nxt["href"]
    second = admin.get(f"{C}/images/detail", params={
        "limit": "1", "marker": body["images"][0]["id"]}).json()["images"]
    assert len(second) == 1 and second[0]["id"] != body["images"][0]["id"]
    bad = admin.get(f"{C}/images", params={"marker": str(uuid.uuid4())})
    assert bad.status_code == 400 and "badRequest" in bad.json()


def test_image_metadata(admin: httpx.Client) -> None:
    image_id = _image(admin)
    path = f"{C}/images/{image_id}/metadata"
    r = admin.put(path, json={"metadata": {"os_version": "value1", "os_distro": "value2"}})
    assert r.status_code == 200
    assert_shape(r.json(), S.IMAGE_METADATA)
    assert r.json() == {"metadata": {"os_version": "value1", "os_distro": "value2"}}
    r = admin.post(path, json={"metadata": {"os_version": "alt1", "architecture": "x"}})
    assert r.status_code == 200
    assert r.json()["metadata"] == {"os_version": "alt1", "os_distro": "value2",
                                    "architecture": "x"}
    listed = admin.get(path)
    assert_shape(listed.json(), S.IMAGE_METADATA)
    assert listed.json()["metadata"] == r.json()["metadata"]
    item = admin.put(f"{path}/os_version", json={"meta": {"os_version": "alt"}})
    assert item.status_code == 200
    assert_shape(item.json(), S.IMAGE_META_ITEM)
    assert item.json() == {"meta": {"os_version": "alt"}}
    got = admin.get(f"{path}/os_version")
    assert_shape(got.json(), S.IMAGE_META_ITEM)
    assert got.json() == {"meta": {"os_version": "alt"}}
    assert admin.delete(f"{path}/os_version").status_code == 204
    assert admin.get(f"{path}/os_version").status_code == 404
    assert admin.delete(f"{path}/os_version").status_code == 404
    assert admin.get(path).json()["metadata"] == {"os_distro": "value2", "architecture": "x"}
    # the body must name the URI's key, once
    assert admin.put(f"{path}/a", json={"meta": {"b": "1"}}).status_code == 400
    assert admin.put(f"{path}/a", json={"meta": {"a": "1", "b": "2"}}).status_code == 400
    assert admin.post(path, json={"metadata": "x"}).status_code == 400
    assert admin.post(path, json={"metadata": {f"k{i}": "v" for i in range(129)}}
                      ).status_code == 403
    # Nova's image metadata proxy lives until 2.38; the image proxy until 2.35
    assert admin.get(path, headers=mv("2.38")).status_code == 200
    gone = admin.get(path, headers=mv("2.39"))
    assert gone.status_code == 404 and "itemNotFound" in gone.json()
    missing = str(uuid.uuid4())
    for method, url, body in (("GET", f"{C}/images/{missing}/metadata", None),
                              ("POST", f"{C}/images/{missing}/metadata",
                               {"metadata": {"a": "b"}}),
                              ("PUT", f"{C}/images/{missing}/metadata",
                               {"metadata": {"a": "b"}}),
                              ("GET", f"{C}/images/{missing}/metadata/a", None),
                              ("PUT", f"{C}/images/{missing}/metadata/a",
                               {"meta": {"a": "b"}}),
                              ("DELETE", f"{C}/images/{missing}/metadata/a", None)):
        r = admin.request(method, url, json=body)
        assert r.status_code == 404, (method, url, r.text)


def test_images_gone_from_2_36_and_delete(admin: httpx.Client) -> None:
    image_id = _image(admin)
    for path in (f"{C}/images", f"{C}/images/detail", f"{C}/images/{image_id}"):
        assert admin.get(path, headers=mv("2.35")).status_code == 200
        r = admin.get(path, headers=mv("2.36"))
        assert r.status_code == 404 and "itemNotFound" in r.json()
    assert admin.delete(f"{C}/images/{image_id}", headers=mv("2.36")).status_code == 404
    assert admin.delete(f"{C}/images/{image_id}").status_code == 204
    assert admin.get(f"{C}/images/{image_id}").status_code == 404
    assert admin.get(f"/image/v2/images/{image_id}").status_code == 404
    for bad in (str(uuid.uuid4()), "-1", "x" * 40):
        r = admin.delete(f"{C}/images/{bad}")
        assert r.status_code == 404 and "itemNotFound" in r.json(), bad


def test_images_follow_glance_visibility(admin: httpx.Client,
                                         member_client: httpx.Client) -> None:
    private = _image(admin)
    assert member_client.get(f"{C}/images/{private}").status_code == 404
    assert private not in {i["id"] for i in member_client.get(
        f"{C}/images").json()["images"]}
    assert member_client.delete(f"{C}/images/{private}").status_code == 404
    assert member_client.put(f"{C}/images/{private}/metadata",
                             json={"metadata": {}}).status_code == 404
    mine = _image(member_client)
    r = member_client.get(f"{C}/images/{mine}")
    assert r.status_code == 200
    assert_shape(r.json(), S.SHOW_IMAGE)


# ---------------------------------------------------------------- volumes, snapshots
@pytest.mark.parametrize("collection", ["os-volumes", "os-volumes_boot"])
def test_volumes_proxy(admin: httpx.Client, collection: str) -> None:
    created = admin.post(f"{C}/{collection}", json={"volume": {
        "size": 1, "display_name": "pv", "display_description": "d",
        "metadata": {"k": "v"}}})
    assert created.status_code == 200, created.text
    assert_shape(created.json(), S.SHOW_VOLUME)
    vol = created.json()["volume"]
    assert created.headers["Location"].endswith(f"/{collection}/{vol['id']}")
    assert vol["displayName"] == "pv" and vol["metadata"] == {"k": "v"}
    assert vol["attachments"] == [{}]
    shown = _wait(admin, f"{C}/{collection}/{vol['id']}", "volume")
    assert_shape({"volume": shown}, S.SHOW_VOLUME)
    for path in (f"{C}/{collection}", f"{C}/{collection}/detail"):
        listing = admin.get(path)
        assert listing.status_code == 200
        assert_shape(listing.json(), S.VOLUMES)
        assert vol["id"] in {v["id"] for v in listing.json()["volumes"]}
    # the Cinder volume is the same volume
    cinder = admin.get(f"/volume/v3/{_project(admin)}/volumes/{vol['id']}").json()["volume"]
    assert cinder["name"] == "pv" and cinder["size"] == 1
    r = admin.get(f"{C}/{collection}/{vol['id']}", headers=mv("2.36"))
    assert r.status_code == 404 and "itemNotFound" in r.json()
    assert admin.delete(f"{C}/{collection}/{vol['id']}").status_code == 202


def _project(client: httpx.Client) -> str:
    r = client.get("/identity/v3/auth/tokens", headers={
        "X-Subject-Token": client.headers["X-Auth-Token"]})
    return r.json()["token"]["project"]["id"]


def test_volume_list_limit_offset(admin: httpx.Client) -> None:
    ids = [admin.post(f"{C}/os-volumes", json={"volume": {"size": 1}}).json()["volume"]["id"]
           for _ in range(3)]
    everything = [v["id"] for v in admin.get(f"{C}/os-volumes/detail").json()["volumes"]]
    page = admin.get(f"{C}/os-volumes", params={"limit": "2", "offset": "1"}).json()
    assert_shape(page, S.VOLUMES)
    assert [v["id"] for v in page["volumes"]] == everything[1:3]
    assert admin.get(f"{C}/os-volumes", params={"limit": "x"}).status_code == 400
    assert admin.get(f"{C}/os-volumes", params={"offset": "-1"}).status_code == 400
    for volume_id in ids:
        _wait(admin, f"{C}/os-volumes/{volume_id}", "volume")
        assert admin.delete(f"{C}/os-volumes/{volume_id}").status_code == 202


def test_volumes_refuse_bad_requests(admin: httpx.Client) -> None:
    for body in ({"volume": {"display_name": "x"}}, {"volume": {"size": 0}},
                 {"volume": {"size": "#$%"}}, {"volume": {"size": 1, "name": "x"}},
                 {"volume": "x"}, {}):
        r = admin.post(f"{C}/os-volumes", json=body)
        assert r.status_code == 400 and "badRequest" in r.json(), (body, r.text)
    for method in ("GET", "DELETE"):
        r = admin.request(method, f"{C}/os-volumes/{uuid.uuid4()}")
        assert r.status_code == 404 and "itemNotFound" in r.json()
    assert admin.get(f"{C}/os-volumes/").status_code == 404


def test_snapshots_proxy(admin: httpx.Client) -> None:
    vol = admin.post(f"{C}/os-volumes", json={"volume": {"size": 1}}).json()["volume"]
    _wait(admin, f"{C}/os-volumes/{vol['id']}", "volume")
    created = admin.post(f"{C}/os-snapshots", json={"snapshot": {
        "volume_id": vol["id"], "display_name": "ps", "display_description": "d",
        "force": False}})
    assert created.status_code == 200, created.text
    assert_shape(created.json(), S.SHOW_SNAPSHOT)
    snap = created.json()["snapshot"]
    assert snap["volumeId"] == vol["id"] and snap["displayName"] == "ps"
    shown = _wait(admin, f"{C}/os-snapshots/{snap['id']}", "snapshot")
    assert_shape({"snapshot": shown}, S.SHOW_SNAPSHOT)
    for path in (f"{C}/os-snapshots", f"{C}/os-snapshots/detail"):
        listing = admin.get(path)
        assert_shape(listing.json(), S.SNAPSHOTS)
        assert snap["id"] in {s["id"] for s in listing.json()["snapshots"]}
    assert admin.get(f"{C}/os-snapshots", headers=mv("2.36")).status_code == 404
    bad = admin.post(f"{C}/os-snapshots", json={"snapshot": {"display_name": "x"}})
    assert bad.status_code == 400
    missing = admin.post(f"{C}/os-snapshots", json={"snapshot": {"volume_id": str(
        uuid.uuid4())}})
    assert missing.status_code == 404
    assert admin.get(f"{C}/os-snapshots/{uuid.uuid4()}").status_code == 404
    assert admin.delete(f"{C}/os-snapshots/{snap['id']}").status_code == 202
    deadline = time.monotonic() + 60
    while admin.get(f"{C}/os-snapshots/{snap['id']}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert admin.delete(f"{C}/os-volumes/{vol['id']}").status_code == 202


# ---------------------------------------------------------------- network proxies
def test_security_groups_proxy(member_client: httpx.Client, member: Tenant) -> None:
    listing = member_client.get(f"{C}/os-security-groups")
    assert listing.status_code == 200
    assert_shape(listing.json(), S.SECURITY_GROUPS)
    default = [g for g in listing.json()["security_groups"] if g["name"] == "default"]
    assert len(default) == 1 and default[0]["tenant_id"] == member.project_id
    # Nova shows ingress rules only: the default group's two self-referencing rules
    assert [r["group"] for r in default[0]["rules"]] == [
        {"name": "default", "tenant_id": member.project_id}] * 2

    created = member_client.post(f"{C}/os-security-groups", json={
        "security_group": {"name": "web", "description": "web servers"}})
    assert created.status_code == 200, created.text
    assert_shape(created.json(), S.SHOW_SECURITY_GROUP)
    group = created.json()["security_group"]
    assert group["rules"] == [] and group["tenant_id"] == member.project_id

    rule = member_client.post(f"{C}/os-security-group-rules", json={"security_group_rule": {
        "parent_group_id": group["id"], "ip_protocol": "tcp", "from_port": 22,
        "to_port": 22, "cidr": "10.0.0.0/24"}})
    assert rule.status_code == 200, rule.text
    assert_shape(rule.json(), S.SHOW_RULE)
    assert rule.json()["security_group_rule"]["ip_range"] == {"cidr": "10.0.0.0/24"}
    dup = member_client.post(f"{C}/os-security-group-rules", json={"security_group_rule": {
        "parent_group_id": group["id"], "ip_protocol": "tcp", "from_port": 22,
        "to_port": 22, "cidr": "10.0.0.0/24"}})
    assert dup.status_code == 400
    icmp = member_client.post(f"{C}/os-security-group-rules", json={"security_group_rule": {
        "parent_group_id": group["id"], "ip_protocol": "icmp", "from_port": -1,
        "to_port": -1, "group_id": default[0]["id"]}})
    assert icmp.status_code == 200, icmp.text
    assert_shape(icmp.json(), S.SHOW_RULE)
    assert icmp.json()["security_group_rule"]["group"] == {
        "name": "default", "tenant_id": member.project_id}
    for bad in ({"ip_protocol": "tcp", "from_port": 30, "to_port": 20},
                {"ip_protocol": "tcp", "from_port": 0, "to_port": 20},
                {"ip_protocol": "gre", "from_port": 1, "to_port": 2},
                {"ip_protocol": "icmp", "from_port": 256, "to_port": 2},
                {"ip_protocol": "tcp", "from_port": "a", "to_port": 2},
                {"ip_protocol": "tcp", "from_port": 1, "to_port": 2, "cidr": "10.0.0.0/33"}):
        r = member_client.post(f"{C}/os-security-group-rules", json={
            "security_group_rule": {"parent_group_id": group["id"], **bad}})
        assert r.status_code == 400 and "badRequest" in r.json(), (bad, r.text)
    r = member_client.post(f"{C}/os-security-group-rules", json={"security_group_rule": {
        "parent_group_id": str(uuid.uuid4()), "ip_protocol": "tcp", "from_port": 1,
        "to_port": 2}})
    assert r.status_code == 404

    updated = member_client.put(f"{C}/os-security-groups/{group['id']}", json={
        "security_group": {"name": "web2", "description": "d2"}})
    assert updated.status_code == 200
    assert_shape(updated.json(), S.SHOW_SECURITY_GROUP)
    shown = member_client.get(f"{C}/os-security-groups/{group['id']}")
    assert_shape(shown.json(), S.SHOW_SECURITY_GROUP)
    assert shown.json()["security_group"]["name"] == "web2"
    assert len(shown.json()["security_group"]["rules"]) == 2
    assert member_client.get(f"{C}/os-security-groups/not-a-uuid").status_code == 400
    assert member_client.get(f"{C}/os-security-groups/{uuid.uuid4()}").status_code == 404
    assert member_client.post(f"{C}/os-security-groups", json={
        "security_group": {"name": "x"}}).status_code == 400
    # Neutron's 409 (a second "default") is Nova's 403
    assert member_client.post(f"{C}/os-security-groups", json={
        "security_group": {"name": "default", "description": ""}}).status_code == 403
    rule_id = rule.json()["security_group_rule"]["id"]
    assert member_client.delete(f"{C}/os-security-group-rules/{rule_id}").status_code == 202
    assert member_client.delete(f"{C}/os-security-group-rules/{rule_id}").status_code == 404
    assert member_client.delete(f"{C}/os-security-groups/{group['id']}").status_code == 202
    assert member_client.get(f"{C}/os-security-groups/{group['id']}").status_code == 404
    # the default group stays (Neutron refuses; Nova answers 400)
    assert member_client.delete(
        f"{C}/os-security-groups/{default[0]['id']}").status_code == 400
    assert member_client.get(f"{C}/os-security-groups",
                             headers=mv("2.36")).status_code == 404


@pytest.fixture(scope="module")
def public_network(server: Server, member: Tenant) -> Iterator[tuple[str, str]]:
    """An external network with one floating IP of the member's, as records: this
    server runs without a data plane (reads must still work)."""
    db = Database(load(server.conf).database.connection)
    net_id, fip_id = str(uuid.uuid4()), str(uuid.uuid4())
    with db.session() as s:
        s.add(Network(id=net_id, project_id="ops", name="public", router_external=True,
                      shared=False))
        s.flush()
        s.add(FloatingIP(id=fip_id, project_id=member.project_id, floating_network_id=net_id,
                         floating_subnet_id=str(uuid.uuid4()),
                         floating_ip_address="203.0.113.10"))
    yield net_id, fip_id
    with db.session() as s:
        s.query(FloatingIP).filter(FloatingIP.id == fip_id).delete()
        s.query(Network).filter(Network.id == net_id).delete()
    db.dispose()


def test_floating_ip_proxies_read(member_client: httpx.Client,
                                  public_network: tuple[str, str]) -> None:
    net_id, fip_id = public_network
    pools = member_client.get(f"{C}/os-floating-ip-pools")
    assert pools.status_code == 200
    assert_shape(pools.json(), S.POOLS)
    assert {"name": "public"} in pools.json()["floating_ip_pools"]
    listing = member_client.get(f"{C}/os-floating-ips")
    assert_shape(listing.json(), S.FLOATING_IPS)
    assert listing.json()["floating_ips"] == [{
        "id": fip_id, "ip": "203.0.113.10", "fixed_ip": None, "instance_id": None,
        "pool": "public"}]
    shown = member_client.get(f"{C}/os-floating-ips/{fip_id}")
    assert shown.status_code == 200
    assert shown.json() == {"floating_ip": listing.json()["floating_ips"][0]}
    assert member_client.get(f"{C}/os-floating-ips/{uuid.uuid4()}").status_code == 404
    # creating one needs the data plane this server does not run: an error, never a 500
    r = member_client.post(f"{C}/os-floating-ips", json={"pool": "public"})
    assert 400 <= r.status_code < 500 or r.status_code == 503, r.text
    assert member_client.get(f"{C}/os-floating-ips", headers=mv("2.36")).status_code == 404


def test_network_proxies_read(admin: httpx.Client, member_client: httpx.Client,
                              public_network: tuple[str, str]) -> None:
    net_id, _ = public_network
    mine = member_client.get(f"{C}/os-networks")
    assert mine.status_code == 200
    assert_shape(mine.json(), S.NETWORKS)
    everything = admin.get(f"{C}/os-networks")
    assert_shape(everything.json(), S.NETWORKS_ADMIN)
    assert {"id": net_id, "label": "public"}.items() <= next(
        n for n in everything.json()["networks"] if n["id"] == net_id).items()
    shown = admin.get(f"{C}/os-networks/{net_id}")
    assert_shape({"networks": [shown.json()["network"]]}, S.NETWORKS_ADMIN)
    assert admin.get(f"{C}/os-networks/{uuid.uuid4()}").status_code == 404
    tenant = admin.get(f"{C}/os-tenant-networks")
    assert_shape(tenant.json(), S.TENANT_NETWORKS)
    one = admin.get(f"{C}/os-tenant-networks/{net_id}")
    assert_shape(one.json(), S.SHOW_TENANT_NETWORK)
    assert one.json() == {"network": {"id": net_id, "cidr": "None", "label": "public"}}
    for path in ("os-networks", "os-tenant-networks"):
        assert admin.get(f"{C}/{path}", headers=mv("2.36")).status_code == 404
