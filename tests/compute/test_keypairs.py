"""Nova's os-keypairs on a real server: the real `openstack` CLI for what users do, REST
for every microversion's shape (2.1, 2.2, 2.10, 2.35, 2.75, 2.92), the refusals, the
per-user quota and the isolation of one user's keypairs from another's.

Fingerprints are checked against independent tools: ``ssh-keygen -E md5`` for ssh
keys, ``openssl x509 -fingerprint -sha1`` for certificates.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from strato.clouds import write_cloud
from tests.support import Server
from tests.tenants import Tenant, make_tenant

CREATE_V21 = {"name", "public_key", "fingerprint", "user_id"}
SHOW_V21 = CREATE_V21 | {"created_at", "deleted", "deleted_at", "id", "updated_at"}
LIST_V21 = {"name", "public_key", "fingerprint"}


def uid() -> str:
    return uuid.uuid4().hex[:8]


def ssh_key(tmp: Path, kind: str = "ed25519") -> tuple[str, str]:
    """A new OpenSSH public key and its MD5 fingerprint as ssh-keygen prints it."""
    path = tmp / f"id-{uid()}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "test@strato", "-f",
                    str(path)], check=True)
    out = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", f"{path}.pub"],
                         check=True, capture_output=True, text=True).stdout
    return Path(f"{path}.pub").read_text().strip(), out.split()[1].removeprefix("MD5:")


def x509_cert(tmp: Path) -> tuple[str, str]:
    """A self-signed PEM certificate and its SHA1 fingerprint as openssl prints it."""
    key, cert = tmp / f"k-{uid()}.pem", tmp / f"c-{uid()}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                    "1", "-subj", "/CN=strato-test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha1", "-in",
                          str(cert)], check=True, capture_output=True, text=True).stdout
    return cert.read_text(), out.strip().split("=", 1)[1].lower()


@dataclass
class User:
    """A user's REST access to os-keypairs at a chosen microversion."""

    server: Server
    token: str
    user_id: str

    def req(self, method: str, path: str, version: str, **kw: object) -> httpx.Response:
        with self.server.client(self.token) as c:
            return c.request(method, f"/compute/v2.1{path}", headers={
                "OpenStack-API-Version": f"compute {version}"}, **kw)  # type: ignore[arg-type]

    def create(self, version: str, **keypair: object) -> httpx.Response:
        return self.req("POST", "/os-keypairs", version, json={"keypair": keypair})


def second_user(t: Tenant) -> tuple[User, str]:
    """Another member of ``t``'s project, and its clouds.yaml cloud name."""
    srv, name, password = t.server, f"{t.project}-b{uid()}", uuid.uuid4().hex
    user_id = srv.openstack_json("user", "create", "--domain", "default", "--project",
                                 t.project, "--password", password, name)["id"]
    srv.openstack("role", "add", "--project", t.project, "--user", name, "member")
    admin = yaml.safe_load(srv.clouds.read_text())["clouds"]["strato"]
    write_cloud(srv.clouds, name, auth_url=admin["auth"]["auth_url"], username=name,
                password=password, project_name=t.project, region=admin["region_name"])
    return User(srv, srv.token(name, password, t.project), user_id), name


@pytest.fixture(scope="module")
def tenant(compute_server: Server) -> Tenant:
    return make_tenant(compute_server, "kp")


@pytest.fixture(scope="module")
def alice(tenant: Tenant) -> User:
    return User(tenant.server, tenant.token(), tenant.user_id)


@pytest.fixture(scope="module")
def admin(compute_server: Server) -> User:
    token = compute_server.token()
    with compute_server.client() as c:
        r = c.get("/identity/v3/auth/tokens", headers={"X-Auth-Token": token,
                                                       "X-Subject-Token": token})
    return User(compute_server, token, r.json()["token"]["user"]["id"])


