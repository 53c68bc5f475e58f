"""Glance's interoperable import beyond glance-direct: web-download from a loopback HTTP
server this module starts (the only address it contacts), Glance's URI filtering, image
tasks and ``/v2/info/import`` — through the real ``openstack`` client and raw HTTP.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from strato.config import load
from strato.image.webdownload import uri_allowed
from strato.storage.crash import ENV as CRASH_ENV
from tests.api_schemas import assert_shape
from tests.api_schemas import image as S
from tests.support import Server, free_port

DATA = hashlib.sha512(b"strato").digest() * 4096  # 256 KiB of raw "disk"


class _Handler(http.server.BaseHTTPRequestHandler):
    """/data: the image; /short: a body shorter than its Content-Length; /missing: 404;
    /redirect: to a port the filter refuses."""

    refused_port = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/data":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA)
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA[:1000])
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.refused_port}/data")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    _Handler.refused_port = free_port()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def dead_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    return free_port()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, web: str, dead_port: int
        ) -> Iterator[Server]:
    """Glance's filter, opened to this module's loopback server (and a dead port) only."""
    port = web.rsplit(":", 1)[1]
    server = Server(tmp_path_factory.mktemp("imp"), free_port(), extra_conf={
        "import_filtering_opts": {"allowed_hosts": "127.0.0.1",
                                  "allowed_ports": f"{port},{dead_port}"},
        "jobs": {"lease_seconds": "2"}})  # a killed import is taken up again soon
    server.setup()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(srv: Server) -> Iterator[httpx.Client]:
    with srv.client(srv.token()) as c:
        yield c


def _create(c: httpx.Client, disk_format: str = "raw") -> str:
    r = c.post("/image/v2/images", json={"name": f"w-{uuid.uuid4().hex[:8]}",
                                         "disk_format": disk_format,
                                         "container_format": "bare"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _fault(r: httpx.Response, status: int, needle: str = "") -> None:
    assert r.status_code == status, r.text
    assert_shape(r.json(), S.FAULT)
    assert needle in r.text, r.text


def _web(c: httpx.Client, iid: str, uri: object) -> httpx.Response:
    return c.post(f"/image/v2/images/{iid}/import",
                  json={"method": {"name": "web-download", "uri": uri}})


def _task_done(c: httpx.Client, iid: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        tasks = c.get(f"/image/v2/images/{iid}/tasks").json()
        assert_shape(tasks, S.TASKS)
        if tasks["tasks"] and tasks["tasks"][-1]["status"] in ("success", "failure"):
            return tasks["tasks"][-1]
        assert time.monotonic() < deadline, tasks
        time.sleep(0.2)


def test_glances_default_filter_refuses_without_lookups(tmp_path: Path) -> None:
    """Glance's defaults: http/https on ports 80 and 443, any host; encoded addresses
    refused (never resolved); an allow list overrides a deny list."""
    conf = load(overrides=[("DEFAULT", "state_path", str(tmp_path))])
    assert uri_allowed(conf, "http://127.0.0.1/x") and uri_allowed(conf, "https://[::1]/x")
    for uri in ("http://127.0.0.1:8080/x", "ftp://127.0.0.1/x", "file:///etc/passwd",
                "http://127.1/x", "http://2130706433/x", "http://0x7f000001/x", "", None,
                "http://127.0.0.1:99999/x", "http:///x"):
        assert not uri_allowed(conf, uri), uri
    conf = load(overrides=[("DEFAULT", "state_path", str(tmp_path)),
                           ("import_filtering_opts", "disallowed_hosts", "127.0.0.1"),
                           ("import_filtering_opts", "allowed_ports", ""),
                           ("import_filtering_opts", "disallowed_ports", "22")])
    assert not uri_allowed(conf, "http://127.0.0.1/x")
    assert not uri_allowed(conf, "http://[::1]:22/x")
    assert uri_allowed(conf, "http://[::1]:8080/x")
    conf = load(overrides=[("DEFAULT", "state_path", str(tmp_path)),
                           ("import_filtering_opts", "allowed_hosts", "10.0.0.1")])
    # a name the allow list does not hold: refused before any DNS lookup
    assert not uri_allowed(conf, "http://example.invalid/x")
    assert not uri_allowed(conf, "http://127.0.0.1/x")


def test_info_import_lists_the_enabled_methods(admin: httpx.Client) -> None:
    r = admin.get("/image/v2/info/import")
    assert_shape(r.json(), S.IMPORT_INFO)
    assert r.json()["import-methods"]["value"] == ["glance-direct", "web-download"]
    iid = _create(admin)
    for method, why in (({"name": "copy-image"}, "single store"),
                        ({"name": "glance-download"}, "region"),
                        ({"name": "nope"}, "Unknown import method")):
        _fault(admin.post(f"/image/v2/images/{iid}/import", json={"method": method}),
               400, why)
    admin.delete(f"/image/v2/images/{iid}")


def test_web_download_refusals_at_request_time(admin: httpx.Client, web: str) -> None:
    iid = _create(admin)
    port = int(web.rsplit(":", 1)[1])
    for uri in (f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/data",
                f"ftp://127.0.0.1:{port}/data", f"http://127.1:{port}/data",
                f"http://example.invalid:{port}/data", None, 7):
        _fault(_web(admin, iid, uri), 400, "does not pass filtering")
    shown = admin.get(f"/image/v2/images/{iid}").json()
    assert shown["status"] == "queued" and "os_glance_failed_import" not in shown
    assert admin.get(f"/image/v2/images/{iid}/tasks").json() == {"tasks": []}
    # web-download needs a queued image: a staged one is 409 (before the URI is judged)
    r = admin.put(f"/image/v2/images/{iid}/stage", content=b"x" * 512,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    _fault(_web(admin, iid, f"{web}/data"), 409, "queued")
    admin.delete(f"/image/v2/images/{iid}")


def test_web_download_with_the_openstack_client(srv: Server, admin: httpx.Client,
                                                web: str) -> None:
    # (created over HTTP: `image create` with no --file uploads its stdin when that is
    # not a terminal, and the image must still be queued for web-download)
    name = admin.get(f"/image/v2/images/{_create(admin)}").json()["name"]
    srv.openstack("image", "import", "--method", "web-download", "--uri", f"{web}/data",
                  name, "--wait")
    shown = srv.openstack_json("image", "show", name)
    assert shown["status"] == "active", shown
    assert shown["size"] == len(DATA)
    assert shown["checksum"] == hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    iid = shown["id"]
    assert admin.get(f"/image/v2/images/{iid}/file").content == DATA
    view = admin.get(f"/image/v2/images/{iid}").json()
    assert_shape(view, S.image(with_data=True))
    assert view["os_hash_value"] == hashlib.sha512(DATA).hexdigest()
    task = _task_done(admin, iid)
    assert task["status"] == "success" and task["message"] == ""
    assert task["input"]["import_req"]["method"] == {"name": "web-download",
                                                      "uri": f"{web}/data"}
    assert task["result"] == {"image_id": iid}
    # the same task through the (admin) tasks API and the client's `image task list`
    listed = srv.openstack_json("image", "task", "list")
    assert task["id"] in [t["ID"] for t in listed]
    doc = admin.get(f"/image/v2/tasks/{task['id']}").json()
    assert_shape(doc, S.TASK_DOC)
    assert doc["status"] == "success"
    # an active image is no target for another import
    _fault(_web(admin, iid, f"{web}/data"), 409, "active")
    admin.delete(f"/image/v2/images/{iid}")


@pytest.mark.parametrize("path, reason", [
    ("dead", "Connection refused"), ("/missing", "HTTP 404"),
    ("/short", "ended after 1000 of"), ("/redirect", "does not pass the import URI"),
])
def test_a_failed_download_is_a_failed_task(admin: httpx.Client, web: str, dead_port: int,
                                            path: str, reason: str) -> None:
    iid = _create(admin)
    uri = f"http://127.0.0.1:{dead_port}/data" if path == "dead" else f"{web}{path}"
    r = _web(admin, iid, uri)
    assert r.status_code == 202, r.text
    task = _task_done(admin, iid)
    assert task["status"] == "failure", task
    assert reason in task["message"] and uri in task["message"], task["message"]
    assert task["result"] is None
    shown = admin.get(f"/image/v2/images/{iid}").json()
    assert shown["status"] == "queued", shown
    assert shown["os_glance_failed_import"] == "rbd"
    assert shown["size"] is None and shown["checksum"] is None
    # nothing left in the store: a retry that works starts clean and ends active
    assert _web(admin, iid, f"{web}/data").status_code == 202
    tasks = admin.get(f"/image/v2/images/{iid}/tasks").json()["tasks"]
    assert len(tasks) == 2
    done = _task_done(admin, iid)
    assert done["status"] == "success", done
    shown = admin.get(f"/image/v2/images/{iid}").json()
    assert shown["status"] == "active" and "os_glance_failed_import" not in shown
    admin.delete(f"/image/v2/images/{iid}")


def test_glance_direct_with_the_openstack_client(srv: Server, tmp_path: Path) -> None:
    """``image create --import``: stage + glance-direct, as the client does it."""
    path = tmp_path / "disk.raw"
    path.write_bytes(DATA)
    name = f"gd-{uuid.uuid4().hex[:8]}"
    srv.openstack("image", "create", "--import", "--disk-format", "raw",
                  "--container-format", "bare", "--file", str(path), name)
    deadline = time.monotonic() + 60
    while (shown := srv.openstack_json("image", "show", name))["status"] != "active":
        assert shown["status"] in ("uploading", "importing", "saving"), shown
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert shown["checksum"] == hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    srv.openstack("image", "delete", name)


def test_kill_during_a_web_download_converges(srv: Server, web: str) -> None:
    """``kill -9`` while the download is being written: after the restart the partial
    data is gone and the import runs again, to ``active`` (one task, ``success``)."""
    with srv.client(srv.token()) as admin:
        iid = _create(admin)
    srv.stop()
    os.environ[CRASH_ENV] = "image.import:downloading"
    try:
        srv.start()
    finally:
        os.environ.pop(CRASH_ENV)
    with srv.client(srv.token()) as admin:
        assert _web(admin, iid, f"{web}/data").status_code == 202
    assert srv.proc is not None and srv.proc.wait(60) == -9
    srv.start()
    with srv.client(srv.token()) as admin:
        task = _task_done(admin, iid)
        assert task["status"] == "success", task
        shown = admin.get(f"/image/v2/images/{iid}").json()
        assert shown["status"] == "active" and shown["size"] == len(DATA)
        assert admin.get(f"/image/v2/images/{iid}/file").content == DATA
        assert len(admin.get(f"/image/v2/images/{iid}/tasks").json()["tasks"]) == 1
        assert admin.delete(f"/image/v2/images/{iid}").status_code == 204


# ------------------------------------------------------------------ multi-store
@pytest.fixture(scope="module")
def ms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two stores, Glance's way: ``fast`` (the block store, default) and ``cheap``
    (files); a short job lease, so a killed copy is taken up again soon."""
    server = Server(tmp_path_factory.mktemp("ms"), free_port(), extra_conf={
        "glance_store": {"enabled_backends": "fast:rbd, cheap:file",
                         "default_backend": "fast"},
        "jobs": {"lease_seconds": "2"}})
    server.setup()
    server.start()
    yield server
    server.stop()


