"""The test harness for networking: what test servers run with, the leak snapshots,
and ``strato network teardown``."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

from strato.config import load
from tests.network.leaks import Snapshot, dnsmasq_pids, host_tables
from tests.support import Server, free_port, strato


def test_test_servers_use_the_usermode_data_plane_and_no_public_network(
        tmp_path: Path) -> None:
    srv = Server(tmp_path / "a", free_port())
    srv.setup()
    conf = load(srv.conf)
    assert conf.network.dataplane == "usermode" and conf.network.public_cidr == ""
    assert not srv.linux_dataplane
    asked = Server(tmp_path / "b", free_port(), extra_conf={"network": {
        "dataplane": "linux", "public_cidr": "198.18.151.0/24"}})
    assert asked.linux_dataplane
    assert asked.network_conf["public_cidr"] == "198.18.151.0/24"


def test_a_snapshot_sees_a_new_namespace_and_its_removal() -> None:
    ns = f"sleak-{uuid.uuid4().hex[:6]}"
    before = Snapshot.take()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        leaks = Snapshot.take().leaked_since(before, tag=ns)
        assert leaks.namespaces == {ns} and bool(leaks)
        assert ns in str(leaks)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert not Snapshot.take().leaked_since(before, tag=ns)
    assert not Snapshot.take().owned_by(ns)


def test_ruleset_tables_and_dnsmasq_listing() -> None:
    text = "table inet filter {\n}\ntable ip sn-ab12-nat {\n}\n"
    assert host_tables(text) == {"inet filter", "ip sn-ab12-nat"}
    assert all(isinstance(pid, int) for pid in dnsmasq_pids())


def test_network_teardown_of_a_fresh_deployment(tmp_path: Path) -> None:
    """On a deployment that never ran, teardown succeeds and nothing carries its tag."""
    tag = "th" + uuid.uuid4().hex[:2]
    srv = Server(tmp_path / "t", free_port(), extra_conf={"network": {
        "dataplane": "linux", "dataplane_id": tag}})
    strato("init", "--state-path", str(srv.state), "--port", str(srv.port))
    text = srv.conf.read_text().replace(
        "[network]\n", f"[network]\ndataplane = linux\ndataplane_id = {tag}\n", 1)
    srv.conf.write_text(text)
    done = strato("network", "teardown", "--config", str(srv.conf), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not Snapshot.take().owned_by(tag)
