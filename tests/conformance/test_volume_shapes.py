"""Every block storage view against its strict shape (tests/api_schemas/volume.py), per
call, role and microversion, on the session's real server; and the Cinder behaviours
Tempest's volume tests rely on (404s, full next links, item metadata routes)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.api_schemas import assert_shape
from tests.api_schemas import volume as shapes
from tests.support import Server
from tests.tenants import Tenant, make_tenant

VERSIONS = [(3, 0), (3, 13), (3, 21), (3, 48), (3, 61), (3, 63), (3, 65), (3, 70)]


class Client:
    """One project's block storage API, with a microversion per request."""

    def __init__(self, server: Server, token: str, project_id: str) -> None:
        self.c = server.client(token)
        self.base = f"/volume/v3/{project_id}"

    def call(self, method: str, path: str, version: tuple[int, int] | None = None,
             **kw: Any) -> httpx.Response:
        headers = {"OpenStack-API-Version": f"volume {version[0]}.{version[1]}"} \
            if version else {}
        return self.c.request(method, self.base + path, headers=headers, **kw)

    def wait(self, path: str, key: str, status: str = "available") -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = self.call("GET", path).json()[key]
            if body["status"] == status:
                return body
            assert body["status"] != "error", body
            time.sleep(0.1)
        raise AssertionError(f"{path} never reached {status}")


@pytest.fixture(scope="module")
def member(server: Server) -> Tenant:
    return make_tenant(server, "volshape")


@pytest.fixture(scope="module")
def user(server: Server, member: Tenant) -> Client:
    return Client(server, member.token(), member.project_id)


@pytest.fixture(scope="module")
def admin(server: Server, member: Tenant) -> Client:
    """The admin, looking at the member's project (as Tempest's admin clients do)."""
    return Client(server, server.token(), member.project_id)


@pytest.fixture(scope="module")
def volume(user: Client) -> Iterator[dict]:
    r = user.call("POST", "/volumes", json={"volume": {"size": 1, "name": "shape"}})
    assert r.status_code == 202, r.text
    vol = user.wait(f"/volumes/{r.json()['volume']['id']}", "volume")
    yield vol
    user.call("DELETE", f"/volumes/{vol['id']}", params={"cascade": "true"})


@pytest.fixture(scope="module")
def snapshot(user: Client, volume: dict) -> dict:
    r = user.call("POST", "/snapshots", json={"snapshot": {"volume_id": volume["id"],
                                                           "name": "shape-snap"}})
    assert r.status_code == 202, r.text
    return user.wait(f"/snapshots/{r.json()['snapshot']['id']}", "snapshot")


@pytest.mark.parametrize("version", VERSIONS)
def test_volume_views_per_role_and_version(user: Client, admin: Client, volume: dict,
                                           version: tuple[int, int]) -> None:
    """Create and update answer the detail view without the show-only attributes
    (Tempest's create schema refuses them); show and the detail list add them, the
    host and migration ones for admins only."""
    r = user.call("POST", "/volumes", version, json={"volume": {"size": 1}})
    assert r.status_code == 202
    assert_shape(r.json()["volume"], shapes.volume("create", False, version))
    created = r.json()["volume"]["id"]
    try:
        r = user.call("PUT", f"/volumes/{volume['id']}", version,
                      json={"volume": {"description": "d"}})
        assert r.status_code == 200
        assert_shape(r.json()["volume"], shapes.volume("create", False, version))
        r = admin.call("PUT", f"/volumes/{volume['id']}", version,
                       json={"volume": {"description": "d"}})
        assert_shape(r.json()["volume"], shapes.volume("create", True, version))
        for client, is_admin in ((user, False), (admin, True)):
            r = client.call("GET", f"/volumes/{volume['id']}", version)
            assert r.status_code == 200
            assert_shape(r.json()["volume"], shapes.volume("show", is_admin, version))
            r = client.call("GET", "/volumes/detail", version)
            assert_shape(r.json(), shapes.volumes(True, is_admin, version))
            r = client.call("GET", "/volumes", version)
            assert_shape(r.json(), shapes.volumes(False, is_admin, version))
    finally:
        user.wait(f"/volumes/{created}", "volume")
        user.call("DELETE", f"/volumes/{created}")


