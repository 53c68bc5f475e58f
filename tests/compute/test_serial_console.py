"""Serial consoles end to end: real guests, a real server, the real CLI, a websocket
client unlike the server's (websocket-client against uvicorn's ``websockets``).

The server here has a short token TTL so that expiry is seen in seconds; two guests
(A and B) are shared by the tests of this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import websocket

from strato.config import load
from strato.virt.guestbuild import READY_MARKER, ROOT_PASSWORD
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, boot_ready, guest_server, wait_console
from tests.console import ConsoleError, SerialConsole
from tests.support import Server
from tests.tenants import make_tenant

TTL = 6


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with guest_server(tmp_path_factory.mktemp("serial"), {
            "compute": {"sync_power_state_interval": "1"},
            "consoleauth": {"token_ttl": str(TTL)}}) as server:
        yield server


@pytest.fixture(scope="module")
def api(srv: Server) -> Nova:
    return Nova(srv, "2.79")


@pytest.fixture(scope="module")
def drv(srv: Server) -> QemuDriver:
    return QemuDriver(srv.state / "instances")


@pytest.fixture(scope="module")
def a(srv: Server) -> str:
    return boot_ready(srv, "--image", "strato-guest", prefix="con-a")


@pytest.fixture(scope="module")
def b(srv: Server) -> str:
    return boot_ready(srv, "--image", "strato-guest", prefix="con-b")


def url_of(api: Nova, server_id: str) -> str:
    r = api.req("POST", f"/servers/{server_id}/remote-consoles", "2.6",
                json={"remote_console": {"protocol": "serial", "type": "serial"}})
    assert r.status_code == 200, r.text
    return r.json()["remote_console"]["url"]


def refused(url: str) -> tuple[int, dict]:
    """The HTTP status and fault body a refused websocket upgrade got."""
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection(url, timeout=15, subprotocols=["binary"])
    return exc.value.status_code, json.loads(exc.value.resp_body or b"{}")


def db_rows(srv: Server) -> list[tuple[str, str, str]]:
    """(token_hash, instance_uuid, console_type) of every stored console token."""
    with sqlite3.connect(f"file:{srv.state / 'strato.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT token_hash, instance_uuid, console_type "
                            "FROM console_auth_tokens").fetchall()


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


# ---------------------------------------------------------------- a session
def test_log_in_write_and_read_back_a_marker(srv: Server, api: Nova, drv: QemuDriver,
                                             a: str) -> None:
    url = url_of(api, a)
    assert url.startswith(f"ws://127.0.0.1:{srv.port}/compute/console/serial?token=")
    marker = f"marker-{uuid.uuid4().hex[:10]}"
    with SerialConsole(url) as con:
        assert con.subprotocol == "binary"
        con.login("root", ROOT_PASSWORD)
        assert con.run("id -u") == "0"
        con.run(f"echo {marker} > /mnt/root/marker; sync")
        assert con.run("cat /mnt/root/marker") == marker
        assert con.run("false", check=False) == ""
        with pytest.raises(ConsoleError, match="exited 1"):
            con.run("false")
    # written to the root disk, as the guest agent sees it too
    with drv.agent(a) as ga:
        assert ga.sh("cat /mnt/root/marker").stdout.decode().strip() == marker
    # the console log has the boot and the typed session, also through the real CLI
    log = srv.openstack("console", "log", "show", a).stdout
    assert f"{READY_MARKER} bootcount=1" in log
    assert "login: root" in log and "root login on 'ttyS0'" in log
    session = log[log.index(f"{READY_MARKER} bootcount=1"):]
    # the typed command (echoed; long lines wrap on the terminal) and the cat's output
    assert session.count(marker) >= 2 and f"\n{marker}\n" in session


def test_a_wrong_password_is_refused_by_the_guest(api: Nova, a: str) -> None:
    with SerialConsole(url_of(api, a)) as con, pytest.raises(ConsoleError,
                                                             match="refused"):
        con.login("root", "not-the-password")


def test_reconnect_after_a_session_ends(api: Nova, a: str) -> None:
    url = url_of(api, a)
    for _ in range(2):  # the same token, within its TTL, opens the console again
        with SerialConsole(url) as con:
            con.login("root", ROOT_PASSWORD)
            assert con.run("echo $((6 * 7))") == "42"


def test_one_client_at_a_time(api: Nova, a: str) -> None:
    with SerialConsole(url_of(api, a)) as first:
        first.login("root", ROOT_PASSWORD)
        status, body = refused(url_of(api, a))
        assert status == 409
        assert body["conflictingRequest"]["message"] == (
            "The serial console is in use by another client.")
        assert first.run("echo still-here") == "still-here"  # the first one is unharmed
    with SerialConsole(url_of(api, a)) as again:  # free again once the first has gone
        again.login("root", ROOT_PASSWORD)


def test_a_client_elsewhere_holds_the_port(api: Nova, drv: QemuDriver, a: str) -> None:
    """A client this API process does not know of (another API process, say) has the
    serial socket: QEMU keeps the next one waiting, and the proxy gives up with 409."""
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.connect(str(drv.paths(a).serial))
    try:
        status, body = refused(url_of(api, a))
        assert status == 409
        assert "in use by another client" in body["conflictingRequest"]["message"]
    finally:
        held.close()
    with SerialConsole(url_of(api, a)) as con:  # and once it has gone, the proxy gets in
        con.login("root", ROOT_PASSWORD)


def test_base64_subprotocol(api: Nova, a: str) -> None:
    """Old websockify clients ask for base64: text frames carrying base64."""
    ws = websocket.create_connection(url_of(api, a), timeout=15, subprotocols=["base64"])
    try:
        assert ws.getsubprotocol() == "base64"
        seen = ""
        deadline = time.monotonic() + 60
        while "login:" not in seen and time.monotonic() < deadline:
            ws.send(base64.b64encode(b"\r").decode())
            ws.settimeout(3)
            try:
                opcode, data = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            assert opcode == websocket.ABNF.OPCODE_TEXT
            seen += base64.b64decode(data).decode(errors="replace")
        assert "login:" in seen
    finally:
        ws.close()


# ---------------------------------------------------------------- tokens
def test_tokens_are_stored_hashed(srv: Server, api: Nova, a: str) -> None:
    token = token_of(url_of(api, a))
    rows = db_rows(srv)
    assert (hashlib.sha256(token.encode()).hexdigest(), a, "serial") in rows
    assert not any(token in row[0] for row in rows)
    assert len(token) >= 32


def test_a_token_opens_only_its_own_instance(srv: Server, api: Nova, drv: QemuDriver,
                                             a: str, b: str) -> None:
    """What is typed through B's URL reaches B's serial port and never A's."""
    for mine, other in ((b, a), (a, b)):
        word = f"only-{uuid.uuid4().hex[:10]}"
        with SerialConsole(url_of(api, mine)) as con:
            con.send("\r")
            con.read_until("login:", timeout=60)
            con.send(word)
            con.read_until(word, timeout=60)  # the getty's terminal echoes it
            con.send("\x15")  # ^U: the login prompt is left as it was
        wait_console(drv, mine, word)
        assert word not in drv.console_output(other)


