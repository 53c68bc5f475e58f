"""The dashboard's compute pages over HTTP, against a real server and ONE real guest
booted through the create form: every page renders, power actions and createImage /
createBackup go through the API with the user's token, refusals read as the service
wrote them (never a 500), CSRF is required, and another project sees nothing.
(The browser tests of part C drive the same pages in chromium.)"""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, guest_server, wait_console
from tests.support import Server

TIMEOUT = 120.0


def _csrf(text: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)


def _flash(text: str) -> tuple[str, str] | None:
    found = re.search(r'<p class="flash flash-(\w+)" id="flash"[^>]*>(.*?)</p>', text, re.S)
    return (found.group(1), html.unescape(found.group(2))) if found else None


def login(srv: Server, user: str = "admin", password: str | None = None,
          project: str = "admin") -> httpx.Client:
    """A browser-like client logged in through the dashboard's own form."""
    client = httpx.Client(base_url=srv.url, timeout=60, headers={"Origin": srv.url})
    page = client.get("/dashboard/login")
    answer = client.post("/dashboard/login", data={
        "csrf_token": _csrf(page.text), "username": user,
        "password": password or srv.password, "project": project, "domain": "Default"})
    assert answer.status_code == 303, answer.text
    return client


def submit(client: httpx.Client, path: str, data: dict[str, str] | None = None,
           page: str | None = None) -> httpx.Response:
    """POST a form with the session's CSRF token (read from a page, as a browser
    would), answer the 303's page."""
    token = _csrf(client.get(page or "/dashboard/servers").text)
    answer = client.post(path, data={"csrf_token": token, **(data or {})})
    assert answer.status_code == 303, (answer.status_code, answer.text)
    return answer


