"""The image service against a real `strato serve`: the openstack CLI, HTTP, the store."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from strato.storage import open_engine
from tests.support import Server, free_port

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def _blocks(server: Server):  # type: ignore[no-untyped-def]
    return open_engine("local", root=server.state / "blocks", repair=False)


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _create(c: httpx.Client, **fields) -> dict:  # type: ignore[no-untyped-def]
    body = {"name": _uniq("img"), "disk_format": "raw", "container_format": "bare", **fields}
    r = c.post("/image/v2/images", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _pattern(size: int) -> bytes:
    block = hashlib.sha512(str(size).encode()).digest() * 16  # 1 KiB, not zeros
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
def project_user(server: Server, admin_token: str) -> dict:
    """Another project with a member user, and its token."""
    with server.client(admin_token) as c:
        project = c.post("/identity/v3/projects",
                         json={"project": {"name": _uniq("p")}}).json()["project"]
        user = c.post("/identity/v3/users", json={"user": {
            "name": _uniq("u"), "password": "pw"}}).json()["user"]
        role = c.get("/identity/v3/roles", params={"name": "member"}).json()["roles"][0]
        c.put(f"/identity/v3/projects/{project['id']}/users/{user['id']}/roles/{role['id']}")
    return {"project": project, "user": user,
            "token": server.token(user["name"], "pw", project["name"])}


# ------------------------------------------------------------------ the real client
def test_cli_create_list_show_set_save_delete(server: Server, tmp_path: Path) -> None:
    data = tmp_path / "disk.raw"
    data.write_bytes(_pattern(3 << 20) + bytes(2 << 20))  # some data, then zeros
    name = _uniq("cli")
    created = server.openstack_json(
        "image", "create", "--file", str(data), "--disk-format", "raw",
        "--container-format", "bare", "--property", "os_distro=busybox", "--tag", "base",
        name)
    assert created["status"] == "active" and created["size"] == 5 << 20
    assert created["virtual_size"] == 5 << 20
    assert created["checksum"] == hashlib.md5(data.read_bytes()).hexdigest()
    assert created["properties"]["os_hash_value"] == hashlib.sha512(
        data.read_bytes()).hexdigest()

    listed = server.openstack_json("image", "list", "--long", "--property",
                                   "os_distro=busybox", "--tag", "base")
    assert name in [i["Name"] for i in listed]
    server.openstack("image", "set", "--property", "hw_qemu_guest_agent=yes",
                     "--property", "os_distro=cirros", name)
    server.openstack("image", "unset", "--property", "hw_qemu_guest_agent", name)
    shown = server.openstack_json("image", "show", name)
    assert shown["properties"]["os_distro"] == "cirros"
    assert "hw_qemu_guest_agent" not in shown["properties"]

    out = tmp_path / "saved.raw"
    server.openstack("image", "save", "--file", str(out), name)  # the client checks sha512
    assert out.read_bytes() == data.read_bytes()

    # The data is a block-store image with a protected snapshot 'snap'.
    fsid = (server.state / "blocks" / "fsid").read_text().strip()
    with server.client(server.token()) as c:
        shown = c.get(f"/image/v2/images/{created['id']}").json()
    assert shown["direct_url"] == f"rbd://{fsid}/images/{created['id']}/snap"
    with _blocks(server).open("images", created["id"]) as image:
        assert [s.name for s in image.list_snaps()] == ["snap"]
        assert image.is_protected_snap("snap")
    server.openstack("image", "delete", name)
    assert created["id"] not in _blocks(server).list("images")
    assert server.openstack("image", "show", name, check=False).returncode != 0


def test_cli_qcow2_and_pagination(server: Server, tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "96M"], check=True)
    prefix = _uniq("page")
    ids = []
    for i in range(3):
        img = server.openstack_json("image", "create", "--file", str(disk), "--disk-format",
                                    "qcow2", "--container-format", "bare", f"{prefix}-{i}")
        assert img["virtual_size"] == 96 << 20 and img["disk_format"] == "qcow2"
        ids.append(img["id"])
    first = server.openstack_json("image", "list", "--name", f"{prefix}-1", "--limit", "1")
    assert [i["ID"] for i in first] == [ids[1]]
    # Newest first: the page after the newest holds the one made before it.
    page = server.openstack_json("image", "list", "--limit", "1", "--marker", ids[2])
    assert [i["ID"] for i in page] == [ids[1]]
    with server.client(server.token()) as c:
        r = c.get("/image/v2/images", params=[("sort_key", "name"), ("sort_dir", "asc"),
                                               ("limit", "1"), ("marker", ids[0]),
                                               ("name", f"in:{prefix}-1,{prefix}-2")])
        assert [i["id"] for i in r.json()["images"]] == [ids[1]]
        assert "marker=" + ids[1] in r.json()["next"]
    for image_id in ids:
        server.openstack("image", "delete", image_id)


def test_cli_sharing_with_another_project(server: Server, project_user: dict,
                                          tmp_path: Path) -> None:
    data = tmp_path / "d.raw"
    data.write_bytes(_pattern(1 << 20))
    name = _uniq("shared")
    image = server.openstack_json("image", "create", "--file", str(data), "--disk-format",
                                  "raw", "--container-format", "bare", "--shared", name)
    other = project_user["project"]["id"]
    with server.client(project_user["token"]) as c:
        assert c.get(f"/image/v2/images/{image['id']}").status_code == 404
    server.openstack("image", "add", "project", name, other)
    with server.client(project_user["token"]) as c:
        # Visible to the member now; listed only once accepted.
        assert c.get(f"/image/v2/images/{image['id']}").status_code == 200
        assert image["id"] not in [i["id"] for i in c.get("/image/v2/images").json()["images"]]
    clouds = json.loads(json.dumps(__import__("yaml").safe_load(server.clouds.read_text())))
    clouds["clouds"]["other"] = {**clouds["clouds"]["strato"], "auth": {
        **clouds["clouds"]["strato"]["auth"], "username": project_user["user"]["name"],
        "password": "pw", "project_name": project_user["project"]["name"]}}
    server.clouds.write_text(__import__("yaml").safe_dump(clouds))
    server.openstack("image", "set", "--accept", image["id"], cloud="other")
    listed = server.openstack_json("image", "list", cloud="other")
    assert image["id"] in [i["ID"] for i in listed]
    members = server.openstack_json("image", "member", "list", name)
    assert [(m["Member ID"], m["Status"]) for m in members] == [(other, "accepted")]
    # The member may read but not change or delete it.
    refused = server.openstack("image", "set", "--property", "x=y", image["id"],
                               cloud="other", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr
    server.openstack("image", "delete", name)


def test_large_upload_and_download_match(server: Server, admin_token: str,
                                         tmp_path: Path) -> None:
    """1 GiB through the API, streamed both ways; checksums match."""
    size = 1 << 30
    piece = _pattern(1 << 20)
    md5, sha = hashlib.md5(), hashlib.sha512()

    def body():  # type: ignore[no-untyped-def]
        for i in range(size // len(piece)):
            chunk = i.to_bytes(8, "big") + piece[8:]
            md5.update(chunk)
            sha.update(chunk)
            yield chunk

    with server.client(admin_token) as c:
        image = _create(c)
        r = c.put(f"/image/v2/images/{image['id']}/file", content=body(),
                  headers={"Content-Type": "application/octet-stream"}, timeout=600)
        assert r.status_code == 204, r.text
        shown = c.get(f"/image/v2/images/{image['id']}").json()
        assert (shown["size"], shown["checksum"], shown["os_hash_value"]) == (
            size, md5.hexdigest(), sha.hexdigest())
        down_md5, down_sha, total = hashlib.md5(), hashlib.sha512(), 0
        with c.stream("GET", f"/image/v2/images/{image['id']}/file", timeout=600) as r:
            assert r.headers["Content-MD5"] == md5.hexdigest()
            for chunk in r.iter_bytes():
                down_md5.update(chunk)
                down_sha.update(chunk)
                total += len(chunk)
        assert (total, down_md5.hexdigest(), down_sha.hexdigest()) == (
            size, md5.hexdigest(), sha.hexdigest())
        assert c.delete(f"/image/v2/images/{image['id']}").status_code == 204


def test_zero_chunks_of_an_upload_stay_holes(server: Server, admin_token: str) -> None:
    """Chunks of zeros are not written (the store keeps them sparse, as glance_store's
    RBD driver does), in the middle of an upload as at its end; the data reads back."""
    data = _pattern(3 << 20) + bytes(40 << 20) + _pattern(5 << 20) + bytes(3 << 20)
    with server.client(admin_token) as c:
        image = _create(c)
        r = c.put(f"/image/v2/images/{image['id']}/file", content=data,
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204, r.text
        assert c.get(f"/image/v2/images/{image['id']}/file").content == data
        blocks = _blocks(server)
        layer = blocks.layer_path(blocks.load("images", image["id"])["layers"][0])
        # 8 MiB chunks: the first and the one holding the second pattern are data
        assert os.stat(layer).st_blocks * 512 <= 2 * (8 << 20) + (1 << 20)
        c.delete(f"/image/v2/images/{image['id']}")


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("declared,make,needle", [
    ("qcow2", ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
               "{f}"], "backing file"),
    ("raw", ["qemu-img", "create", "-q", "-f", "qcow2", "{f}", "16M"], "content is qcow2"),
    ("qcow2", ["dd", "if=/dev/urandom", "of={f}", "bs=64k", "count=4", "status=none"],
     "content is raw"),
    ("vmdk", ["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentFlat",
              "{f}", "16M"], "vmdk"),
])
def test_unsafe_or_mislabelled_content_is_refused(server: Server, admin_token: str,
                                                  tmp_path: Path, declared: str,
                                                  make: list[str], needle: str) -> None:
    disk = tmp_path / "disk"
    subprocess.run([a.format(f=disk) for a in make], check=True)
    with server.client(admin_token) as c:
        image = _create(c, disk_format=declared)
        r = c.put(f"/image/v2/images/{image['id']}/file", content=disk.read_bytes(),
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 400 and needle in r.json()["message"], r.text
        shown = c.get(f"/image/v2/images/{image['id']}").json()
        assert shown["status"] == "queued" and shown["size"] is None
    assert image["id"] not in _blocks(server).list("images")


def test_bad_requests(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        for body, status in (
            ({"name": "x" * 256}, 400),
            ({"name": "ok", "disk_format": "floppy"}, 400),
            ({"name": "ok", "visibility": "everyone"}, 400),
            ({"name": "ok", "min_ram": -1}, 400),
            ({"name": "ok", "big": "v" * 65536}, 400),
            ({"name": "ok", "k" * 256: "v"}, 400),
            ({"name": "ok", "number": 5}, 400),
            ({"name": "ok", "status": "active"}, 403),
            ({"name": "ok", "id": "not-a-uuid"}, 400),
            (["not", "an", "object"], 400),
        ):
            r = c.post("/image/v2/images", json=body)
            assert r.status_code == status, (body, r.text)
            assert r.json()["code"].startswith(str(status))
        image = _create(c)
        r = c.patch(f"/image/v2/images/{image['id']}", json=[
            {"op": "replace", "path": "/name", "value": "n"}])
        assert r.status_code == 415
        for ops, status in (
            ([{"op": "replace", "path": "/size", "value": 1}], 403),
            ([{"op": "remove", "path": "/nope"}], 409),
            ([{"op": "move", "path": "/name"}], 400),
            ({"op": "add"}, 400),
        ):
            r = c.patch(f"/image/v2/images/{image['id']}", json=ops, headers=PATCH)
            assert r.status_code == status, (ops, r.text)
        r = c.get("/image/v2/images", params={"limit": "many"})
        assert r.status_code == 400
        r = c.get("/image/v2/images", params={"sort_key": "password"})
        assert r.status_code == 400
        r = c.get("/image/v2/images", params={"marker": str(uuid.uuid4())})
        assert r.status_code == 400
        assert c.put(f"/image/v2/images/{uuid.uuid4()}/file", content=b"x").status_code == 404
        c.delete(f"/image/v2/images/{image['id']}")


def test_upload_to_an_active_image_is_refused(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        image = _create(c)
        url = f"/image/v2/images/{image['id']}/file"
        headers = {"Content-Type": "application/octet-stream"}
        assert c.put(url, content=b"a" * 4096, headers=headers).status_code == 204
        r = c.put(url, content=b"b" * 4096, headers=headers)
        assert r.status_code == 409
        assert c.get(url).content == b"a" * 4096  # the data is untouched
        no_format = c.post("/image/v2/images", json={"name": "nf"}).json()
        r = c.put(f"/image/v2/images/{no_format['id']}/file", content=b"x", headers=headers)
        assert r.status_code == 400 and "disk_format" in r.json()["message"]
        assert c.get(f"/image/v2/images/{no_format['id']}/file").status_code == 204
        c.delete(f"/image/v2/images/{no_format['id']}")
        c.delete(url.removesuffix("/file"))


def test_protected_images_are_not_deleted(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        image = _create(c, protected=True)
        r = c.delete(f"/image/v2/images/{image['id']}")
        assert r.status_code == 403 and "protected" in r.json()["message"]
        r = c.patch(f"/image/v2/images/{image['id']}", headers=PATCH,
                    json=[{"op": "replace", "path": "/protected", "value": False}])
        assert r.status_code == 200
        assert c.delete(f"/image/v2/images/{image['id']}").status_code == 204


def test_other_projects_private_image_is_404(server: Server, admin_token: str,
                                             project_user: dict) -> None:
    with server.client(project_user["token"]) as c:
        mine = _create(c, visibility="private")
        assert c.post("/image/v2/images", json={"name": "p", "visibility": "public"}
                      ).status_code == 403  # publicize_image is for admins
    with server.client(project_user["token"]) as c2, server.client(admin_token) as admin:
        admin_private = _create(admin, visibility="private")
        for path in (f"/image/v2/images/{admin_private['id']}",
                     f"/image/v2/images/{admin_private['id']}/file"):
            assert c2.get(path).status_code == 404
        assert c2.delete(f"/image/v2/images/{admin_private['id']}").status_code == 404
        listed = [i["id"] for i in c2.get("/image/v2/images").json()["images"]]
        assert admin_private["id"] not in listed and mine["id"] in listed
        public = _create(admin, visibility="public")
        assert c2.get(f"/image/v2/images/{public['id']}").status_code == 200
        assert c2.delete(f"/image/v2/images/{public['id']}").status_code == 403
        for image in (admin_private, public, mine):
            admin.delete(f"/image/v2/images/{image['id']}")


def test_deactivate_and_reactivate(server: Server, admin_token: str,
                                   project_user: dict) -> None:
    with server.client(admin_token) as c:
        image = _create(c, visibility="public")
        c.put(f"/image/v2/images/{image['id']}/file", content=b"d" * 512,
              headers={"Content-Type": "application/octet-stream"})
        assert c.post(f"/image/v2/images/{image['id']}/actions/deactivate"
                      ).status_code == 204
        assert c.get(f"/image/v2/images/{image['id']}").json()["status"] == "deactivated"
        with server.client(project_user["token"]) as other:
            assert other.get(f"/image/v2/images/{image['id']}/file").status_code == 403
            assert other.post(f"/image/v2/images/{image['id']}/actions/reactivate"
                              ).status_code == 403
        assert c.post(f"/image/v2/images/{image['id']}/actions/reactivate"
                      ).status_code == 204
        assert c.get(f"/image/v2/images/{image['id']}/file").content == b"d" * 512
        c.delete(f"/image/v2/images/{image['id']}")


def test_delete_refused_while_clones_need_the_data(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        image = _create(c)
        content = _pattern(1 << 20)
        c.put(f"/image/v2/images/{image['id']}/file", content=content,
              headers={"Content-Type": "application/octet-stream"})
        blocks = _blocks(server)
        blocks.clone("images", image["id"], "snap", "volumes", f"volume-{image['id']}")
        r = c.delete(f"/image/v2/images/{image['id']}")
        assert r.status_code == 409 and "in use" in r.json()["message"]
        shown = c.get(f"/image/v2/images/{image['id']}").json()
        assert shown["status"] == "active"
        assert c.get(f"/image/v2/images/{image['id']}/file").content == content
        blocks.remove("volumes", f"volume-{image['id']}")
        assert c.delete(f"/image/v2/images/{image['id']}").status_code == 204
        assert image["id"] not in blocks.list("images")


def test_cut_off_upload_leaves_nothing(server: Server, admin_token: str) -> None:
    with server.client(admin_token) as c:
        image = _create(c)
    head = (f"PUT /image/v2/images/{image['id']}/file HTTP/1.1\r\nHost: x\r\n"
            f"X-Auth-Token: {admin_token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {64 << 20}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + _pattern(20 << 20))
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    with server.client(admin_token) as c:
        while time.monotonic() < deadline:
            if c.get(f"/image/v2/images/{image['id']}").json()["status"] == "queued":
                break
            time.sleep(0.1)
        assert c.get(f"/image/v2/images/{image['id']}").json()["status"] == "queued"
        assert image["id"] not in _blocks(server).list("images")
        # and the image can be uploaded again
        assert c.put(f"/image/v2/images/{image['id']}/file", content=b"z" * 1024,
                     headers={"Content-Type": "application/octet-stream"}).status_code == 204
        c.delete(f"/image/v2/images/{image['id']}")


# ------------------------------------------------------------------ a second server
@pytest.fixture(scope="module")
def file_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The `file` store, with small quotas."""
    srv = Server(tmp_path_factory.mktemp("filestore"), free_port(), extra_conf={
        "glance_store": {"default_store": "file"},
        "image": {"show_multiple_locations": "true", "image_count_quota": "3",
                  "image_size_total": "2", "image_property_quota": "4",
                  "image_tag_quota": "2"}})
    srv.setup()
    srv.start()
    yield srv
    srv.stop()


