"""Glance v2 conformance against a real `strato serve`: every image-service view in the
reference's exact shape, and Glance's answers where strato differed (issue 16, point 6).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.api_schemas import assert_shape
from tests.api_schemas import image as S
from tests.support import Server

V21 = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
V20 = {"Content-Type": "application/openstack-images-v2.0-json-patch"}
OCTETS = {"Content-Type": "application/octet-stream"}


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _member_of_new_project(server: Server, admin_token: str) -> dict:
    with server.client(admin_token) as c:
        project = c.post("/identity/v3/projects",
                         json={"project": {"name": _uniq("p")}}).json()["project"]
        user = c.post("/identity/v3/users", json={"user": {
            "name": _uniq("u"), "password": "pw"}}).json()["user"]
        role = c.get("/identity/v3/roles", params={"name": "member"}).json()["roles"][0]
        c.put(f"/identity/v3/projects/{project['id']}/users/{user['id']}/roles/{role['id']}")
    return {"project": project, "user": user,
            "token": server.token(user["name"], "pw", project["name"])}


@pytest.fixture(scope="module")
def alice(server: Server, admin_token: str) -> Iterator[httpx.Client]:
    """A member of her own project (not an admin): Glance's ordinary user."""
    who = _member_of_new_project(server, admin_token)
    with server.client(who["token"]) as c:
        yield c


@pytest.fixture(scope="module")
def bob_who(server: Server, admin_token: str) -> dict:
    return _member_of_new_project(server, admin_token)


@pytest.fixture(scope="module")
def bob(server: Server, bob_who: dict) -> Iterator[httpx.Client]:
    with server.client(bob_who["token"]) as c:
        yield c


def _create(c: httpx.Client, **fields: object) -> dict:
    body = {"name": _uniq("img"), "disk_format": "raw", "container_format": "bare",
            **fields}
    r = c.post("/image/v2/images", json=body)
    assert r.status_code == 201, r.text
    assert_shape(r.json(), S.image(with_data=False, direct_url=False))
    return r.json()