# ---------------------------------------------------------------- the CLI
def test_cli_generate_import_list_show_delete_and_boot(compute_server: Server,
                                                      tmp_path: Path) -> None:
    srv = compute_server
    gen, imp = f"gen-{uid()}", f"imp-{uid()}"
    # `keypair create NAME` prints the private key once (the CLI makes the key itself
    # and imports its public half: strato's own generation, before 2.92, is below)
    private = srv.openstack("keypair", "create", gen).stdout
    key = serialization.load_ssh_private_key(private.encode(), None)
    public = srv.openstack("keypair", "show", "--public-key", gen).stdout
    mine = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()
    assert public.split()[:2] == mine.split()[:2]
    pub_file = tmp_path / "gen.pub"
    pub_file.write_text(public)
    md5 = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", str(pub_file)], check=True,
                         capture_output=True, text=True).stdout.split()[1]
    shown = srv.openstack_json("keypair", "show", gen)
    assert shown["fingerprint"] == md5.removeprefix("MD5:")  # type: ignore[index]
    assert shown["name"] == gen and shown["type"] == "ssh"  # type: ignore[index]

    # imported from a file ssh-keygen made
    public, fingerprint = ssh_key(tmp_path)
    key_file = tmp_path / "imp.pub"
    key_file.write_text(public + "\n")
    created = srv.openstack_json("keypair", "create", "--public-key", str(key_file), imp)
    assert created["fingerprint"] == fingerprint  # type: ignore[index]
    assert created["name"] == imp and created["type"] == "ssh"  # type: ignore[index]
    listed = {k["Name"]: k for k in srv.openstack_json("keypair", "list")}  # type: ignore
    assert listed[imp]["Fingerprint"] == fingerprint and gen in listed
    assert srv.openstack("keypair", "show", "--public-key", imp).stdout.strip() == public

    # a server takes the key by name; deleting the key later does not change the server
    sid = srv.openstack_json("server", "create", "--image", "strato-guest", "--flavor",
                             "m1.tiny", "--nic", "none", "--key-name", imp,
                             f"kp-{uid()}")["id"]  # type: ignore[index]
    try:
        assert srv.openstack_json("server", "show", sid)["key_name"] == imp  # type: ignore
        for name in (imp, gen):
            srv.openstack("keypair", "delete", name)
        assert not {imp, gen} & {k["Name"] for k in srv.openstack_json(  # type: ignore
            "keypair", "list")}
        assert srv.openstack_json("server", "show", sid)["key_name"] == imp  # type: ignore
        gone = srv.openstack("keypair", "show", imp, check=False)
        assert gone.returncode != 0 and f"No Keypair found for {imp}" in gone.stderr
        refused = srv.openstack("server", "create", "--image", "strato-guest", "--flavor",
                                "m1.tiny", "--nic", "none", "--key-name", imp,
                                f"kp-{uid()}", check=False)
        assert refused.returncode != 0 and "Invalid key_name provided." in refused.stderr
    finally:
        srv.openstack("server", "delete", "--wait", sid)


