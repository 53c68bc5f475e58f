"""`strato` the command: help, startup errors, policy files, graceful SIGTERM."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.support import Server, free_port, strato


def test_help_explains_every_command() -> None:
    out = strato("--help").stdout
    for command in ("serve", "bootstrap", "db", "worker", "config", "policy", "init"):
        assert command in out
    assert "--port" in strato("serve", "--help").stdout
    assert "upgrade" in strato("db", "--help").stdout


def test_bad_config_value_stops_startup_naming_the_option(tmp_path: Path) -> None:
    conf = tmp_path / "strato.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path}\n[jobs]\nworkers = many\n")
    proc = strato("serve", "--config", str(conf), check=False)
    assert proc.returncode == 2
    assert "[jobs] workers" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    strato("init", "--state-path", str(tmp_path))
    proc = strato("serve", "--config", str(tmp_path / "strato.conf"), check=False)
    assert proc.returncode == 2 and "strato db upgrade" in proc.stderr


def test_policy_file_overrides_defaults(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"identity:list_roles": "role:reader"\n'
                      '"identity:list_domains": "!"\n')
    srv = Server(tmp_path / "state", free_port(),
                 extra_conf={"oslo_policy": {"policy_file": str(policy)}})
    srv.setup()
    srv.start()
    try:
        admin = srv.token()
        with srv.client(admin) as c:
            assert c.get("/identity/v3/domains").status_code == 403  # "!" denies even admin
            project = c.post("/identity/v3/projects", json={"project": {"name": "p"}}).json()
            user = c.post("/identity/v3/users", json={"user": {
                "name": "r", "password": "pw", "default_project_id":
                project["project"]["id"]}}).json()["user"]
            reader = c.get("/identity/v3/roles").json()["roles"]
            rid = next(r["id"] for r in reader if r["name"] == "reader")
            c.put(f"/identity/v3/projects/{project['project']['id']}/users/{user['id']}"
                  f"/roles/{rid}")
        token = srv.token("r", "pw", "p")
        with srv.client(token) as c:
            assert c.get("/identity/v3/roles").status_code == 200  # granted by the file
            assert c.get("/identity/v3/users").status_code == 403  # default still applies
    finally:
        srv.stop()


def test_sigterm_finishes_the_request_in_flight(tmp_path: Path) -> None:
    srv = Server(tmp_path, free_port())
    srv.setup()
    srv.start()
    body = (b'{"auth": {"identity": {"methods": ["password"], "password": {"user": '
            b'{"name": "admin", "domain": {"id": "default"}, "password": "'
            + srv.password.encode() + b'"}}}}}')
    head = (f"POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    try:
        sock.sendall(head + body[:20])  # the request is in flight: half its body sent
        time.sleep(0.5)
        srv.proc.send_signal(15)
        time.sleep(0.5)
        assert srv.proc.poll() is None, "the server waits for the request in flight"
        sock.sendall(body[20:])
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
        assert response.startswith(b"HTTP/1.1 201"), response[:200]
        assert b"x-subject-token" in response.lower()
    finally:
        sock.close()
    assert srv.proc.wait(15) == 0
    log = srv.log.read_text()
    assert "stopping job workers after their current step" in log and "stopped" in log
    try:
        httpx.get(f"{srv.url}/identity/v3", timeout=1)
        raise AssertionError("server still answering after SIGTERM")
    except httpx.TransportError:
        pass