def _fault(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert_shape(r.json(), S.FAULT)


def test_image_view_through_its_life(server: Server, alice: httpx.Client) -> None:
    image = _create(alice, visibility="private", ramdisk_id=str(uuid.uuid4()))
    iid = image["id"]
    assert image["status"] == "queued" and image["size"] is None
    assert image["checksum"] is None and image["os_hash_value"] is None
    assert_shape(alice.get(f"/image/v2/images/{iid}").json(),
                 S.image(with_data=False, direct_url=False))
    # no data yet: 204, empty
    r = alice.get(f"/image/v2/images/{iid}/file")
    assert r.status_code == 204 and r.content == b""

    data = b"strato" * 1000
    assert alice.put(f"/image/v2/images/{iid}/file", content=data,
                     headers=OCTETS).status_code == 204
    shown = alice.get(f"/image/v2/images/{iid}").json()
    assert_shape(shown, S.image(with_data=True, direct_url=True))
    assert shown["status"] == "active" and shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()

    listed = alice.get("/image/v2/images", params={"limit": 1}).json()
    assert_shape(listed, S.images())
    assert listed["first"] == "/v2/images"

    # Glance's default policy: a member of the owner's project may (de|re)activate
    assert alice.post(f"/image/v2/images/{iid}/actions/deactivate").status_code == 204
    assert_shape(alice.get(f"/image/v2/images/{iid}").json(), S.image())
    _fault(alice.get(f"/image/v2/images/{iid}/file"), 403)
    assert alice.post(f"/image/v2/images/{iid}/actions/reactivate").status_code == 204
    assert alice.get(f"/image/v2/images/{iid}/file").content == data
    assert alice.delete(f"/image/v2/images/{iid}").status_code == 204
    _fault(alice.get(f"/image/v2/images/{iid}"), 404)


def test_deactivate_is_refused_to_other_projects(alice: httpx.Client,
                                                 bob: httpx.Client) -> None:
    image = _create(alice, visibility="community")  # bob sees it, owns nothing
    iid = image["id"]
    alice.put(f"/image/v2/images/{iid}/file", content=b"x" * 512, headers=OCTETS)
    _fault(bob.post(f"/image/v2/images/{iid}/actions/deactivate"), 403)
    assert alice.get(f"/image/v2/images/{iid}").json()["status"] == "active"
    alice.delete(f"/image/v2/images/{iid}")


def test_both_json_patch_media_types(alice: httpx.Client) -> None:
    iid = _create(alice)["id"]
    ops21 = [{"op": "replace", "path": "/name", "value": "n21"},
             {"op": "add", "path": "/color", "value": "red"}]
    r = alice.patch(f"/image/v2/images/{iid}", content=json.dumps(ops21), headers=V21)
    assert r.status_code == 200, r.text
    assert_shape(r.json(), S.image(with_data=False))
    # the older media type: the operation is the key
    ops20 = [{"replace": "/name", "value": "n20"}, {"add": "/size_hint", "value": "1"},
             {"remove": "/color"}]
    r = alice.patch(f"/image/v2/images/{iid}", content=json.dumps(ops20), headers=V20)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(body, S.image(with_data=False))
    assert body["name"] == "n20" and body["size_hint"] == "1" and "color" not in body
    # two operations in one object, or an unknown one: 400, nothing changed
    for bad in ([{"replace": "/name", "add": "/x", "value": "v"}],
                [{"move": "/name", "value": "v"}], {"replace": "/name"}):
        _fault(alice.patch(f"/image/v2/images/{iid}", content=json.dumps(bad),
                           headers=V20), 400)
    r = alice.patch(f"/image/v2/images/{iid}", headers=V20,
                    content=json.dumps([{"replace": "/min_disk", "value": 2**63}]))
    _fault(r, 400)
    assert "min_disk" in r.json()["message"]
    _fault(alice.patch(f"/image/v2/images/{iid}", content=json.dumps(ops21),
                       headers={"Content-Type": "application/json"}), 415)
    # locations are not visible here: Glance refuses to touch them (403)
    loc = [{"op": "add", "path": "/locations/-",
            "value": {"url": "http://example.invalid/x", "metadata": {}}}]
    _fault(alice.patch(f"/image/v2/images/{iid}", content=json.dumps(loc), headers=V21),
           403)
    assert alice.get(f"/image/v2/images/{iid}").json()["name"] == "n20"
    alice.delete(f"/image/v2/images/{iid}")


def test_empty_image_id_is_not_found(alice: httpx.Client) -> None:
    for method in ("GET", "DELETE", "PATCH"):
        _fault(alice.request(method, "/image/v2/images/"), 404)


def test_discovery_documents(server: Server, admin_token: str,
                             alice: httpx.Client) -> None:
    r = alice.get("/image/versions")
    assert r.status_code == 200
    assert_shape(r.json(), S.VERSIONS)
    r = alice.get("/image/")
    assert r.status_code == 300  # Glance's multiple choices at the root
    assert_shape(r.json(), S.VERSIONS)
    r = alice.get("/image/v2/info/import")
    assert r.status_code == 200
    assert_shape(r.json(), S.IMPORT_INFO)
    assert r.json()["import-methods"]["value"] == ["glance-direct", "web-download"]
    stores = alice.get("/image/v2/info/stores").json()
    assert_shape(stores, S.STORES)
    assert [s["default"] for s in stores["stores"]] == [True]
    _fault(alice.get("/image/v2/info/stores/detail"), 403)
    with server.client(admin_token) as admin:
        assert_shape(admin.get("/image/v2/info/stores/detail").json(), S.STORES_DETAIL)
    usage = alice.get("/image/v2/info/usage").json()
    assert_shape(usage, S.USAGE)
    for name, title in (("image", "image"), ("images", "images"), ("member", "member"),
                        ("members", "members"), ("task", "task"), ("tasks", "tasks"),
                        ("metadefs/namespace", "namespace"),
                        ("metadefs/namespaces", "namespaces"),
                        ("metadefs/resource_type", "resource_type_association"),
                        ("metadefs/resource_types", "resource_type_associations"),
                        ("metadefs/object", "object"), ("metadefs/objects", "objects"),
                        ("metadefs/property", "property"),
                        ("metadefs/properties", "properties"),
                        ("metadefs/tag", "tag"), ("metadefs/tags", "tags")):
        r = alice.get(f"/image/v2/schemas/{name}")
        assert r.status_code == 200, name
        assert_shape(r.json(), S.SCHEMA_DOC)
        assert r.json()["name"] == title
    _fault(alice.get("/image/v2/schemas/nothing"), 404)
    # no image cache API: 501 (the README's support matrix); no locations API (2.17)
    _fault(alice.get("/image/v2/cache"), 501)


def test_the_image_schema_describes_the_view(alice: httpx.Client) -> None:
    """Clients (glanceclient) check a patch against /v2/schemas/image: every core field
    the view returns is described there."""
    doc = alice.get("/image/v2/schemas/image").json()
    iid = _create(alice)["id"]
    view = alice.get(f"/image/v2/images/{iid}").json()
    assert set(S.image()["required"]) <= set(doc["properties"])
    assert set(view) - set(doc["properties"]) == set()
    alice.delete(f"/image/v2/images/{iid}")


def _chunked(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 1000):
        yield data[i:i + 1000]


def test_stage_then_glance_direct_import(server: Server, admin_token: str,
                                        alice: httpx.Client) -> None:
    iid = _create(alice, visibility="private")["id"]
    # importing what was never staged: Glance's 409
    _fault(alice.post(f"/image/v2/images/{iid}/import",
                      json={"method": {"name": "glance-direct"}}), 409)
    data = bytes(range(256)) * 40
    r = alice.put(f"/image/v2/images/{iid}/stage", content=_chunked(data), headers=OCTETS)
    assert r.status_code == 204, r.text
    staged = alice.get(f"/image/v2/images/{iid}").json()
    assert staged["status"] == "uploading"
    usage = alice.get("/image/v2/info/usage").json()["usage"]
    assert usage["image_stage_total"]["usage"] == 1  # MiB, rounded up
    assert usage["image_count_uploading"]["usage"] == 1
    assert_shape(staged, S.image(with_data=False))
    # staging twice: 409
    _fault(alice.put(f"/image/v2/images/{iid}/stage", content=b"x", headers=OCTETS), 409)
    # methods strato does not offer: Glance's 400; web-download needs a queued image
    for method in ({"name": "glance-download"}, {"name": "copy-image"}, {"name": "nope"}):
        _fault(alice.post(f"/image/v2/images/{iid}/import", json={"method": method}), 400)
    _fault(alice.post(f"/image/v2/images/{iid}/import", json={"method": {
        "name": "web-download", "uri": "http://127.0.0.1/x"}}), 409)
    _fault(alice.post(f"/image/v2/images/{iid}/import", json={
        "method": {"name": "glance-direct"}, "stores": ["elsewhere"]}), 400)

    r = alice.post(f"/image/v2/images/{iid}/import",
                   json={"method": {"name": "glance-direct"}, "all_stores": True})
    assert r.status_code == 202, r.text
    request_id = r.headers["x-openstack-request-id"]
    deadline = time.monotonic() + 60
    while (shown := alice.get(f"/image/v2/images/{iid}").json())["status"] != "active":
        assert shown["status"] in ("importing", "saving"), shown
        assert time.monotonic() < deadline, "import did not finish in 60 s"
        time.sleep(0.2)
    assert_shape(shown, S.image(with_data=True))
    assert shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert alice.get(f"/image/v2/images/{iid}/file").content == data
    stores = alice.get("/image/v2/info/stores").json()["stores"]
    assert shown["stores"] == ",".join(sorted(s["id"] for s in stores))

    tasks = alice.get(f"/image/v2/images/{iid}/tasks").json()
    assert_shape(tasks, S.TASKS)
    [task] = tasks["tasks"]
    assert task["status"] == "success" and task["request_id"] == request_id
    assert task["input"]["import_req"]["method"]["name"] == "glance-direct"
    # the same task in the (admin-only) tasks API
    _fault(alice.get("/image/v2/tasks"), 403)
    _fault(alice.get(f"/image/v2/tasks/{task['id']}"), 403)
    with server.client(admin_token) as admin:
        listed = admin.get("/image/v2/tasks").json()
        assert_shape(listed, S.TASK_LIST)
        assert task["id"] in [t["id"] for t in listed["tasks"]]
        r = admin.get(f"/image/v2/tasks/{task['id']}")
        assert r.status_code == 200
        assert_shape(r.json(), S.TASK_DOC)
        assert r.json()["status"] == "success"
        _fault(admin.get(f"/image/v2/tasks/{uuid.uuid4()}"), 404)
        _fault(admin.delete(f"/image/v2/tasks/{task['id']}"), 405)
    assert alice.delete(f"/image/v2/images/{iid}").status_code == 204


def test_legacy_import_tasks_are_refused(server: Server, admin_token: str,
                                         alice: httpx.Client) -> None:
    """``POST /v2/tasks`` would fetch ``import_from`` from another host: 400, as a
    Glance whose URI filtering lets nothing through; a malformed task is a 400 too."""
    task = {"type": "import", "input": {
        "import_from": "http://example.invalid/x.qcow2", "import_from_format": "qcow2",
        "image_properties": {"disk_format": "qcow2", "container_format": "bare"}}}
    _fault(alice.post("/image/v2/tasks", json=task), 403)
    with server.client(admin_token) as admin:
        r = admin.post("/image/v2/tasks", json=task)
        _fault(r, 400)
        assert "example.invalid" in r.json()["message"]
        for bad in ({"type": "export", "input": task["input"]}, {"type": "import"},
                    {"type": "import", "input": {"import_from": "x"}}, []):
            _fault(admin.post("/image/v2/tasks", json=bad), 400)


def test_staged_image_deleted_before_import(server: Server, alice: httpx.Client) -> None:
    iid = _create(alice)["id"]
    alice.put(f"/image/v2/images/{iid}/stage", content=b"y" * 2048, headers=OCTETS)
    staged = server.state / "image-staging" / iid
    assert staged.exists()
    assert alice.delete(f"/image/v2/images/{iid}").status_code == 204
    assert not staged.exists()


def test_member_views_and_member_status_filter(alice: httpx.Client, bob: httpx.Client,
                                               bob_who: dict) -> None:
    bob_project = bob_who["project"]["id"]
    iid = _create(alice)["id"]  # Glance's default visibility: shared
    r = alice.post(f"/image/v2/images/{iid}/members", json={"member": bob_project})
    assert r.status_code == 200, r.text
    assert_shape(r.json(), S.MEMBER)
    assert r.json()["status"] == "pending"
    assert_shape(alice.get(f"/image/v2/images/{iid}/members").json(), S.MEMBERS)
    assert_shape(bob.get(f"/image/v2/images/{iid}/members/{bob_project}").json(),
                 S.MEMBER)
    # pending: not in bob's default list, but asked for by member_status
    assert iid not in [i["id"] for i in bob.get("/image/v2/images").json()["images"]]
    pending = bob.get("/image/v2/images", params={"visibility": "shared",
                                                  "member_status": "pending"}).json()
    assert_shape(pending, S.images())
    assert [i["id"] for i in pending["images"]] == [iid]
    # the owner cannot accept for the member; an unknown status is a 400
    _fault(alice.put(f"/image/v2/images/{iid}/members/{bob_project}",
                     json={"status": "accepted"}), 403)
    _fault(bob.put(f"/image/v2/images/{iid}/members/{bob_project}",
                   json={"status": "maybe"}), 400)
    r = bob.put(f"/image/v2/images/{iid}/members/{bob_project}",
                json={"status": "accepted"})
    assert r.status_code == 200
    assert_shape(r.json(), S.MEMBER)
    assert iid in [i["id"] for i in bob.get("/image/v2/images").json()["images"]]
    alice.delete(f"/image/v2/images/{iid}")


def test_metadefs_catalog(server: Server, admin_token: str, alice: httpx.Client) -> None:
    """Namespaces with their resource types, properties, objects and tags: admins write,
    everyone reads what is public; the shapes of Glance's metadefs reference."""
    base = "/image/v2/metadefs"
    types = alice.get(f"{base}/resource_types").json()
    assert_shape(types, S.RESOURCE_TYPES)
    rtype = types["resource_types"][0]["name"]
    name = _uniq("ns")
    body = {"namespace": name, "display_name": name, "description": "d",
            "visibility": "public", "protected": True,
            "resource_type_associations": [{"name": rtype}]}
    _fault(alice.post(f"{base}/namespaces", json=body), 403)
    with server.client(admin_token) as admin:
        r = admin.post(f"{base}/namespaces", json=body)
        assert r.status_code == 201, r.text
        assert_shape(r.json(), S.NAMESPACE)
        _fault(admin.post(f"{base}/namespaces", json=body), 409)
        listed = alice.get(f"{base}/namespaces").json()
        assert_shape(listed, S.NAMESPACES)
        assert name in [n["namespace"] for n in listed["namespaces"]]
        _fault(admin.delete(f"{base}/namespaces/{name}"), 403)  # protected
        ns = f"{base}/namespaces/{name}"
        # properties
        prop = {"name": "hypervisor", "title": "Hypervisor", "type": "string",
                "enum": ["kvm", "qemu"]}
        r = admin.post(f"{ns}/properties", json=prop)
        assert r.status_code == 201 and r.json()["title"] == "Hypervisor"
        assert_shape(alice.get(f"{ns}/properties/hypervisor").json(), S.PROPERTY)
        r = admin.put(f"{ns}/properties/hypervisor", json={**prop, "title": "HV"})
        assert r.status_code == 200 and r.json()["title"] == "HV"
        assert_shape(alice.get(f"{ns}/properties").json(), S.PROPERTIES)
        # objects
        r = admin.post(f"{ns}/objects", json={"name": "cpu", "properties": {
            "cores": {"title": "Cores", "type": "integer"}}})
        assert r.status_code == 201, r.text
        assert_shape(r.json(), S.OBJECT)
        r = admin.put(f"{ns}/objects/cpu", json={"name": "cpu2"})
        assert r.status_code == 200 and r.json()["name"] == "cpu2"
        assert_shape(alice.get(f"{ns}/objects").json(), S.OBJECTS)
        assert_shape(alice.get(f"{ns}/objects/cpu2").json(), S.OBJECT)
        # tags: a list replaces, one by one after
        r = admin.post(f"{ns}/tags", json={"tags": [{"name": "a"}, {"name": "b"}]})
        assert r.status_code == 201
        r = admin.post(f"{ns}/tags/c")
        assert r.status_code == 201
        assert_shape(r.json(), S.TAG)
        r = admin.put(f"{ns}/tags/c", json={"name": "d"})
        assert r.status_code == 200 and r.json()["name"] == "d"
        tags = alice.get(f"{ns}/tags").json()
        assert_shape(tags, S.TAGS)
        assert sorted(t["name"] for t in tags["tags"]) == ["a", "b", "d"]
        assert admin.delete(f"{ns}/tags/d").status_code == 204
        assert admin.delete(f"{ns}/tags").status_code == 204
        assert alice.get(f"{ns}/tags").json() == {"tags": []}
        # the whole namespace
        full = alice.get(ns).json()
        assert_shape(full, S.NAMESPACE)
        assert full["properties"]["hypervisor"]["title"] == "HV"
        assert [o["name"] for o in full["objects"]] == ["cpu2"]
        # resource types
        assocs = alice.get(f"{ns}/resource_types").json()
        assert_shape(assocs, S.ASSOCIATIONS)
        assert admin.delete(f"{ns}/resource_types/{rtype}").status_code == 204
        r = admin.post(f"{ns}/resource_types", json={"name": rtype, "prefix": "hw_"})
        assert r.status_code == 201
        assert_shape(r.json(), S.ASSOCIATION)
        assert alice.get(f"{ns}/properties/hw_hypervisor").json()["name"] == "hypervisor"
        # private namespaces are the owner's (and admins'): 404 for others
        r = admin.put(ns, json={"namespace": name, "visibility": "private",
                                "protected": False})
        assert r.status_code == 200 and r.json()["protected"] is False
        _fault(alice.get(ns), 404)
        for gone in (f"{ns}/objects/cpu2", f"{ns}/properties/hypervisor"):
            assert admin.delete(gone).status_code == 204
            _fault(admin.get(gone), 404)
        assert admin.delete(ns).status_code == 204
        _fault(admin.get(ns), 404)


def test_the_last_store_keeps_its_data(server: Server, admin_token: str,
                                       alice: httpx.Client) -> None:
    """``DELETE /v2/stores/{store}/{image}``: a Glance without multi-store has no stores
    API (404); its 403 for an image's last location is in tests/test_image_import.py."""
    iid = _create(alice)["id"]
    alice.put(f"/image/v2/images/{iid}/file", content=b"z" * 512, headers=OCTETS)
    store = alice.get("/image/v2/info/stores").json()["stores"][0]["id"]
    _fault(alice.delete(f"/image/v2/stores/{store}/{iid}"), 404)
    with server.client(admin_token) as admin:
        _fault(admin.delete(f"/image/v2/stores/{store}/{iid}"), 404)
        _fault(admin.delete(f"/image/v2/stores/elsewhere/{iid}"), 404)
    assert alice.get(f"/image/v2/images/{iid}/file").content == b"z" * 512
    alice.delete(f"/image/v2/images/{iid}")
