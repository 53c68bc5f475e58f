"""Issue 13, "5xx on bad input": each case seen against main, raw HTTP against a real
`strato serve`; every answer a 4xx in the service's own fault format, never a 500."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, free_port

NOVA = {"OpenStack-API-Version": "compute 2.92", "X-OpenStack-Nova-API-Version": "2.92"}
CINDER = {"OpenStack-API-Version": "volume 3.65"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("badinput"), free_port())
    server.setup()
    server.start()
    yield server
    server.stop()
    log = server.log.read_text(errors="replace")
    assert "unexpected error" not in log


@pytest.fixture(scope="module")
def c(srv: Server) -> Iterator[httpx.Client]:
    with srv.client(srv.token()) as client:
        yield client


@pytest.fixture(scope="module")
def pid(c: httpx.Client) -> str:
    return c.get("/identity/v3/auth/projects").json()["projects"][0]["id"]


def _fault(r: httpx.Response, service: str, status: int = 400) -> str:
    """The message of a fault in the service's own format (and no traceback)."""
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text
    body = r.json()
    if service == "identity":
        assert body["error"]["code"] == status
        return body["error"]["message"]
    if service == "image":
        assert body["code"].startswith(str(status))
        return body["message"]
    name = {400: "badRequest", 413: "overLimit"}[status]
    assert body[name]["code"] == status
    return body[name]["message"]


# ------------------------------------------------------------------ anonymous
@pytest.mark.parametrize("bad", [["admin"], {"a": 1}, 2**64, 2**63, 12])
@pytest.mark.parametrize("where", ["user", "domain", "project"])
def test_anonymous_token_request_with_names_of_the_wrong_type(srv: Server, bad: object,
                                                              where: str) -> None:
    user = {"name": "admin", "domain": {"name": "Default"}, "password": "x"}
    scope = {"project": {"name": "admin", "domain": {"id": "default"}}}
    if where == "user":
        user["name"] = bad
    elif where == "domain":
        user["domain"] = {"name": bad}
    else:
        scope["project"]["name"] = bad
    r = httpx.post(f"{srv.url}/identity/v3/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": user}},
        "scope": scope}})
    assert "name" in _fault(r, "identity")


# ------------------------------------------------------------------ nesting
DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000


@pytest.mark.parametrize("method,path,service", [
    ("POST", "/identity/v3/auth/tokens", "identity"),
    ("POST", "/identity/v3/users", "identity"),
    ("POST", "/compute/v2.1/servers", "compute"),
    ("POST", "/compute/v2.1/servers/x/action", "compute"),
    ("POST", "/image/v2/images", "image"),
    ("POST", "/volume/v3/{pid}/volumes", "volume"),
    ("PUT", "/volume/v3/{pid}/os-quota-sets/{pid}", "volume"),
])
def test_json_nested_5000_deep(c: httpx.Client, pid: str, method: str, path: str,
                               service: str) -> None:
    r = c.request(method, path.format(pid=pid), content=DEEP,
                  headers={"Content-Type": "application/json"})
    assert "nested" in _fault(r, service)


# ------------------------------------------------------------------ compute
@pytest.mark.parametrize("server,field", [
    ({"user_data": ["x"]}, "user_data"),
    ({"user_data": {"a": 1}}, "user_data"),
    ({"block_device_mapping_v2": [{"uuid": ["x"], "source_type": "volume"}]}, "uuid"),
    ({"block_device_mapping_v2": [{"uuid": {"a": 1}, "source_type": "volume"}]}, "uuid"),
    ({"block_device_mapping_v2": [{"uuid": "x", "source_type": "image",
                                   "destination_type": "volume", "boot_index": 0,
                                   "volume_size": 2**63}]}, "volume_size"),
    ({"block_device_mapping_v2": [{"uuid": "x", "source_type": "image",
                                   "destination_type": "volume", "boot_index": 2**63,
                                   "volume_size": 1}]}, "boot_index"),
    ({"block_device_mapping_v2": [{"uuid": "x", "source_type": "image",
                                   "destination_type": "volume", "boot_index": "0",
                                   "volume_size": str(2**63)}]}, "volume_size"),
    ({"block_device_mapping_v2": [{"uuid": "x", "boot_index": 2**31}]}, "boot_index"),
])
def test_server_create_wrong_types_and_huge_numbers(c: httpx.Client, server: dict,
                                                    field: str) -> None:
    body = {"server": {"name": "s", "flavorRef": "1", "imageRef": str(uuid.uuid4()),
                       "networks": "none", **server}}
    assert field in _fault(c.post("/compute/v2.1/servers", json=body, headers=NOVA),
                           "compute")


