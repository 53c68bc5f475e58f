"""Tenant isolation: project B (a member of its own project) against every resource and
action of project A, in every service.

Each line of the matrix is one request B makes with its own token.  The answer must be
the one the OpenStack service gives a project that may not see or touch the thing: 404
(it does not exist for B) or 403 (a policy refusal) — and, for the few requests where
Nova/Cinder/Keystone answer differently (booting from an image or volume you cannot see
is a 400 in Nova; a token for a project you have no role on is a 401 in Keystone), that
answer.  Never a 2xx.  Afterwards A's resources are exactly what they were before, seen
by A itself and by the admin, and B owns nothing it did not create.

Compute needs no guest: A's server is a record whose build fails at once (the shared
server has no guest registered), which is all the API checks need — every lookup in
Nova's API comes before the state check, so a 404 here is isolation, not state.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support import Server
from tests.tenants import Tenant, make_tenant

NOT_VISIBLE = frozenset({403, 404})
NOVA_BAD = frozenset({400})  # Nova: a boot source the caller cannot see is a bad request
CINDER_IMAGE = frozenset({400})  # Cinder: "Invalid image identifier or unable to access"
UNAUTHORIZED = frozenset({401})  # Keystone: no role on the project asked for
JSON_PATCH = "application/openstack-images-v2.1-json-patch"
# 128 KiB that can be booted (an MBR boot signature): servers are made from it; its
# code is `cli; hlt`, so a guest booted from it idles instead of spinning a core
DATA = (b"\xfa\xf4" + hashlib.sha512(b"tenant-a").digest()[:60]).ljust(510, b"\0") \
    + b"\x55\xaa" \
    + hashlib.sha512(b"tenant-a").digest() * 2040
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm4Qz3JqUv8bXlS3qYyq4nRr0b0c1wz3cQ9mZbXqK0F "
       "a@iso")


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Line:
    """One request of project B: ``service``/``what`` name it in a failure."""

    service: str
    what: str
    method: str
    path: str
    body: Any = None
    expect: frozenset[int] = NOT_VISIBLE
    headers: dict[str, str] | None = None
    content: bytes | None = None


class Client:
    """One token's HTTP client, with the headers the real clients send."""

    def __init__(self, server: Server, token: str) -> None:
        self.c = server.client(token)
        self.c.headers.update({"OpenStack-API-Version": "volume 3.65",
                               "X-OpenStack-Nova-API-Version": "2.92"})

    def __call__(self, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None,
                 content: bytes | None = None) -> httpx.Response:
        if content is not None:
            return self.c.request(method, path, content=content, headers=headers)
        return self.c.request(method, path, json=body, headers=headers)

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        r = self(method, path, body, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def wait(self, path: str, key: str, want: set[str], timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            body = self.ok("GET", path)[key]
            if body["status"] in want:
                return body
            time.sleep(0.1)
        raise AssertionError(f"{path} not in {want}: {body}")


@dataclass
class World:
    server: Server
    a: Tenant
    b: Tenant
    ca: Client  # A's token
    cb: Client  # B's token
    admin: Client
    ids: dict[str, str]

    def vpath(self, project: str) -> str:
        return f"/volume/v3/{project}"


@pytest.fixture(scope="module")
def world(server: Server) -> Iterator[World]:
    a, b = make_tenant(server, "iso-a"), make_tenant(server, "iso-b")
    ca, cb, admin = Client(server, a.token()), Client(server, b.token()), \
        Client(server, server.token())
    ids: dict[str, str] = {}
    va, vb = f"/volume/v3/{a.project_id}", f"/volume/v3/{b.project_id}"

    # images: a private one with data, and one A shares with B (B has not accepted)
    for key in ("image", "shared_image"):
        image = ca.ok("POST", "/image/v2/images", {
            "name": _uniq(key), "disk_format": "raw", "container_format": "bare",
            "visibility": "shared" if key == "shared_image" else "private"})
        ca.ok("PUT", f"/image/v2/images/{image['id']}/file", content=DATA,
              headers={"Content-Type": "application/octet-stream"})
        ids[key] = image["id"]
    ca.ok("POST", f"/image/v2/images/{ids['shared_image']}/members",
          {"member": b.project_id})

    # volumes: one with metadata and a snapshot, one reserved by an attachment
    vol = ca.ok("POST", f"{va}/volumes", {"volume": {
        "name": _uniq("vol"), "size": 1, "metadata": {"owner": "a"}}})["volume"]
    vol2 = ca.ok("POST", f"{va}/volumes", {"volume": {"name": _uniq("vol2"),
                                                      "size": 1}})["volume"]
    for v in (vol, vol2):
        ca.wait(f"{va}/volumes/{v['id']}", "volume", {"available"})
    ids["volume"], ids["volume2"] = vol["id"], vol2["id"]
    snap = ca.ok("POST", f"{va}/snapshots", {"snapshot": {
        "volume_id": vol["id"], "name": _uniq("snap"), "metadata": {"owner": "a"}}})
    ids["snapshot"] = ca.wait(f"{va}/snapshots/{snap['snapshot']['id']}", "snapshot",
                              {"available"})["id"]
    att = ca.ok("POST", f"{va}/attachments", {"attachment": {  # Cinder's key and ours
        "volume_uuid": vol2["id"], "volume_id": vol2["id"]}}, headers={
        "OpenStack-API-Version": "volume 3.54"})["attachment"]
    ids["attachment"] = att["id"]

    # a private volume type only A may use
    vtype = admin.ok("POST", f"/volume/v3/{_admin_project(admin)}/types", {"volume_type": {
        "name": _uniq("iso-type"), "os-volume-type-access:is_public": False,
        "extra_specs": {"acme:tier": "a"}}})["volume_type"]
    admin.ok("POST", f"/volume/v3/{_admin_project(admin)}/types/{vtype['id']}/action",
             {"addProjectAccess": {"project": a.project_id}})
    ids["type"], ids["type_name"] = vtype["id"], vtype["name"]

    # compute: A's server (a guest of DATA, which idles), with metadata
    srv = ca.ok("POST", "/compute/v2.1/servers", {"server": {
        "name": _uniq("srv"), "imageRef": ids["image"], "flavorRef": "1",
        "networks": "none", "metadata": {"owner": "a"}}})["server"]
    ids["server"] = srv["id"]
    ca.wait(f"/compute/v2.1/servers/{srv['id']}", "server", {"ERROR", "ACTIVE"})
    # B's own server and volume, for "attach A's volume to my server" and the reverse
    srv_b = cb.ok("POST", "/compute/v2.1/servers", {"server": {
        "name": _uniq("srvb"), "imageRef": ids["shared_image"], "flavorRef": "1",
        "networks": "none"}})["server"]
    ids["server_b"] = srv_b["id"]
    cb.wait(f"/compute/v2.1/servers/{srv_b['id']}", "server", {"ERROR", "ACTIVE"})
    _stopped(server, srv_b["id"])
    vol_b = cb.ok("POST", f"{vb}/volumes", {"volume": {"name": _uniq("volb"),
                                                       "size": 1}})["volume"]
    ids["volume_b"] = cb.wait(f"{vb}/volumes/{vol_b['id']}", "volume", {"available"})["id"]
    # A's keypair (keypairs are the user's: B may not name A's user_id)
    ids["keypair"] = ca.ok("POST", "/compute/v2.1/os-keypairs", {"keypair": {
        "name": _uniq("kp"), "public_key": KEY}})["keypair"]["name"]
    ids["member_role"] = _role(admin)
    ids["token_a"] = a.token()
    yield World(server, a, b, ca, cb, admin, ids)
    # both servers run guests on the shared server: gone with the module
    for client, sid in ((ca, ids["server"]), (cb, ids["server_b"])):
        client.ok("DELETE", f"/compute/v2.1/servers/{sid}")
    for client, sid in ((ca, ids["server"]), (cb, ids["server_b"])):
        deadline = time.monotonic() + 60
        while client("GET", f"/compute/v2.1/servers/{sid}").status_code != 404:
            assert time.monotonic() < deadline, f"server {sid} was not deleted"
            time.sleep(0.2)


def _stopped(server: Server, server_id: str) -> None:
    """B's own server as a stopped guest would be, so that Nova's state check (409 for a
    server in ERROR) does not hide what "attach A's volume to my server" answers; no
    guest is booted for it and no host owns it, so nothing changes it back."""
    with sqlite3.connect(server.state / "strato.db", timeout=30) as db:
        assert db.execute("UPDATE instances SET vm_state = 'stopped', task_state = NULL, "
                          "power_state = 4 WHERE id = ?", (server_id,)).rowcount == 1


def _admin_project(admin: Client) -> str:
    token = admin.c.headers["X-Auth-Token"]
    return admin.ok("GET", "/identity/v3/auth/tokens",
                    headers={"X-Subject-Token": token})["token"]["project"]["id"]


def _role(admin: Client) -> str:
    return admin.c.get("/identity/v3/roles", params={"name": "member"}).json()[
        "roles"][0]["id"]


# ------------------------------------------------------------------ A's state
def _state(w: World) -> dict[str, Any]:
    """Everything of A's that B's requests could change, as A and the admin see it."""
    i, ca, admin = w.ids, w.ca, w.admin
    va = w.vpath(w.a.project_id)
    admin_va = w.vpath(_admin_project(admin))
    state: dict[str, Any] = {}
    for key in ("image", "shared_image"):
        state[key] = ca.ok("GET", f"/image/v2/images/{i[key]}")
        state[f"{key}.members"] = ca.ok("GET", f"/image/v2/images/{i[key]}/members") \
            if key == "shared_image" else None
        data = ca("GET", f"/image/v2/images/{i[key]}/file").content
        state[f"{key}.data"] = hashlib.sha256(data).hexdigest()
    for key in ("volume", "volume2"):
        state[key] = ca.ok("GET", f"{va}/volumes/{i[key]}")
        state[f"{key}.metadata"] = ca.ok("GET", f"{va}/volumes/{i[key]}/metadata")
    state["snapshot"] = ca.ok("GET", f"{va}/snapshots/{i['snapshot']}")
    state["snapshot.metadata"] = ca.ok("GET", f"{va}/snapshots/{i['snapshot']}/metadata")
    state["attachment"] = ca.ok("GET", f"{va}/attachments/{i['attachment']}",
                                headers={"OpenStack-API-Version": "volume 3.54"})
    state["volumes"] = sorted(v["id"] for v in ca.ok("GET", f"{va}/volumes")["volumes"])
    state["snapshots"] = sorted(s["id"] for s in ca.ok("GET", f"{va}/snapshots")[
        "snapshots"])
    state["volume.quota"] = ca.ok("GET", f"{va}/os-quota-sets/{w.a.project_id}?usage=true")
    state["type"] = admin.ok("GET", f"{admin_va}/types/{i['type']}")
    state["type.access"] = admin.ok("GET", f"{admin_va}/types/{i['type']}/"
                                           "os-volume-type-access")
    server = ca.ok("GET", f"/compute/v2.1/servers/{i['server']}")["server"]
    state["server"] = server
    state["server.metadata"] = ca.ok("GET", f"/compute/v2.1/servers/{i['server']}/metadata")
    state["server.actions"] = ca.ok("GET", f"/compute/v2.1/servers/{i['server']}/"
                                           "os-instance-actions")
    state["compute.quota"] = ca.ok("GET", f"/compute/v2.1/os-quota-sets/{w.a.project_id}")
    state["keypair"] = ca.ok("GET", f"/compute/v2.1/os-keypairs/{i['keypair']}")
    state["images"] = sorted(x["id"] for x in ca.ok("GET", "/image/v2/images")["images"])
    state["project"] = admin.ok("GET", f"/identity/v3/projects/{w.a.project_id}")
    state["user"] = admin.ok("GET", f"/identity/v3/users/{w.a.user_id}")
    state["grants"] = sorted((r["user"]["id"], r["role"]["id"]) for r in admin.ok(
        "GET", f"/identity/v3/role_assignments?scope.project.id={w.a.project_id}")[
        "role_assignments"])
    state["token_a"] = admin("GET", "/identity/v3/auth/tokens",
                             headers={"X-Subject-Token": i["token_a"]}).status_code
    return state


# ------------------------------------------------------------------ the matrix
def _lines(w: World) -> list[Line]:
    i, a, b = w.ids, w.a, w.b
    vb, va = w.vpath(b.project_id), w.vpath(a.project_id)
    img, shared = f"/image/v2/images/{i['image']}", f"/image/v2/images/{i['shared_image']}"
    vol, snap = f"{vb}/volumes/{i['volume']}", f"{vb}/snapshots/{i['snapshot']}"
    srv = f"/compute/v2.1/servers/{i['server']}"
    att = f"{vb}/attachments/{i['attachment']}"
    kp = f"/compute/v2.1/os-keypairs/{i['keypair']}"
    patch = {"Content-Type": JSON_PATCH}
    octet = {"Content-Type": "application/octet-stream"}
    att_v = {"OpenStack-API-Version": "volume 3.54"}
    lines = [
        # ---------------------------------------------------------- identity
        Line("identity", "show A's project", "GET", f"/identity/v3/projects/{a.project_id}"),
        Line("identity", "update A's project", "PATCH",
             f"/identity/v3/projects/{a.project_id}", {"project": {"description": "b"}}),
        Line("identity", "disable A's project", "PATCH",
             f"/identity/v3/projects/{a.project_id}", {"project": {"enabled": False}}),
        Line("identity", "delete A's project", "DELETE",
             f"/identity/v3/projects/{a.project_id}"),
        Line("identity", "list projects", "GET", "/identity/v3/projects"),
        Line("identity", "show A's user", "GET", f"/identity/v3/users/{a.user_id}"),
        Line("identity", "set A's password", "PATCH", f"/identity/v3/users/{a.user_id}",
             {"user": {"password": "taken-over"}}),
        Line("identity", "move A's user", "PATCH", f"/identity/v3/users/{a.user_id}",
             {"user": {"default_project_id": b.project_id}}),
        Line("identity", "delete A's user", "DELETE", f"/identity/v3/users/{a.user_id}"),
        Line("identity", "change A's password", "POST",
             f"/identity/v3/users/{a.user_id}/password",
             {"user": {"password": "taken-over", "original_password": "guess"}}),
        Line("identity", "list users", "GET", "/identity/v3/users"),
        Line("identity", "list A's user's projects", "GET",
             f"/identity/v3/users/{a.user_id}/projects"),
        Line("identity", "give myself a role on A", "PUT",
             f"/identity/v3/projects/{a.project_id}/users/{b.user_id}/roles/"
             f"{i['member_role']}"),
        Line("identity", "revoke A's role", "DELETE",
             f"/identity/v3/projects/{a.project_id}/users/{a.user_id}/roles/"
             f"{i['member_role']}"),
        Line("identity", "check A's grant", "GET",
             f"/identity/v3/projects/{a.project_id}/users/{a.user_id}/roles/"
             f"{i['member_role']}"),
        Line("identity", "list A's grants", "GET",
             f"/identity/v3/projects/{a.project_id}/users/{a.user_id}/roles"),
        Line("identity", "A's role assignments", "GET",
             f"/identity/v3/role_assignments?user.id={a.user_id}"),
        Line("identity", "assignments on A's project", "GET",
             f"/identity/v3/role_assignments?scope.project.id={a.project_id}"),
        Line("identity", "validate A's token", "GET", "/identity/v3/auth/tokens",
             headers={"X-Subject-Token": i["token_a"]}),
        Line("identity", "check A's token", "HEAD", "/identity/v3/auth/tokens",
             headers={"X-Subject-Token": i["token_a"]}),
        Line("identity", "revoke A's token", "DELETE", "/identity/v3/auth/tokens",
             headers={"X-Subject-Token": i["token_a"]}),
        Line("identity", "a token on A's project", "POST", "/identity/v3/auth/tokens", {
            "auth": {"identity": {"methods": ["password"], "password": {"user": {
                "id": b.user_id, "password": b.password}}},
                "scope": {"project": {"id": a.project_id}}}}, UNAUTHORIZED),
        # ---------------------------------------------------------- images
        Line("image", "show private", "GET", img),
        Line("image", "update private", "PATCH", img, [
            {"op": "replace", "path": "/name", "value": "b"}], headers=patch),
        Line("image", "make private public", "PATCH", img, [
            {"op": "replace", "path": "/visibility", "value": "community"}], headers=patch),
        Line("image", "delete private", "DELETE", img),
        Line("image", "create mine with A's image id", "POST", "/image/v2/images",
             {"id": i["image"], "name": "b", "disk_format": "raw",
              "container_format": "bare"}, frozenset({409})),
        Line("image", "upload private", "PUT", f"{img}/file", content=b"x" * 512,
             headers=octet),
        Line("image", "download private", "GET", f"{img}/file"),
        Line("image", "deactivate private", "POST", f"{img}/actions/deactivate"),
        Line("image", "reactivate private", "POST", f"{img}/actions/reactivate"),
        Line("image", "tag private", "PUT", f"{img}/tags/b"),
        Line("image", "untag private", "DELETE", f"{img}/tags/b"),
        Line("image", "members of private", "GET", f"{img}/members"),
        Line("image", "add myself to private", "POST", f"{img}/members",
             {"member": b.project_id}),
        Line("image", "my membership of private", "GET", f"{img}/members/{b.project_id}"),
        Line("image", "accept private", "PUT", f"{img}/members/{b.project_id}",
             {"status": "accepted"}),
        Line("image", "remove A from private", "DELETE", f"{img}/members/{a.project_id}"),
        Line("image", "update shared", "PATCH", shared, [
            {"op": "replace", "path": "/name", "value": "b"}], headers=patch),
        Line("image", "delete shared", "DELETE", shared),
        Line("image", "upload shared", "PUT", f"{shared}/file", content=b"x" * 512,
             headers=octet),
        Line("image", "add a member to shared", "POST", f"{shared}/members",
             {"member": uuid.uuid4().hex}),
        Line("image", "remove myself from shared", "DELETE",
             f"{shared}/members/{b.project_id}"),
        Line("image", "tag shared", "PUT", f"{shared}/tags/b"),
        # ---------------------------------------------------------- volumes
        Line("volume", "show", "GET", vol),
        Line("volume", "show in A's URL", "GET", f"{va}/volumes/{i['volume']}"),
        Line("volume", "list A's volumes in A's URL", "GET", f"{va}/volumes/detail"),
        Line("volume", "update", "PUT", vol, {"volume": {"name": "b"}}),
        Line("volume", "delete", "DELETE", vol),
        Line("volume", "delete in A's URL", "DELETE", f"{va}/volumes/{i['volume']}"),
        Line("volume", "extend", "POST", f"{vol}/action", {"os-extend": {"new_size": 2}}),
        Line("volume", "readonly", "POST", f"{vol}/action",
             {"os-update_readonly_flag": {"readonly": True}}),
        Line("volume", "bootable", "POST", f"{vol}/action",
             {"os-set_bootable": {"bootable": True}}),
        Line("volume", "reset status", "POST", f"{vol}/action",
             {"os-reset_status": {"status": "error"}}),
        Line("volume", "upload to image", "POST", f"{vol}/action",
             {"os-volume_upload_image": {"image_name": "stolen", "force": True}}),
        Line("volume", "revert", "POST", f"{vol}/action",
             {"revert": {"snapshot_id": i["snapshot"]}}),
        Line("volume", "reserve", "POST", f"{vol}/action", {"os-reserve": {}}),
        Line("volume", "unreserve", "POST", f"{vb}/volumes/{i['volume2']}/action",
             {"os-unreserve": {}}),
        Line("volume", "begin detaching", "POST", f"{vol}/action",
             {"os-begin_detaching": {}}),
        Line("volume", "roll detaching", "POST", f"{vol}/action", {"os-roll_detaching": {}}),
        Line("volume", "initialize connection", "POST", f"{vol}/action",
             {"os-initialize_connection": {"connector": {"host": "b"}}}),
        Line("volume", "terminate connection", "POST", f"{vol}/action",
             {"os-terminate_connection": {"connector": {"host": "b"}}}),
        Line("volume", "attach", "POST", f"{vol}/action", {"os-attach": {
            "instance_uuid": i["server_b"], "mountpoint": "/dev/vdb"}}),
        Line("volume", "detach", "POST", f"{vb}/volumes/{i['volume2']}/action",
             {"os-detach": {"attachment_id": i["attachment"]}}),
        Line("volume", "revert my volume to A's snapshot", "POST",
             f"{vb}/volumes/{i['volume_b']}/action", {"revert": {"snapshot_id": i["snapshot"]}}),
        Line("volume", "detach A's attachment from my volume", "POST",
             f"{vb}/volumes/{i['volume_b']}/action",
             {"os-detach": {"attachment_id": i["attachment"]}}, frozenset({400, 404})),
        Line("volume", "show metadata", "GET", f"{vol}/metadata"),
        Line("volume", "merge metadata", "POST", f"{vol}/metadata",
             {"metadata": {"owner": "b"}}),
        Line("volume", "replace metadata", "PUT", f"{vol}/metadata", {"metadata": {}}),
        Line("volume", "delete metadata key", "DELETE", f"{vol}/metadata/owner"),
        Line("volume", "snapshot A's volume", "POST", f"{vb}/snapshots",
             {"snapshot": {"volume_id": i["volume"], "force": True}}),
        Line("volume", "create from A's snapshot", "POST", f"{vb}/volumes",
             {"volume": {"snapshot_id": i["snapshot"]}}),
        Line("volume", "clone A's volume", "POST", f"{vb}/volumes",
             {"volume": {"source_volid": i["volume"]}}),
        Line("volume", "create from A's private image", "POST", f"{vb}/volumes",
             {"volume": {"imageRef": i["image"], "size": 1}}, CINDER_IMAGE),
        Line("volume", "show snapshot", "GET", snap),
        Line("volume", "update snapshot", "PUT", snap, {"snapshot": {"name": "b"}}),
        Line("volume", "delete snapshot", "DELETE", snap),
        Line("volume", "snapshot metadata", "GET", f"{snap}/metadata"),
        Line("volume", "set snapshot metadata", "PUT", f"{snap}/metadata",
             {"metadata": {}}),
        Line("volume", "delete snapshot metadata key", "DELETE", f"{snap}/metadata/owner"),
        Line("volume", "attachment for A's volume", "POST", f"{vb}/attachments",
             {"attachment": {"volume_uuid": i["volume"], "volume_id": i["volume"]}},
             headers=att_v),
        Line("volume", "show attachment", "GET", att, headers=att_v),
        Line("volume", "update attachment", "PUT", att,
             {"attachment": {"connector": {"host": "b"}}}, headers=att_v),
        Line("volume", "complete attachment", "POST", f"{att}/action",
             {"os-complete": None}, headers=att_v),
        Line("volume", "delete attachment", "DELETE", att, headers=att_v),
        Line("volume", "A's quota", "GET", f"{vb}/os-quota-sets/{a.project_id}"),
        Line("volume", "set A's quota", "PUT", f"{vb}/os-quota-sets/{a.project_id}",
             {"quota_set": {"volumes": 0}}),
        # ---------------------------------------------------------- volume types
        Line("volume type", "show private", "GET", f"{vb}/types/{i['type']}"),
        Line("volume type", "show private by name", "GET", f"{vb}/types/{i['type_name']}"),
        Line("volume type", "extra specs of private", "GET",
             f"{vb}/types/{i['type']}/extra_specs"),
        Line("volume type", "access list", "GET",
             f"{vb}/types/{i['type']}/os-volume-type-access"),
        Line("volume type", "give myself access", "POST", f"{vb}/types/{i['type']}/action",
             {"addProjectAccess": {"project": b.project_id}}),
        Line("volume type", "take A's access", "POST", f"{vb}/types/{i['type']}/action",
             {"removeProjectAccess": {"project": a.project_id}}),
        Line("volume type", "make it public", "PUT", f"{vb}/types/{i['type']}",
             {"volume_type": {"is_public": True}}),
        Line("volume type", "create a volume of it", "POST", f"{vb}/volumes",
             {"volume": {"size": 1, "volume_type": i["type"]}}),
        Line("volume type", "create a volume of it by name", "POST", f"{vb}/volumes",
             {"volume": {"size": 1, "volume_type": i["type_name"]}}),
        # ---------------------------------------------------------- compute
        Line("compute", "show", "GET", srv),
        Line("compute", "update", "PUT", srv, {"server": {"name": "b"}}),
        Line("compute", "delete", "DELETE", srv),
        Line("compute", "list all tenants", "GET", "/compute/v2.1/servers?all_tenants=1"),
        *(Line("compute", f"action {name}", "POST", f"{srv}/action", {name: body})
          for name, body in (("os-stop", None), ("os-start", None), ("pause", None),
                             ("unpause", None), ("suspend", None), ("resume", None),
                             ("reboot", {"type": "HARD"}),
                             ("createImage", {"name": "stolen"}),
                             ("os-getConsoleOutput", {}))),
        Line("compute", "serial console URL", "POST", f"{srv}/remote-consoles",
             {"remote_console": {"protocol": "serial", "type": "serial"}}),
        Line("compute", "action os-getSerialConsole", "POST", f"{srv}/action",
             {"os-getSerialConsole": {"type": "serial"}},
             headers={"X-OpenStack-Nova-API-Version": "2.5"}),
        Line("compute", "metadata", "GET", f"{srv}/metadata"),
        Line("compute", "metadata item", "GET", f"{srv}/metadata/owner"),
        Line("compute", "merge metadata", "POST", f"{srv}/metadata",
             {"metadata": {"owner": "b"}}),
        Line("compute", "replace metadata", "PUT", f"{srv}/metadata", {"metadata": {}}),
        Line("compute", "set metadata item", "PUT", f"{srv}/metadata/owner",
             {"meta": {"owner": "b"}}),
        Line("compute", "delete metadata item", "DELETE", f"{srv}/metadata/owner"),
        Line("compute", "volume attachments", "GET", f"{srv}/os-volume_attachments"),
        Line("compute", "volume attachment", "GET",
             f"{srv}/os-volume_attachments/{i['volume2']}"),
        Line("compute", "attach my volume to A's server", "POST",
             f"{srv}/os-volume_attachments", {"volumeAttachment": {
                 "volumeId": i["volume_b"]}}),
        Line("compute", "attach A's volume to my server", "POST",
             f"/compute/v2.1/servers/{i['server_b']}/os-volume_attachments",
             {"volumeAttachment": {"volumeId": i["volume"]}}),
        Line("compute", "detach from A's server", "DELETE",
             f"{srv}/os-volume_attachments/{i['volume2']}"),
        Line("compute", "instance actions", "GET", f"{srv}/os-instance-actions"),
        Line("compute", "A's quota", "GET", f"/compute/v2.1/os-quota-sets/{a.project_id}"),
        Line("compute", "A's quota detail", "GET",
             f"/compute/v2.1/os-quota-sets/{a.project_id}/detail"),
        Line("compute", "set A's quota", "PUT", f"/compute/v2.1/os-quota-sets/{a.project_id}",
             {"quota_set": {"instances": 0}}),
        *(Line("compute", f"{what} A's keypair", method, f"{kp}?user_id={a.user_id}")
          for what, method in (("show", "GET"), ("delete", "DELETE"))),
        *(Line("compute", f"{what} A's keypair by name", method, kp, expect=frozenset({404}))
          for what, method in (("show", "GET"), ("delete", "DELETE"))),
        Line("compute", "A's keypairs", "GET", f"/compute/v2.1/os-keypairs?user_id={a.user_id}"),
        Line("compute", "a keypair for A", "POST", "/compute/v2.1/os-keypairs", {"keypair": {
            "name": _uniq("kp"), "public_key": KEY, "user_id": a.user_id}}),
        Line("compute", "boot with A's keypair", "POST", "/compute/v2.1/servers",
             {"server": {"name": "b", "flavorRef": "1", "networks": "none",
                         "imageRef": i["shared_image"], "key_name": i["keypair"]}}, NOVA_BAD),
        *(Line("compute", f"boot from {what}", "POST", "/compute/v2.1/servers",
               {"server": {"name": "b", "flavorRef": "1", "networks": "none", **body}},
               NOVA_BAD)
          for what, body in (
              ("A's private image", {"imageRef": i["image"]}),
              ("A's volume", {"block_device_mapping_v2": [{
                  "uuid": i["volume"], "boot_index": 0, "source_type": "volume",
                  "destination_type": "volume"}]}),
              ("A's snapshot", {"block_device_mapping_v2": [{
                  "uuid": i["snapshot"], "boot_index": 0, "source_type": "snapshot",
                  "destination_type": "volume"}]}),
              ("A's image to a volume", {"block_device_mapping_v2": [{
                  "uuid": i["image"], "boot_index": 0, "source_type": "image",
                  "destination_type": "volume", "volume_size": 1}]}),
              ("my image with A's volume attached", {
                  "imageRef": i["shared_image"], "block_device_mapping_v2": [{
                      "uuid": i["volume"], "boot_index": 1, "source_type": "volume",
                      "destination_type": "volume"}]}))),
    ]
    return lines


def _listings(w: World) -> dict[str, set[str]]:
    """What B's list calls return (A's ids must be in none of them)."""
    i, cb = w.ids, w.cb
    vb = w.vpath(w.b.project_id)
    seen: dict[str, set[str]] = {}
    for path, key in (
            (f"{vb}/volumes", "volumes"), (f"{vb}/volumes/detail", "volumes"),
            (f"{vb}/volumes/detail?all_tenants=1", "volumes"),
            (f"{vb}/volumes/detail?project_id={w.a.project_id}", "volumes"),
            (f"{vb}/snapshots/detail", "snapshots"),
            (f"{vb}/snapshots/detail?all_tenants=1", "snapshots"),
            (f"{vb}/snapshots/detail?volume_id={i['volume']}", "snapshots"),
            (f"{vb}/types", "volume_types"), (f"{vb}/types?is_public=None", "volume_types"),
            (f"{vb}/types?is_public=false", "volume_types"),
            ("/image/v2/images", "images"), ("/image/v2/images?visibility=private", "images"),
            (f"/image/v2/images?owner={w.a.project_id}", "images"),
            ("/image/v2/images?visibility=all", "images"),
            ("/compute/v2.1/servers/detail", "servers"),
            (f"/compute/v2.1/servers/detail?project_id={w.a.project_id}", "servers"),
            (f"/compute/v2.1/servers/detail?tenant_id={w.a.project_id}", "servers"),
            ("/identity/v3/auth/projects", "projects")):
        r = cb("GET", path)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
        seen[path] = {x["id"] for x in r.json()[key]}
    r = cb("GET", f"{vb}/attachments", headers={"OpenStack-API-Version": "volume 3.54"})
    seen["attachments"] = {x["id"] for x in r.json()["attachments"]}
    seen["keypairs"] = {k["keypair"]["name"] for k in cb.ok(
        "GET", "/compute/v2.1/os-keypairs")["keypairs"]}
    return seen


def test_project_b_cannot_see_or_touch_project_a(world: World) -> None:
    w, i = world, world.ids
    before = _state(w)
    failures = []
    for line in _lines(w):
        r = w.cb(line.method, line.path, line.body, headers=line.headers,
                 content=line.content)
        if r.status_code not in line.expect:
            failures.append(f"{line.service}: {line.what}: {line.method} {line.path} -> "
                            f"{r.status_code} (want {sorted(line.expect)}) {r.text[:200]}")
        elif r.status_code >= 500 or "Traceback" in r.text:
            failures.append(f"{line.service}: {line.what}: {r.status_code} {r.text[:200]}")
    a_ids = {i[k] for k in ("image", "shared_image", "volume", "volume2", "snapshot",
                            "attachment", "type", "server", "keypair")} | {w.a.project_id}
    for path, ids in _listings(w).items():
        if ids & a_ids:
            failures.append(f"listing {path} shows A's {sorted(ids & a_ids)}")
    assert not failures, "\n".join(failures)

    time.sleep(0.5)  # anything B's requests enqueued would have started by now
    after = _state(w)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, changed
    # B owns only what it made itself: no volume, snapshot, image or server came of it
    vb = w.vpath(w.b.project_id)
    assert {v["id"] for v in w.cb.ok("GET", f"{vb}/volumes")["volumes"]} == {i["volume_b"]}
    assert w.cb.ok("GET", f"{vb}/snapshots")["snapshots"] == []
    assert {s["id"] for s in w.cb.ok("GET", "/compute/v2.1/servers")["servers"]} == {
        i["server_b"]}
    mine = [x for x in w.cb.ok("GET", "/image/v2/images")["images"]
            if x["owner"] == w.b.project_id]
    assert mine == []
    # and B's token still works only for B
    assert w.cb("GET", f"{vb}/volumes").status_code == 200


def test_markers_of_another_project_are_not_found(world: World) -> None:
    """A paging marker is looked up as the caller: A's ids are "not found" (400 in Nova
    and Cinder) for B, never a page that starts after A's resource."""
    w, i = world, world.ids
    vb = w.vpath(w.b.project_id)
    for path in (f"/compute/v2.1/servers/detail?marker={i['server']}",
                 f"{vb}/volumes/detail?marker={i['volume']}",
                 f"{vb}/snapshots/detail?marker={i['snapshot']}",
                 f"/image/v2/images?marker={i['image']}"):
        r = w.cb("GET", path)
        assert r.status_code in (400, 404), f"{path}: {r.status_code} {r.text}"