def test_bad_tokens_are_refused(srv: Server, api: Nova, a: str) -> None:
    base = url_of(api, a).split("?")[0]
    for url in (f"{base}?token={uuid.uuid4().hex}", base, f"{base}?token="):
        status, body = refused(url)
        assert status == 401
        assert body == {"unauthorized": {"code": 401,
                                         "message": "The token is invalid or has expired."}}


def test_an_expired_token_is_refused_and_purged(srv: Server, api: Nova, a: str) -> None:
    url = url_of(api, a)
    with SerialConsole(url) as con:  # good while fresh
        con.send("\r")
        con.read_until("login:", timeout=60)
    expired_hash = hashlib.sha256(token_of(url).encode()).hexdigest()
    time.sleep(TTL + 1)
    status, body = refused(url)
    assert status == 401 and "invalid or has expired" in body["unauthorized"]["message"]
    url_of(api, a)  # issuing a token cleans the expired ones away
    assert expired_hash not in {row[0] for row in db_rows(srv)}


# ---------------------------------------------------------------- the API
def test_openstack_console_url_show_serial(srv: Server, a: str) -> None:
    shown = srv.openstack_json("console", "url", "show", "--serial", a)
    assert shown["type"] == "serial"  # type: ignore[index]
    assert shown["protocol"] == "serial"  # type: ignore[index]
    url = shown["url"]  # type: ignore[index]
    assert url.startswith(f"ws://127.0.0.1:{srv.port}/compute/console/serial?token=")
    with SerialConsole(url) as con:
        con.login("root", ROOT_PASSWORD)
        assert con.run("cat /mnt/root/bootcount") == "1"