def _upload(c: httpx.Client, store: str | None = None) -> str:
    iid = _create(c)
    headers = {"Content-Type": "application/octet-stream",
               **({"X-Image-Meta-Store": store} if store else {})}
    r = c.put(f"/image/v2/images/{iid}/file", content=DATA, headers=headers)
    assert r.status_code == 204, r.text
    return iid


def _cheap_files(srv: Server) -> list[str]:
    return sorted(p.name for p in (srv.state / "images").iterdir())


def _copied(c: httpx.Client, iid: str) -> dict:
    """The image once its copy-image task is over."""
    task = _task_done(c, iid)
    shown = c.get(f"/image/v2/images/{iid}").json()
    assert shown["status"] == "active"  # throughout, as Glance keeps it
    return {"task": task, "image": shown}


def test_stores_are_listed(ms: Server) -> None:
    with ms.client(ms.token()) as admin:
        stores = admin.get("/image/v2/info/stores").json()
        assert_shape(stores, S.STORES)
        assert stores["stores"] == [
            {"id": "fast", "default": True, "description": stores["stores"][0][
                "description"]},
            {"id": "cheap", "description": "Image data in files on this host"}]
        detail = admin.get("/image/v2/info/stores/detail").json()
        assert_shape(detail, S.STORES_DETAIL)
        assert [(s["id"], s["type"]) for s in detail["stores"]] == [("fast", "rbd"),
                                                                    ("cheap", "file")]
        assert admin.get("/image/v2/info/import").json()["import-methods"]["value"] == [
            "glance-direct", "web-download", "copy-image"]
        r = admin.post("/image/v2/images", json={"name": "h", "disk_format": "raw",
                                                 "container_format": "bare"})
        assert r.headers["OpenStack-image-store-ids"] == "fast,cheap"
        assert r.headers["OpenStack-image-import-methods"] == \
            "glance-direct,web-download,copy-image"
        admin.delete(f"/image/v2/images/{r.json()['id']}")
    listed = ms.openstack_json("image", "stores", "list")
    assert [s["ID"] for s in listed] == ["fast", "cheap"]