# ---------------------------------------------------------------- microversions
def test_v21_generates_and_shows_the_legacy_shape(alice: User) -> None:
    name = f"v21-{uid()}"
    r = alice.create("2.1", name=name)
    assert r.status_code == 200, r.text
    body = r.json()["keypair"]
    assert set(body) == CREATE_V21 | {"private_key"}
    assert body["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert body["public_key"].startswith("ssh-rsa ") and body["user_id"] == alice.user_id
    assert len(body["fingerprint"].split(":")) == 16
    shown = alice.req("GET", f"/os-keypairs/{name}", "2.1").json()["keypair"]
    assert set(shown) == SHOW_V21
    assert (shown["deleted"], shown["deleted_at"], shown["updated_at"]) == (False, None, None)
    assert isinstance(shown["id"], int) and shown["created_at"][:2] == "20"
    listed = alice.req("GET", "/os-keypairs", "2.1").json()
    assert set(listed) == {"keypairs"}
    item = next(k["keypair"] for k in listed["keypairs"] if k["keypair"]["name"] == name)
    assert set(item) == LIST_V21
    refused = alice.create("2.1", name=f"t-{uid()}", type="ssh")  # type is 2.2+
    assert refused.status_code == 400 and "type" in refused.text
    refused = alice.create("2.1", name=f"u-{uid()}", user_id=alice.user_id)  # 2.10+
    assert refused.status_code == 400 and "user_id" in refused.text
    assert alice.req("DELETE", f"/os-keypairs/{name}", "2.1").status_code == 202
    assert alice.req("GET", f"/os-keypairs/{name}", "2.1").status_code == 404


def test_v22_types_ssh_and_x509(alice: User, tmp_path: Path) -> None:
    public, fingerprint = ssh_key(tmp_path, "rsa")
    name = f"ssh-{uid()}"
    r = alice.create("2.2", name=name, public_key=public)
    assert r.status_code == 201, r.text
    body = r.json()["keypair"]
    assert set(body) == CREATE_V21 | {"type"}
    assert (body["type"], body["fingerprint"], body["public_key"]) == ("ssh", fingerprint,
                                                                         public)
    shown = alice.req("GET", f"/os-keypairs/{name}", "2.2").json()["keypair"]
    assert set(shown) == SHOW_V21 | {"type"}
    item = next(k["keypair"] for k in alice.req("GET", "/os-keypairs", "2.2").json()[
        "keypairs"] if k["keypair"]["name"] == name)
    assert set(item) == LIST_V21 | {"type"}

    cert, sha1 = x509_cert(tmp_path)
    imported = alice.create("2.2", name=f"x509-{uid()}", type="x509", public_key=cert)
    assert imported.status_code == 201, imported.text
    assert imported.json()["keypair"]["fingerprint"] == sha1
    assert imported.json()["keypair"]["type"] == "x509"

    generated = alice.create("2.2", name=f"x509g-{uid()}", type="x509")
    assert generated.status_code == 201, generated.text
    g = generated.json()["keypair"]
    assert set(g) == CREATE_V21 | {"type", "private_key"}
    key, cert_obj, _ = pkcs12.load_key_and_certificates(base64.b64decode(g["private_key"]),
                                                        None)
    assert cert_obj is not None and key is not None
    assert cert_obj.public_bytes(serialization.Encoding.PEM).decode() == g["public_key"]
    assert alice.user_id in cert_obj.subject.rfc4514_string()

    bad = alice.create("2.2", name=f"bad-{uid()}", type="x509", public_key=public)
    assert bad.status_code == 400 and "Keypair data is invalid" in bad.text
    bad = alice.create("2.2", name=f"bad-{uid()}", type="rsa", public_key=public)
    assert bad.status_code == 400
    assert alice.req("DELETE", f"/os-keypairs/{name}", "2.2").status_code == 204


def test_v210_admin_acts_for_a_user_and_a_member_may_not(
        admin: User, alice: User, tenant: Tenant, tmp_path: Path) -> None:
    public, fingerprint = ssh_key(tmp_path)
    name = f"for-alice-{uid()}"
    r = admin.create("2.10", name=name, public_key=public, user_id=alice.user_id)
    assert r.status_code == 201 and r.json()["keypair"]["user_id"] == alice.user_id, r.text
    assert alice.req("GET", f"/os-keypairs/{name}", "2.10").json()["keypair"][
        "fingerprint"] == fingerprint
    assert admin.req("GET", f"/os-keypairs/{name}", "2.10").status_code == 404  # not his
    q = {"user_id": alice.user_id}
    assert admin.req("GET", f"/os-keypairs/{name}", "2.10", params=q).status_code == 200
    assert name in {k["keypair"]["name"] for k in admin.req(
        "GET", "/os-keypairs", "2.10", params=q).json()["keypairs"]}
    # before 2.10 the user_id parameter means nothing: the admin's own keypairs
    assert admin.req("GET", f"/os-keypairs/{name}", "2.9", params=q).status_code == 404

    bob, _ = second_user(tenant)
    for method, path, kw in (
            ("GET", "/os-keypairs", {"params": q}),
            ("GET", f"/os-keypairs/{name}", {"params": q}),
            ("DELETE", f"/os-keypairs/{name}", {"params": q}),
            ("POST", "/os-keypairs", {"json": {"keypair": {
                "name": f"x-{uid()}", "public_key": public, "user_id": alice.user_id}}})):
        r = bob.req(method, path, "2.10", **kw)
        assert r.status_code == 403, (method, path, r.text)
        assert "os_compute_api:os-keypairs:" in r.json()["forbidden"]["message"]
    # a member naming itself is fine
    assert bob.req("GET", "/os-keypairs", "2.10",
                   params={"user_id": bob.user_id}).status_code == 200
    assert admin.req("DELETE", f"/os-keypairs/{name}", "2.10", params=q).status_code == 204
    assert alice.req("GET", f"/os-keypairs/{name}", "2.10").status_code == 404


def test_v235_pages_by_name(compute_server: Server, tmp_path: Path) -> None:
    t = make_tenant(compute_server, "kpage")
    u = User(compute_server, t.token(), t.user_id)
    public, _ = ssh_key(tmp_path)
    names = ["a-key", "b-key", "c-key"]
    for n in reversed(names):
        assert u.create("2.35", name=n, public_key=public).status_code == 201
    # before 2.35 limit and marker are ignored
    old = u.req("GET", "/os-keypairs", "2.34", params={"limit": "1"}).json()
    assert [k["keypair"]["name"] for k in old["keypairs"]] == names and set(old) == {
        "keypairs"}
    page = u.req("GET", "/os-keypairs", "2.35", params={"limit": "2"}).json()
    assert [k["keypair"]["name"] for k in page["keypairs"]] == names[:2]
    link = page["keypairs_links"]
    assert len(link) == 1 and link[0]["rel"] == "next"
    href = httpx.URL(link[0]["href"])
    assert href.path == "/compute/v2.1/os-keypairs"
    assert dict(href.params) == {"limit": "2", "marker": "b-key"}
    rest = u.req("GET", "/os-keypairs", "2.35", params=dict(href.params)).json()
    assert [k["keypair"]["name"] for k in rest["keypairs"]] == ["c-key"]
    assert "keypairs_links" not in rest
    everything = u.req("GET", "/os-keypairs", "2.35").json()
    assert len(everything["keypairs"]) == 3 and "keypairs_links" not in everything
    bad = u.req("GET", "/os-keypairs", "2.35", params={"marker": "no-such"})
    assert bad.status_code == 400 and "Marker no-such could not be found." in bad.text
    assert u.req("GET", "/os-keypairs", "2.35", params={"limit": "-1"}).status_code == 400
    # 2.75 refuses unknown query parameters; 2.74 ignores them
    assert u.req("GET", "/os-keypairs", "2.74", params={"foo": "1"}).status_code == 200
    r = u.req("GET", "/os-keypairs", "2.75", params={"foo": "1"})
    assert r.status_code == 400 and "foo" in r.text
    r = u.req("GET", "/os-keypairs/a-key", "2.75", params={"limit": "1"})
    assert r.status_code == 400


def test_v292_requires_public_key_and_allows_at_and_dot(alice: User,
                                                        tmp_path: Path) -> None:
    r = alice.create("2.92", name=f"gen-{uid()}")
    assert r.status_code == 400 and "public_key" in r.text
    public, fingerprint = ssh_key(tmp_path)
    name = f"alice@example.org-{uid()}"
    assert alice.create("2.91", name=name, public_key=public).status_code == 400
    r = alice.create("2.92", name=name, public_key=public)
    assert r.status_code == 201, r.text
    body = r.json()["keypair"]
    assert set(body) == CREATE_V21 | {"type"} and body["fingerprint"] == fingerprint
    assert alice.req("GET", f"/os-keypairs/{name}", "2.92").status_code == 200
    # the older name rules still hold for an older request
    assert alice.req("GET", f"/os-keypairs/{name}", "2.1").status_code == 200
    assert alice.req("DELETE", f"/os-keypairs/{name}", "2.92").status_code == 204


# ---------------------------------------------------------------- refusals
def test_refusals(alice: User, tmp_path: Path) -> None:
    public, _ = ssh_key(tmp_path)
    name = f"dup-{uid()}"
    assert alice.create("2.2", name=name, public_key=public).status_code == 201
    r = alice.create("2.2", name=name, public_key=public)
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == f"Key pair '{name}' already exists."
    r = alice.create("2.2", name=f"nul-{uid()}", public_key=public + " a\x00b")
    assert r.status_code == 400 and "NUL" in r.text
    for bad_key in ("ssh-rsa not-base64!", "hello", "", public.split()[1]):
        r = alice.create("2.2", name=f"b-{uid()}", public_key=bad_key)
        assert r.status_code == 400, bad_key
        assert r.json()["badRequest"]["message"] == (
            "Keypair data is invalid: failed to generate fingerprint")
    for bad_name in ("", " lead", "trail ", "a/b", "x" * 256, "semi;colon", "a.b", "a@b"):
        r = alice.create("2.91", name=bad_name, public_key=public)
        assert r.status_code == 400, bad_name
    for body in ({}, {"keypair": "x"}, {"keypair": {"public_key": public}},
                 {"keypair": {"name": 5}}, {"keypair": {"name": "n", "extra": 1}}):
        assert alice.req("POST", "/os-keypairs", "2.2", json=body).status_code == 400, body
    r = alice.req("GET", "/os-keypairs/no-such-key", "2.2")
    assert r.status_code == 404
    assert r.json()["itemNotFound"]["message"] == (
        f"Keypair no-such-key not found for user {alice.user_id}")
    assert alice.req("DELETE", "/os-keypairs/no-such-key", "2.2").status_code == 404
    assert alice.req("DELETE", f"/os-keypairs/{name}", "2.2").status_code == 204


def test_quota_counts_per_user(compute_server: Server, tmp_path: Path) -> None:
    t = make_tenant(compute_server, "kquota")
    compute_server.openstack("quota", "set", "--key-pairs", "2", t.project)
    quota = compute_server.openstack_json("quota", "show", t.project)
    assert {q["Resource"]: q["Limit"] for q in quota}["key-pairs"] == 2  # type: ignore
    u = User(compute_server, t.token(), t.user_id)
    public, _ = ssh_key(tmp_path)
    for n in ("q1", "q2"):
        assert u.create("2.92", name=n, public_key=public).status_code == 201
    r = u.create("2.92", name="q3", public_key=public)
    assert r.status_code == 403
    assert r.json()["forbidden"]["message"] == "Quota exceeded, too many key pairs."
    r = u.create("2.1", name="q3")  # generation is refused the same way
    assert r.status_code == 403
    # the limit is per user: another member of the project has its own two
    bob, _ = second_user(t)
    for n in ("q1", "q2"):
        assert bob.create("2.92", name=n, public_key=public).status_code == 201
    assert bob.create("2.92", name="q3", public_key=public).status_code == 403
    assert u.req("DELETE", "/os-keypairs/q1", "2.92").status_code == 204
    assert u.create("2.92", name="q3", public_key=public).status_code == 201


def test_users_of_one_project_never_see_each_others_keypairs(
        compute_server: Server, tenant: Tenant, alice: User, tmp_path: Path) -> None:
    public, _ = ssh_key(tmp_path)
    name = f"alices-{uid()}"
    assert alice.create("2.92", name=name, public_key=public).status_code == 201
    bob, bob_cloud = second_user(tenant)
    assert name not in {k["keypair"]["name"] for k in bob.req(
        "GET", "/os-keypairs", "2.92").json()["keypairs"]}
    assert bob.req("GET", f"/os-keypairs/{name}", "2.92").status_code == 404
    assert bob.req("DELETE", f"/os-keypairs/{name}", "2.92").status_code == 404
    # bob may have his own key of the same name
    assert bob.create("2.92", name=name, public_key=public).status_code == 201
    assert bob.req("DELETE", f"/os-keypairs/{name}", "2.92").status_code == 204
    # nor boot with alice's key (the CLI as bob)
    refused = compute_server.openstack(
        "server", "create", "--image", "strato-guest", "--flavor", "m1.tiny", "--nic",
        "none", "--key-name", name, f"kp-{uid()}", cloud=bob_cloud, check=False)
    assert refused.returncode != 0 and "Invalid key_name provided." in refused.stderr
    assert alice.req("GET", f"/os-keypairs/{name}", "2.92").status_code == 200