def test_shapes_by_microversion(api: Nova, a: str) -> None:
    r = api.req("POST", f"/servers/{a}/action", "2.5",
                json={"os-getSerialConsole": {"type": "serial"}})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"console"}
    assert set(r.json()["console"]) == {"type", "url"}
    assert r.json()["console"]["type"] == "serial"
    assert "?token=" in r.json()["console"]["url"]
    for version in ("2.6", "2.79"):
        r = api.req("POST", f"/servers/{a}/remote-consoles", version,
                    json={"remote_console": {"protocol": "serial", "type": "serial"}})
        assert r.status_code == 200, r.text
        assert r.headers["OpenStack-API-Version"] == f"compute {version}"
        body = r.json()
        assert set(body) == {"remote_console"}
        assert set(body["remote_console"]) == {"protocol", "type", "url"}
        assert body["remote_console"]["protocol"] == "serial"
    # each form exists only on its side of 2.6
    r = api.req("POST", f"/servers/{a}/remote-consoles", "2.5",
                json={"remote_console": {"protocol": "serial", "type": "serial"}})
    assert r.status_code == 404 and "itemNotFound" in r.json()
    r = api.req("POST", f"/servers/{a}/action", "2.6",
                json={"os-getSerialConsole": {"type": "serial"}})
    assert r.status_code == 404 and "itemNotFound" in r.json()


@pytest.mark.parametrize(("version", "body", "message"), [
    ("2.6", {"protocol": "vnc", "type": "novnc"}, "Unavailable console type novnc."),
    ("2.6", {"protocol": "spice", "type": "spice-html5"},
     "Unavailable console type spice-html5."),
    ("2.6", {"protocol": "rdp", "type": "rdp-html5"}, "Unavailable console type rdp."),
    ("2.8", {"protocol": "mks", "type": "webmks"}, "Unavailable console type webmks."),
    ("2.6", {"protocol": "serial", "type": "novnc"}, "Invalid console type novnc"),
    ("2.6", {"protocol": "mks", "type": "webmks"}, "is not one of"),  # mks is 2.8+
    ("2.6", {"protocol": "serial"}, "'type' is a required property"),
    ("2.6", {"protocol": "serial", "type": "serial", "x": 1},
     "additional properties are not allowed"),
])
def test_other_console_types_are_refused(api: Nova, a: str, version: str, body: dict,
                                         message: str) -> None:
    r = api.req("POST", f"/servers/{a}/remote-consoles", version,
                json={"remote_console": body})
    assert r.status_code == 400, r.text
    assert message in r.json()["badRequest"]["message"]