def test_file_store_and_quotas(file_server: Server) -> None:
    token = file_server.token()
    store = file_server.state / "images"
    with file_server.client(token) as c:
        a = _create(c)
        url = f"/image/v2/images/{a['id']}/file"
        assert c.put(url, content=b"q" * (1 << 20),
                     headers={"Content-Type": "application/octet-stream"}).status_code == 204
        assert (store / a["id"]).stat().st_size == 1 << 20
        assert c.get(url).content == b"q" * (1 << 20)
        shown = c.get(f"/image/v2/images/{a['id']}").json()
        assert shown["locations"] == [{"url": (store / a["id"]).as_uri(), "metadata": {}}]
        assert "direct_url" not in shown
        b = _create(c)
        r = c.put(f"/image/v2/images/{b['id']}/file", content=b"r" * (1536 << 10),
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 413 and "quota" in r.json()["message"]
        assert sorted(p.name for p in store.iterdir()) == [a["id"]]

        def chunked():  # type: ignore[no-untyped-def]
            for _ in range(12):
                yield b"s" * (128 << 10)

        r = c.put(f"/image/v2/images/{b['id']}/file", content=chunked(),
                  headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 413  # no Content-Length: stopped while streaming
        assert c.get(f"/image/v2/images/{b['id']}").json()["status"] == "queued"
        assert sorted(p.name for p in store.iterdir()) == [a["id"]]
        _create(c)
        r = c.post("/image/v2/images", json={"name": "fourth"})
        assert r.status_code == 413 and "Maximum number of images" in r.json()["message"]
        r = c.patch(f"/image/v2/images/{a['id']}", headers=PATCH, json=[
            {"op": "add", "path": f"/p{i}", "value": "v"} for i in range(5)])
        assert r.status_code == 413 and "properties" in r.json()["message"]
        r = c.patch(f"/image/v2/images/{a['id']}", headers=PATCH, json=[
            {"op": "replace", "path": "/tags", "value": ["a", "b", "c"]}])
        assert r.status_code == 413
        assert c.get(f"/image/v2/images/{a['id']}").json()["tags"] == []
        assert c.delete(f"/image/v2/images/{a['id']}").status_code == 204
        assert not (store / a["id"]).exists()


def test_crash_during_upload_is_repaired_on_restart(tmp_path: Path) -> None:
    srv = Server(tmp_path, free_port())
    srv.setup()
    srv.start()
    token = srv.token()
    with srv.client(token) as c:
        image = _create(c)
    head = (f"PUT /image/v2/images/{image['id']}/file HTTP/1.1\r\nHost: x\r\n"
            f"X-Auth-Token: {token}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {256 << 20}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(head + _pattern(40 << 20))
    time.sleep(1)
    with srv.client(token) as c:
        assert c.get(f"/image/v2/images/{image['id']}").json()["status"] == "saving"
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    sock.close()
    srv.start()
    try:
        with srv.client(token) as c:
            assert c.get(f"/image/v2/images/{image['id']}").json()["status"] == "queued"
        assert image["id"] not in _blocks(srv).list("images")
        assert "image recovery: 1 image(s)" in srv.log.read_text()
    finally:
        srv.stop()