def test_upload_to_a_store_and_copy_image(ms: Server) -> None:
    with ms.client(ms.token()) as admin:
        # an upload with X-Image-Meta-Store lands in that store (and is read from it)
        iid = _upload(admin, "cheap")
        assert admin.get(f"/image/v2/images/{iid}").json()["stores"] == "cheap"
        assert iid in _cheap_files(ms)
        assert admin.get(f"/image/v2/images/{iid}/file").content == DATA
        admin.delete(f"/image/v2/images/{iid}")
        assert iid not in _cheap_files(ms)
        r = admin.put(f"/image/v2/images/{_create(admin)}/file", content=DATA,
                      headers={"Content-Type": "application/octet-stream",
                               "X-Image-Meta-Store": "nowhere"})
        _fault(r, 400, "nowhere")

        iid = _upload(admin)
        shown = admin.get(f"/image/v2/images/{iid}").json()
        assert shown["stores"] == "fast"
        # copy-image with the real client
        name = shown["name"]
        ms.openstack("image", "import", name, "--method", "copy-image", "--store", "cheap")
        done = _copied(admin, iid)
        assert done["task"]["status"] == "success", done
        assert done["task"]["input"]["backend"] == ["cheap"]
        image = done["image"]
        assert_shape(image, S.image(with_data=True))
        assert image["stores"] == "cheap,fast"
        assert image["os_glance_importing_to_stores"] == ""
        assert image["os_glance_failed_import"] == ""
        assert (ms.state / "images" / iid).read_bytes() == DATA
        # copying where it is already: Glance's 400; all_stores: nothing to do
        _fault(admin.post(f"/image/v2/images/{iid}/import", json={
            "method": {"name": "copy-image"}, "stores": ["cheap"]}), 400, "already")
        r = admin.post(f"/image/v2/images/{iid}/import", json={
            "method": {"name": "copy-image"}, "all_stores": True})
        assert r.status_code == 202
        assert len(admin.get(f"/image/v2/images/{iid}/tasks").json()["tasks"]) == 1
        _fault(admin.post(f"/image/v2/images/{iid}/import", json={
            "method": {"name": "copy-image"}, "stores": ["elsewhere"]}), 409, "elsewhere")

        # delete from one store: the copy goes; the first store (clones' source) stays
        _fault(admin.delete(f"/image/v2/stores/fast/{iid}"), 409, "clone")
        _fault(admin.delete(f"/image/v2/stores/elsewhere/{iid}"), 409, "not available")
        r = admin.delete(f"/image/v2/stores/cheap/{iid}")
        assert r.status_code == 204, r.text
        assert admin.get(f"/image/v2/images/{iid}").json()["stores"] == "fast"
        assert iid not in _cheap_files(ms)
        _fault(admin.delete(f"/image/v2/stores/cheap/{iid}"), 403, "only store")
        # deleting the image removes its copies too
        assert admin.post(f"/image/v2/images/{iid}/import", json={
            "method": {"name": "copy-image"}, "stores": ["cheap"]}).status_code == 202
        assert _copied(admin, iid)["image"]["stores"] == "cheap,fast"
        assert admin.delete(f"/image/v2/images/{iid}").status_code == 204
        assert iid not in _cheap_files(ms)


