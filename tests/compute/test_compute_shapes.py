"""Every compute view strato returns has exactly the API reference's fields for the call,
the role and the microversion (tests/api_schemas/compute_servers.py), from 2.1 to 2.92:
servers (create, show, detail, list, update, ips, metadata, tags), flavors (+ access,
extra specs), keypairs, quota sets, instance actions, volume attachments and the version
documents. Also the behaviour behind the shapes that came with them: server tags and
their list filters, changes-before, flavor access lists, quota defaults and delete.

It shares the compute tests' server and boots one guest (tags can only change on a
server that is ACTIVE, PAUSED, SUSPENDED or STOPPED, as in Nova).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.api_schemas import assert_shape
from tests.api_schemas import compute_servers as cs
from tests.compute.conftest import Nova, boot_ready
from tests.compute.test_api import _huge_flavor
from tests.support import Server
from tests.tenants import Tenant, make_tenant

MAX = 92
VERSIONS = [(2, minor) for minor in range(1, MAX + 1)]


def _v(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


class Client:
    """One role's requests at an explicit microversion."""

    def __init__(self, server: Server, token: str) -> None:
        self.c = server.client(token)

    def req(self, method: str, path: str, version: tuple[int, int] = (2, MAX),
            **kw: object) -> httpx.Response:
        return self.c.request(method, f"/compute/v2.1{path}", headers={  # type: ignore[arg-type]
            "OpenStack-API-Version": f"compute {_v(version)}"}, **kw)

    def ok(self, method: str, path: str, version: tuple[int, int] = (2, MAX),
           status: int = 200, **kw: object) -> dict:
        r = self.req(method, path, version, **kw)
        assert r.status_code == status, f"{method} {path} @{_v(version)}: {r.text}"
        return r.json() if r.content else {}


@pytest.fixture(scope="module")
def tenant(compute_server: Server) -> Tenant:
    return make_tenant(compute_server, "shape")


@pytest.fixture(scope="module")
def member(compute_server: Server, tenant: Tenant) -> Client:
    return Client(compute_server, tenant.token())


@pytest.fixture(scope="module")
def admin(compute_server: Server) -> Client:
    return Client(compute_server, compute_server.token())


@pytest.fixture(scope="module")
def error_server(compute_server: Server, nova: Nova, member: Client) -> str:
    """A member's server no host can take: ERROR at once (a fault), no guest; with
    metadata, a description and tags given at create (2.52)."""
    image = compute_server.openstack_json("image", "show", "strato-guest")["id"]  # type: ignore[index]
    body = member.ok("POST", "/servers", status=202, json={"server": {
        "name": f"shape-{uuid.uuid4().hex[:6]}", "flavorRef": _huge_flavor(nova),
        "imageRef": image, "networks": "none", "metadata": {"k": "v"},
        "description": "d", "tags": ["red", "blue"]}})
    assert_shape(body, cs.server_create())
    sid = body["server"]["id"]
    for _ in range(200):
        if member.ok("GET", f"/servers/{sid}")["server"]["status"] == "ERROR":
            return sid
        time.sleep(0.1)
    raise AssertionError("the server did not go to ERROR")


@pytest.fixture(scope="module")
def active_server(compute_server: Server) -> Iterator[str]:
    """One booted guest of the admin project (tags need a running server)."""
    sid = boot_ready(compute_server, "--image", "strato-guest", prefix="shape", nic="auto")
    yield sid
    compute_server.openstack("server", "delete", "--wait", sid)


