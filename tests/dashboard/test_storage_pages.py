"""The dashboard's storage pages and lineage view over HTTP, as a browser would use them
(the session cookie, the CSRF token from the page, same-origin requests): the image
upload streamed through the dashboard into Glance, the download, volumes and snapshots
made through the forms, the delete refused with its reasons in place, CSRF, and project
isolation. The real browser tests (part C) drive the same pages with chromium."""

from __future__ import annotations

import hashlib
import html
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser

import httpx
import pytest

from tests.compute.conftest import boot_ready, guest_server
from tests.support import Server
from tests.tenants import make_tenant

MIB = 1 << 20


@dataclass
class Browser:
    """An httpx client holding a dashboard session, sending what a browser sends."""

    server: Server
    client: httpx.Client
    csrf: str

    def get(self, path: str) -> httpx.Response:
        return self.client.get(path)

    def post(self, path: str, fields: dict[str, str] | None = None,
             csrf: bool = True) -> httpx.Response:
        data = dict(fields or {})
        if csrf:
            data["csrf_token"] = self.csrf
        return self.client.post(path, data=data, headers={"Origin": self.server.url})

    def upload(self, name: str, content: bytes | Iterator[bytes],
               disk_format: str = "raw") -> str:
        """What upload.js does: the JSON create, then the streamed PUT."""
        headers = {"Origin": self.server.url, "X-CSRF-Token": self.csrf}
        made = self.client.post("/dashboard/images", json={
            "name": name, "disk_format": disk_format}, headers=headers)
        assert made.status_code == 201, made.text
        image = made.json()
        assert image["upload"] == f"/dashboard/images/{image['id']}/file"
        put = self.client.put(image["upload"], content=content, headers={
            **headers, "Content-Type": "application/octet-stream"})
        assert put.status_code == 200, put.text
        return image["id"]


def login(server: Server, user: str = "admin", password: str | None = None,
          project: str = "admin") -> Browser:
    client = httpx.Client(base_url=server.url, timeout=120)
    page = client.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = client.post("/dashboard/login", data={
        "csrf_token": token, "username": user, "password": password or server.password,
        "project": project, "domain": "Default"}, headers={"Origin": server.url})
    assert answer.status_code == 303, answer.text
    home = client.get("/dashboard/images")
    assert home.status_code == 200
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', home.text).group(1)
    return Browser(server, client, csrf)


def follow(browser: Browser, answer: httpx.Response) -> httpx.Response:
    assert answer.status_code == 303, answer.text
    return browser.get(answer.headers["location"])


def wait_done(browser: Browser, url: str, timeout: float = 120) -> dict:
    """Poll a page's progress URL as dashboard.js does, until it says done."""
    deadline = time.monotonic() + timeout
    while True:
        state = browser.client.get(url, headers={"Accept": "application/json"}).json()
        assert set(state) == {"status", "percent", "done", "text"}
        if state["done"]:
            return state
        assert time.monotonic() < deadline, f"{url} never finished: {state}"
        time.sleep(0.2)


def flash(page: httpx.Response) -> str:
    found = re.search(r'id="flash"[^>]*>(.*?)</p>', page.text, re.S)
    return html.unescape(found.group(1)) if found else ""


def chunks(data: bytes, size: int = 256 << 10) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[Browser]:
    browser = login(server)
    yield browser
    browser.client.close()


@dataclass
class Chain:
    """image → volume (clone) → snapshot → volume, made through the dashboard's forms."""

    image: str
    data: bytes
    volume: str
    snapshot: str
    volume2: str


@pytest.fixture(scope="module")
def chain(admin: Browser) -> Chain:
    data = os.urandom(3 * MIB)
    image = admin.upload("dash-chain-base", chunks(data))  # chunked: no Content-Length
    page = follow(admin, admin.post(f"/dashboard/images/{image}/volume",
                                    {"name": "dash-vol", "size": "1"}))
    volume = re.search(r"/dashboard/volumes/([0-9a-f-]{36})", str(page.url)).group(1)
    assert 'id="volume-progress"' in page.text or "available" in page.text
    assert wait_done(admin, f"/dashboard/volumes/{volume}/progress")["status"] == "available"
    page = follow(admin, admin.post(f"/dashboard/volumes/{volume}/snapshot",
                                    {"name": "dash-snap"}))
    snapshot = re.search(r"/dashboard/snapshots/([0-9a-f-]{36})", str(page.url)).group(1)
    assert wait_done(admin, f"/dashboard/snapshots/{snapshot}/progress")["status"] \
        == "available"
    page = follow(admin, admin.post(f"/dashboard/snapshots/{snapshot}/volume",
                                    {"name": "dash-vol2", "size": "1"}))
    volume2 = re.search(r"/dashboard/volumes/([0-9a-f-]{36})", str(page.url)).group(1)
    assert wait_done(admin, f"/dashboard/volumes/{volume2}/progress")["status"] \
        == "available"
    return Chain(image, data, volume, snapshot, volume2)


