"""Every identity view against its exact API-reference shape, over HTTP on a real server.

Also the behaviour Tempest's dynamic credentials and the everyday clients rely on:
system- and domain-scoped tokens, group and inherited grants, application credentials,
and Keystone's 501 for the APIs strato does not implement.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.api_schemas import assert_shape
from tests.api_schemas import identity as s
from tests.support import Server

V3 = "/identity/v3"


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def admin(server: Server, admin_token: str) -> Iterator[httpx.Client]:
    with server.client(admin_token) as c:
        yield c


def _ok(r: httpx.Response, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json() if r.content else {}


def _auth(server: Server, identity: dict, scope: dict | None = None) -> httpx.Response:
    body: dict = {"auth": {"identity": identity}}
    if scope is not None:
        body["auth"]["scope"] = scope
    return httpx.post(f"{server.url}{V3}/auth/tokens", json=body)


def _password(user_id: str, password: str) -> dict:
    return {"methods": ["password"],
            "password": {"user": {"id": user_id, "password": password}}}


def _role_id(c: httpx.Client, name: str) -> str:
    return _ok(c.get(f"{V3}/roles", params={"name": name}))["roles"][0]["id"]


def test_discovery_shapes(server: Server) -> None:
    with server.client() as c:
        r = c.get("/identity")
        assert r.status_code == 300
        assert_shape(r.json(), s.VERSIONS)
        assert_shape(_ok(c.get(V3)), s.V3)


def test_resource_views_are_exact(admin: httpx.Client) -> None:
    domain = _ok(admin.post(f"{V3}/domains", json={"domain": {"name": _uniq("d")}}), 201)
    assert_shape(domain["domain"], s.DOMAIN)
    did = domain["domain"]["id"]
    assert_shape(_ok(admin.get(f"{V3}/domains")), s.listing("domains", s.DOMAIN))

    parent = _ok(admin.post(f"{V3}/projects", json={"project": {
        "name": _uniq("p"), "domain_id": did, "tags": ["a"]}}), 201)["project"]
    assert_shape(parent, s.PROJECT)
    assert parent["parent_id"] == did
    child = _ok(admin.post(f"{V3}/projects", json={"project": {
        "name": _uniq("c"), "parent_id": parent["id"]}}), 201)["project"]
    assert_shape(child, s.PROJECT)
    assert (child["parent_id"], child["domain_id"]) == (parent["id"], did)
    listed = _ok(admin.get(f"{V3}/projects", params={"parent_id": parent["id"]}))
    assert_shape(listed, s.listing("projects", s.PROJECT))
    assert [p["id"] for p in listed["projects"]] == [child["id"]]
    # a project with sub-projects cannot go first (Keystone: 403)
    assert admin.delete(f"{V3}/projects/{parent['id']}").status_code == 403

    user = _ok(admin.post(f"{V3}/users", json={"user": {
        "name": _uniq("u"), "domain_id": did, "password": "pw-1"}}), 201)["user"]
    assert_shape(user, s.USER)
    assert_shape(_ok(admin.get(f"{V3}/users")), s.listing("users", s.USER))

    role = _ok(admin.post(f"{V3}/roles", json={"role": {"name": _uniq("r")}}), 201)["role"]
    assert_shape(role, s.ROLE)
    droles = _ok(admin.post(f"{V3}/roles", json={"role": {
        "name": _uniq("dr"), "domain_id": did}}), 201)["role"]
    assert_shape(droles, s.ROLE)
    assert [r["id"] for r in _ok(admin.get(f"{V3}/roles", params={"domain_id": did}))[
        "roles"]] == [droles["id"]]

    group = _ok(admin.post(f"{V3}/groups", json={"group": {
        "name": _uniq("g"), "domain_id": did}}), 201)["group"]
    assert_shape(group, s.GROUP)
    assert_shape(_ok(admin.get(f"{V3}/groups")), s.listing("groups", s.GROUP))
    assert admin.put(f"{V3}/groups/{group['id']}/users/{user['id']}").status_code == 204
    assert admin.head(f"{V3}/groups/{group['id']}/users/{user['id']}").status_code == 204
    assert_shape(_ok(admin.get(f"{V3}/groups/{group['id']}/users")),
                 s.listing("users", s.USER))
    assert_shape(_ok(admin.get(f"{V3}/users/{user['id']}/groups")),
                 s.listing("groups", s.GROUP))

    tags = _ok(admin.put(f"{V3}/projects/{parent['id']}/tags", json={"tags": ["x", "y"]}))
    assert_shape(tags, s.PROJECT_TAGS)
    assert admin.put(f"{V3}/projects/{parent['id']}/tags/z").status_code == 201
    assert admin.get(f"{V3}/projects/{parent['id']}/tags/z").status_code == 204
    assert _ok(admin.get(f"{V3}/projects/{parent['id']}/tags"))["tags"] == ["x", "y", "z"]
    assert admin.delete(f"{V3}/projects/{parent['id']}/tags/q").status_code == 404
    for query, hit in (({"tags": "x,z"}, True), ({"tags": "x,q"}, False),
                       ({"tags-any": "q,z"}, True), ({"not-tags": "x,y"}, False),
                       ({"not-tags-any": "q"}, True)):
        found = _ok(admin.get(f"{V3}/projects", params={"domain_id": did, **query}))
        assert (parent["id"] in [p["id"] for p in found["projects"]]) is hit, query

    prior = _ok(admin.post(f"{V3}/roles", json={"role": {"name": _uniq("pr")}}), 201)["role"]
    inference = _ok(admin.put(f"{V3}/roles/{prior['id']}/implies/{role['id']}"), 201)
    assert_shape(inference, s.ROLE_INFERENCE)
    assert_shape(_ok(admin.get(f"{V3}/roles/{prior['id']}/implies")), s.ROLE_INFERENCES_OF)
    assert_shape(_ok(admin.get(f"{V3}/role_inferences")), s.ROLE_INFERENCES)
    # no rule from a global role to a domain role
    assert admin.put(f"{V3}/roles/{role['id']}/implies/{prior['id']}").status_code == 403

    # deleting a disabled domain takes its projects, users and groups (as Keystone)
    assert admin.delete(f"{V3}/projects/{child['id']}").status_code == 204
    assert admin.delete(f"{V3}/domains/{did}").status_code == 403  # still enabled
    _ok(admin.patch(f"{V3}/domains/{did}", json={"domain": {"enabled": False}}))
    assert admin.delete(f"{V3}/domains/{did}").status_code == 204
    for path in (f"users/{user['id']}", f"groups/{group['id']}", f"projects/{parent['id']}"):
        assert admin.get(f"{V3}/{path}").status_code == 404, path


def test_catalog_resources(admin: httpx.Client) -> None:
    assert_shape(_ok(admin.get(f"{V3}/services")), s.listing("services", s.SERVICE))
    assert_shape(_ok(admin.get(f"{V3}/endpoints")), s.listing("endpoints", s.ENDPOINT))
    assert_shape(_ok(admin.get(f"{V3}/regions")), s.listing("regions", s.REGION))
    svc = _ok(admin.post(f"{V3}/services", json={"service": {
        "type": _uniq("t"), "name": "extra", "description": "d"}}), 201)["service"]
    assert_shape(svc, s.SERVICE)
    region = _uniq("region")
    ep = _ok(admin.post(f"{V3}/endpoints", json={"endpoint": {
        "service_id": svc["id"], "interface": "public", "url": "http://192.0.2.1/x",
        "region": region}}), 201)["endpoint"]
    assert_shape(ep, s.ENDPOINT)
    # the legacy ``region`` attribute creates the region it names
    assert_shape(_ok(admin.get(f"{V3}/regions/{region}"))["region"], s.REGION)
    made = _ok(admin.put(f"{V3}/regions/{_uniq('r2')}", json={"region": {
        "parent_region_id": region}}), 201)["region"]
    assert_shape(made, s.REGION)
    assert admin.delete(f"{V3}/regions/{region}").status_code == 403  # has a child
    catalog = _ok(admin.get(f"{V3}/auth/catalog"))
    assert svc["id"] in [e["id"] for e in catalog["catalog"]]
    for entry in catalog["catalog"]:
        assert_shape(entry, s.CATALOG_ENTRY)
    assert admin.delete(f"{V3}/services/{svc['id']}").status_code == 204
    assert admin.get(f"{V3}/endpoints/{ep['id']}").status_code == 404
    # strato's own services are fixed
    own = _ok(admin.get(f"{V3}/services"))["services"][0]["id"]
    assert admin.delete(f"{V3}/services/{own}").status_code == 403


def test_credentials_and_policies(server: Server, admin: httpx.Client) -> None:
    me = _ok(admin.get(f"{V3}/auth/tokens", headers={
        "X-Subject-Token": admin.headers["X-Auth-Token"]}))["token"]
    cred = _ok(admin.post(f"{V3}/credentials", json={"credential": {
        "user_id": me["user"]["id"], "project_id": me["project"]["id"], "type": "ec2",
        "blob": '{"access": "a", "secret": "s"}'}}), 201)["credential"]
    assert_shape(cred, s.CREDENTIAL)
    assert cred["blob"] == '{"access": "a", "secret": "s"}'
    assert_shape(_ok(admin.get(f"{V3}/credentials")), s.listing("credentials", s.CREDENTIAL))
    assert admin.delete(f"{V3}/credentials/{cred['id']}").status_code == 204
    ec2_path = f"{V3}/users/{me['user']['id']}/credentials/OS-EC2"
    ec2 = _ok(admin.post(ec2_path, json={"tenant_id": me["project"]["id"]}), 201)["credential"]
    assert_shape(ec2, s.EC2_CREDENTIAL)
    assert_shape(_ok(admin.get(f"{ec2_path}/{ec2['access']}"))["credential"], s.EC2_CREDENTIAL)
    assert_shape(_ok(admin.get(ec2_path)), s.listing("credentials", s.EC2_CREDENTIAL))
    assert admin.delete(f"{ec2_path}/{ec2['access']}").status_code == 204
    assert admin.get(f"{ec2_path}/{ec2['access']}").status_code == 404
    pol = _ok(admin.post(f"{V3}/policies", json={"policy": {
        "type": "application/json", "blob": "{}"}}), 201)["policy"]
    assert_shape(pol, s.POLICY)
    assert_shape(_ok(admin.get(f"{V3}/policies")), s.listing("policies", s.POLICY))


def test_scoped_tokens_and_assignments(server: Server, admin: httpx.Client) -> None:
    """What Tempest's dynamic credentials do: users with project, domain and system
    roles, each getting a token of that scope."""
    reader, member = _role_id(admin, "reader"), _role_id(admin, "member")
    user = _ok(admin.post(f"{V3}/users", json={"user": {
        "name": _uniq("u"), "password": "pw-2"}}), 201)["user"]
    project = _ok(admin.post(f"{V3}/projects", json={"project": {"name": _uniq("p")}}),
                  201)["project"]
    uid, pid = user["id"], project["id"]

    r = _auth(server, _password(uid, "pw-2"))
    assert r.status_code == 201
    assert_shape(r.json(), s.TOKEN_UNSCOPED)

    assert _auth(server, _password(uid, "pw-2"), {"system": {"all": True}}).status_code == 401
    assert admin.put(f"{V3}/system/users/{uid}/roles/{reader}").status_code == 204
    assert admin.head(f"{V3}/system/users/{uid}/roles/{reader}").status_code == 204
    assert_shape(_ok(admin.get(f"{V3}/system/users/{uid}/roles")), s.listing("roles", s.ROLE))
    r = _auth(server, _password(uid, "pw-2"), {"system": {"all": True}})
    assert r.status_code == 201, r.text
    assert_shape(r.json(), s.TOKEN_SYSTEM)
    system_token = r.headers["X-Subject-Token"]
    with server.client(system_token) as c:
        assert_shape(_ok(c.get(f"{V3}/users")), s.listing("users", s.USER))  # system reader
        assert c.post(f"{V3}/projects", json={"project": {"name": "x"}}).status_code == 403
        assert _ok(c.get(f"{V3}/auth/system"))["system"] == [{"all": True}]

    assert admin.put(f"{V3}/domains/default/users/{uid}/roles/{member}").status_code == 204
    r = _auth(server, _password(uid, "pw-2"), {"domain": {"id": "default"}})
    assert r.status_code == 201, r.text
    assert_shape(r.json(), s.TOKEN_DOMAIN)

    # a group's role on the project reaches its member
    group = _ok(admin.post(f"{V3}/groups", json={"group": {"name": _uniq("g")}}),
                201)["group"]
    gid = group["id"]
    assert admin.put(f"{V3}/groups/{gid}/users/{uid}").status_code == 204
    assert admin.put(f"{V3}/projects/{pid}/groups/{gid}/roles/{member}").status_code == 204
    r = _auth(server, _password(uid, "pw-2"), {"project": {"id": pid}})
    assert r.status_code == 201, r.text
    assert_shape(r.json(), s.TOKEN_PROJECT)
    assert "member" in [x["name"] for x in r.json()["token"]["roles"]]

    listing = _ok(admin.get(f"{V3}/role_assignments", params={"user.id": uid}))
    assert_shape(listing, s.listing("role_assignments", s.ROLE_ASSIGNMENT))
    scopes = sorted(next(iter(a["scope"])) for a in listing["role_assignments"])
    assert scopes == ["domain", "system"]
    effective = _ok(admin.get(f"{V3}/role_assignments",
                              params={"user.id": uid, "effective": "",
                                      "scope.project.id": pid}))
    assert_shape(effective, s.listing("role_assignments", s.ROLE_ASSIGNMENT))
    assert {a["role"]["id"] for a in effective["role_assignments"]} >= {member, reader}
    assert all("membership" in a["links"] for a in effective["role_assignments"])

    # OS-INHERIT: a domain grant inherited to its projects
    other = _ok(admin.post(f"{V3}/users", json={"user": {
        "name": _uniq("u"), "password": "pw-3"}}), 201)["user"]
    inherit = f"{V3}/OS-INHERIT/domains/default/users/{other['id']}/roles/{member}"
    assert admin.put(inherit + "/inherited_to_projects").status_code == 204
    r = _auth(server, _password(other["id"], "pw-3"), {"project": {"id": pid}})
    assert r.status_code == 201, r.text
    listing = _ok(admin.get(f"{V3}/role_assignments", params={"user.id": other["id"]}))
    assert_shape(listing, s.listing("role_assignments", s.ROLE_ASSIGNMENT))
    assert listing["role_assignments"][0]["scope"]["OS-INHERIT:inherited_to"] == "projects"
    assert admin.delete(inherit + "/inherited_to_projects").status_code == 204
    assert _auth(server, _password(other["id"], "pw-3"),
                 {"project": {"id": pid}}).status_code == 401


def test_application_credentials(server: Server, admin: httpx.Client) -> None:
    member = _role_id(admin, "member")
    user = _ok(admin.post(f"{V3}/users", json={"user": {
        "name": _uniq("u"), "password": "pw-4"}}), 201)["user"]
    project = _ok(admin.post(f"{V3}/projects", json={"project": {"name": _uniq("p")}}),
                  201)["project"]
    uid, pid = user["id"], project["id"]
    assert admin.put(f"{V3}/projects/{pid}/users/{uid}/roles/{member}").status_code == 204
    token = _auth(server, _password(uid, "pw-4"), {"project": {"id": pid}}).headers[
        "X-Subject-Token"]
    with server.client(token) as c:
        made = _ok(c.post(f"{V3}/users/{uid}/application_credentials", json={
            "application_credential": {"name": "ci", "roles": [{"name": "member"}]}}), 201)
        assert_shape(made["application_credential"], s.APP_CRED_CREATED)
        cred = made["application_credential"]
        shown = _ok(c.get(f"{V3}/users/{uid}/application_credentials/{cred['id']}"))
        assert_shape(shown["application_credential"], s.APP_CRED)
        assert_shape(_ok(c.get(f"{V3}/users/{uid}/application_credentials")),
                     s.listing("application_credentials", s.APP_CRED))
    r = _auth(server, {"methods": ["application_credential"], "application_credential": {
        "id": cred["id"], "secret": cred["secret"]}})
    assert r.status_code == 201, r.text
    assert_shape(r.json(), s.TOKEN_PROJECT)
    body = r.json()["token"]
    assert body["project"]["id"] == pid and body["application_credential"]["id"] == cred["id"]
    with server.client(r.headers["X-Subject-Token"]) as c:  # restricted: no new ones
        assert c.post(f"{V3}/users/{uid}/application_credentials", json={
            "application_credential": {"name": "more"}}).status_code == 403
    assert [x["name"] for x in body["roles"]] == ["member", "reader"]  # reader: implied
    assert _auth(server, {"methods": ["application_credential"], "application_credential": {
        "id": cred["id"], "secret": "wrong"}}).status_code == 401


@pytest.mark.parametrize("path", [
    "/OS-OAUTH1/consumers", "/OS-TRUST/trusts", "/OS-EP-FILTER/endpoint_groups",
    "/domains/config/default", "/limits/some-id", "/registered_limits/some-id",
    "/OS-FEDERATION/idps",
])
def test_unimplemented_apis_answer_501(admin: httpx.Client, path: str) -> None:
    r = admin.get(V3 + path)
    assert r.status_code == 501
    assert_shape(r.json(), s.FAULT)


def test_faults_keep_keystone_format(admin: httpx.Client) -> None:
    r = admin.get(f"{V3}/groups/{uuid.uuid4().hex}")
    assert r.status_code == 404
    assert_shape(r.json(), s.FAULT)
    r = admin.post(f"{V3}/users", json={"user": {"name": _uniq("u"), "domain_id": "nope"}})
    assert r.status_code == 404  # Keystone: the domain is not found
    r = admin.post(f"{V3}/projects", json={"project": {"name": "x" * 65}})
    assert r.status_code == 400  # project and domain names: at most 64 characters


def test_unified_limits_are_empty_and_cannot_be_referenced(admin: httpx.Client,
                                                          server: Server) -> None:
    """No registered limit exists here, so a project limit is refused as Keystone refuses
    one without a registered limit (403), and registering answers 501: a client that
    probes for unified limits (Tempest's image quota scenario) learns they are off."""
    links = {"type": "object", "additionalProperties": False,
             "required": ["self", "next", "previous"],
             "properties": {"self": {"type": "string"}, "next": {"type": "null"},
                            "previous": {"type": "null"}}}
    for key in ("limits", "registered_limits"):
        body = _ok(admin.get(f"{V3}/{key}"))
        assert_shape(body, {"type": "object", "additionalProperties": False,
                            "required": [key, "links"],
                            "properties": {key: {"type": "array", "maxItems": 0},
                                           "links": links}})
    assert _ok(admin.get(f"{V3}/limits/model"))["model"]["name"] == "flat"
    ref = {"service_id": "x", "project_id": "y", "resource_name": "image_count_total",
           "resource_limit": 10}
    r = admin.post(f"{V3}/limits", json={"limits": [ref]})
    assert r.status_code == 403 and "registered limit" in r.json()["error"]["message"]
    r = admin.post(f"{V3}/registered_limits", json={"registered_limits": [ref]})
    assert r.status_code == 501, r.text
    with server.client() as anonymous:
        assert anonymous.get(f"{V3}/limits").status_code == 401