@pytest.mark.parametrize("version", [(3, 0), (3, 14), (3, 41), (3, 65)])
def test_snapshot_views_per_call_and_version(user: Client, volume: dict, snapshot: dict,
                                             version: tuple[int, int]) -> None:
    r = user.call("PUT", f"/snapshots/{snapshot['id']}", version,
                  json={"snapshot": {"description": "d"}})
    assert r.status_code == 200
    assert_shape(r.json()["snapshot"], shapes.snapshot("create", version))
    r = user.call("GET", f"/snapshots/{snapshot['id']}", version)
    assert_shape(r.json()["snapshot"], shapes.snapshot("show", version))
    assert_shape(user.call("GET", "/snapshots/detail", version).json(),
                 shapes.snapshots(True, version))
    assert_shape(user.call("GET", "/snapshots", version).json(),
                 shapes.snapshots(False, version))
    r = user.call("POST", "/snapshots", version,
                  json={"snapshot": {"volume_id": volume["id"], "display_name": "old-key"}})
    assert r.status_code == 202
    assert_shape(r.json()["snapshot"], shapes.snapshot("create", version))
    assert r.json()["snapshot"]["name"] == "old-key"  # display_name is Cinder's alias
    user.wait(f"/snapshots/{r.json()['snapshot']['id']}", "snapshot")
    user.call("DELETE", f"/snapshots/{r.json()['snapshot']['id']}")


def test_type_views(user: Client, admin: Client) -> None:
    name = f"shape-{uuid.uuid4().hex[:8]}"
    r = admin.call("POST", "/types", json={"volume_type": {
        "name": name, "extra_specs": {"multiattach": "<is> False", "secret": "x"}}})
    assert r.status_code == 200, r.text
    assert_shape(r.json()["volume_type"], shapes.volume_type("create", True))
    tid = r.json()["volume_type"]["id"]
    try:
        r = admin.call("PUT", f"/types/{tid}", json={"volume_type": {"description": "d"}})
        assert_shape(r.json()["volume_type"], shapes.volume_type("update", True))
        shown = admin.call("GET", f"/types/{tid}").json()["volume_type"]
        assert_shape(shown, shapes.volume_type("show", True))
        assert shown["extra_specs"] == {"multiattach": "<is> False", "secret": "x"}
        # A project sees only the user-visible specs, and no QoS id.
        shown = user.call("GET", f"/types/{tid}").json()["volume_type"]
        assert_shape(shown, shapes.volume_type("show", False))
        assert shown["extra_specs"] == {"multiattach": "<is> False"}
        for t in user.call("GET", "/types").json()["volume_types"]:
            assert_shape(t, shapes.volume_type("show", False))
        # Extra spec items; POST answers what it was given.
        r = admin.call("POST", f"/types/{tid}/extra_specs", json={"extra_specs": {"k": "1"}})
        assert r.json() == {"extra_specs": {"k": "1"}}
        r = admin.call("PUT", f"/types/{tid}/extra_specs/k", json={"k": "2"})
        assert (r.status_code, r.json()) == (200, {"k": "2"})
        assert admin.call("GET", f"/types/{tid}/extra_specs/k").json() == {"k": "2"}
        assert admin.call("PUT", f"/types/{tid}/extra_specs/k",
                          json={"other": "2"}).status_code == 400
        assert admin.call("GET", f"/types/{tid}/extra_specs/nope").status_code == 404
    finally:
        admin.call("DELETE", f"/types/{tid}")