def test_upload_streams_through_and_download_is_the_same(admin: Browser) -> None:
    data = os.urandom(6 * MIB + 12345)
    image_id = admin.upload("dash-upload", data)  # with Content-Length, as XHR sends it
    with admin.server.client(admin.server.token()) as api:
        shown = api.get(f"/image/v2/images/{image_id}").json()
    assert shown["status"] == "active" and shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    listing = admin.get("/dashboard/images")
    assert f'<tr data-id="{image_id}">' in listing.text
    page = admin.get(f"/dashboard/images/{image_id}")
    assert re.search(r'id="image-status"[^>]*>active<', page.text)
    assert shown["os_hash_value"] in page.text
    assert f'href="/dashboard/images/{image_id}/download"' in page.text
    digest = hashlib.sha512()
    with admin.client.stream("GET", f"/dashboard/images/{image_id}/download") as down:
        assert down.status_code == 200
        assert down.headers["content-length"] == str(len(data))
        assert "attachment" in down.headers["content-disposition"]
        for piece in down.iter_bytes():
            digest.update(piece)
    assert digest.hexdigest() == shown["os_hash_value"]


def test_a_queued_image_takes_its_data_on_its_own_page(admin: Browser) -> None:
    """The plain form (no script) makes the record; its page offers the upload."""
    page = follow(admin, admin.post("/dashboard/images", {"name": "dash-later",
                                                           "disk_format": "raw"}))
    image_id = re.search(r"/dashboard/images/([0-9a-f-]{36})", str(page.url)).group(1)
    assert "not uploaded yet" in flash(page)
    assert re.search(r'id="image-status"[^>]*>queued<', page.text)
    assert f'data-upload="/dashboard/images/{image_id}/file"' in page.text
    assert 'id="image-progress"' in page.text  # polls until the data is there
    data = os.urandom(MIB)
    put = admin.client.put(f"/dashboard/images/{image_id}/file", content=data, headers={
        "Origin": admin.server.url, "X-CSRF-Token": admin.csrf,
        "Content-Type": "application/octet-stream"})
    assert put.status_code == 200, put.text
    state = wait_done(admin, f"/dashboard/images/{image_id}/progress")
    assert state["status"] == "active"
    # a second upload: Glance's refusal comes back as JSON for upload.js to show
    again = admin.client.put(f"/dashboard/images/{image_id}/file", content=data, headers={
        "Origin": admin.server.url, "X-CSRF-Token": admin.csrf,
        "Content-Type": "application/octet-stream"})
    assert again.status_code == 409 and again.json()["error"]
    with admin.client.stream("GET", f"/dashboard/images/{image_id}/download") as down:
        assert down.read() == data
    gone = follow(admin, admin.post(f"/dashboard/images/{image_id}/delete"))
    assert "deleted" in flash(gone) and f'data-id="{image_id}"' not in gone.text


