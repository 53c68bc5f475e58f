"""Identity and the auth middleware over HTTP, against a real `strato serve`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from strato.identity.tokens import TokenFactory, load_keys
from tests.support import Server


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def member(server: Server, admin_token: str) -> dict:
    """A fresh project and a user with the member role on it."""
    with server.client(admin_token) as c:
        project = c.post("/identity/v3/projects", json={"project": {"name": _uniq("p")}})
        user = c.post("/identity/v3/users", json={"user": {"name": _uniq("u"),
                                                           "password": "pw-member"}})
        role = c.get("/identity/v3/roles", params={"name": "member"}).json()["roles"][0]
        pid, uid = project.json()["project"]["id"], user.json()["user"]["id"]
        r = c.put(f"/identity/v3/projects/{pid}/users/{uid}/roles/{role['id']}")
        assert r.status_code == 204
    return {"project": project.json()["project"], "user": user.json()["user"]}


def _member_token(server: Server, member: dict, password: str = "pw-member") -> httpx.Response:
    return httpx.post(f"{server.url}/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "id": member["user"]["id"], "password": password}}},
        "scope": {"project": {"id": member["project"]["id"]}}}})


def test_discovery_needs_no_token(server: Server) -> None:
    with server.client() as c:
        r = c.get("/identity")
        assert r.status_code == 300
        assert r.json()["versions"]["values"][0]["id"] == "v3.14"
        r = c.get("/identity/v3")
        assert r.status_code == 200 and r.json()["version"]["status"] == "stable"
        r = c.get("/compute/v2.1")
        doc = r.json()["version"]
        assert (doc["min_version"], doc["version"]) == ("2.1", "2.92")
        r = c.get("/image")
        assert r.status_code == 300
        assert r.json()["versions"][0]["links"][0]["href"] == f"{server.url}/image/v2/"
        r = c.get("/volume/v3/")
        assert r.json()["versions"][0]["version"] == "3.71"


def test_token_body_has_what_clients_need(server: Server) -> None:
    r = httpx.post(f"{server.url}/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": server.password}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
    assert r.status_code == 201
    assert r.headers["X-OpenStack-Request-Id"].startswith("req-")
    token = r.json()["token"]
    assert token["project"]["name"] == "admin" and token["user"]["name"] == "admin"
    assert {x["name"] for x in token["roles"]} == {"admin", "manager", "member", "reader"}
    assert datetime.fromisoformat(token["expires_at"].replace("Z", "+00:00")) > datetime.now(UTC)
    types = {e["type"] for e in token["catalog"]}
    assert types == {"identity", "compute", "image", "block-storage", "volumev3", "network"}
    volume = next(e for e in token["catalog"] if e["type"] == "volumev3")
    assert volume["endpoints"][0]["url"].endswith(f"/volume/v3/{token['project']['id']}")
    assert {"region", "region_id", "interface"} <= set(volume["endpoints"][0])


def test_validate_and_revoke(server: Server, admin_token: str, member: dict) -> None:
    subject = _member_token(server, member).headers["X-Subject-Token"]
    with server.client(admin_token) as c:
        r = c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": subject})
        assert r.status_code == 200
        assert r.json()["token"]["user"]["id"] == member["user"]["id"]
        assert c.head("/identity/v3/auth/tokens",
                      headers={"X-Subject-Token": subject}).status_code == 200
    with server.client(subject) as c:  # a user may revoke their own token
        assert c.delete("/identity/v3/auth/tokens",
                        headers={"X-Subject-Token": subject}).status_code == 204
    with server.client(admin_token) as c:
        r = c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": subject})
        assert r.status_code == 404 and r.json()["error"]["code"] == 404
    with server.client(subject) as c:
        r = c.get("/identity/v3/auth/projects")
        assert r.status_code == 401


@pytest.mark.parametrize("path,fault_key", [
    ("/identity/v3/projects", "error"),
    ("/compute/v2.1/servers", "unauthorized"),
    ("/volume/v3/x/volumes", "unauthorized"),
])
def test_missing_and_garbage_tokens_get_401_in_the_service_format(
        server: Server, path: str, fault_key: str) -> None:
    for headers in ({}, {"X-Auth-Token": "garbage"}, {"X-Auth-Token": "gAAAAAB" + "x" * 100}):
        r = httpx.get(server.url + path, headers=headers)
        assert r.status_code == 401, (path, headers, r.text)
        assert fault_key in r.json()
        assert r.headers["WWW-Authenticate"].startswith("Keystone uri=")
        assert r.headers["X-OpenStack-Request-Id"].startswith("req-")


def test_image_faults_are_glance_shaped(server: Server) -> None:
    r = httpx.get(f"{server.url}/image/v2/images")
    assert r.status_code == 401
    assert r.json()["code"] == "401 Unauthorized" and r.json()["message"]


def test_expired_token_is_refused(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        admin = c.get("/identity/v3/auth/tokens",
                      headers={"X-Subject-Token": admin_token}).json()["token"]
    factory = TokenFactory(load_keys(server.state / "fernet-keys"), 3600)
    expired, _ = factory.issue(admin["user"]["id"], admin["project"]["id"], ("password",),
                               expires_at=datetime.now(UTC) - timedelta(seconds=1))
    with server.client(expired) as c:
        assert c.get("/identity/v3/projects").status_code == 401
    fresh, _ = factory.issue(admin["user"]["id"], admin["project"]["id"], ("password",))
    with server.client(fresh) as c:  # same key, not expired: accepted
        assert c.get("/identity/v3/projects").status_code == 200


def test_forged_token_with_another_key_is_refused(server: Server, tmp_path) -> None:
    factory = TokenFactory(load_keys(tmp_path / "other-keys"), 3600)
    with server.client() as c:
        me = c.post("/identity/v3/auth/tokens", json={"auth": {"identity": {
            "methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"},
                "password": server.password}}}}}).json()["token"]
    forged, _ = factory.issue(me["user"]["id"], None, ("password",))
    assert httpx.get(f"{server.url}/identity/v3/auth/projects",
                     headers={"X-Auth-Token": forged}).status_code == 401


def test_wrong_password_unknown_user_and_unknown_project(server: Server, member: dict) -> None:
    assert _member_token(server, member, password="wrong").status_code == 401
    for auth in (
        {"identity": {"methods": ["password"], "password": {"user": {
            "name": "nobody", "domain": {"id": "default"}, "password": "x"}}}},
        {"identity": {"methods": ["password"], "password": {"user": {
            "id": member["user"]["id"], "password": "pw-member"}}},
         "scope": {"project": {"name": "no-such-project", "domain": {"id": "default"}}}},
        {"identity": {"methods": ["password"], "password": {"user": {
            "id": member["user"]["id"], "password": "pw-member"}}},
         "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}},
    ):
        r = httpx.post(f"{server.url}/identity/v3/auth/tokens", json={"auth": auth})
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == 401


@pytest.mark.parametrize("body", [None, "not json", {}, {"auth": {}},
                                  {"auth": {"identity": {"methods": ["password"]}}}])
def test_malformed_auth_requests_are_400(server: Server, body) -> None:
    if body is None:
        r = httpx.post(f"{server.url}/identity/v3/auth/tokens")
    elif isinstance(body, str):
        r = httpx.post(f"{server.url}/identity/v3/auth/tokens", content=body,
                       headers={"Content-Type": "application/json"})
    else:
        r = httpx.post(f"{server.url}/identity/v3/auth/tokens", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == 400


def test_member_is_refused_admin_calls(server: Server, member: dict) -> None:
    token = _member_token(server, member).headers["X-Subject-Token"]
    with server.client(token) as c:
        for method, path in (("GET", "/identity/v3/projects"), ("GET", "/identity/v3/users"),
                             ("POST", "/identity/v3/projects"),
                             ("DELETE", f"/identity/v3/projects/{member['project']['id']}")):
            r = c.request(method, path, json={"project": {"name": "x"}})
            assert r.status_code == 403, (method, path, r.text)
            assert "Policy doesn't allow" in r.json()["error"]["message"]
        # ... but may read their own project and list their own projects
        assert c.get(f"/identity/v3/projects/{member['project']['id']}").status_code == 200
        r = c.get(f"/identity/v3/users/{member['user']['id']}/projects")
        assert [p["id"] for p in r.json()["projects"]] == [member["project"]["id"]]


def test_password_change_and_user_delete_end_tokens(server: Server, admin_token: str,
                                                    member: dict) -> None:
    old = _member_token(server, member).headers["X-Subject-Token"]
    uid = member["user"]["id"]
    with server.client(admin_token) as c:
        r = c.patch(f"/identity/v3/users/{uid}", json={"user": {"password": "pw-new"}})
        assert r.status_code == 200
    assert httpx.get(f"{server.url}/identity/v3/auth/projects",
                     headers={"X-Auth-Token": old}).status_code == 401
    assert _member_token(server, member).status_code == 401
    new = _member_token(server, member, "pw-new").headers["X-Subject-Token"]
    with server.client(new) as c:
        assert c.get("/identity/v3/auth/projects").status_code == 200
    with server.client(admin_token) as c:
        assert c.delete(f"/identity/v3/users/{uid}").status_code == 204
        assert c.get(f"/identity/v3/users/{uid}").status_code == 404
    assert httpx.get(f"{server.url}/identity/v3/auth/projects",
                     headers={"X-Auth-Token": new}).status_code == 401


def test_removed_role_ends_access(server: Server, admin_token: str, member: dict) -> None:
    token = _member_token(server, member).headers["X-Subject-Token"]
    pid, uid = member["project"]["id"], member["user"]["id"]
    with server.client(admin_token) as c:
        role = c.get("/identity/v3/roles", params={"name": "member"}).json()["roles"][0]
        assert c.delete(f"/identity/v3/projects/{pid}/users/{uid}/roles/{role['id']}"
                        ).status_code == 204
    assert httpx.get(f"{server.url}/identity/v3/auth/projects",
                     headers={"X-Auth-Token": token}).status_code == 401


def test_duplicates_and_bad_input(server: Server, admin_token: str) -> None:
    name = _uniq("dup")
    with server.client(admin_token) as c:
        assert c.post("/identity/v3/projects", json={"project": {"name": name}}
                      ).status_code == 201
        r = c.post("/identity/v3/projects", json={"project": {"name": name}})
        assert r.status_code == 409 and "Duplicate" in r.json()["error"]["message"]
        for bad in ({}, {"project": {}}, {"project": {"name": ""}},
                    {"project": {"name": "x" * 256}},
                    {"project": {"name": "ok", "enabled": "yes"}},
                    {"project": {"name": "ok", "domain_id": "no-such-domain"}}):
            r = c.post("/identity/v3/projects", json=bad)
            assert r.status_code == 400, (bad, r.text)
        assert c.get("/identity/v3/projects/nope").status_code == 404
        assert c.get("/identity/v3/no-such-thing").status_code == 404


def test_unknown_paths_are_404_in_each_service_format(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        r = c.get("/compute/v2.1/no-such-resource")
        assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404
        r = c.get("/volume/v3/abc/no-such-resource")
        assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404
        r = c.get("/image/v2/no-such-resource")
        assert r.status_code == 404 and r.json()["code"] == "404 Not Found"
        r = c.get("/identity/v3/no-such-resource")
        assert r.status_code == 404 and r.json()["error"]["code"] == 404


def test_microversion_negotiation(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        r = c.get("/compute/v2.1/", headers={"OpenStack-API-Version": "compute 2.45"})
        assert r.headers["OpenStack-API-Version"] == "compute 2.45"
        assert r.headers["X-OpenStack-Nova-API-Version"] == "2.45"
        assert "OpenStack-API-Version" in r.headers["Vary"]
        r = c.get("/compute/v2.1/", headers={"X-OpenStack-Nova-API-Version": "2.60"})
        assert r.headers["OpenStack-API-Version"] == "compute 2.60"
        r = c.get("/compute/v2.1/")
        assert r.headers["OpenStack-API-Version"] == "compute 2.1"
        r = c.get("/compute/v2.1/", headers={"OpenStack-API-Version": "compute latest"})
        assert r.headers["OpenStack-API-Version"] == "compute 2.92"
        r = c.get("/compute/v2.1/flavors", headers={"OpenStack-API-Version": "compute 2.200"})
        assert r.status_code == 406 and "notAcceptable" in r.json()
        r = c.get("/compute/v2.1/", headers={"OpenStack-API-Version": "compute 2.x"})
        assert r.status_code == 400 and "badRequest" in r.json()
        r = c.get("/volume/v3/", headers={"OpenStack-API-Version": "volume 3.65"})
        assert r.headers["OpenStack-API-Version"] == "volume 3.65"
        r = c.get("/volume/v3/p/volumes", headers={"OpenStack-API-Version": "volume 4.0"})
        assert r.status_code == 406


def test_every_request_is_logged_with_id_user_and_status(server: Server,
                                                         admin_token: str) -> None:
    with server.client(admin_token) as c:
        r = c.get("/identity/v3/projects")
    rid = r.headers["X-OpenStack-Request-Id"]
    line = next(ln for ln in server.log.read_text().splitlines() if rid in ln)
    assert '"GET /identity/v3/projects" 200' in line and "user=" in line
    assert "project=" in line and line.rstrip().endswith("ms")
