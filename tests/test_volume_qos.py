"""Cinder's QoS specs API with the real client, its refusals, the shapes Tempest checks,
volume types showing their QoS, the front-end specs in an attachment's connection info
(per-GB values resolved), and type encryption answered as unsupported."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.api_schemas import assert_shape
from tests.api_schemas.volume import (
    QOS_ASSOCIATIONS,
    QOS_SET_BODY,
    QOS_SPEC_BODY,
    QOS_SPECS,
    volume_type,
)
from tests.support import Server
from tests.tenants import Tenant, make_tenant


def _cinder(server: Server, token: str, project_id: str) -> httpx.Client:
    c = server.client(token)
    c.base_url = httpx.URL(f"{server.url}/volume/v3/{project_id}")
    c.headers["OpenStack-API-Version"] = "volume 3.65"
    return c


@pytest.fixture(scope="module")
def admin(server: Server) -> httpx.Client:
    token = server.token()
    with server.client(token) as c:
        project = c.get("/identity/v3/auth/tokens",
                        headers={"X-Subject-Token": token}).json()["token"]["project"]["id"]
    with _cinder(server, token, project) as c:
        yield c


@pytest.fixture(scope="module")
def member(server: Server) -> Tenant:
    return make_tenant(server, "qos")


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_cli_qos_lifecycle(server: Server, member: Tenant, admin: httpx.Client) -> None:
    name, tname = _name("qos"), _name("qtype")
    created = server.openstack_json("volume", "qos", "create", "--consumer", "front-end",
                                    "--property", "total_bytes_sec=2097152", "--property",
                                    "total_iops_sec=500", name)
    assert created["consumer"] == "front-end" and created["name"] == name
    assert created["properties"] == {"total_bytes_sec": "2097152", "total_iops_sec": "500"}
    qid = created["id"]
    assert name in {q["Name"] for q in server.openstack_json("volume", "qos", "list")}

    server.openstack("volume", "qos", "set", "--property", "read_iops_sec_max=900", name)
    server.openstack("volume", "qos", "unset", "--property", "total_iops_sec", name)
    shown = server.openstack_json("volume", "qos", "show", name)
    assert shown["properties"] == {"total_bytes_sec": "2097152", "read_iops_sec_max": "900"}

    tid = server.openstack_json("volume", "type", "create", tname)["id"]
    server.openstack("volume", "qos", "associate", name, tname)
    assert server.openstack_json("volume", "qos", "show", name)["associations"] == [tname]
    # (the client does not show a type's qos_specs_id: the API does, to an admin)
    assert admin.get(f"/types/{tid}").json()["volume_type"]["qos_specs_id"] == qid
    # in use: a plain delete is refused (Cinder's 400), the type keeps it
    refused = server.openstack("volume", "qos", "delete", name, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr.lower(), refused.stderr
    server.openstack("volume", "qos", "disassociate", "--volume-type", tname, name)
    # (the client leaves the field out when there is none)
    assert not server.openstack_json("volume", "qos", "show", name).get("associations")
    assert admin.get(f"/types/{tid}").json()["volume_type"]["qos_specs_id"] is None

    # a member may not see or touch QoS specs (admin-only in Cinder)
    for args in (("list",), ("create", _name("m"))):  # every route: the API test
        res = member.openstack("volume", "qos", *args, check=False)
        assert res.returncode != 0 and "403" in res.stderr, (args, res.stderr)
    # ... and sees the type without its QoS id
    with _cinder(server, member.token(), member.project_id) as c:
        assert "qos_specs_id" not in c.get(f"/types/{tid}").json()["volume_type"]

    server.openstack("volume", "qos", "associate", name, tname)
    server.openstack("volume", "qos", "delete", "--force", name)
    assert name not in {q["Name"] for q in server.openstack_json("volume", "qos", "list")}
    assert admin.get(f"/types/{tid}").json()["volume_type"]["qos_specs_id"] is None
    server.openstack("volume", "type", "delete", tname)


def test_api_shapes_and_refusals(admin: httpx.Client, member: Tenant,
                                 server: Server) -> None:
    name = _name("qapi")
    r = admin.post("/qos-specs", json={"qos_specs": {"name": name, "key1": "v1"}})
    assert r.status_code == 200, r.text
    assert_shape(r.json(), QOS_SPEC_BODY)
    spec = r.json()["qos_specs"]
    assert spec["consumer"] == "back-end"  # Cinder's default
    qid = spec["id"]
    assert r.json()["links"][0]["href"].endswith(f"/qos-specs/{qid}")
    assert admin.post("/qos-specs", json={"qos_specs": {"name": name}}).status_code == 409
    assert admin.post("/qos-specs", json={"qos_specs": {
        "name": _name("bad"), "consumer": "middle"}}).status_code == 400
    assert admin.post("/qos-specs", json={"qos_specs": {"consumer": "both"}}
                      ).status_code == 400
    assert admin.post("/qos-specs", json={"qos_specs": {"name": "  "}}).status_code == 400
    assert admin.post("/qos-specs", json={"specs": {}}).status_code == 400

    r = admin.get("/qos-specs")
    assert r.status_code == 200
    assert_shape(r.json(), QOS_SPECS)
    assert qid in {q["id"] for q in r.json()["qos_specs"]}
    assert [q["id"] for q in admin.get("/qos-specs", params={"name": name}).json()[
        "qos_specs"]] == [qid]
    assert_shape(admin.get(f"/qos-specs/{qid}").json(), QOS_SPEC_BODY)
    assert admin.get(f"/qos-specs/{uuid.uuid4()}").status_code == 404

    r = admin.put(f"/qos-specs/{qid}", json={"qos_specs": {"consumer": "both",
                                                           "key2": "v2"}})
    assert r.status_code == 200, r.text
    assert_shape(r.json(), QOS_SET_BODY)
    assert r.json() == {"qos_specs": {"consumer": "both", "key2": "v2"}}
    got = admin.get(f"/qos-specs/{qid}").json()["qos_specs"]
    assert (got["consumer"], got["specs"]) == ("both", {"key1": "v1", "key2": "v2"})
    assert admin.put(f"/qos-specs/{qid}", json={"qos_specs": {"consumer": "x"}}
                     ).status_code == 400
    assert admin.put(f"/qos-specs/{qid}/delete_keys", json={"keys": ["nope"]}
                     ).status_code == 404
    assert admin.put(f"/qos-specs/{qid}/delete_keys", json={"keys": ["key1"]}
                     ).status_code == 202
    assert admin.get(f"/qos-specs/{qid}").json()["qos_specs"]["specs"] == {"key2": "v2"}

    # associations: a type takes one QoS; the other one is refused with 400
    types = [admin.post("/types", json={"volume_type": {"name": _name("qt")}}
                        ).json()["volume_type"]["id"] for _ in range(2)]
    assert admin.get(f"/qos-specs/{qid}/associate").status_code == 400  # no type id
    assert admin.get(f"/qos-specs/{qid}/associate",
                     params={"vol_type_id": str(uuid.uuid4())}).status_code == 404
    for t in types:
        assert admin.get(f"/qos-specs/{qid}/associate",
                         params={"vol_type_id": t}).status_code == 202
    # associating again with the same specs is fine
    assert admin.get(f"/qos-specs/{qid}/associate",
                     params={"vol_type_id": types[0]}).status_code == 202
    other = admin.post("/qos-specs", json={"qos_specs": {"name": _name("q2")}}
                       ).json()["qos_specs"]["id"]
    assert admin.get(f"/qos-specs/{other}/associate",
                     params={"vol_type_id": types[0]}).status_code == 400
    r = admin.get(f"/qos-specs/{qid}/associations")
    assert_shape(r.json(), QOS_ASSOCIATIONS)
    assert {a["id"] for a in r.json()["qos_associations"]} == set(types)
    shown = admin.get(f"/types/{types[0]}").json()["volume_type"]
    assert_shape(shown, volume_type("show", True))
    assert shown["qos_specs_id"] == qid
    assert admin.get(f"/qos-specs/{qid}/disassociate",
                     params={"vol_type_id": types[0]}).status_code == 202
    assert {a["id"] for a in admin.get(f"/qos-specs/{qid}/associations").json()[
        "qos_associations"]} == {types[1]}
    assert admin.delete(f"/qos-specs/{qid}").status_code == 400  # still in use
    assert admin.get(f"/qos-specs/{qid}/disassociate_all").status_code == 202
    assert admin.get(f"/qos-specs/{qid}/associations").json() == {"qos_associations": []}
    assert admin.delete(f"/qos-specs/{qid}").status_code == 202
    assert admin.get(f"/qos-specs/{qid}").status_code == 404
    assert admin.delete(f"/qos-specs/{other}").status_code == 202
    for t in types:
        assert admin.delete(f"/types/{t}").status_code == 202

    # member: 403 on every route
    with _cinder(server, member.token(), member.project_id) as c:
        for method, path in (("GET", "/qos-specs"), ("POST", "/qos-specs"),
                             ("GET", f"/qos-specs/{qid}"), ("PUT", f"/qos-specs/{qid}"),
                             ("DELETE", f"/qos-specs/{qid}"),
                             ("PUT", f"/qos-specs/{qid}/delete_keys"),
                             ("GET", f"/qos-specs/{qid}/associations"),
                             ("GET", f"/qos-specs/{qid}/associate"),
                             ("GET", f"/qos-specs/{qid}/disassociate_all")):
            body = {"qos_specs": {"name": "x"}} if method in ("POST", "PUT") else None
            r = c.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.status_code)


def test_connection_info_has_front_end_specs(admin: httpx.Client) -> None:
    """Cinder's ``_parse_connection_options``: front-end/both specs reach the connector,
    ``*_per_gb`` times the size (bounded by ``_per_gb_min`` / ``_max``); back-end specs
    do not."""
    tname = _name("qc")
    tid = admin.post("/types", json={"volume_type": {"name": tname}}).json()[
        "volume_type"]["id"]
    qid = admin.post("/qos-specs", json={"qos_specs": {
        "name": _name("qc"), "consumer": "front-end", "total_bytes_sec": "1048576",
        "read_iops_sec_per_gb": "30", "read_iops_sec_per_gb_min": "100",
        "write_iops_sec_per_gb": "100", "write_iops_sec_max": "150"}}).json()[
        "qos_specs"]["id"]
    admin.get(f"/qos-specs/{qid}/associate", params={"vol_type_id": tid})
    vid = admin.post("/volumes", json={"volume": {"size": 2, "volume_type": tname}}
                     ).json()["volume"]["id"]
    deadline = time.monotonic() + 60
    while admin.get(f"/volumes/{vid}").json()["volume"]["status"] != "available":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    def connect() -> dict:
        r = admin.post("/attachments", json={"attachment": {
            "volume_uuid": vid, "instance_uuid": str(uuid.uuid4()),
            "connector": {"host": "h1", "mountpoint": "/dev/vdb"}}})
        assert r.status_code == 200, r.text
        att = r.json()["attachment"]
        assert admin.delete(f"/attachments/{att['id']}").status_code == 200
        return att["connection_info"]["data"]["qos_specs"]

    assert connect() == {"total_bytes_sec": "1048576", "read_iops_sec": "100",
                         "write_iops_sec": "150"}
    admin.put(f"/qos-specs/{qid}", json={"qos_specs": {"consumer": "back-end"}})
    assert connect() is None
    admin.get(f"/qos-specs/{qid}/disassociate_all")
    admin.delete(f"/volumes/{vid}")
    admin.delete(f"/qos-specs/{qid}")


def test_type_encryption_is_unsupported(admin: httpx.Client, member: Tenant,
                                        server: Server) -> None:
    tid = admin.post("/types", json={"volume_type": {"name": _name("enc")}}).json()[
        "volume_type"]["id"]
    r = admin.get(f"/types/{tid}/encryption")
    assert (r.status_code, r.json()) == (200, {})
    r = admin.post(f"/types/{tid}/encryption", json={"encryption": {
        "provider": "luks", "control_location": "front-end"}})
    assert r.status_code == 501 and "encryption is not supported" in r.text, r.text
    assert admin.get(f"/types/{tid}/encryption/provider").status_code == 404
    assert admin.delete(f"/types/{tid}/encryption/{uuid.uuid4()}").status_code == 404
    assert admin.get(f"/types/{uuid.uuid4()}/encryption").status_code == 404
    with _cinder(server, member.token(), member.project_id) as c:
        assert c.get(f"/types/{tid}/encryption").status_code == 403
    res = server.openstack("volume", "type", "create", "--encryption-provider", "luks",
                           "--encryption-control-location", "front-end", _name("e"),
                           check=False)
    assert res.returncode != 0 and "not supported" in res.stderr, res.stderr
    admin.delete(f"/types/{tid}")