def test_cinder_behaviours_tempest_relies_on(user: Client, volume: dict,
                                            snapshot: dict) -> None:
    # A null or unknown volume id and an unknown marker are 404s, not 400s.
    r = user.call("POST", "/snapshots", json={"snapshot": {"volume_id": None}})
    assert r.status_code == 404 and "itemNotFound" in r.json()
    assert user.call("GET", "/volumes/detail",
                     params={"marker": str(uuid.uuid4())}).status_code == 404
    assert user.call("GET", "/snapshots",
                     params={"marker": str(uuid.uuid4())}).status_code == 404
    # An empty id names nothing (no redirect to the collection, no 405).
    for method in ("GET", "PUT", "DELETE"):
        for collection in ("volumes", "snapshots"):
            r = user.call(method, f"/{collection}/", json={} if method == "PUT" else None)
            assert r.status_code == 404, (method, collection, r.status_code)
    # Metadata items of volumes and snapshots.
    for kind, row in (("volumes", volume), ("snapshots", snapshot)):
        path = f"/{kind}/{row['id']}/metadata"
        assert_shape(user.call("POST", path, json={"metadata": {"a": "1"}}).json(),
                     shapes.METADATA_BODY)
        r = user.call("PUT", f"{path}/a", json={"meta": {"a": "2"}})
        assert r.status_code == 200
        assert_shape(r.json(), shapes.META_ITEM)
        assert user.call("GET", f"{path}/a").json() == {"meta": {"a": "2"}}
        assert user.call("PUT", f"{path}/a", json={"meta": {"b": "2"}}).status_code == 400
        assert user.call("DELETE", f"{path}/a").status_code == 200
        assert user.call("GET", f"{path}/a").status_code == 404


def test_next_links_are_full_urls_that_continue_the_listing(user: Client,
                                                           volume: dict) -> None:
    extra = []
    for _ in range(2):
        r = user.call("POST", "/volumes", json={"volume": {"size": 1}})
        extra.append(r.json()["volume"]["id"])
    try:
        for path in ("/volumes", "/volumes/detail"):
            seen: list[str] = []
            params: dict[str, str] = {"limit": "1", "sort": "id:asc"}
            while True:
                body = user.call("GET", path, params=params).json()
                seen += [v["id"] for v in body["volumes"]]
                links = [x["href"] for x in body.get("volumes_links", ())
                         if x["rel"] == "next"]
                if not links:
                    break
                url = urlparse(links[0])
                assert url.scheme == "http" and url.path == "/volume/v3/" + \
                    user.base.rsplit("/", 1)[1] + path
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                assert params["sort"] == "id:asc" and params["limit"] == "1"
            assert seen == sorted(seen) and {volume["id"], *extra} <= set(seen)
    finally:
        for vid in extra:
            user.wait(f"/volumes/{vid}", "volume")
            user.call("DELETE", f"/volumes/{vid}")


def test_image_metadata_actions(user: Client, admin: Client, volume: dict) -> None:
    path = f"/volumes/{volume['id']}/action"
    r = user.call("POST", path, json={"os-set_image_metadata": {
        "metadata": {"image_name": "img", "kernel_id": "k"}}})
    assert r.status_code == 200
    assert_shape(r.json(), shapes.METADATA_BODY)
    shown = user.call("GET", f"/volumes/{volume['id']}").json()["volume"]
    assert_shape(shown, shapes.volume("show", False, image_metadata=True))
    assert shown["volume_image_metadata"] == {"image_name": "img", "kernel_id": "k"}
    r = user.call("POST", path, json={"os-unset_image_metadata": {"key": "kernel_id"}})
    assert r.status_code == 200 and r.content == b""
    assert user.call("POST", path, json={"os-unset_image_metadata": {
        "key": "kernel_id"}}).status_code == 404
    r = user.call("POST", path, json={"os-show_image_metadata": None})
    assert r.json() == {"metadata": {"image_name": "img"}}
    # Admins see it in show too; create responses never carry it.
    assert_shape(admin.call("GET", f"/volumes/{volume['id']}").json()["volume"],
                 shapes.volume("show", True, image_metadata=True))
    # A reference action strato lacks is 501 in Cinder's fault; an unknown one is 400.
    r = user.call("POST", path, json={"os-migrate_volume_completion": {
        "new_volume": volume["id"]}})
    assert r.status_code == 501 and "notImplemented" in r.json()
    # Migration is for admins (Cinder's volume_admin_actions:migrate_volume).
    r = user.call("POST", path, json={"os-migrate_volume": {"host": "x"}})
    assert r.status_code == 403, r.text
    assert user.call("POST", path, json={"os-no-such": {}}).status_code == 400
    # Set-bootable answers 200, the other simple actions 202.
    assert user.call("POST", path, json={"os-set_bootable": {"bootable": False}}
                     ).status_code == 200