@pytest.mark.parametrize(("body", "message"), [
    ({"os-getVNCConsole": {"type": "novnc"}}, "Unavailable console type novnc."),
    ({"os-getSPICEConsole": {"type": "spice-html5"}}, "Unavailable console type spice-html5."),
    ({"os-getRDPConsole": {"type": "rdp-html5"}}, "Unavailable console type rdp."),
    ({"os-getSerialConsole": {"type": "novnc"}}, "is not one of serial"),
    ({"os-getSerialConsole": None}, "expected an object"),
])
def test_pre_26_actions_for_other_types(api: Nova, a: str, body: dict, message: str) -> None:
    r = api.req("POST", f"/servers/{a}/action", "2.1", json=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["badRequest"]["message"]


def test_unknown_server_other_projects_and_readers(srv: Server, api: Nova, a: str) -> None:
    serial = {"remote_console": {"protocol": "serial", "type": "serial"}}
    missing = str(uuid.uuid4())
    r = api.req("POST", f"/servers/{missing}/remote-consoles", "2.6", json=serial)
    assert r.status_code == 404
    assert r.json()["itemNotFound"]["message"] == f"Instance {missing} could not be found."
    r = api.req("POST", f"/servers/{missing}/action", "2.1",
                json={"os-getSerialConsole": {"type": "serial"}})
    assert r.status_code == 404
    # another project's member does not see A; a reader of A's project may not open it
    other = make_tenant(srv, "con-other")
    headers = {"OpenStack-API-Version": "compute 2.6"}
    with srv.client(other.token()) as c:
        r = c.post(f"/compute/v2.1/servers/{a}/remote-consoles", json=serial, headers=headers)
        assert r.status_code == 404, r.text
    srv.openstack("role", "add", "--project", "admin", "--user", other.user, "reader")
    with srv.client(srv.token(other.user, other.password, "admin")) as c:
        r = c.post(f"/compute/v2.1/servers/{a}/remote-consoles", json=serial, headers=headers)
        assert r.status_code == 403, r.text
        assert "os_compute_api:os-remote-consoles" in r.json()["forbidden"]["message"]


def test_base_url_follows_the_public_endpoint() -> None:
    from strato.compute.consoles import base_url

    conf = load(overrides=[("DEFAULT", "public_endpoint", "https://cloud.example/api/")])
    assert base_url(conf) == "wss://cloud.example/api/compute/console/serial"
    conf = load(overrides=[("DEFAULT", "bind_port", "9000")])
    assert base_url(conf) == "ws://127.0.0.1:9000/compute/console/serial"
    conf = load(overrides=[("serial_console", "base_url", "ws://proxy:6083/")])
    assert base_url(conf) == "ws://proxy:6083/"


# ---------------------------------------------------------------- state (last: B goes)
def test_not_active_is_409_and_deleted_kills_tokens(srv: Server, api: Nova, b: str) -> None:
    url = url_of(api, b)
    api.action(b, {"os-stop": None})
    api.wait(b, "SHUTOFF")
    r = api.req("POST", f"/servers/{b}/remote-consoles", "2.6",
                json={"remote_console": {"protocol": "serial", "type": "serial"}})
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == (
        f"Cannot 'get_serial_console' instance {b} while it is in vm_state stopped")
    status, body = refused(url)  # a token from before the stop finds no running guest
    assert status == 409 and "is not running" in body["conflictingRequest"]["message"]
    assert any(row[1] == b for row in db_rows(srv))
    r = api.req("DELETE", f"/servers/{b}")
    assert r.status_code == 204
    assert not any(row[1] == b for row in db_rows(srv))  # gone with the delete request
    status, _ = refused(url)
    assert status == 401
    api.wait(b, "gone")


def test_building_server_is_409(srv: Server, api: Nova) -> None:
    """Not ready while it builds (Nova's InstanceNotReady)."""
    r = api.req("POST", "/servers", json={"server": {
        "name": "con-building", "imageRef": _image_id(srv), "flavorRef": _tiny(api),
        "networks": "none"}})
    assert r.status_code == 202, r.text
    sid = r.json()["server"]["id"]
    try:
        r = api.req("POST", f"/servers/{sid}/remote-consoles", "2.6",
                    json={"remote_console": {"protocol": "serial", "type": "serial"}})
        if api.server(sid)["status"] == "BUILD":  # still building when it answered
            assert r.status_code == 409, r.text
            assert r.json()["conflictingRequest"]["message"] == f"Instance {sid} is not ready"
        else:
            pytest.fail("the server was ACTIVE before the request; cannot test BUILD")
    finally:
        api.req("DELETE", f"/servers/{sid}")
        api.wait(sid, "gone")


def _image_id(srv: Server) -> str:
    return str(srv.openstack_json("image", "show", "strato-guest")["id"])  # type: ignore[index]


def _tiny(api: Nova) -> str:
    r = api.req("GET", "/flavors")
    return next(f["id"] for f in r.json()["flavors"] if f["name"] == "m1.tiny")


def test_the_server_stops_cleanly_with_a_console_open(srv: Server, api: Nova,
                                                      a: str) -> None:
    """Last: SIGTERM with a session open closes it and the server exits at once; the
    log never shows a token (uvicorn logs each websocket's URL)."""
    url = url_of(api, a)
    con = SerialConsole(url)
    try:
        con.send("\r")
        con.read_until("login:", timeout=60)
        started = time.monotonic()
        assert srv.stop() == 0
        assert time.monotonic() - started < 20
        with pytest.raises((ConsoleError, websocket.WebSocketException, OSError)):
            con.read_until("never printed", timeout=10)
    finally:
        con.ws.close()
    log = srv.log.read_text()
    assert "/compute/console/serial?token=***" in log and token_of(url) not in log
