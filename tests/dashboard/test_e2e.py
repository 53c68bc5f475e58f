"""The dashboard end to end, in a real browser (Debian's chromium through chromium-driver),
against the server exactly as ``make run`` starts it.

One story, in order (each test builds on the one before; they share one server and one
browser): log in; boot a server from the ``strato-guest`` image and watch it become
ACTIVE live; snapshot it from its page; boot a second server from the snapshot image;
make a volume from the snapshot image; see the chain in the base image's lineage view
and click through it; try to delete the base image and read why not; log out and see
the token revoked in Keystone. Then a member of a second project logs in and finds none
of the first project's resources on any page, and the error page at their URLs.

Every page visited passes the checks of :class:`tests.dashboard.browser.Browser` and is
pictured in the artifacts directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from strato.config import load
from strato.dashboard.session import Sessions
from strato.virt.qemu import QemuDriver
from tests.dashboard.browser import Browser, artifacts_dir, poll
from tests.support import BIN, ROOT, Server, free_port, strato

BOOT = 120.0  # a server ACTIVE and its guest up (the tiny guest takes ~4 s under TCG)


@dataclass
class Cloud:
    """The `make run` server and what the story made in it."""

    server: Server  # state, port and admin password; started by make, not by Server
    make: subprocess.Popen
    keys: Sessions
    names: dict[str, str] = field(default_factory=dict)  # role in the story -> name
    ids: dict[str, str] = field(default_factory=dict)  # role in the story -> id
    beta: dict[str, str] = field(default_factory=dict)  # the second project's member

    @property
    def url(self) -> str:
        return self.server.url

    def admin(self) -> httpx.Client:
        return self.server.client(self.server.token())

    def need(self, *roles: str) -> list[str]:
        """The ids earlier steps made (a clear failure, never a skip, when one is
        missing)."""
        missing = [r for r in roles if r not in self.ids]
        assert not missing, f"an earlier step did not make {missing}: see its failure"
        return [self.ids[r] for r in roles]

    def token_of(self, cookie: str) -> str | None:
        """The Keystone token inside the dashboard's session cookie (decrypted with the
        dashboard's own keys, as only the server can)."""
        try:
            return str(json.loads(self.keys.keys.decrypt(cookie.encode()))["token"])
        except Exception:  # noqa: BLE001 - not a session cookie of this server
            return None