def test_volume_snapshot_chain_through_the_forms(admin: Browser, chain: Chain) -> None:
    volumes = admin.get("/dashboard/volumes").text
    for vid in (chain.volume, chain.volume2):
        assert f'<tr data-id="{vid}">' in volumes
    assert f'<tr data-id="{chain.snapshot}">' in admin.get("/dashboard/snapshots").text
    page = admin.get(f"/dashboard/volumes/{chain.volume2}")
    assert re.search(r'id="volume-status"[^>]*>available<', page.text)
    assert f'href="/dashboard/snapshots/{chain.snapshot}"' in page.text
    assert 'id="volume-progress"' not in page.text  # final: no polling
    assert f'href="/dashboard/lineage/volumes/{chain.volume2}"' in page.text
    page = admin.get(f"/dashboard/snapshots/{chain.snapshot}")
    assert 'id="volume-from-snapshot"' in page.text
    # the create page's every source: an empty volume, and a copy of a volume
    empty = follow(admin, admin.post("/dashboard/volumes", {
        "name": "dash-empty", "size": "1", "source": "none", "source_id": ""}))
    vid = re.search(r"/dashboard/volumes/([0-9a-f-]{36})", str(empty.url)).group(1)
    assert wait_done(admin, f"/dashboard/volumes/{vid}/progress")["status"] == "available"
    new = admin.get(f"/dashboard/volumes/new?source=snapshot&source_id={chain.snapshot}")
    assert f'<option value="{chain.snapshot}" selected>' in new.text
    copy = follow(admin, admin.post("/dashboard/volumes", {
        "name": "dash-copy", "size": "", "source": "volume", "source_id": vid}))
    cid = re.search(r"/dashboard/volumes/([0-9a-f-]{36})", str(copy.url)).group(1)
    assert wait_done(admin, f"/dashboard/volumes/{cid}/progress")["status"] == "available"
    # from a backup (made with the API: the dashboard has no backup page)
    pid = admin_project_id(admin.server)
    with admin.server.client(admin.server.token()) as api:
        made = api.post(f"/volume/v3/{pid}/backups", json={"backup": {
            "volume_id": chain.volume, "name": "dash-backup"}})
        assert made.status_code == 202, made.text
        bid = made.json()["backup"]["id"]
        deadline = time.monotonic() + 120
        while api.get(f"/volume/v3/{pid}/backups/{bid}").json()["backup"]["status"] \
                != "available":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert f'<option value="{bid}">' in admin.get("/dashboard/volumes/new").text
    restored = follow(admin, admin.post("/dashboard/volumes", {
        "name": "dash-restored", "size": "", "source": "backup", "source_id": bid}))
    rid = re.search(r"/dashboard/volumes/([0-9a-f-]{36})", str(restored.url)).group(1)
    assert wait_done(admin, f"/dashboard/volumes/{rid}/progress")["status"] == "available"
    # the API's refusal in its own words, on the form's page
    bad = follow(admin, admin.post("/dashboard/volumes", {
        "name": "x", "size": "1", "source": "snapshot", "source_id": "nope"}))
    assert "error" in flash(bad).lower() or "Error" in flash(bad)
    for gone in (cid, vid, rid):
        answer = follow(admin, admin.post(f"/dashboard/volumes/{gone}/delete"))
        assert "being deleted" in flash(answer)
        wait_done(admin, f"/dashboard/volumes/{gone}/progress")


def test_delete_refused_shows_the_apis_message_and_the_blockers(admin: Browser,
                                                                chain: Chain) -> None:
    """The base image's data carries the volume cloned from it: Glance answers 409."""
    page = follow(admin, admin.post(f"/dashboard/images/{chain.image}/delete"))
    assert str(page.url).endswith(f"/dashboard/images/{chain.image}")
    assert 'class="flash flash-error"' in page.text and "in use" in flash(page)
    assert '<section id="delete-blockers"' in page.text
    assert re.search(r'id="image-status"[^>]*>active<', page.text)
    # ... and why, in place: the lineage API names the clone, linked to its page
    why = section(page.text, "delete-blockers")
    assert '<li class="blocker" data-reason="has_clones">' in why
    assert f'href="/dashboard/volumes/{chain.volume}"' in why and "dash-vol" in why
    # a volume with snapshots: Cinder refuses too, in its words
    page = follow(admin, admin.post(f"/dashboard/volumes/{chain.volume}/delete"))
    assert 'class="flash flash-error"' in page.text
    assert 'data-reason="has_snapshots"' in section(page.text, "delete-blockers")
    # a snapshot with a clone: Cinder accepts (202) and refuses later; the page says so
    # at once, and then shows the volume service's own message
    page = follow(admin, admin.post(f"/dashboard/snapshots/{chain.snapshot}/delete"))
    assert str(page.url).endswith(f"/dashboard/snapshots/{chain.snapshot}")
    assert "will refuse it" in flash(page)
    assert 'data-reason="has_clones"' in section(page.text, "delete-blockers")
    deadline = time.monotonic() + 60
    while True:  # deleting → available again (the refusal), then the message is there
        state = wait_done(admin, f"/dashboard/snapshots/{chain.snapshot}/progress")
        assert state["status"] == "available"
        page = admin.get(f"/dashboard/snapshots/{chain.snapshot}")
        if 'id="messages"' in page.text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 'id="messages"' in page.text


