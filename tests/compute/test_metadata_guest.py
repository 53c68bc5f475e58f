"""Config drive and metadata service with real guests: two tiny guests on one
`strato serve`, each reading 169.254.169.254 from inside (busybox wget), each seeing
only itself; the service comes back after a restart under the running guests."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from strato.compute import guestnet
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, guest_server, wait_console
from tests.support import Server

SCRIPT = b"#!/bin/sh\necho user data for guest A\n"
# busybox-static wget crashes with -T (timeout): the agent call has one instead
MD = f"http://{guestnet.METADATA_ADDR}"
NET_UP = """cat > /tmp/dhcp.sh <<'EOF'
#!/bin/sh
[ "$1" = bound ] && ip addr add $ip/$mask dev $interface && ip route add default via $router
exit 0
EOF
chmod +x /tmp/dhcp.sh; ip link set eth0 up; udhcpc -i eth0 -n -q -t 10 -s /tmp/dhcp.sh"""


@dataclass
class Guests:
    srv: Server
    nova: Nova
    drv: QemuDriver
    a: str
    b: str
    created: dict[str, dict]


def _create(nova: Nova, srv: Server, **server: object) -> dict:
    image = srv.openstack_json("image", "show", "strato-guest")["id"]  # type: ignore[index]
    r = nova.req("POST", "/servers", json={"server": {
        # "auto" without a network: the user-mode NIC the guests read metadata on
        "flavorRef": "42", "imageRef": image, "networks": "auto", **server}})
    assert r.status_code == 202, r.text
    return r.json()["server"]


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guests]:
    with guest_server(tmp_path_factory.mktemp("md"), {"compute": {
            "sync_power_state_interval": "1"}}) as srv:
        nova = Nova(srv)
        drv = QemuDriver(srv.state / "instances")
        a = _create(nova, srv, name="guest-a", config_drive=True, adminPass="Pass-A-123",
                    user_data=base64.b64encode(SCRIPT).decode(), metadata={"role": "a"})
        b = _create(nova, srv, name="Guest B_two")
        for sid in (a["id"], b["id"]):
            nova.wait(sid, "ACTIVE")
        for sid in (a["id"], b["id"]):
            wait_console(drv, sid, "STRATO-GUEST-READY bootcount=1")
            drv.wait_for_agent(sid)
            with drv.agent(sid) as ga:
                up = ga.sh(NET_UP, timeout=60)
                assert up.exitcode == 0, up
        yield Guests(srv, nova, drv, a["id"], b["id"], {a["id"]: a, b["id"]: b})


def _wget(drv: QemuDriver, sid: str, path: str, extra: str = "") -> tuple[int | None, bytes]:
    with drv.agent(sid) as ga:
        r = ga.sh(f"wget -q {extra} -O - {MD}{path}", timeout=60)
    return r.exitcode, r.stdout


def test_create_response_and_server_view(guests: Guests) -> None:
    nova = guests.nova
    assert guests.created[guests.a]["adminPass"] == "Pass-A-123"
    generated = guests.created[guests.b]["adminPass"]
    assert len(generated) == 12 and generated.isalnum()
    a, b = nova.server(guests.a), nova.server(guests.b)
    assert a["config_drive"] == "True" and b["config_drive"] == ""
    assert b["OS-EXT-SRV-ATTR:hostname"] == "guest-b-two"
    assert a["OS-EXT-SRV-ATTR:user_data"] == base64.b64encode(SCRIPT).decode()
    assert a["addresses"]["private"][0]["addr"] == guestnet.GUEST_ADDR
    for body, problem in (({"user_data": "abcde"}, "user_data"),
                          ({"config_drive": "maybe"}, "Invalid config_drive provided.")):
        r = nova.req("POST", "/servers", json={"server": {
            "name": "bad", "flavorRef": "42", "imageRef": a["image"]["id"],
            "networks": "none", **body}})
        assert r.status_code == 400, r.text
        assert problem in r.json()["badRequest"]["message"]


def test_config_drive_is_attached_and_password_not_kept(guests: Guests) -> None:
    from strato.config import load
    from strato.db import Database
    from strato.jobs.models import Job

    drv = guests.drv
    iso = Path(drv.paths(guests.a).dir) / "disk.config"
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True,
                          check=True).stdout
    assert "Volume id: config-2" in info
    meta = json.loads(subprocess.run(
        ["isoinfo", "-R", "-i", str(iso), "-x", "/openstack/latest/meta_data.json"],
        capture_output=True, check=True).stdout)
    assert meta["uuid"] == guests.a and meta["admin_pass"] == "Pass-A-123"
    assert meta["meta"] == {"role": "a"} and meta["hostname"] == "guest-a"
    cmdline = Path(f"/proc/{drv.pid(guests.a)}/cmdline").read_bytes().split(b"\0")
    assert any(b"ide-cd,id=configdrive" in arg for arg in cmdline)
    assert any(str(iso).encode() in arg for arg in cmdline)
    assert not (Path(drv.paths(guests.b).dir) / "disk.config").exists()
    assert not any(b"ide-cd" in arg for arg in
                   Path(f"/proc/{drv.pid(guests.b)}/cmdline").read_bytes().split(b"\0"))
    db = Database.from_config(load(guests.srv.conf))
    try:
        with db.session(readonly=True) as session:
            builds = [j.payload for j in session.scalars(select(Job).where(
                Job.name == "compute.build"))]
    finally:
        db.dispose()
    assert {p["instance_id"] for p in builds} >= {guests.a, guests.b}
    assert not any("admin_pass" in p for p in builds)


def test_each_guest_reads_only_itself(guests: Guests) -> None:
    drv = guests.drv
    for sid, name in ((guests.a, "guest-a"), (guests.b, "Guest B_two")):
        code, out = _wget(drv, sid, "/openstack/latest/meta_data.json")
        assert code == 0, out
        meta = json.loads(out)
        assert meta["uuid"] == sid and meta["name"] == name
        assert "admin_pass" not in meta
        code, out = _wget(drv, sid, "/latest/meta-data/instance-id")
        assert (code, out) == (0, f"i-{sid[:8]}".encode())
        code, out = _wget(drv, sid, "/openstack")
        assert out.decode().split("\n")[-1] == "latest"
    assert _wget(drv, guests.a, "/openstack/latest/user_data") == (0, SCRIPT)
    assert _wget(drv, guests.a, "/latest/user-data") == (0, SCRIPT)
    assert _wget(drv, guests.b, "/openstack/latest/user_data")[0] != 0  # 404: none
    assert _wget(drv, guests.b, "/latest/meta-data/hostname") == (0, b"guest-b-two")
    nd = json.loads(_wget(drv, guests.b, "/openstack/latest/network_data.json")[1])
    assert nd["links"][0]["ethernet_mac_address"] == guests.nova.server(guests.b)[
        "addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"]
    # several connections at once: QEMU runs one forwarder per connection
    with drv.agent(guests.a) as ga:
        r = ga.sh(f"for i in 1 2 3 4 5 6; do wget -q -O /tmp/c$i "
                  f"{MD}/openstack/latest/meta_data.json & done; wait; "
                  f"for f in /tmp/c*; do cat $f; echo; done", timeout=90)
    docs = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert len(docs) == 6 and {d["uuid"] for d in docs} == {guests.a}


def test_password_endpoint(guests: Guests) -> None:
    drv = guests.drv
    path = "/openstack/latest/password"
    assert _wget(drv, guests.b, path) == (0, b"")
    assert _wget(drv, guests.b, path, "--post-data ENCRYPTED-b")[0] == 0
    assert _wget(drv, guests.b, path) == (0, b"ENCRYPTED-b")
    assert _wget(drv, guests.b, path, "--post-data again")[0] != 0  # 409: set once
    assert _wget(drv, guests.b, path) == (0, b"ENCRYPTED-b")
    assert _wget(drv, guests.a, path) == (0, b"")  # the other guest's is its own


def _raw(sock_path: Path, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_http_methods(guests: Guests) -> None:
    """What QEMU's forwarder connects to, spoken to directly: GET/HEAD, 404, 405."""
    sock = guestnet.metadata_socket(Path(guests.drv.paths(guests.a).dir))
    code, headers, body = _raw(sock, b"GET /openstack/latest/meta_data.json HTTP/1.0\r\n\r\n")
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["uuid"] == guests.a
    code, headers, body = _raw(sock, b"HEAD /latest/meta-data/ HTTP/1.0\r\n\r\n")
    assert code == 200 and body == b"" and int(headers["Content-Length"]) > 0
    assert _raw(sock, b"GET /openstack/latest/nothing HTTP/1.0\r\n\r\n")[0] == 404
    assert _raw(sock, b"GET /2001-01-01/meta-data/ HTTP/1.0\r\n\r\n")[0] == 404
    for method in (b"PUT", b"DELETE"):
        code, headers, _ = _raw(sock, method + b" /openstack/latest/meta_data.json "
                                b"HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        assert code == 405 and headers["Allow"] == "GET, HEAD"
    code, _, _ = _raw(sock, b"POST /openstack/latest/meta_data.json HTTP/1.0\r\n"
                      b"Content-Length: 2\r\n\r\nxx")
    assert code == 405
    code, _, _ = _raw(sock, b"POST /openstack/latest/password HTTP/1.0\r\n"
                      b"Content-Length: 2000\r\n\r\n" + b"x" * 2000)
    assert code == 400


def test_restart_and_delete(guests: Guests) -> None:
    srv, drv = guests.srv, guests.drv
    pids = {sid: drv.pid(sid) for sid in (guests.a, guests.b)}
    assert srv.stop() == 0
    # while strato is down the guest gets no answer (and no one else's)
    assert _wget(drv, guests.a, "/openstack/latest/meta_data.json")[0] != 0
    srv.start()
    assert {sid: drv.pid(sid) for sid in pids} == pids  # the same QEMU processes
    code, out = _wget(drv, guests.a, "/openstack/latest/meta_data.json")
    assert code == 0 and json.loads(out)["uuid"] == guests.a
    nova = Nova(srv)
    sock_a = guestnet.metadata_socket(Path(drv.paths(guests.a).dir))
    assert sock_a.exists()
    r = nova.req("DELETE", f"/servers/{guests.a}")
    assert r.status_code == 204, r.text
    nova.wait(guests.a, "gone")
    assert not sock_a.exists()
    code, out = _wget(drv, guests.b, "/openstack/latest/meta_data.json")
    assert code == 0 and json.loads(out)["uuid"] == guests.b


def test_openstack_cli_config_drive_and_user_data(guests: Guests, tmp_path: Path) -> None:
    """The real client: ``--config-drive true --user-data FILE --property``."""
    srv, drv = guests.srv, guests.drv
    ud = tmp_path / "ud.sh"
    ud.write_bytes(SCRIPT)
    created = srv.openstack_json("server", "create", "--image", "strato-guest", "--flavor",
                                 "m1.tiny", "--nic", "none", "--config-drive", "true",
                                 "--user-data", str(ud), "--property", "k=v", "--wait",
                                 "cli-cd")
    sid = str(created["id"])  # type: ignore[index]
    try:
        shown = srv.openstack_json("server", "show", sid)
        assert shown["config_drive"] == "True"  # type: ignore[index]
        iso = Path(drv.paths(sid).dir) / "disk.config"

        def read(p: str) -> bytes:
            return subprocess.run(["isoinfo", "-R", "-i", str(iso), "-x", p],
                                  capture_output=True, check=True).stdout

        assert read("/openstack/latest/user_data") == SCRIPT
        meta = json.loads(read("/openstack/2012-08-10/meta_data.json"))
        assert meta["uuid"] == sid and meta["meta"] == {"k": "v"}
        assert set(meta) == {"uuid", "meta", "admin_pass", "hostname", "name",
                             "launch_index", "availability_zone"}
    finally:
        srv.openstack("server", "delete", "--wait", sid)


def test_forced_config_drive_and_no_password_in_the_response(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """``[compute] force_config_drive`` gives a drive to a server that did not ask;
    ``[api] enable_instance_password = false`` keeps adminPass out of the response."""
    with guest_server(tmp_path_factory.mktemp("mdf"), {
            "compute": {"force_config_drive": "true"},
            "api": {"enable_instance_password": "false"}}) as srv:
        nova = Nova(srv)
        created = _create(nova, srv, name="forced")
        assert "adminPass" not in created
        assert set(created) == {"id", "links", "OS-DCF:diskConfig", "security_groups"}
        body = nova.wait(created["id"], "ACTIVE")
        assert body["config_drive"] == "True"
        iso = Path(QemuDriver(srv.state / "instances").paths(created["id"]).dir) / \
            "disk.config"
        meta = json.loads(subprocess.run(
            ["isoinfo", "-R", "-i", str(iso), "-x", "/openstack/latest/meta_data.json"],
            capture_output=True, check=True).stdout)
        assert meta["uuid"] == created["id"] and len(meta["admin_pass"]) == 12