def test_glance_direct_to_all_stores(ms: Server) -> None:
    """An import into several stores: the first takes the data, the others a copy."""
    with ms.client(ms.token()) as admin:
        iid = _create(admin)
        r = admin.put(f"/image/v2/images/{iid}/stage", content=DATA,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        _fault(admin.post(f"/image/v2/images/{iid}/import", json={
            "method": {"name": "glance-direct"}, "stores": ["cheap"],
            "all_stores": True}), 400, "All_stores")
        r = admin.post(f"/image/v2/images/{iid}/import", json={
            "method": {"name": "glance-direct"}, "all_stores": True})
        assert r.status_code == 202, r.text
        task = _task_done(admin, iid)
        assert task["status"] == "success", task
        assert task["input"]["backend"] == ["fast", "cheap"]
        shown = admin.get(f"/image/v2/images/{iid}").json()
        assert shown["status"] == "active" and shown["stores"] == "cheap,fast"
        assert shown["os_glance_importing_to_stores"] == ""
        assert (ms.state / "images" / iid).read_bytes() == DATA
        assert admin.get(f"/image/v2/images/{iid}/file").content == DATA
        assert admin.delete(f"/image/v2/images/{iid}").status_code == 204
        assert iid not in _cheap_files(ms)


def test_copy_image_refusals(ms: Server, admin_of_ms_member: httpx.Client) -> None:
    with ms.client(ms.token()) as admin:
        queued = _create(admin)
        _fault(admin.post(f"/image/v2/images/{queued}/import", json={
            "method": {"name": "copy-image"}, "stores": ["cheap"]}), 409, "active")
        admin.delete(f"/image/v2/images/{queued}")
    member = admin_of_ms_member
    iid = _upload(member)
    # Glance's copy_image rule: admins only, even for the image's owner
    _fault(member.post(f"/image/v2/images/{iid}/import", json={
        "method": {"name": "copy-image"}, "stores": ["cheap"]}), 403)
    member.delete(f"/image/v2/images/{iid}")


@pytest.fixture(scope="module")
def admin_of_ms_member(ms: Server) -> Iterator[httpx.Client]:
    """A member (not an admin) of a project of its own on the multi-store server."""
    suffix = uuid.uuid4().hex[:8]
    with ms.client(ms.token()) as c:
        project = c.post("/identity/v3/projects",
                         json={"project": {"name": f"p-{suffix}"}}).json()["project"]
        user = c.post("/identity/v3/users", json={"user": {
            "name": f"u-{suffix}", "password": "pw"}}).json()["user"]
        role = c.get("/identity/v3/roles", params={"name": "member"}).json()["roles"][0]
        c.put(f"/identity/v3/projects/{project['id']}/users/{user['id']}/roles/"
              f"{role['id']}")
    with ms.client(ms.token(f"u-{suffix}", "pw", f"p-{suffix}")) as member:
        yield member


def test_kill_after_the_copy_is_written_converges(ms: Server) -> None:
    """``kill -9`` after the data is in the target store, before the image records it:
    after a restart the task ends ``success`` with one copy, nothing orphaned."""
    with ms.client(ms.token()) as admin:
        iid = _upload(admin)
    ms.stop()
    os.environ[CRASH_ENV] = "image.copy:after-write"
    try:
        ms.start()
    finally:
        os.environ.pop(CRASH_ENV)
    with ms.client(ms.token()) as admin:
        r = admin.post(f"/image/v2/images/{iid}/import", json={
            "method": {"name": "copy-image"}, "stores": ["cheap"]})
        assert r.status_code == 202, r.text
    assert ms.proc is not None and ms.proc.wait(60) == -9
    assert iid in _cheap_files(ms)  # written, not recorded: what the restart must fix
    ms.start()
    with ms.client(ms.token()) as admin:
        done = _copied(admin, iid)
        assert done["task"]["status"] == "success", done
        assert done["image"]["stores"] == "cheap,fast"
        assert done["image"]["os_glance_importing_to_stores"] == ""
        assert (ms.state / "images" / iid).read_bytes() == DATA
        assert [f for f in _cheap_files(ms) if f.startswith(".")] == []  # no partials
        assert admin.delete(f"/image/v2/images/{iid}").status_code == 204
        assert iid not in _cheap_files(ms)


def test_a_volume_from_an_image_in_the_file_store(ms: Server) -> None:
    """Volumes (and servers) take an image's data wherever its first store is: one
    uploaded into ``cheap`` is read from the file store into the new volume."""
    with ms.client(ms.token()) as admin:
        iid = _upload(admin, "cheap")
        project = admin.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": admin.headers["X-Auth-Token"]}).json()["token"]["project"]
        base = f"/volume/v3/{project['id']}"
        r = admin.post(f"{base}/volumes", json={"volume": {"size": 1, "imageRef": iid}})
        assert r.status_code == 202, r.text
        vid = r.json()["volume"]["id"]
        deadline = time.monotonic() + 60
        while (vol := admin.get(f"{base}/volumes/{vid}").json()["volume"])["status"] \
                != "available":
            assert vol["status"] in ("creating", "downloading"), vol
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert vol["volume_image_metadata"]["image_id"] == iid
        assert admin.delete(f"{base}/volumes/{vid}").status_code == 202
        deadline = time.monotonic() + 60
        while admin.get(f"{base}/volumes/{vid}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert admin.delete(f"/image/v2/images/{iid}").status_code == 204
