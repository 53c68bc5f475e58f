"""Three compute hosts as three ``strato worker`` processes beside one API process, on
PostgreSQL (issue 20's groundwork, tests/multihost.py): the hosts register and are
listed up, servers spread over them, every job of a guest runs on the guest's host,
and a host whose worker is killed is reported down."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.compute.conftest import wait_console
from tests.multihost import Cluster


@pytest.fixture
def pg_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("several hosts share one PostgreSQL")
    return db_url


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    # heartbeats every second, down after 5 s without one (Nova's defaults: 10 s, 60 s;
    # measured with them: reported down 51.7 s after kill -9)
    c = Cluster(tmp_path, pg_url, hosts=3, extra_conf={
        "DEFAULT": {"report_interval": "1", "service_down_time": "5"},
        "compute": {"sync_power_state_interval": "1", "quota_ram": "-1",
                    "quota_cores": "-1"}})
    c.setup()
    c.start()
    try:
        yield c
    finally:
        c.stop()


def jobs_of(pg_url: str, instance_id: str) -> list[tuple[int, str, str, str]]:
    url = make_url(pg_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         dbname=url.database) as conn:
        return list(conn.execute(
            "SELECT id, name, target, state FROM jobs WHERE payload->>'instance_id' = %s "
            "ORDER BY id", (instance_id,)))


def ran_on(cluster: Cluster, job_id: int, name: str) -> list[str]:
    """The hosts whose worker log says it started this job."""
    pat = re.compile(rf"job {job_id} {re.escape(name)} \(attempt")
    return [h.name for h in cluster.hosts.values()
            if h.log.exists() and pat.search(h.log.read_text())]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_three_hosts_spread_route_and_go_down(cluster: Cluster, pg_url: str) -> None:
    api = cluster.api
    t0 = time.monotonic()
    hyps = cluster.wait_hosts_up()
    print(f"three hypervisors up {time.monotonic() - t0:.1f}s after start: {hyps}")
    names = sorted(r["Hypervisor Hostname"] for r in hyps)
    assert names == ["host1", "host2", "host3"]  # the API host runs no guests
    services = api.openstack_json("compute", "service", "list")
    computes = {s["Host"]: s for s in services if s["Binary"] == "nova-compute"}
    assert sorted(computes) == names
    assert all(s["State"] == "up" and s["Status"] == "enabled" for s in computes.values())

    # three servers land on three hosts (free RAM spreads them)
    where: dict[str, str] = {}
    for _ in range(3):
        s = api.openstack_json("server", "create", "--flavor", "m1.tiny", "--nic", "none",
                               "--image", "strato-guest",
                               "--wait", f"mh-{uuid.uuid4().hex[:6]}")
        sid = str(s["id"])  # type: ignore[index]
        shown = api.openstack_json("server", "show", sid)
        where[sid] = shown["OS-EXT-SRV-ATTR:host"]  # type: ignore[index]
        assert cluster.host_of(sid).name == where[sid]
    print("placement:", where)
    assert sorted(where.values()) == names

    # every job of a guest runs on its host: stop, start, snapshot, delete
    for sid, host in where.items():
        drv = cluster.hosts[host].driver()
        wait_console(drv, sid, "STRATO-GUEST-READY bootcount=")
    first = next(iter(where))
    api.openstack("server", "stop", first)
    deadline = time.monotonic() + 60
    while api.openstack_json("server", "show", first)["status"] != "SHUTOFF":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.5)
    api.openstack("server", "start", first)
    while api.openstack_json("server", "show", first)["status"] != "ACTIVE":  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.5)
    api.openstack("server", "image", "create", "--wait", "--name", "mh-snap", first)
    for sid in where:
        api.openstack("server", "delete", "--wait", sid)
    for sid, host in where.items():
        jobs = jobs_of(pg_url, sid)
        print(sid, host, jobs)
        assert {n for _, n, _, _ in jobs} >= {"compute.build", "compute.delete"}
        for job_id, name, target, state in jobs:
            assert target == f"host:{host}", (name, target)
            assert state == "done", (job_id, name, state)
            assert ran_on(cluster, job_id, name) == [host], (job_id, name)
    assert {"compute.power", "compute.snapshot"} <= {n for _, n, _, _ in jobs_of(pg_url, first)}

    # kill -9 one worker: its host goes down after the service down time
    victim = cluster.hosts["host2"]
    victim.kill9()
    t0 = time.monotonic()
    deadline = t0 + 120
    while True:
        rows = {r["Hypervisor Hostname"]: r["State"]
                for r in api.openstack_json("hypervisor", "list")}  # type: ignore[union-attr]
        if rows["host2"] == "down":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(1)
    took = time.monotonic() - t0
    print(f"host2 reported down {took:.1f}s after kill -9")
    assert 3 < took < 15, took  # service_down_time = 5, report_interval = 1
    assert rows == {"host1": "up", "host2": "down", "host3": "up"}
    down = {s["Host"]: s["State"] for s in api.openstack_json(
        "compute", "service", "list", "--service", "nova-compute")}  # type: ignore[union-attr]
    assert down == {"host1": "up", "host2": "down", "host3": "up"}