def test_retype_without_migration(user: Client, admin: Client) -> None:
    names = [f"retype-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for name in names[:2]:
        assert admin.call("POST", "/types", json={"volume_type": {"name": name}}
                          ).status_code == 200
    # A type no backend satisfies.
    admin.call("POST", "/types", json={"volume_type": {
        "name": names[2], "extra_specs": {"vendor_name": "nobody"}}})
    r = user.call("POST", "/volumes", json={"volume": {"size": 1, "volume_type": names[0]}})
    vid = r.json()["volume"]["id"]
    user.wait(f"/volumes/{vid}", "volume")
    try:
        path = f"/volumes/{vid}/action"
        host = admin.call("GET", f"/volumes/{vid}").json()["volume"]["os-vol-host-attr:host"]
        r = user.call("POST", path, json={"os-retype": {"new_type": names[1],
                                                        "migration_policy": "never"}})
        assert r.status_code == 202, r.text
        shown = admin.call("GET", f"/volumes/{vid}").json()["volume"]
        assert (shown["volume_type"], shown["os-vol-host-attr:host"]) == (names[1], host)
        assert user.call("POST", path, json={"os-retype": {"new_type": names[1]}}
                         ).status_code == 400
        assert user.call("POST", path, json={"os-retype": {"new_type": names[2]}}
                         ).status_code == 400
        # On-demand migration needs another backend that satisfies the type: none here.
        r = user.call("POST", path, json={"os-retype": {
            "new_type": names[2], "migration_policy": "on-demand"}})
        assert r.status_code == 400 and "no backend can take" in r.text, r.text
        quota = admin.call("GET", f"/os-quota-sets/{user.base.rsplit('/', 1)[1]}",
                           params={"usage": "true"}).json()["quota_set"]
        assert quota[f"volumes_{names[1]}"]["in_use"] == 1
        assert quota[f"volumes_{names[0]}"]["in_use"] == 0
    finally:
        user.call("DELETE", f"/volumes/{vid}")
        deadline = time.monotonic() + 60
        while user.call("GET", f"/volumes/{vid}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for name in names:
            admin.call("DELETE", f"/types/{name}")


def test_snapshot_admin_actions(user: Client, admin: Client, volume: dict) -> None:
    r = user.call("POST", "/snapshots", json={"snapshot": {"volume_id": volume["id"]}})
    sid = r.json()["snapshot"]["id"]
    user.wait(f"/snapshots/{sid}", "snapshot")
    action = f"/snapshots/{sid}/action"
    assert user.call("POST", action, json={"os-reset_status": {"status": "error"}}
                     ).status_code == 403
    assert admin.call("POST", action, json={"os-reset_status": {"status": "error"}}
                      ).status_code == 202
    assert user.call("GET", f"/snapshots/{sid}").json()["snapshot"]["status"] == "error"
    assert admin.call("POST", action, json={"os-force_delete": {}}).status_code == 202
    deadline = time.monotonic() + 60
    while user.call("GET", f"/snapshots/{sid}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_service_reads(user: Client, admin: Client, volume: dict) -> None:
    assert_shape(admin.call("GET", "/os-services").json(), shapes.SERVICES)
    host = admin.call("GET", f"/volumes/{volume['id']}").json()["volume"][
        "os-vol-host-attr:host"]
    backend = host.split("#", 1)[0]
    r = admin.call("GET", "/os-services", params={"host": host.split("@", 1)[0],
                                                  "binary": "cinder-volume"})
    assert [s["host"] for s in r.json()["services"]] == [backend]
    assert user.call("GET", "/os-services").status_code == 403
    # Service updates: checked as Cinder checks them, then 501 (always enabled here).
    assert admin.call("PUT", "/os-services/enable", json={
        "host": "nowhere", "binary": "cinder-volume"}).status_code == 404
    assert admin.call("PUT", "/os-services/disable-log-reason", json={
        "host": backend, "binary": "cinder-volume", "disabled_reason": None}
    ).status_code == 400
    assert admin.call("PUT", "/os-services/freeze", json={"host": "nowhere"}
                      ).status_code == 400
    r = admin.call("PUT", "/os-services/disable", json={"host": backend,
                                                       "binary": "cinder-volume"})
    assert r.status_code == 501 and "notImplemented" in r.json()
    assert_shape(admin.call("GET", "/os-hosts").json(), shapes.HOSTS)
    shown = admin.call("GET", f"/os-hosts/{backend}").json()
    assert_shape(shown, shapes.HOST)
    assert int(shown["host"][0]["resource"]["volume_count"]) >= 1
    assert admin.call("GET", "/os-hosts/nowhere@x").status_code == 404
    assert_shape(admin.call("GET", "/scheduler-stats/get_pools").json(), shapes.POOLS)
    pools = admin.call("GET", "/scheduler-stats/get_pools",
                       params={"detail": "true"}).json()
    assert_shape(pools, shapes.POOLS_DETAIL)
    assert host in [p["name"] for p in pools["pools"]]
    caps = admin.call("GET", f"/capabilities/{backend}").json()
    assert_shape(caps, shapes.CAPABILITIES)
    assert caps["vendor_name"] == pools["pools"][0]["capabilities"]["vendor_name"]
    assert_shape(user.call("GET", "/os-availability-zone").json(),
                 shapes.AVAILABILITY_ZONES)
    assert_shape(user.call("GET", "/extensions").json(), shapes.EXTENSIONS)
    limits = user.call("GET", "/limits").json()
    assert_shape(limits, shapes.LIMITS)
    assert limits["limits"]["absolute"]["totalVolumesUsed"] >= 1


def test_quota_and_summary_views(user: Client, admin: Client, volume: dict) -> None:
    project = user.base.rsplit("/", 1)[1]
    assert_shape(admin.call("GET", f"/os-quota-sets/{project}").json(),
                 shapes.quota_set(False))
    assert_shape(admin.call("GET", f"/os-quota-sets/{project}",
                            params={"usage": "true"}).json(), shapes.quota_set(True))
    assert_shape(admin.call("GET", f"/os-quota-sets/{project}/defaults").json(),
                 shapes.quota_set(False))
    r = admin.call("PUT", f"/os-quota-sets/{project}", json={"quota_set": {"snapshots": 7}})
    assert_shape(r.json(), shapes.quota_set(False, with_id=False))
    assert admin.call("DELETE", f"/os-quota-sets/{project}").status_code == 200
    assert admin.call("GET", f"/os-quota-sets/{project}").json()["quota_set"][
        "snapshots"] == 10
    assert user.call("GET", "/volumes/summary").status_code == 404  # from 3.12
    assert_shape(user.call("GET", "/volumes/summary", (3, 12)).json(),
                 shapes.VOLUME_SUMMARY_BODY_3_12)
    assert_shape(user.call("GET", "/volumes/summary", (3, 36)).json(),
                 shapes.VOLUME_SUMMARY_BODY_3_36)


@pytest.fixture(scope="module")
def receiver(server: Server) -> Tenant:
    return make_tenant(server, "volshape-to")


@pytest.mark.parametrize("version", [(3, 0), (3, 55), (3, 57)])
def test_transfer_moves_a_volume_and_its_quota(server: Server, user: Client,
                                               receiver: Tenant,
                                               version: tuple[int, int]) -> None:
    other = receiver
    them = Client(server, other.token(), other.project_id)
    path = "/volume-transfers" if version >= (3, 55) else "/os-volume-transfer"
    r = user.call("POST", "/volumes", json={"volume": {"size": 1}})
    vid = r.json()["volume"]["id"]
    user.wait(f"/volumes/{vid}", "volume")
    r = user.call("POST", path, version, json={"transfer": {"volume_id": vid, "name": "t"}})
    assert r.status_code == 202, r.text
    assert_shape(r.json()["transfer"], shapes.transfer("create", version))
    tid, key = r.json()["transfer"]["id"], r.json()["transfer"]["auth_key"]
    assert user.call("GET", f"/volumes/{vid}").json()["volume"]["status"] == \
        "awaiting-transfer"
    assert_shape(user.call("GET", f"{path}/{tid}", version).json()["transfer"],
                 shapes.transfer("show", version))
    listed = user.call("GET", path, version).json()["transfers"]
    for item in listed:
        assert_shape(item, shapes.transfer("summary", version))
    for item in user.call("GET", f"{path}/detail", version).json()["transfers"]:
        assert_shape(item, shapes.transfer("show", version))
    assert tid in [t["id"] for t in listed]
    # The other project cannot see it, nor accept it with a wrong key.
    assert them.call("GET", f"{path}/{tid}", version).status_code == 404
    assert them.call("POST", f"{path}/{tid}/accept", version,
                     json={"accept": {"auth_key": "wrong"}}).status_code == 400
    r = them.call("POST", f"{path}/{tid}/accept", version, json={"accept": {"auth_key": key}})
    assert r.status_code == 202, r.text
    assert_shape(r.json()["transfer"], shapes.transfer("summary", version))
    assert user.call("GET", f"/volumes/{vid}").status_code == 404
    vol = them.call("GET", f"/volumes/{vid}").json()["volume"]
    assert (vol["status"], vol["os-vol-tenant-attr:tenant_id"]) == ("available",
                                                                    other.project_id)
    usage = them.call("GET", "/limits").json()["limits"]["absolute"]
    assert usage["totalVolumesUsed"] == 1 and usage["totalGigabytesUsed"] == 1
    assert them.call("DELETE", f"/volumes/{vid}").status_code == 202
    deadline = time.monotonic() + 60
    while them.call("GET", f"/volumes/{vid}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # A transfer deleted before acceptance gives the volume back.
    r = user.call("POST", "/volumes", json={"volume": {"size": 1}})
    vid = r.json()["volume"]["id"]
    user.wait(f"/volumes/{vid}", "volume")
    tid = user.call("POST", path, version, json={"transfer": {"volume_id": vid}}
                    ).json()["transfer"]["id"]
    assert user.call("DELETE", f"{path}/{tid}", version).status_code == 202
    assert user.call("GET", f"/volumes/{vid}").json()["volume"]["status"] == "available"
    assert user.call("DELETE", f"/volumes/{vid}").status_code == 202


def test_unsupported_families_answer_501(user: Client, admin: Client) -> None:
    for method, path in (("GET", "/groups"), ("POST", "/groups"), ("GET", "/group_types"),
                         ("GET", "/group_snapshots/x"), ("POST", "/consistencygroups"),
                         ("GET", "/os-quota-class-sets/default")):
        r = admin.call(method, path, json={} if method == "POST" else None)
        assert r.status_code == 501 and "notImplemented" in r.json(), (method, path)
    # volume encryption: an existing type cannot be given one
    tid = admin.call("POST", "/types", json={"volume_type": {
        "name": f"enc-{uuid.uuid4().hex[:6]}"}}).json()["volume_type"]["id"]
    r = admin.call("POST", f"/types/{tid}/encryption", json={})
    assert r.status_code == 501 and "notImplemented" in r.json()
    assert admin.call("DELETE", f"/types/{tid}").status_code == 202
    assert user.call("GET", "/no-such-family").status_code == 404
    assert admin.call("POST", f"/types/{uuid.uuid4()}/encryption",
                      json={}).status_code == 404
    assert user.call("PATCH", "/volumes").status_code == 405


def test_attachment_views(user: Client) -> None:
    r = user.call("POST", "/volumes", json={"volume": {"size": 1}})
    vid = r.json()["volume"]["id"]
    user.wait(f"/volumes/{vid}", "volume")
    r = user.call("POST", "/attachments", (3, 27), json={"attachment": {
        "volume_uuid": vid, "instance_uuid": str(uuid.uuid4())}})
    assert r.status_code == 200, r.text
    assert_shape(r.json()["attachment"], shapes.ATTACHMENT)
    aid = r.json()["attachment"]["id"]
    assert_shape(user.call("GET", f"/attachments/{aid}", (3, 27)).json()["attachment"],
                 shapes.ATTACHMENT)
    for item in user.call("GET", "/attachments", (3, 27)).json()["attachments"]:
        assert_shape(item, shapes.ATTACHMENT_SUMMARY)
    for item in user.call("GET", "/attachments/detail", (3, 27)).json()["attachments"]:
        assert_shape(item, shapes.ATTACHMENT)
    assert user.call("DELETE", f"/attachments/{aid}", (3, 27)).status_code == 200
    user.wait(f"/volumes/{vid}", "volume")
    user.call("DELETE", f"/volumes/{vid}")
