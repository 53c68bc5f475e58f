"""Private volume types as Cinder has them: hidden from, and unusable by, projects
without access; the os-volume-type-access API; the real client's type commands."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.support import Server
from tests.tenants import Tenant, make_tenant


@pytest.fixture(scope="module")
def tenants(server: Server) -> tuple[Tenant, Tenant]:
    """``b`` is given access to the private type, ``c`` is not."""
    return make_tenant(server, "tab"), make_tenant(server, "tac")


def _cinder(server: Server, token: str, project_id: str, version: str = "3.65"
            ) -> httpx.Client:
    c = server.client(token)
    c.base_url = httpx.URL(f"{server.url}/volume/v3/{project_id}")
    c.headers["OpenStack-API-Version"] = f"volume {version}"
    return c


def _admin(server: Server) -> httpx.Client:
    token = server.token()
    with server.client(token) as c:
        project = c.get("/identity/v3/auth/tokens",
                        headers={"X-Subject-Token": token}).json()["token"]["project"]["id"]
    return _cinder(server, token, project)


def _wait_available(c: httpx.Client, volume_id: str) -> None:
    deadline = time.monotonic() + 60
    while (status := c.get(f"/volumes/{volume_id}").json()["volume"]["status"]) != \
            "available":
        assert status != "error" and time.monotonic() < deadline, status
        time.sleep(0.1)


def test_cli_private_type_access_lifecycle(server: Server,
                                           tenants: tuple[Tenant, Tenant]) -> None:
    b, c = tenants
    name = f"priv-{uuid.uuid4().hex[:8]}"
    # create --private --project: POST /types then addProjectAccess
    created = server.openstack_json("volume", "type", "create", "--private", "--project",
                                    b.project, "--property", "acme:tier=gold", name)
    assert created["is_public"] is False
    shown = server.openstack_json("volume", "type", "show", name)
    assert shown["access_project_ids"] == [b.project_id]
    assert shown["properties"] == {"acme:tier": "gold"}

    # The admin's list is Cinder's: the client sends is_public=none (every type);
    # without it, or with is_public=true, the public ones only; --private the private.
    assert name in {t["Name"] for t in server.openstack_json("volume", "type", "list")}
    assert name in {t["Name"] for t in server.openstack_json("volume", "type", "list",
                                                             "--private")}
    with _admin(server) as admin:
        assert name in {t["name"] for t in admin.get(
            "/types", params={"is_public": "None"}).json()["volume_types"]}
        assert name not in {t["name"] for t in admin.get(
            "/types", params={"is_public": "true"}).json()["volume_types"]}
        assert name not in {t["name"] for t in admin.get("/types").json()["volume_types"]}

    # b sees and uses it; c does not see it at all
    assert name in {t["Name"] for t in b.openstack_json("volume", "type", "list")}
    assert b.openstack_json("volume", "type", "show", name)["name"] == name
    assert name not in {t["Name"] for t in c.openstack_json("volume", "type", "list")}
    assert c.openstack("volume", "type", "show", name, check=False).returncode != 0
    failed = c.openstack("volume", "create", "--size", "1", "--type", name,
                         f"v-{uuid.uuid4().hex[:6]}", check=False)
    assert failed.returncode != 0

    vol = b.openstack_json("volume", "create", "--size", "1", "--type", name,
                           f"v-{uuid.uuid4().hex[:6]}")
    assert vol["type"] == name

    # set --project / unset --project
    server.openstack("volume", "type", "set", "--project", c.project, name)
    assert sorted(server.openstack_json("volume", "type", "show", name)[
        "access_project_ids"]) == sorted([b.project_id, c.project_id])
    assert c.openstack_json("volume", "type", "show", name)["name"] == name
    server.openstack("volume", "type", "unset", "--project", b.project, name)
    assert server.openstack_json("volume", "type", "show", name)[
        "access_project_ids"] == [c.project_id]
    assert b.openstack("volume", "type", "show", name, check=False).returncode != 0
    # b's existing volume keeps its type
    assert b.openstack_json("volume", "show", vol["id"])["type"] == name

    # set --public makes it everyone's; the access list is then not available
    server.openstack("volume", "type", "set", "--public", name)
    assert b.openstack_json("volume", "type", "show", name)["name"] == name
    server.openstack("volume", "type", "set", "--private", name)
    assert b.openstack("volume", "type", "show", name, check=False).returncode != 0

    with _cinder(server, b.token(), b.project_id) as cb:
        _wait_available(cb, vol["id"])
    server.openstack("volume", "delete", vol["id"])


def test_private_type_http(server: Server, tenants: tuple[Tenant, Tenant]) -> None:
    b, c = tenants
    with _admin(server) as admin:
        r = admin.post("/types", json={"volume_type": {
            "name": f"priv-{uuid.uuid4().hex[:8]}", "os-volume-type-access:is_public": False,
            "extra_specs": {"acme:secret": "yes"}}})
        assert r.status_code == 200, r.text
        vtype = r.json()["volume_type"]
        assert vtype["os-volume-type-access:is_public"] is False
        tid, tname = vtype["id"], vtype["name"]
        assert admin.get(f"/types/{tid}/os-volume-type-access").json() == {
            "volume_type_access": []}
        r = admin.post(f"/types/{tid}/action",
                       json={"addProjectAccess": {"project": b.project_id}})
        assert r.status_code == 202, r.text
        assert admin.get(f"/types/{tid}/os-volume-type-access").json() == {
            "volume_type_access": [{"volume_type_id": tid, "project_id": b.project_id}]}
        # Cinder's answers for the edge cases
        assert admin.post(f"/types/{tid}/action", json={
            "addProjectAccess": {"project": b.project_id}}).status_code == 409
        assert admin.post(f"/types/{tid}/action", json={
            "removeProjectAccess": {"project": c.project_id}}).status_code == 404
        for bad in ({"addProjectAccess": {}}, {"addProjectAccess": {"project": ["x"]}},
                    {"addProjectAccess": {"project": ""}}, {"addProjectAccess": "x"},
                    {"noSuchAction": {"project": b.project_id}}, [], {}):
            r = admin.post(f"/types/{tid}/action", json=bad)
            assert r.status_code == 400, (bad, r.text)
            assert "badRequest" in r.json()
        public = admin.get("/types/default").json()["volume_type"]
        assert admin.get(f"/types/{public['id']}/os-volume-type-access").status_code == 404
        assert admin.post(f"/types/{public['id']}/action", json={
            "addProjectAccess": {"project": c.project_id}}).status_code == 400
        assert admin.post("/types/no-such-type/action", json={
            "addProjectAccess": {"project": c.project_id}}).status_code == 404
        # is_public on update, both spellings
        for key in ("is_public", "os-volume-type-access:is_public"):
            r = admin.put(f"/types/{tid}", json={"volume_type": {key: True}})
            assert r.json()["volume_type"]["is_public"] is True
            r = admin.put(f"/types/{tid}", json={"volume_type": {key: False}})
            assert r.json()["volume_type"]["is_public"] is False

    with _cinder(server, c.token(), c.project_id) as cc:
        assert tid not in {t["id"] for t in cc.get("/types").json()["volume_types"]}
        assert tid not in {t["id"] for t in cc.get(
            "/types", params={"is_public": "None"}).json()["volume_types"]}
        for ref in (tid, tname):
            assert cc.get(f"/types/{ref}").status_code == 404
            r = cc.post("/volumes", json={"volume": {"size": 1, "volume_type": ref}})
            assert r.status_code == 404, r.text
            assert "itemNotFound" in r.json()
        assert cc.get(f"/types/{tid}/extra_specs").status_code == 404
        # the access API is the admin's
        assert cc.get(f"/types/{tid}/os-volume-type-access").status_code == 403
        assert cc.post(f"/types/{tid}/action", json={
            "addProjectAccess": {"project": c.project_id}}).status_code == 403
        assert cc.get("/volumes/detail").json()["volumes"] == []

    with _cinder(server, b.token(), b.project_id) as cb:
        assert tid in {t["id"] for t in cb.get("/types").json()["volume_types"]}
        assert cb.get(f"/types/{tid}").json()["volume_type"]["name"] == tname
        assert cb.get(f"/types/{tid}/extra_specs").json() == {
            "extra_specs": {"acme:secret": "yes"}}
        r = cb.post("/volumes", json={"volume": {"size": 1, "volume_type": tname}})
        assert r.status_code == 202, r.text
        vol = r.json()["volume"]
        assert vol["volume_type"] == tname
        _wait_available(cb, vol["id"])
        assert cb.delete(f"/volumes/{vol['id']}").status_code == 202
        deadline = time.monotonic() + 60
        while cb.get(f"/volumes/{vol['id']}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)

    with _admin(server) as admin:
        r = admin.post(f"/types/{tid}/action",
                       json={"removeProjectAccess": {"project": b.project_id}})
        assert r.status_code == 202
        r = admin.delete(f"/types/{tid}")
        assert r.status_code == 202, r.text
        assert admin.get(f"/types/{tid}").status_code == 404


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_type_access_on_postgresql(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The access table on PostgreSQL: add, list, a hidden type, remove, cascade."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    from tests.support import free_port

    srv = Server(tmp_path, free_port(), extra_conf={"database": {"connection": db_url}})
    srv.setup()
    srv.start()
    try:
        other = make_tenant(srv, "pg")
        with _admin(srv) as admin:
            tid = admin.post("/types", json={"volume_type": {
                "name": "pg-private", "os-volume-type-access:is_public": False}}).json()[
                "volume_type"]["id"]
            with _cinder(srv, other.token(), other.project_id) as c:
                assert c.get(f"/types/{tid}").status_code == 404
                assert admin.post(f"/types/{tid}/action", json={"addProjectAccess": {
                    "project": other.project_id}}).status_code == 202
                assert admin.post(f"/types/{tid}/action", json={"addProjectAccess": {
                    "project": other.project_id}}).status_code == 409
                assert admin.get(f"/types/{tid}/os-volume-type-access").json()[
                    "volume_type_access"] == [{"volume_type_id": tid,
                                               "project_id": other.project_id}]
                assert c.get(f"/types/{tid}").status_code == 200
                assert tid in {t["id"] for t in c.get("/types").json()["volume_types"]}
            assert admin.delete(f"/types/{tid}").status_code == 202
            assert admin.get(f"/types/{tid}").status_code == 404
    finally:
        srv.stop()