def _run_make(root: Path) -> tuple[Server, subprocess.Popen]:
    """``make run STATE=… PORT=…`` in a subprocess, after writing the state directory's
    strato.conf the way `make run` writes it (``strato init``), with the guests'
    networking in user mode and no external network: the test run stays on loopback and
    makes no host device (``make run`` keeps a strato.conf it finds). Its ``setup``
    step is done already (this suite runs after ``scripts/setup.sh --test``, a superset),
    so make is told to take it as made; the ``strato`` it runs is this test run's."""
    state, port = root / "state", free_port()
    strato("init", "--state-path", str(state), "--port", str(port))
    conf = state / "strato.conf"
    conf.write_text(conf.read_text().replace(
        "[network]\n", "[network]\ndataplane = usermode\npublic_cidr =\n", 1))
    home = root / "home"  # bootstrap writes ~/.config/openstack/clouds.yaml: not the user's
    home.mkdir()
    env = {**os.environ, "HOME": str(home),
           "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME",
                                            str(Path.home() / ".cache"))}
    log = (root / "make-run.log").open("ab")
    make = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(ROOT), "-o", "setup", "run",
         f"STATE={state}", f"PORT={port}", f"STRATO={BIN / 'strato'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = Server(state, port)
    deadline = time.monotonic() + 300  # builds the tiny guest when its cache is cold
    while True:
        if make.poll() is not None:
            raise AssertionError(f"make run exited {make.returncode}:\n"
                                 f"{(root / 'make-run.log').read_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/dashboard/login", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("make run did not serve within 300 s:\n"
                                 f"{(root / 'make-run.log').read_text()[-4000:]}")
        time.sleep(0.2)
    server.password = (state / "admin-password").read_text().strip()
    return server, make


def _stop_make(server: Server, make: subprocess.Popen) -> None:
    """SIGTERM to make and the `strato serve` it exec'd (its own process group), then
    every guest the server left (QEMU outlives the server by design)."""
    if make.poll() is None:
        os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    drv = QemuDriver(server.state / "instances")
    for sid in drv.list_instances():
        drv.destroy(sid)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    root = tmp_path_factory.mktemp("e2e")
    server, make = _run_make(root)
    try:
        conf = load(server.conf)
        yield Cloud(server, make, Sessions(conf.dashboard.key_repository))
    finally:
        _stop_make(server, make)
        # the server's log next to the screenshots (a failure in CI is read from there)
        if artifacts_dir().is_dir():
            shutil.copy(root / "make-run.log", artifacts_dir() / "make-run.log")


@pytest.fixture(scope="module")
def browser(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    profile = tmp_path_factory.mktemp("chromium")
    b = Browser(cloud.url, profile, cloud.token_of)
    try:
        yield b
    finally:
        b.quit()
        shutil.copy(profile / "chromedriver.log", b.artifacts / "chromedriver.log")


def _name(role: str) -> str:
    return f"e2e-{role}-{uuid.uuid4().hex[:6]}"


def _server_id(browser: Browser) -> str:
    path = browser.path.split("?")[0].rstrip("/")
    assert path.startswith("/dashboard/servers/"), f"not a server's page: {path}"
    return path.rsplit("/", 1)[1]


def _boot(browser: Browser, cloud: Cloud, role: str, image_id: str, live: bool = True) -> str:
    """The create form, then the server's page following the boot live until ACTIVE
    (``live``: the first answer must still be building, with the live status)."""
    browser.go("/dashboard/servers", f"servers-before-{role}")
    browser.submit("a#new-server", f"server-new-{role}")
    name = _name(role)
    browser.fill("#name", name)
    browser.choose("#boot-source", "image")
    browser.choose("#image", image_id)
    browser.choose("#flavor", "1", text="m1.tiny")
    browser.submit("button#create-server", f"server-{role}-building")
    sid = _server_id(browser)
    cloud.names[role], cloud.ids[role] = name, sid
    # the first answer comes while the guest builds: a live status polls for the rest
    status = browser.find("#server-status").text
    if live or "ACTIVE" not in status:
        assert "ACTIVE" not in status, f"ACTIVE before its page showed: {status}"
        progress = browser.find("#server-progress")
        assert progress.get_attribute("data-poll") == f"/dashboard/servers/{sid}/progress"
    browser.wait_text("#server-status", "ACTIVE", BOOT)  # the page reloads itself when done
    browser.page(f"server-{role}-active")
    assert not browser.find_all("#server-progress"), "still polling a final status"
    assert name in browser.html
    return sid


# --------------------------------------------------------------------- the story
def test_login(cloud: Cloud, browser: Browser) -> None:
    browser.go("/dashboard", "redirected-to-login")
    assert browser.path == "/dashboard/login"
    browser.login("admin", cloud.server.password, "admin")
    assert browser.path == "/dashboard/servers"
    assert browser.find("#project-name").text == "admin"
    token = cloud.token_of(browser.cookie("strato_session") or "")
    assert token, "no session cookie the dashboard's keys can read"
    with cloud.admin() as api:
        check = api.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
        assert check.status_code == 200, check.text
        assert check.json()["token"]["user"]["name"] == "admin"
        images = api.get("/image/v2/images", params={"name": "strato-guest"}).json()
    assert images["images"], "make run registered no strato-guest image"
    cloud.ids["base"] = images["images"][0]["id"]
    cloud.names["base"] = "strato-guest"


def test_boot_a_server_and_watch_it_become_active(cloud: Cloud, browser: Browser) -> None:
    (base,) = cloud.need("base")
    sid = _boot(browser, cloud, "first", base)
    # the console log on the page, once the guest is up
    drv = QemuDriver(cloud.server.state / "instances")
    poll("the guest's READY line", lambda: "STRATO-GUEST-READY" in drv.console_output(sid),
         BOOT, every=0.3)
    browser.submit("a#console-refresh", "server-first-console")
    assert "STRATO-GUEST-READY" in browser.find("pre#console-log").text
    assert browser.find("table#actions").text.lower().count("create") >= 1


def test_snapshot_the_server_from_its_page(cloud: Cloud, browser: Browser) -> None:
    (sid,) = cloud.need("first")
    browser.go(f"/dashboard/servers/{sid}", "server-first")
    name = _name("snapshot")
    browser.fill("#snapshot-name", name)
    browser.submit("button#snapshot-submit", "snapshot-image-saving")
    path = browser.path.split("?")[0]
    assert path.startswith("/dashboard/images/"), f"not the new image's page: {path}"
    image_id = path.rsplit("/", 1)[1]
    cloud.names["snapshot"], cloud.ids["snapshot"] = name, image_id
    browser.wait_text("#image-status", "active", BOOT)
    browser.page("snapshot-image-active")
    assert name in browser.find("h1").text or name in browser.html


def test_boot_a_second_server_from_the_snapshot(cloud: Cloud, browser: Browser) -> None:
    (snapshot,) = cloud.need("snapshot")
    _boot(browser, cloud, "second", snapshot, live=False)  # the first proved the live view


def test_volume_from_the_snapshot_image(cloud: Cloud, browser: Browser) -> None:
    (snapshot,) = cloud.need("snapshot")
    with cloud.admin() as api:
        image = api.get(f"/image/v2/images/{snapshot}").json()
    gib = max(1, int(image.get("min_disk") or 0),
              math.ceil((image.get("virtual_size") or image.get("size") or 0) / (1 << 30)))
    browser.go(f"/dashboard/images/{snapshot}", "snapshot-image")
    name = _name("volume")
    browser.fill("#volume-name", name)
    browser.fill("#volume-size", str(gib))
    browser.submit("button#volume-from-image-submit", "volume-creating")
    path = browser.path.split("?")[0]
    assert path.startswith("/dashboard/volumes/"), f"not the volume's page: {path}"
    cloud.names["volume"], cloud.ids["volume"] = name, path.rsplit("/", 1)[1]
    browser.wait_text("#volume-status", "available", BOOT)
    browser.page("volume-available")


# The tree's nesting: the node a node hangs under (its nearest enclosing node).
_PARENT_JS = """
const li = document.querySelector('#lineage-tree li[data-node="' + arguments[0] + '"]');
if (!li) return null;
const up = li.parentElement.closest('li[data-node]');
return up ? up.getAttribute('data-node') : '';
"""
_OWN_JS = """
const li = document.querySelector('#lineage-tree li[data-node="' + arguments[0] + '"]');
const mine = (sel) => Array.from(li.querySelectorAll(sel)).filter(
  (el) => el.closest('li[data-node]') === li);
return {current: li.getAttribute('aria-current'),
        holds: mine('span.holds').length, relation: mine('span.relation').map((e) => e.textContent),
        links: mine('a.node-link').map((a) => a.getAttribute('href')),
        pages: mine('a.node-page').map((a) => a.getAttribute('href'))};
"""

_OWN_LINK_JS = """
const li = document.querySelector('#lineage-tree li[data-node="' + arguments[0] + '"]');
return Array.from(li.querySelectorAll('a.node-link')).find(
  (a) => a.closest('li[data-node]') === li) || null;
"""


def test_the_lineage_view_shows_the_chain(cloud: Cloud, browser: Browser) -> None:
    base, first, snapshot, second, volume = cloud.need("base", "first", "snapshot",
                                                       "second", "volume")
    browser.go(f"/dashboard/images/{base}", "base-image")
    browser.submit("a#lineage-link", "lineage-base-image")
    assert browser.path == f"/dashboard/lineage/images/{base}"
    browser.wait_for("ul#lineage-tree")
    parent = lambda node: browser.driver.execute_script(_PARENT_JS, node)  # noqa: E731
    # base image → the first server's disk → the snapshot image → the second server's
    # disk and the volume
    assert parent(f"server:{first}") == f"image:{base}", browser.find("ul#lineage-tree").text
    assert parent(f"image:{snapshot}") == f"server:{first}"
    assert parent(f"server:{second}") == f"image:{snapshot}"
    assert parent(f"volume:{volume}") == f"image:{snapshot}"
    root = browser.driver.execute_script(_OWN_JS, f"image:{base}")
    assert root["current"] == "true" and root["holds"] >= 1, root
    snap = browser.driver.execute_script(_OWN_JS, f"image:{snapshot}")
    assert snap["holds"] >= 1 and snap["relation"], snap  # the clones' data lives in it
    assert f"/dashboard/lineage/images/{snapshot}" in snap["links"], snap
    assert f"/dashboard/images/{snapshot}" in snap["pages"], snap
    tree = browser.find("ul#lineage-tree").text
    for role in ("first", "snapshot", "second", "volume"):
        assert cloud.names[role] in tree, f"{role} {cloud.names[role]} not named in the tree"
    # click through: the snapshot image's own lineage, the server and volume below it
    link = browser.driver.execute_script(_OWN_LINK_JS, f"image:{snapshot}")
    assert link is not None, "the snapshot image's node has no a.node-link"
    browser.submit(link, "lineage-snapshot-image")
    assert browser.path == f"/dashboard/lineage/images/{snapshot}"
    assert browser.driver.execute_script(_OWN_JS, f"image:{snapshot}")["current"] == "true"
    assert parent(f"volume:{volume}") == f"image:{snapshot}"


def test_deleting_the_base_image_is_refused_with_the_reason(cloud: Cloud,
                                                            browser: Browser) -> None:
    base, first = cloud.need("base", "first")
    browser.go(f"/dashboard/images/{base}", "base-image-before-delete")
    browser.submit("button#delete-submit", "base-image-delete-refused", confirm=True)
    assert browser.path.split("?")[0] == f"/dashboard/images/{base}"
    flash = browser.wait_for("#flash")
    assert "flash-error" in (flash.get_attribute("class") or ""), flash.text
    with cloud.admin() as api:
        refusal = api.delete(f"/image/v2/images/{base}")  # what the API itself answers
        assert refusal.status_code == 409, refusal.text
        assert api.get(f"/image/v2/images/{base}").json()["status"] == "active"
    blockers = browser.find_all("section#delete-blockers li.blocker")
    reasons = [b.get_attribute("data-reason") for b in blockers]
    assert "has_clones" in reasons, browser.find("section#delete-blockers").text
    clones = next(b for b in blockers if b.get_attribute("data-reason") == "has_clones")
    hrefs = [a.get_attribute("href") or "" for a in clones.find_elements("css selector", "a")]
    assert any(first in href for href in hrefs), (clones.text, hrefs)  # names the clone
    assert cloud.names["first"] in clones.text or first[:8] in clones.text, clones.text


# Every text the upload's status line shows, kept across the page change that follows.
_RECORD_UPLOAD_JS = """
const status = document.getElementById('upload-status');
sessionStorage.setItem('strato-upload', '[]');
new MutationObserver(() => {
  const seen = JSON.parse(sessionStorage.getItem('strato-upload'));
  seen.push(status.textContent);
  sessionStorage.setItem('strato-upload', JSON.stringify(seen));
}).observe(status, {childList: true, characterData: true, subtree: true});
"""
_DIGEST_JS = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: 'same-origin'})
  .then((r) => r.ok ? r.arrayBuffer() : Promise.reject(new Error('HTTP ' + r.status)))
  .then((data) => crypto.subtle.digest('SHA-256', data).then((d) => done({
    size: data.byteLength,
    sha256: Array.from(new Uint8Array(d)).map((b) => b.toString(16).padStart(2, '0')).join('')})))
  .catch((err) => done({error: String(err)}));