def test_a_10000_character_server_name_names_the_field_and_limit(c: httpx.Client) -> None:
    name = "n" * 10_000
    r = c.post("/compute/v2.1/servers", headers=NOVA, json={"server": {
        "name": name, "flavorRef": "1", "imageRef": str(uuid.uuid4()), "networks": "none"}})
    message = _fault(r, "compute")
    assert "name" in message and "255" in message and "10000" in message
    assert "n" * 100 not in r.text and len(r.text) < 500


@pytest.mark.parametrize("service,path", [
    ("compute", "/compute/v2.1/os-quota-sets/{pid}"),
    ("volume", "/volume/v3/{pid}/os-quota-sets/{pid}")])
@pytest.mark.parametrize("value", [2**63, 2**64, 2**31, -2])
def test_quota_values_no_column_holds(c: httpx.Client, pid: str, service: str, path: str,
                                      value: int) -> None:
    key = "instances" if service == "compute" else "volumes"
    r = c.put(path.format(pid=pid), json={"quota_set": {key: value}},
              headers=NOVA | CINDER)
    _fault(r, service)
    assert c.get(path.format(pid=pid), headers=NOVA | CINDER).json()["quota_set"][key] \
        not in (value,)


@pytest.mark.parametrize("description", [["x"], {"a": "b"}, 5, "d" * 70_000])
def test_flavor_update_with_a_bad_description(c: httpx.Client, description: object) -> None:
    r = c.post("/compute/v2.1/flavors", headers=NOVA, json={"flavor": {
        "name": f"f-{uuid.uuid4().hex[:6]}", "ram": 64, "vcpus": 1, "disk": 1}})
    assert r.status_code == 200, r.text
    fid = r.json()["flavor"]["id"]
    r = c.put(f"/compute/v2.1/flavors/{fid}", headers=NOVA,
              json={"flavor": {"description": description}})
    assert "description" in _fault(r, "compute")
    assert c.get(f"/compute/v2.1/flavors/{fid}", headers=NOVA).json()["flavor"][
        "description"] is None


# ------------------------------------------------------------------ volume
@pytest.mark.parametrize("field", ["imageRef", "volume_type", "snapshot_id",
                                   "source_volid"])
@pytest.mark.parametrize("bad", [["x"], {"id": "x"}, 2**64])
def test_volume_create_references_of_the_wrong_type(c: httpx.Client, pid: str, field: str,
                                                     bad: object) -> None:
    r = c.post(f"/volume/v3/{pid}/volumes", headers=CINDER,
               json={"volume": {"size": 1, field: bad}})
    _fault(r, "volume")