def poll_done(client: httpx.Client, sid: str, timeout: float = TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        answer = client.get(f"/dashboard/servers/{sid}/progress",
                            headers={"Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) >= {"status", "percent", "done", "text"}
        if body["done"]:
            return body
        time.sleep(0.3)
    raise AssertionError(f"server {sid} still busy: {body}")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with guest_server(tmp_path_factory.mktemp("dsb"), {"compute": {
            "sync_power_state_interval": "1"}}) as server:
        yield server


@pytest.fixture(scope="module")
def web(srv: Server) -> Iterator[httpx.Client]:
    client = login(srv)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def nova(srv: Server) -> Nova:
    return Nova(srv)


@pytest.fixture(scope="module")
def guest(srv: Server, web: httpx.Client, nova: Nova) -> str:
    """The shared guest, booted through the create form from the tiny image."""
    page = web.get("/dashboard/servers/new")
    assert page.status_code == 200
    image = re.search(r'<option value="([0-9a-f-]{36})"[^>]*>strato-guest ', page.text)
    flavor = re.search(r'<option value="([^"]+)">m1.tiny ', page.text)
    assert image and flavor, page.text
    answer = submit(web, "/dashboard/servers/new", {
        "name": "dash-guest", "boot_source": "image", "image": image.group(1),
        "flavor": flavor.group(1), "key_name": ""}, page="/dashboard/servers/new")
    sid = answer.headers["location"].rsplit("/", 1)[-1]
    assert answer.headers["location"] == f"/dashboard/servers/{sid}"
    # while it builds, the list and its page poll its progress (and stop once it rests)
    page, listing = web.get(f"/dashboard/servers/{sid}").text, web.get("/dashboard/servers").text
    building = re.search(r'id="server-status"[^>]*>([^<]+)<', page).group(1)
    polling = (f'id="server-progress" class="progress" data-poll="/dashboard/servers/{sid}/'
               'progress" data-poll-done-reload') in page
    assert polling == (building != "ACTIVE"), page
    cell = re.search(rf'<tr data-id="{sid}">.*?<td class="status[^"]*">(.*?)</td>', listing,
                     re.S).group(1)
    assert (f'data-poll="/dashboard/servers/{sid}/progress"' in cell) == (
        re.sub(r"<[^>]+>", "", cell).strip() != "ACTIVE"), cell
    nova.wait(sid, "ACTIVE")
    wait_console(QemuDriver(srv.state / "instances"), sid, "STRATO-GUEST-READY bootcount=")
    return sid


def test_create_page_offers_what_exists(web: httpx.Client) -> None:
    page = web.get("/dashboard/servers/new")
    assert page.status_code == 200
    for needle in ('id="server-create"', 'id="name"', 'id="boot-source"', 'id="image"',
                   'id="volume"', 'id="snapshot"', 'id="flavor"', 'id="key-name"',
                   'id="create-server"', '<option value="snapshot"', "strato-guest"):
        assert needle in page.text, needle
    assert 'id="network"' not in page.text  # this project has no network
    assert "csrf_token" in page.text and "csrf_token=" not in page.text  # never in a URL


def test_create_refused_in_the_services_words(web: httpx.Client) -> None:
    answer = submit(web, "/dashboard/servers/new", {
        "name": "no-flavor", "boot_source": "image", "image": str(uuid.uuid4()),
        "flavor": "no-such-flavor"}, page="/dashboard/servers/new")
    assert answer.headers["location"].startswith("/dashboard/servers/new?")
    page = web.get(answer.headers["location"])
    kind, text = _flash(page.text)
    assert kind == "error" and "no-such-flavor" in text, text
    assert 'id="name" name="name" required maxlength="255" autocomplete="off" ' \
        'value="no-flavor"' in page.text  # the form keeps what was typed


def test_list_and_server_page(web: httpx.Client, guest: str) -> None:
    listing = web.get("/dashboard/servers")
    assert listing.status_code == 200
    assert 'id="servers"' in listing.text and 'id="new-server"' in listing.text
    row = re.search(rf'<tr data-id="{guest}">(.*?)</tr>', listing.text, re.S)
    assert row and 'class="server-link"' in row.group(1)
    assert re.search(r'<td class="status[^"]*">ACTIVE</td>', row.group(1))

    page = web.get(f"/dashboard/servers/{guest}")
    assert page.status_code == 200, page.text
    text = page.text
    assert re.search(r'id="server-status"[^>]*>ACTIVE<', text)
    assert 'id="server-progress"' not in text  # resting: no poll
    for needle in ('class="props"', 'id="action-start"', 'id="action-stop"',
                   'id="action-reboot"', 'id="action-delete"', 'data-confirm=',
                   'id="snapshot-form"', 'id="snapshot-name"', 'id="snapshot-submit"',
                   'id="backup-form"', 'id="backup-name"', 'id="backup-type"',
                   'id="backup-rotation"', 'id="backup-submit"', 'id="console-refresh"',
                   'id="server-volumes"', 'id="actions"',
                   f'id="lineage-link" href="/dashboard/lineage/servers/{guest}"',
                   'id="server-image" href="/dashboard/images/', "m1.tiny"):
        assert needle in text, needle
    console = re.search(r'<pre class="console" id="console-log"[^>]*>(.*?)</pre>', text, re.S)
    assert console and "STRATO-GUEST-READY" in console.group(1)
    # the console asks for the last N lines
    short = web.get(f"/dashboard/servers/{guest}", params={"lines": "3"}).text
    tail = re.search(r'id="console-log"[^>]*>(.*?)</pre>', short, re.S).group(1)
    assert 0 < len(tail.strip().splitlines()) <= 3
    # the history: the create action with its events under it
    create = re.search(r'<tr class="action" data-request-id="(req-[^"]+)">\s*<td[^>]*>'
                       r'[^<]+</td>\s*<td>create</td>', text)
    assert create, text
    events = re.search(rf'<tr class="events" data-request-id="{create.group(1)}">(.*?)</tr>',
                       text, re.S)
    assert events and 'class="event"' in events.group(1)
    assert "Success" in events.group(1)

    done = poll_done(web, guest)
    assert done == {"status": "ACTIVE", "task_state": None, "percent": None, "done": True,
                    "text": "ACTIVE"}


def test_csrf_is_required(srv: Server, web: httpx.Client, guest: str, nova: Nova) -> None:
    bare = web.post(f"/dashboard/servers/{guest}/stop")
    assert bare.status_code == 403
    forged = web.post(f"/dashboard/servers/{guest}/stop", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    token = _csrf(web.get("/dashboard/servers").text)
    elsewhere = web.post(f"/dashboard/servers/{guest}/stop", data={"csrf_token": token},
                         headers={"Origin": "http://evil.example"})
    assert elsewhere.status_code == 403
    assert nova.server(guest)["status"] == "ACTIVE"


def test_power_actions_and_refusals(web: httpx.Client, guest: str, nova: Nova) -> None:
    page = f"/dashboard/servers/{guest}"
    answer = submit(web, f"{page}/stop", page=page)
    assert answer.headers["location"] == page
    shown = web.get(page).text
    assert _flash(shown) == ("success", "The server is stopping.")
    assert poll_done(web, guest)["status"] == "SHUTOFF"
    assert nova.server(guest)["status"] == "SHUTOFF"

    # a stop of a stopped server: the API's 409, in its words, on the page
    submit(web, f"{page}/stop", page=page)
    refused = web.get(page)
    assert refused.status_code == 200
    kind, text = _flash(refused.text)
    assert kind == "error" and "Cannot 'stop' instance" in text and "stopped" in text, text

    submit(web, f"{page}/start", page=page)
    assert poll_done(web, guest)["status"] == "ACTIVE"
    submit(web, f"{page}/reboot", page=page)
    assert _flash(web.get(page).text) == ("success", "The server is rebooting.")
    assert poll_done(web, guest)["status"] == "ACTIVE"
    # the state actions offered by status: pause (ACTIVE), then unpause (PAUSED)
    assert 'id="action-pause"' in web.get(page).text
    submit(web, f"{page}/pause", page=page)
    assert poll_done(web, guest)["status"] == "PAUSED"
    paused = web.get(page).text
    assert 'id="action-unpause"' in paused and 'id="action-pause"' not in paused
    submit(web, f"{page}/unpause", page=page)
    assert poll_done(web, guest)["status"] == "ACTIVE"
    submit(web, f"{page}/suspend", page=page)
    assert poll_done(web, guest)["status"] == "SUSPENDED"
    assert 'id="action-resume"' in web.get(page).text
    submit(web, f"{page}/resume", page=page)
    assert poll_done(web, guest)["status"] == "ACTIVE"
    # an action the page does not know is a flash too, never a 500
    submit(web, f"{page}/explode", page=page)
    assert _flash(web.get(page).text)[0] == "error"
    history = web.get(page).text
    for action in ("stop", "start", "reboot"):
        assert f"<td>{action}</td>" in history, action


def test_snapshot_creates_an_image(web: httpx.Client, guest: str, nova: Nova) -> None:
    page = f"/dashboard/servers/{guest}"
    answer = submit(web, f"{page}/snapshot", {"name": "dash-snap"}, page=page)
    location = answer.headers["location"]
    assert location.startswith("/dashboard/images/")
    image_id = location.rsplit("/", 1)[-1]
    deadline = time.monotonic() + TIMEOUT
    image: dict = {}
    while time.monotonic() < deadline:
        image = nova.c.get(f"/image/v2/images/{image_id}").json()
        if image.get("status") == "active":
            break
        time.sleep(0.3)
    assert image.get("status") == "active" and image["name"] == "dash-snap", image
    assert poll_done(web, guest)["status"] == "ACTIVE"
    assert "<td>createImage</td>" in web.get(page).text


def test_backup_creates_an_image(web: httpx.Client, guest: str, nova: Nova) -> None:
    page = f"/dashboard/servers/{guest}"
    # a refusal first: the API's own words for a bad rotation
    submit(web, f"{page}/backup", {"name": "b", "backup_type": "daily", "rotation": "-1"},
           page=page)
    kind, _ = _flash(web.get(page).text)
    assert kind == "error"
    answer = submit(web, f"{page}/backup", {"name": "dash-backup", "backup_type": "daily",
                                            "rotation": "2"}, page=page)
    assert answer.headers["location"] == page
    kind, text = _flash(web.get(page).text)
    assert kind == "success" and "as image" in text, text
    image_id = re.search(r"as image ([0-9a-f-]{36})", text).group(1)
    image = nova.c.get(f"/image/v2/images/{image_id}").json()
    assert image["name"] == "dash-backup" and image.get("image_type") == "backup", image
    assert image.get("backup_type") == "daily"
    assert poll_done(web, guest)["status"] == "ACTIVE"


def _wait_cinder(nova: Nova, kind: str, rid: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        body = nova.c.get(f"/volume/v3/{nova.project_id}/{kind}s/{rid}").json()[kind]
        if body["status"] == "available":
            return
        assert time.monotonic() < deadline and body["status"] != "error", body
        time.sleep(0.3)


def test_boot_from_volume_and_from_snapshot(web: httpx.Client, guest: str,
                                            nova: Nova) -> None:
    """Two servers from the create form: one on a volume made from the image, one on a
    new volume from that volume's snapshot; each page links its boot volume (and the
    snapshot it came from)."""
    image_id = re.search(r'id="server-image" href="/dashboard/images/([0-9a-f-]{36})"',
                         web.get(f"/dashboard/servers/{guest}").text).group(1)
    vol = nova.c.post(f"/volume/v3/{nova.project_id}/volumes", json={"volume": {
        "size": 1, "name": "dash-boot", "imageRef": image_id}})
    assert vol.status_code == 202, vol.text
    vid = vol.json()["volume"]["id"]
    _wait_cinder(nova, "volume", vid)
    snap = nova.c.post(f"/volume/v3/{nova.project_id}/snapshots", json={"snapshot": {
        "volume_id": vid, "name": "dash-boot-snap"}})
    assert snap.status_code == 202, snap.text
    snap_id = snap.json()["snapshot"]["id"]
    _wait_cinder(nova, "snapshot", snap_id)

    form_page = web.get("/dashboard/servers/new", params={"source": "volume", "id": vid})
    assert re.search(rf'<option value="{vid}" selected>dash-boot', form_page.text)
    assert re.search(rf'<option value="{snap_id}"\s*>dash-boot-snap', form_page.text)
    flavor = re.search(r'<option value="([^"]+)">m1.tiny ', form_page.text).group(1)
    sids = []
    try:
        for source, ref in (("volume", vid), ("snapshot", snap_id)):
            answer = submit(web, "/dashboard/servers/new", {
                "name": f"dash-{source}", "boot_source": source, source: ref,
                "flavor": flavor}, page="/dashboard/servers/new")
            sids.append(answer.headers["location"].rsplit("/", 1)[-1])
        for sid in sids:
            assert poll_done(web, sid)["status"] == "ACTIVE"
        page = web.get(f"/dashboard/servers/{sids[0]}").text
        assert f'id="server-boot-volume" href="/dashboard/volumes/{vid}"' in page
        assert 'id="server-image"' not in page
        volumes = re.search(r'<table id="server-volumes">(.*?)</table>', page, re.S).group(1)
        assert f'data-id="{vid}"' in volumes and "in-use" in volumes
        page = web.get(f"/dashboard/servers/{sids[1]}").text
        new_volume = re.search(r'id="server-boot-volume" href="/dashboard/volumes/'
                               r'([0-9a-f-]{36})"', page).group(1)
        assert new_volume != vid
        assert f'href="/dashboard/snapshots/{snap_id}"' in page
    finally:
        for sid in sids:
            submit(web, f"/dashboard/servers/{sid}/delete", page="/dashboard/servers")
        for sid in sids:
            nova.wait(sid, "gone")


def test_another_project_sees_nothing(srv: Server, guest: str, nova: Nova) -> None:
    admin = nova.c
    name = f"dash-{uuid.uuid4().hex[:6]}"
    project = admin.post("/identity/v3/projects", json={"project": {"name": name}}).json()
    user = admin.post("/identity/v3/users", json={"user": {"name": name,
                                                             "password": "pw"}}).json()
    role = admin.get("/identity/v3/roles", params={"name": "member"}).json()["roles"][0]
    admin.put(f"/identity/v3/projects/{project['project']['id']}/users/"
              f"{user['user']['id']}/roles/{role['id']}")
    other = login(srv, name, "pw", name)
    try:
        listing = other.get("/dashboard/servers")
        assert listing.status_code == 200 and guest not in listing.text
        page = other.get(f"/dashboard/servers/{guest}")
        assert page.status_code == 404
        assert 'id="error-message"' in page.text and "could not be found" in page.text
        assert other.get(f"/dashboard/servers/{guest}/progress").json()["done"] is True
        # an action on it: the API's 404 in words, and nothing happens
        submit(other, f"/dashboard/servers/{guest}/stop")
        after = other.get(f"/dashboard/servers/{guest}")
        assert after.status_code == 404
        kind, text = _flash(after.text)
        assert kind == "error" and "could not be found" in text
    finally:
        other.close()
    assert nova.server(guest)["status"] == "ACTIVE"


def test_shelve_and_unshelve(web: httpx.Client, guest: str) -> None:
    page = f"/dashboard/servers/{guest}"
    submit(web, f"{page}/shelve", page=page)
    assert poll_done(web, guest)["status"] in ("SHELVED", "SHELVED_OFFLOADED")
    shelved = web.get(page).text
    assert 'id="action-unshelve"' in shelved and 'id="action-shelve"' not in shelved
    submit(web, f"{page}/unshelve", page=page)
    assert poll_done(web, guest)["status"] == "ACTIVE"


def test_delete_through_the_form(web: httpx.Client, guest: str, nova: Nova) -> None:
    answer = submit(web, f"/dashboard/servers/{guest}/delete",
                    page=f"/dashboard/servers/{guest}")
    assert answer.headers["location"] == "/dashboard/servers"
    assert _flash(web.get("/dashboard/servers").text)[0] == "success"
    nova.wait(guest, "gone")
    assert poll_done(web, guest)["status"] == "DELETED"
    assert web.get(f"/dashboard/servers/{guest}").status_code == 404


def test_create_page_offers_key_pairs(web: httpx.Client, nova: Nova) -> None:
    """A key pair of the user is offered; a refused create keeps it chosen. (Networks:
    this server runs the user-mode data plane, whose networking API answers 503: the
    form says so and offers the user-mode NIC.)"""
    key = nova.c.post("/compute/v2.1/os-keypairs", json={"keypair": {"name": "dash-key"}})
    assert key.status_code in (200, 201), key.text
    page = web.get("/dashboard/servers/new").text
    assert '<option value="dash-key">dash-key</option>' in page
    assert 'id="network"' not in page and "user-mode NIC" in page
    answer = submit(web, "/dashboard/servers/new", {
        "name": "n", "boot_source": "image", "image": "", "flavor": "no-such-flavor",
        "key_name": "dash-key"}, page="/dashboard/servers/new")
    again = web.get(answer.headers["location"]).text
    assert '<option value="dash-key" selected>dash-key</option>' in again


def test_create_body_and_progress_rules() -> None:
    """The two rules the pages build on, without a server: the POST /servers body per
    boot source, and when a status counts as done and what percent it shows."""
    from strato.dashboard.server_page import progress_of
    from strato.dashboard.servers import create_body

    assert create_body({"name": " a ", "boot_source": "image", "image": "i", "flavor": "f",
                        "network": ""}) == {"server": {
        "name": "a", "flavorRef": "f", "imageRef": "i", "networks": "auto"}}
    body = create_body({"name": "b", "boot_source": "snapshot", "snapshot": "s",
                        "flavor": "f", "key_name": "k", "network": "n1"})["server"]
    assert body["imageRef"] == "" and body["key_name"] == "k"
    assert body["networks"] == [{"uuid": "n1"}]
    assert body["block_device_mapping_v2"] == [{
        "boot_index": 0, "uuid": "s", "source_type": "snapshot",
        "destination_type": "volume", "delete_on_termination": True}]
    assert create_body({"boot_source": "volume", "volume": "v", "network": "none"})[
        "server"]["block_device_mapping_v2"][0]["delete_on_termination"] is False

    building = progress_of({"status": "BUILD", "OS-EXT-STS:task_state": "spawning",
                            "progress": 0})
    assert building == {"status": "BUILD", "task_state": "spawning", "percent": 0,
                        "done": False, "text": "BUILD (spawning)"}
    # ACTIVE's progress (100) says nothing about a snapshot in flight
    snapping = progress_of({"status": "ACTIVE", "OS-EXT-STS:task_state": "image_uploading",
                            "progress": 100})
    assert snapping["percent"] is None and snapping["done"] is False
    assert progress_of({"status": "SHUTOFF", "OS-EXT-STS:task_state": None})["done"]
    assert not progress_of({"status": "REBOOT", "OS-EXT-STS:task_state": None})["done"]


def test_create_on_a_network(tmp_path_factory: pytest.TempPathFactory) -> None:
    """On the Linux data plane, with a network in the project: the form offers it
    (first, chosen), the server is made on it, its page shows the port's address.
    The data plane of this test (``dataplane_id`` "dsb") is torn down on the way out."""
    with guest_server(tmp_path_factory.mktemp("dsn"), {"network": {
            "dataplane": "linux", "dataplane_id": "dsb"}}) as server:
        nova = Nova(server)
        net = nova.c.post("/networking/v2.0/networks", json={"network": {"name": "dash-n"}})
        assert net.status_code == 201, net.text
        net_id = net.json()["network"]["id"]
        sub = nova.c.post("/networking/v2.0/subnets", json={"subnet": {
            "network_id": net_id, "cidr": "10.77.0.0/24", "ip_version": 4}})
        assert sub.status_code == 201, sub.text
        client = login(server)
        try:
            page = client.get("/dashboard/servers/new").text
            select = re.search(r'<select id="network" name="network">\s*<option value="'
                               r'([^"]+)"[^>]*>dash-n', page)
            assert select and select.group(1) == net_id, page
            assert '<option value="none">No network</option>' in page
            image = re.search(r'<option value="([0-9a-f-]{36})"[^>]*>strato-guest ', page)
            flavor = re.search(r'<option value="([^"]+)">m1.tiny ', page)
            answer = submit(client, "/dashboard/servers/new", {
                "name": "dash-net-guest", "boot_source": "image", "image": image.group(1),
                "flavor": flavor.group(1), "network": net_id}, page="/dashboard/servers/new")
            sid = answer.headers["location"].rsplit("/", 1)[-1]
            assert poll_done(client, sid)["status"] == "ACTIVE"
            shown = client.get(f"/dashboard/servers/{sid}").text
            assert re.search(r'<span class="mono">10\.77\.0\.\d+</span> <span class="hint">'
                             r'\(dash-n, fixed\)', shown), shown
            submit(client, f"/dashboard/servers/{sid}/delete", page="/dashboard/servers")
            nova.wait(sid, "gone")
        finally:
            client.close()