"""


def test_upload_an_image_with_progress_and_download_it(cloud: Cloud, browser: Browser,
                                                       tmp_path: Path) -> None:
    data = os.urandom(8 << 20)
    disk = tmp_path / "upload.raw"
    disk.write_bytes(data)
    browser.go("/dashboard/images", "images")
    browser.driver.execute_script(_RECORD_UPLOAD_JS)
    name = _name("upload")
    browser.fill("#image-name", name)
    browser.choose("#disk-format", "raw")
    browser.find("#image-file").send_keys(str(disk))
    browser.submit("button#upload-submit", "uploaded-image")  # the script goes to its page
    path = browser.path.split("?")[0]
    assert path.startswith("/dashboard/images/") and path != "/dashboard/images/", path
    cloud.names["upload"], cloud.ids["upload"] = name, path.rsplit("/", 1)[1]
    said = json.loads(browser.driver.execute_script(
        "return sessionStorage.getItem('strato-upload')") or "[]")
    assert any(t.startswith("Uploading: ") and "%" in t for t in said), said
    browser.wait_text("#image-status", "active")
    browser.page("uploaded-image-active")
    with cloud.admin() as api:
        image = api.get(f"/image/v2/images/{cloud.ids['upload']}").json()
    assert image["size"] == len(data) and image["checksum"] == hashlib.md5(data).hexdigest()
    link = browser.find("a#image-download").get_attribute("href")
    assert link == f"{cloud.url}/dashboard/images/{cloud.ids['upload']}/download", link
    got = browser.driver.execute_async_script(_DIGEST_JS, link)
    assert got == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, got


def test_attach_the_volume_to_the_second_server_and_detach_it(cloud: Cloud,
                                                              browser: Browser) -> None:
    second, volume = cloud.need("second", "volume")
    browser.go(f"/dashboard/volumes/{volume}", "volume-before-attach")
    browser.choose("#attach-server", second)
    browser.submit("button#attach-submit", "volume-attaching")
    browser.wait_text("#volume-status", "in-use", BOOT)
    browser.page("volume-attached")
    assert cloud.names["second"] in browser.find("dl.props").text
    reasons = [b.get_attribute("data-reason")
               for b in browser.find_all("section#delete-blockers li.blocker")]
    assert "attached" in reasons, browser.find("section#delete-blockers").text
    browser.go(f"/dashboard/servers/{second}", "server-second-with-volume")
    assert cloud.names["volume"] in browser.find("table#server-volumes").text
    browser.go(f"/dashboard/volumes/{volume}", "volume-before-detach")
    browser.submit("button#detach-submit", "volume-detaching")
    browser.wait_text("#volume-status", "available", BOOT)
    browser.page("volume-detached")


def test_logout_revokes_the_token(cloud: Cloud, browser: Browser) -> None:
    browser.go("/dashboard/servers", "servers-before-logout")
    token = cloud.token_of(browser.cookie("strato_session") or "")
    assert token
    browser.submit("button#logout", "logged-out")
    assert browser.path == "/dashboard/login"
    assert "revoked" in browser.wait_for("#flash").text
    assert browser.cookie("strato_session") is None
    with cloud.admin() as api:
        check = api.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": token})
        assert check.status_code in (401, 404), check.text
        assert httpx.get(f"{cloud.url}/compute/v2.1/servers",
                         headers={"X-Auth-Token": token}).status_code == 401
    browser.go("/dashboard/servers", "after-logout-servers")
    assert browser.path == "/dashboard/login"
    # the checks saw the browser's traffic: the pages and the live progress's requests
    assert any(url.endswith("/progress") for url in browser.visited), browser.visited


# ------------------------------------------------------------ the second project
def _make_member(cloud: Cloud) -> dict[str, str]:
    """Project beta and its member, made by the admin through Keystone's API."""
    suffix = uuid.uuid4().hex[:6]
    user = {"name": f"bob-{suffix}", "password": uuid.uuid4().hex,
            "project": f"beta-{suffix}"}
    with cloud.admin() as api:
        project = api.post("/identity/v3/projects", json={"project": {
            "name": user["project"], "domain_id": "default"}})
        assert project.status_code == 201, project.text
        pid = project.json()["project"]["id"]
        made = api.post("/identity/v3/users", json={"user": {
            "name": user["name"], "password": user["password"], "domain_id": "default",
            "default_project_id": pid}})
        assert made.status_code == 201, made.text
        roles = api.get("/identity/v3/roles", params={"name": "member"}).json()["roles"]
        granted = api.put(f"/identity/v3/projects/{pid}/users/{made.json()['user']['id']}"
                          f"/roles/{roles[0]['id']}")
        assert granted.status_code == 204, granted.text
    return {**user, "project_id": pid}