# ------------------------------------------------------------------ image
@pytest.mark.parametrize("field", ["min_disk", "min_ram"])
@pytest.mark.parametrize("value", [2**63, 2**31, -1, "1"])
def test_image_min_disk_and_min_ram_out_of_range(c: httpx.Client, field: str,
                                                 value: object) -> None:
    assert field in _fault(c.post("/image/v2/images", json={"name": "i", field: value}),
                           "image")
    image = c.post("/image/v2/images", json={"name": "i"}).json()
    r = c.patch(f"/image/v2/images/{image['id']}", json=[
        {"op": "replace", "path": f"/{field}", "value": value}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
    assert field in _fault(r, "image")
    assert c.get(f"/image/v2/images/{image['id']}").json()[field] == 0


# ------------------------------------------------------------------ identity
@pytest.mark.parametrize("kind,field", [("users", "domain_id"),
                                        ("users", "default_project_id"),
                                        ("projects", "domain_id")])
@pytest.mark.parametrize("bad", [["default"], {"id": "default"}])
def test_identity_ids_of_the_wrong_type(c: httpx.Client, kind: str, field: str,
                                        bad: object) -> None:
    singular = kind[:-1]
    r = c.post(f"/identity/v3/{kind}", json={singular: {
        "name": f"x-{uuid.uuid4().hex[:6]}", field: bad}})
    assert field in _fault(r, "identity")
    if field == "default_project_id":
        made = c.post("/identity/v3/users", json={"user": {
            "name": f"u-{uuid.uuid4().hex[:6]}"}}).json()["user"]
        r = c.patch(f"/identity/v3/users/{made['id']}", json={"user": {field: bad}})
        assert field in _fault(r, "identity")


# ------------------------------------------------------------------ a full disk
@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs for the image store (needs root, as `make test` runs)."""
    mnt = tmp_path / "store"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_disk_that_fills_during_an_upload_is_a_413(tmp_path: Path, small_store: Path) -> None:
    server = Server(tmp_path / "state", free_port(), extra_conf={"glance_store": {
        "default_store": "file", "filesystem_store_datadir": str(small_store)}})
    server.setup()
    server.start()
    try:
        with server.client(server.token()) as c:
            image = c.post("/image/v2/images", json={
                "name": "big", "disk_format": "raw", "container_format": "bare"}).json()
            r = c.put(f"/image/v2/images/{image['id']}/file", content=b"\1" * (8 << 20),
                      headers={"Content-Type": "application/octet-stream"})
            assert "full" in _fault(r, "image", 413)
            shown = c.get(f"/image/v2/images/{image['id']}").json()
            assert shown["status"] == "queued" and shown["size"] is None
            assert list(small_store.iterdir()) == []  # the partial data is gone
            r = c.put(f"/image/v2/images/{image['id']}/file", content=b"\1" * 4096,
                      headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 204, r.text  # and room again: the upload works
    finally:
        server.stop()
    assert "unexpected error" not in server.log.read_text(errors="replace")


# ------------------------------------------------------------------ found by the fuzz test
@pytest.mark.parametrize("service,path", [
    ("image", "/image/v2/images?size_min=18446744073709551616"),
    ("image", "/image/v2/images?limit=%C2%B2"),  # "²": str.isdigit() but not int()
    ("compute", "/compute/v2.1/servers?limit=%C2%B2"),
    ("compute", "/compute/v2.1/flavors?minRam=18446744073709551616"),
    ("volume", "/volume/v3/{pid}/volumes?limit=%C2%B2"),
])
def test_integer_query_parameters_out_of_range(c: httpx.Client, pid: str, service: str,
                                               path: str) -> None:
    assert "limit" in path or "size_min" in path or "minRam" in path
    _fault(c.get(path.format(pid=pid), headers=NOVA | CINDER), service)


def test_flavor_rxtx_factor_of_the_wrong_type(c: httpx.Client) -> None:
    r = c.post("/compute/v2.1/flavors", headers=NOVA, json={"flavor": {
        "name": "rx", "ram": 64, "vcpus": 1, "disk": 1, "rxtx_factor": {"a": 1}}})
    assert "rxtx_factor" in _fault(r, "compute")


def test_attachment_connector_of_the_wrong_type(c: httpx.Client, pid: str) -> None:
    r = c.put(f"/volume/v3/{pid}/attachments/{uuid.uuid4()}", headers=CINDER,
              json={"attachment": {"connector": {"host": {"a": 1}}}})
    assert "connector.host" in _fault(r, "volume")