def test_server_views_every_version_and_role(admin: Client, member: Client,
                                             error_server: str) -> None:
    for version in VERSIONS:
        for who, is_admin in ((admin, True), (member, False)):
            shown = who.ok("GET", f"/servers/{error_server}", version)
            assert_shape(shown, {"type": "object", "additionalProperties": False,
                                 "required": ["server"], "properties": {
                                     "server": cs.server(version, admin=is_admin)}})
            params = {} if not is_admin else {"all_tenants": "1"}
            assert_shape(who.ok("GET", "/servers/detail", version, params=params),
                         cs.server_detail_list(version, admin=is_admin))
            assert_shape(who.ok("GET", "/servers", version, params=params),
                         cs.server_list())
        updated = member.ok("PUT", f"/servers/{error_server}", version,
                            json={"server": {"name": f"shape-{version[1]}"}})
        assert_shape(updated["server"], cs.server(version, admin=False, view="update"))
        updated = admin.ok("PUT", f"/servers/{error_server}", version,
                           json={"server": {"name": f"shape-{version[1]}"}})
        assert_shape(updated["server"], cs.server(version, admin=True, view="update"))
    # the fault of an ERROR server, and what the versions add, by value
    shown = member.ok("GET", f"/servers/{error_server}")["server"]
    assert shown["fault"]["code"] == 500 and shown["tags"] == ["red", "blue"]
    assert "security_groups" not in shown  # no port, so no group (Nova omits the key)
    assert shown["trusted_image_certificates"] is None and shown["server_groups"] == []
    assert shown["flavor"]["extra_specs"] == {}  # 2.47: every reader sees them
    old = member.ok("PUT", f"/servers/{error_server}", (2, 74),
                    json={"server": {"name": "x"}})["server"]
    assert "OS-EXT-STS:vm_state" not in old and "OS-EXT-SRV-ATTR:host" not in old


def test_active_server_views(admin: Client, active_server: str) -> None:
    for version in VERSIONS:
        shown = admin.ok("GET", f"/servers/{active_server}", version)["server"]
        assert_shape(shown, cs.server(version, admin=True))
        assert shown["status"] == "ACTIVE" and "progress" in shown and shown["addresses"]
        assert_shape(admin.ok("GET", f"/servers/{active_server}/ips", version), cs.ips())
        updated = admin.ok("PUT", f"/servers/{active_server}", version,
                           json={"server": {"name": "shape-active"}})["server"]
        assert_shape(updated, cs.server(version, admin=True, view="update"))
        # before 2.75 the update response's addresses lack the type and MAC
        address = next(iter(updated["addresses"].values()))[0]
        assert ("OS-EXT-IPS:type" in address) == (version >= (2, 75))
    assert_shape(admin.ok("GET", f"/servers/{active_server}/metadata"), cs.metadata())
    assert_shape(admin.ok("PUT", f"/servers/{active_server}/metadata/a",
                          json={"meta": {"a": "1"}}), cs.meta_item())
    for action in admin.ok("GET", f"/servers/{active_server}/os-instance-actions")[
            "instanceActions"]:
        for version in ((2, 1), (2, 51), (2, 58), (2, 62), (2, 84), (2, MAX)):
            shown = admin.ok("GET", f"/servers/{active_server}/os-instance-actions/"
                             f"{action['request_id']}", version)["instanceAction"]
            assert_shape(shown, cs.instance_action(version, events=True, admin=True))
            listed = admin.ok("GET", f"/servers/{active_server}/os-instance-actions",
                              version)["instanceActions"]
            for item in listed:
                assert_shape(item, cs.instance_action(version, events=False, admin=True))
    for version in ((2, 1), (2, 70), (2, 79), (2, 89)):
        for item in admin.ok("GET", f"/servers/{active_server}/os-volume_attachments",
                             version)["volumeAttachments"]:
            assert_shape(item, cs.volume_attachment(version))