def test_a_member_of_another_project_sees_none_of_it(cloud: Cloud,
                                                     browser: Browser) -> None:
    base, first, snapshot, second, volume = cloud.need("base", "first", "snapshot",
                                                       "second", "volume")
    mine = [r for r in ("first", "snapshot", "second", "volume", "upload") if r in cloud.ids]
    secret = {"id " + r: cloud.ids[r] for r in mine}
    secret |= {"name " + r: cloud.names[r] for r in mine}
    bob = cloud.beta = _make_member(cloud)
    browser.login(bob["name"], bob["password"], bob["project"])
    assert browser.find("#project-name").text == bob["project"]

    def none_of_a(page: str, *, ids: bool = True) -> None:
        html = browser.html
        shown = [what for what, value in secret.items()
                 if value in html and (ids or not what.startswith("id "))]
        assert not shown, f"{page} shows project A's {shown}"

    for path, name in (("/dashboard/servers", "beta-servers"),
                       ("/dashboard/servers/new", "beta-server-new"),
                       ("/dashboard/images", "beta-images"),
                       ("/dashboard/volumes", "beta-volumes"),
                       ("/dashboard/volumes/new", "beta-volume-new"),
                       ("/dashboard/snapshots", "beta-snapshots"),
                       ("/dashboard/lineage", "beta-lineage"),
                       # the public base image: A's disks below it are opaque
                       (f"/dashboard/lineage/images/{base}", "beta-lineage-base-image"),
                       (f"/dashboard/images/{base}", "beta-base-image")):
        browser.go(path, name)
        assert browser.path == path, f"{path} went to {browser.path}"
        none_of_a(name)
    browser.go(f"/dashboard/lineage/images/{base}", "beta-lineage-base-image-again")
    assert "in use by another project" in browser.find("ul#lineage-tree").text

    # A's own pages: the error page, in the service's words, and nothing of A in it
    for path, name in ((f"/dashboard/servers/{first}", "beta-a-server"),
                       (f"/dashboard/servers/{second}", "beta-a-second-server"),
                       (f"/dashboard/images/{snapshot}", "beta-a-image"),
                       *([(f"/dashboard/images/{cloud.ids['upload']}", "beta-a-upload"),
                          (f"/dashboard/images/{cloud.ids['upload']}/download",
                           "beta-a-upload-download")] if "upload" in cloud.ids else []),
                       (f"/dashboard/volumes/{volume}", "beta-a-volume"),
                       (f"/dashboard/lineage/servers/{first}", "beta-a-lineage-server"),
                       (f"/dashboard/lineage/images/{snapshot}", "beta-a-lineage-image"),
                       (f"/dashboard/lineage/volumes/{volume}", "beta-a-lineage-volume")):
        browser.go(path, name, error_page=True)
        assert browser.find_all("#error-message"), f"{path}: no error page"
        assert browser.status() == 404, f"{path}: HTTP {browser.status()}"
        none_of_a(name, ids=False)

    # and the lineage API itself, with bob's own token
    token = cloud.token_of(browser.cookie("strato_session") or "")
    assert token
    with cloud.server.client(token) as api:
        for kind, rid in (("servers", first), ("images", snapshot), ("volumes", volume)):
            assert api.get(f"/lineage/v1/{kind}/{rid}").status_code == 404
        graph = api.get(f"/lineage/v1/images/{base}")
        assert graph.status_code == 200, graph.text
        leaked = [what for what, value in secret.items() if value in graph.text]
        assert not leaked, f"the lineage API shows project A's {leaked}"
    browser.submit("button#logout", "beta-logged-out")