class Tree(HTMLParser):
    """The lineage tree as drawn: each ``li[data-node]``'s enclosing node, its
    attributes, and the classes of the elements inside it (not inside its children)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []  # one entry per open <li>
        self.parent: dict[str, str | None] = {}
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.inside: dict[str, list[tuple[str, dict[str, str | None]]]] = {}
        self.in_tree = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id") == "lineage-tree":
            self.in_tree = 1
            return
        if not self.in_tree:
            return
        if tag == "ul":
            self.in_tree += 1
        current = next((n for n in reversed(self.stack) if n), None)
        if tag == "li":
            node = a.get("data-node")
            if node:
                self.parent[node] = current
                self.attrs[node] = a
                self.inside[node] = []
            self.stack.append(node)
        elif current:
            self.inside[current].append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if not self.in_tree:
            return
        if tag == "li" and self.stack:
            self.stack.pop()
        elif tag == "ul":
            self.in_tree -= 1

    def classes(self, node: str) -> dict[str, list[dict[str, str | None]]]:
        out: dict[str, list[dict[str, str | None]]] = {}
        for _, a in self.inside[node]:
            for cls in (a.get("class") or "").split():
                out.setdefault(cls, []).append(a)
        return out


def tree(text: str) -> Tree:
    parsed = Tree()
    parsed.feed(text)
    return parsed


def section(text: str, sid: str) -> str:
    found = re.search(rf'<section id="{sid}".*?</section>', text, re.S)
    assert found, f"no section#{sid}"
    return found.group(0)


def test_lineage_view_draws_the_chain(admin: Browser, chain: Chain) -> None:
    image, vol = f"image:{chain.image}", f"volume:{chain.volume}"
    snap, vol2 = f"snapshot:{chain.snapshot}", f"volume:{chain.volume2}"
    page = admin.get(f"/dashboard/lineage/volumes/{chain.volume2}")
    assert page.status_code == 200
    drawn = tree(page.text)
    # nested as parent → child, each node once (other tests may add backups below)
    chain_nodes = {image: None, vol: image, snap: vol, vol2: snap}
    assert {n: drawn.parent.get(n, "missing") for n in chain_nodes} == chain_nodes
    assert all(n.startswith("backup:") for n in set(drawn.parent) - set(chain_nodes))
    assert drawn.attrs[vol2].get("aria-current") == "true"
    assert all("aria-current" not in drawn.attrs[n] for n in (image, vol, snap))

    def relation(node: str) -> str | None:
        found = re.search(rf'data-node="{re.escape(node)}"[^>]*>\s*<div class="node-box">'
                          r'\s*<span class="relation">(\w+)</span>', page.text)
        return found.group(1) if found else None

    assert [relation(n) for n in (image, vol, snap, vol2)] == [
        None, "clone", "snapshot", "clone"]
    # the data others need: the image (its clone vol) and the snapshot (its clone vol2)
    holds = {n for n in (image, vol, snap, vol2) if "holds" in drawn.classes(n)}
    assert holds == {image, snap}
    links = drawn.classes(image)
    assert links["node-link"][0]["href"] == f"/dashboard/lineage/images/{chain.image}"
    assert links["node-page"][0]["href"] == f"/dashboard/images/{chain.image}"
    assert drawn.classes(snap)["node-page"][0]["href"] == \
        f"/dashboard/snapshots/{chain.snapshot}"
    assert "dash-chain-base" in page.text and "rbd://" in page.text
    assert "Nothing blocks deleting this." in section(page.text, "delete-blockers")
    # the base image's own view: the same tree, and why it cannot go
    page = admin.get(f"/dashboard/lineage/images/{chain.image}")
    assert tree(page.text).attrs[image].get("aria-current") == "true"
    assert 'data-reason="has_clones"' in section(page.text, "delete-blockers")
    # the picker: a GET form that goes to the graph
    pick = admin.get("/dashboard/lineage")
    assert 'id="lineage-kind"' in pick.text and 'id="lineage-id"' in pick.text
    assert f"/dashboard/lineage/volumes/{chain.volume2}" in pick.text
    go = admin.get(f"/dashboard/lineage?kind=snapshots&id={chain.snapshot}")
    assert go.status_code == 303
    assert go.headers["location"] == f"/dashboard/lineage/snapshots/{chain.snapshot}"
    # an unknown kind and an unknown id: the error page, not a 500
    assert admin.get(f"/dashboard/lineage/disks/{chain.volume}").status_code == 404
    missing = admin.get("/dashboard/lineage/volumes/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and 'id="error-message"' in missing.text


def test_csrf_is_required(admin: Browser, chain: Chain) -> None:
    origin = {"Origin": admin.server.url}
    c = admin.client
    # the JSON create without the header, and with a wrong one
    assert c.post("/dashboard/images", json={"name": "x"}, headers=origin).status_code == 403
    assert c.post("/dashboard/images", json={"name": "x"}, headers={
        **origin, "X-CSRF-Token": "forged"}).status_code == 403
    # the upload without the header; from another origin with it
    url = f"/dashboard/images/{chain.image}/file"
    assert c.put(url, content=b"x" * 10, headers=origin).status_code == 403
    assert c.put(url, content=b"x" * 10, headers={
        "Origin": "http://evil.example", "X-CSRF-Token": admin.csrf}).status_code == 403
    # forms without the field
    for path in (f"/dashboard/images/{chain.image}/delete",
                 f"/dashboard/images/{chain.image}/volume",
                 f"/dashboard/volumes/{chain.volume}/snapshot",
                 f"/dashboard/snapshots/{chain.snapshot}/delete",
                 "/dashboard/volumes"):
        assert admin.post(path, {"name": "x", "size": "1"}, csrf=False).status_code == 403
    # nothing happened
    assert f'<tr data-id="{chain.snapshot}">' in admin.get("/dashboard/snapshots").text
    # the token never appears in a URL of a page
    page = admin.get(f"/dashboard/images/{chain.image}").text
    assert not re.search(r'(href|action|src)="[^"]*' + re.escape(admin.csrf), page)


def test_another_project_never_sees_them(server: Server, admin: Browser,
                                         chain: Chain) -> None:
    # a public image the admin's project cloned a volume from
    public = admin.upload("dash-public", os.urandom(MIB))
    with server.client(server.token()) as api:
        made = api.patch(f"/image/v2/images/{public}", json=[
            {"op": "replace", "path": "/visibility", "value": "public"}],
            headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
        assert made.status_code == 200, made.text
    page = follow(admin, admin.post(f"/dashboard/images/{public}/volume",
                                    {"name": "dash-secret-vol", "size": "1"}))
    secret = re.search(r"/dashboard/volumes/([0-9a-f-]{36})", str(page.url)).group(1)
    wait_done(admin, f"/dashboard/volumes/{secret}/progress")
    tenant = make_tenant(server, "dashb2")
    other = login(server, tenant.user, tenant.password, tenant.project)
    try:
        # the public image is theirs to see; the volume made from it is only "in use"
        page = other.get(f"/dashboard/lineage/images/{public}")
        assert page.status_code == 200
        drawn = tree(page.text)
        opaque = [n for n in drawn.attrs if n.startswith("opaque:")]
        assert len(opaque) == 1 and drawn.parent[opaque[0]] == f"image:{public}"
        assert "opaque" in (drawn.attrs[opaque[0]].get("class") or "")
        assert "node-link" not in drawn.classes(opaque[0])
        assert "in use by another project" in page.text
        assert secret not in page.text and "dash-secret-vol" not in page.text
        why = section(page.text, "delete-blockers")
        assert secret not in why
        everything = (chain.image, chain.volume, chain.snapshot, chain.volume2)
        for listing in ("/dashboard/images", "/dashboard/volumes", "/dashboard/snapshots",
                        "/dashboard/lineage"):
            page = other.get(listing)
            assert page.status_code == 200
            for rid in everything:
                assert rid not in page.text, (listing, rid)
        pages = [f"/dashboard/images/{chain.image}", f"/dashboard/volumes/{chain.volume}",
                 f"/dashboard/snapshots/{chain.snapshot}",
                 f"/dashboard/volumes/new?source=volume&source_id={chain.volume}",
                 f"/dashboard/lineage/volumes/{chain.volume}",
                 f"/dashboard/lineage/images/{chain.image}"]
        for path in pages[:3] + pages[4:]:
            page = other.get(path)
            assert page.status_code == 404, (path, page.status_code)
            assert 'id="error-message"' in page.text
            assert "dash-vol" not in page.text and "dash-chain-base" not in page.text
        assert other.get(f"/dashboard/images/{chain.image}/download").status_code == 404
        # its actions are refused by the API (and nothing changes)
        answer = follow(other, other.post(f"/dashboard/volumes/{chain.volume2}/delete"))
        assert 'class="flash flash-error"' in answer.text
        still = admin_get(server, f"/volume/v3/{admin_project_id(server)}/volumes/"
                                  f"{chain.volume2}")
        assert still["volume"]["status"] == "available"
    finally:
        other.client.close()


def admin_get(server: Server, path: str) -> dict:
    with server.client(server.token()) as api:
        answer = api.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


def admin_project_id(server: Server) -> str:
    with server.client(server.token()) as api:
        projects = api.get("/identity/v3/auth/projects").json()["projects"]
    return next(p["id"] for p in projects if p["name"] == "admin")


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """One tiny running guest on its own server (the only test here that needs one)."""
    with guest_server(tmp_path_factory.mktemp("dg"), {}) as srv:
        yield srv, boot_ready(srv, "--image", "strato-guest", prefix="dash")


def test_attach_and_detach_through_the_volume_page(guest: tuple[Server, str]) -> None:
    srv, sid = guest
    browser = login(srv)
    try:
        page = follow(browser, browser.post("/dashboard/volumes", {
            "name": "dash-data", "size": "1", "source": "none", "source_id": ""}))
        vid = re.search(r"/dashboard/volumes/([0-9a-f-]{36})", str(page.url)).group(1)
        wait_done(browser, f"/dashboard/volumes/{vid}/progress")
        page = browser.get(f"/dashboard/volumes/{vid}")
        assert f'<option value="{sid}">' in section_of(page.text, "attach-form")
        page = follow(browser, browser.post(f"/dashboard/volumes/{vid}/attach",
                                            {"server_id": sid}))
        assert "being attached" in flash(page)
        assert wait_done(browser, f"/dashboard/volumes/{vid}/progress")["status"] == "in-use"
        page = browser.get(f"/dashboard/volumes/{vid}")
        assert re.search(r'id="volume-status"[^>]*>in-use<', page.text)
        assert f'href="/dashboard/servers/{sid}"' in page.text
        assert 'id="detach-submit"' in page.text
        assert 'data-reason="attached"' in section(page.text, "delete-blockers")
        refused = follow(browser, browser.post(f"/dashboard/volumes/{vid}/delete"))
        assert 'class="flash flash-error"' in refused.text
        # the server's lineage: the image it booted from above it
        page = browser.get(f"/dashboard/lineage/servers/{sid}")
        assert page.status_code == 200
        drawn = tree(page.text)
        assert drawn.attrs[f"server:{sid}"].get("aria-current") == "true"
        assert (drawn.parent[f"server:{sid}"] or "").startswith("image:")
        assert "strato-guest" in page.text
        page = follow(browser, browser.post(f"/dashboard/volumes/{vid}/detach"))
        assert "being detached" in flash(page)
        assert wait_done(browser, f"/dashboard/volumes/{vid}/progress")["status"] \
            == "available"
        page = follow(browser, browser.post(f"/dashboard/volumes/{vid}/delete"))
        assert "being deleted" in flash(page)
        assert wait_done(browser, f"/dashboard/volumes/{vid}/progress")["status"] \
            == "deleted"
    finally:
        browser.client.close()


def section_of(text: str, form_id: str) -> str:
    found = re.search(rf'<form [^>]*id="{form_id}".*?</form>', text, re.S)
    assert found, f"no form#{form_id}"
    return found.group(0)


def test_an_upload_cut_off_leaves_the_image_queued(admin: Browser) -> None:
    """The browser goes away mid-file: Glance sees the end of the stream as the client
    leaving, and the record is queued again for a retry from its page."""
    made = admin.client.post("/dashboard/images", json={"name": "dash-cut",
                                                        "disk_format": "raw"},
                             headers={"Origin": admin.server.url, "X-CSRF-Token": admin.csrf})
    image_id = made.json()["id"]
    cookie = "; ".join(f"{k}={v}" for k, v in admin.client.cookies.items())
    with socket.create_connection(("127.0.0.1", admin.server.port)) as raw:
        raw.sendall((f"PUT /dashboard/images/{image_id}/file HTTP/1.1\r\n"
                     f"Host: 127.0.0.1:{admin.server.port}\r\n"
                     f"Origin: {admin.server.url}\r\nX-CSRF-Token: {admin.csrf}\r\n"
                     f"Cookie: {cookie}\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Length: {10 * MIB}\r\n\r\n").encode())
        raw.sendall(os.urandom(2 * MIB))
        deadline = time.monotonic() + 30
        while admin_get(admin.server, f"/image/v2/images/{image_id}")["status"] != "saving":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    deadline = time.monotonic() + 30
    while admin_get(admin.server, f"/image/v2/images/{image_id}")["status"] != "queued":
        assert time.monotonic() < deadline, "the image never went back to queued"
        time.sleep(0.1)
    page = admin.get(f"/dashboard/images/{image_id}")
    assert f'data-upload="/dashboard/images/{image_id}/file"' in page.text