def test_server_tags(admin: Client, member: Client, active_server: str,
                     error_server: str) -> None:
    base = f"/servers/{active_server}/tags"
    assert admin.req("GET", base, (2, 25)).status_code == 404  # before 2.26: no route
    assert_shape(admin.ok("GET", base), cs.tags())
    r = admin.req("PUT", f"{base}/alpha")
    assert r.status_code == 201 and r.headers["Location"].endswith(f"{base}/alpha")
    assert admin.req("PUT", f"{base}/alpha").status_code == 204  # already there
    assert admin.req("GET", f"{base}/alpha").status_code == 204
    assert admin.req("GET", f"{base}/nope").status_code == 404
    assert admin.req("PUT", f"{base}/a,b").status_code == 400
    replaced = admin.ok("PUT", base, json={"tags": ["x", "y"]})
    assert_shape(replaced, cs.tags())
    assert replaced["tags"] == ["x", "y"]
    assert admin.req("PUT", base, json={"tags": [f"t{i}" for i in range(51)]}
                     ).status_code == 400
    assert admin.req("DELETE", f"{base}/x").status_code == 204
    assert admin.req("DELETE", f"{base}/x").status_code == 404
    assert admin.ok("GET", base)["tags"] == ["y"]
    # the list filters
    def ids(who: Client, **params: str) -> set[str]:
        return {s["id"] for s in who.ok("GET", "/servers", params=params)["servers"]}
    assert active_server in ids(admin, tags="y")
    assert active_server not in ids(admin, **{"not-tags": "y"})
    assert ids(member, tags="red,blue") == {error_server}
    assert error_server in ids(member, **{"tags-any": "red,green"})
    assert error_server not in ids(member, **{"not-tags-any": "green,blue"})
    assert error_server in ids(member, **{"not-tags": "red,green"})
    assert admin.req("DELETE", base).status_code == 204
    assert admin.ok("GET", base)["tags"] == []
    # an ERROR server's tags cannot change (Nova's valid states)
    assert member.req("PUT", f"/servers/{error_server}/tags/z").status_code == 409
    # tags at create need 2.52
    r = member.req("POST", "/servers", (2, 51), json={"server": {
        "name": "t", "flavorRef": "1", "imageRef": "x", "tags": ["a"]}})
    assert r.status_code == 400 and "tags" in r.text


def test_list_filters(member: Client, error_server: str) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = "2000-01-01T00:00:00Z"
    def ids(version: tuple[int, int], **params: str) -> set[str]:
        return {s["id"] for s in member.ok("GET", "/servers", version,
                                           params=params)["servers"]}
    assert error_server in ids((2, 66), **{"changes-before": later})
    assert error_server not in ids((2, 66), **{"changes-before": earlier})
    assert error_server in ids((2, 65), **{"changes-before": earlier})  # unknown: ignored
    r = member.req("GET", "/servers", (2, 66), params={
        "changes-since": later, "changes-before": earlier})
    assert r.status_code == 400
    assert member.req("GET", "/servers", params={"changes-since": "2011/01/01"}
                      ).status_code == 400
    assert ids((2, 37), status="nonsense") == set()
    assert member.req("GET", "/servers", (2, 38), params={"status": "nonsense"}
                      ).status_code == 400
    assert ids((2, MAX), limit="0") == set()


def test_flavor_views_and_access(admin: Client, member: Client, tenant: Tenant) -> None:
    for version in VERSIONS:
        for detail in (False, True):
            path = "/flavors/detail" if detail else "/flavors"
            assert_shape(member.ok("GET", path, version), cs.flavor_list(version, detail))
        assert_shape(member.ok("GET", "/flavors/1", version)["flavor"], cs.flavor(version))
    name = f"private-{uuid.uuid4().hex[:6]}"
    created = admin.ok("POST", "/flavors", json={"flavor": {
        "name": name, "ram": 64, "vcpus": 1, "disk": 1,
        "os-flavor-access:is_public": "False"}})["flavor"]
    assert_shape(created, cs.flavor((2, MAX)))
    fid = created["id"]
    assert created["os-flavor-access:is_public"] is False
    # a private flavor: invisible and unusable for a project not on its list
    assert member.req("GET", f"/flavors/{fid}").status_code == 404
    assert fid not in {f["id"] for f in member.ok("GET", "/flavors")["flavors"]}
    assert fid not in {f["id"] for f in admin.ok("GET", "/flavors")["flavors"]}
    for value in ("f", "false", "no", "0"):
        assert fid in {f["id"] for f in admin.ok("GET", "/flavors", params={
            "is_public": value})["flavors"]}
    r = member.req("POST", "/servers", json={"server": {
        "name": "p", "flavorRef": fid, "imageRef": "x", "networks": "none"}})
    assert r.status_code == 400
    assert_shape(admin.ok("GET", f"/flavors/{fid}/os-flavor-access"), cs.flavor_access())
    added = admin.ok("POST", f"/flavors/{fid}/action", json={
        "addTenantAccess": {"tenant": tenant.project_id}})
    assert_shape(added, cs.flavor_access())
    assert added["flavor_access"] == [{"flavor_id": fid, "tenant_id": tenant.project_id}]
    assert admin.req("POST", f"/flavors/{fid}/action", json={
        "addTenantAccess": {"tenant": tenant.project_id}}).status_code == 409
    assert member.req("POST", f"/flavors/{fid}/action", json={
        "addTenantAccess": {"tenant": "x"}}).status_code == 403
    assert member.ok("GET", f"/flavors/{fid}")["flavor"]["id"] == fid
    assert fid in {f["id"] for f in member.ok("GET", "/flavors")["flavors"]}
    removed = admin.ok("POST", f"/flavors/{fid}/action", json={
        "removeTenantAccess": {"tenant": tenant.project_id}})
    assert removed["flavor_access"] == []
    assert admin.req("POST", f"/flavors/{fid}/action", json={
        "removeTenantAccess": {"tenant": tenant.project_id}}).status_code == 404
    assert admin.req("GET", "/flavors/1/os-flavor-access").status_code == 404  # public
    assert_shape(admin.ok("GET", f"/flavors/{fid}/os-extra_specs"), cs.extra_specs())
    assert admin.req("DELETE", f"/flavors/{fid}").status_code == 202


def test_keypair_views(member: Client) -> None:
    for version in ((2, 1), (2, 2), (2, 10), (2, 35), (2, 91)):
        name = f"kp-{uuid.uuid4().hex[:6]}"
        created = member.ok("POST", "/os-keypairs", version,
                            status=201 if version >= (2, 2) else 200,
                            json={"keypair": {"name": name}})["keypair"]
        assert_shape(created, cs.keypair(version, call="create"))
        assert "private_key" in created
        assert_shape(member.ok("GET", f"/os-keypairs/{name}", version)["keypair"],
                     cs.keypair(version, call="show"))
        assert_shape(member.ok("GET", "/os-keypairs", version), cs.keypair_list(version))
        member.req("DELETE", f"/os-keypairs/{name}", version)


def test_quota_set_views(admin: Client, member: Client, tenant: Tenant) -> None:
    pid = tenant.project_id
    for version in VERSIONS:
        assert_shape(member.ok("GET", f"/os-quota-sets/{pid}", version),
                     cs.quota_set(version))
        assert_shape(member.ok("GET", f"/os-quota-sets/{pid}/detail", version),
                     cs.quota_set(version, detail=True))
        assert_shape(member.ok("GET", f"/os-quota-sets/{pid}/defaults", version),
                     cs.quota_set(version))
    defaults = member.ok("GET", f"/os-quota-sets/{pid}/defaults")["quota_set"]
    assert member.ok("GET", f"/os-quota-sets/{pid}")["quota_set"] == defaults
    for version in ((2, 1), (2, 36), (2, 57)):
        updated = admin.ok("PUT", f"/os-quota-sets/{pid}", version, json={"quota_set": {
            "ram": "5120", "metadata_items": 256, "force": True}})
        assert_shape(updated, cs.quota_set(version, update=True))
        assert updated["quota_set"]["ram"] == 5120
    assert member.req("PUT", f"/os-quota-sets/{pid}", json={"quota_set": {
        "ram": 1}}).status_code == 403
    assert admin.req("PUT", f"/os-quota-sets/{pid}", (2, 36), json={"quota_set": {
        "floating_ips": 1}}).status_code == 400  # a network quota: gone at 2.36
    # per-user quotas: strato has none (501, not a silent change of the project's)
    assert admin.req("PUT", f"/os-quota-sets/{pid}", params={"user_id": "u"}, json={
        "quota_set": {"ram": 1}}).status_code == 501
    assert admin.req("DELETE", f"/os-quota-sets/{pid}").status_code == 202
    assert member.ok("GET", f"/os-quota-sets/{pid}")["quota_set"] == defaults


def test_version_documents(compute_server: Server) -> None:
    c = compute_server.client()
    assert_shape(c.get("/compute/").json(), cs.versions())
    for path in ("/compute/v2.1", "/compute/v2.1/"):
        assert_shape(c.get(path).json(), cs.version())
