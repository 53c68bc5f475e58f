"""Scheduling across three real compute hosts (tests/multihost.py) on PostgreSQL,
through the real ``openstack`` client: the hosts' views (hypervisor list/show per
microversion, compute service list/set, aggregates, availability zones) and where
servers land (disabled host, zone, aggregate metadata, server groups, hints), then
concurrent creates racing for the last room.

No guest boots: the three workers register (real capacity, heartbeats) and are then
stopped while ``service_down_time`` is an hour, so the hosts stay up for the scheduler
and every server's build job waits for a worker that never comes back."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import pg_database
from tests.multihost import Cluster
from tests.support import Server

NO_HOST = "No valid host was found. There are not enough hosts available."
HOSTS = ["host1", "host2", "host3"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with pg_database() as url:  # several hosts share one PostgreSQL
        yield from _cluster(tmp_path_factory, url)


def _cluster(tmp_path_factory: pytest.TempPathFactory, url: str) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("sch")), url, hosts=3, extra_conf={
        "DEFAULT": {"report_interval": "1", "service_down_time": "3600"},
        "compute": {"reserved_host_memory_mb": "0", "ram_allocation_ratio": "1.0",
                    "cpu_allocation_ratio": "16.0",
                    "quota_ram": "-1", "quota_cores": "-1", "quota_instances": "-1"}})
    try:
        c.setup()
        c.start()
        yield c
    finally:
        c.stop()


class Api:
    """The admin's HTTP client for what the CLI does not show (the raw shapes)."""

    def __init__(self, server: Server) -> None:
        self.srv = server
        self.http = server.client(server.token())

    def get(self, path: str, version: str = "2.1") -> Any:
        r = self.http.get(f"/compute/v2.1{path}",
                          headers={"X-OpenStack-Nova-API-Version": version})
        assert r.status_code == 200, r.text
        return r.json()

    def host_of(self, sid: str) -> str | None:
        return self.get(f"/servers/{sid}")["server"]["OS-EXT-SRV-ATTR:host"]

    def server(self, sid: str) -> dict:
        return self.get(f"/servers/{sid}")["server"]

    def boot(self, zone: str | None = None, flavor: str = "1", **hints: Any) -> str:
        """POST /servers (2.37, no NIC, m1.tiny) with ``os:scheduler_hints``."""
        if not hasattr(self, "image"):
            self.image = self.get("/images?name=strato-guest")["images"][0]["id"]
        ref: dict[str, Any] = {"name": f"sch-{uuid.uuid4().hex[:6]}", "flavorRef": flavor,
                               "imageRef": self.image, "networks": "none"}
        if zone:
            ref["availability_zone"] = zone
        r = self.http.post("/compute/v2.1/servers", json={
            "server": ref, **({"os:scheduler_hints": hints} if hints else {})},
            headers={"X-OpenStack-Nova-API-Version": "2.37"})
        assert r.status_code == 202, r.text
        return str(r.json()["server"]["id"])


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Api:
    return Api(cluster.api)


def create(srv: Server, *args: str, version: str | None = None) -> str:
    """A server through the CLI (no --wait: where it lands is known at once)."""
    pre = ("--os-compute-api-version", version) if version else ()
    out = srv.openstack_json(*pre, "server", "create", "--flavor", "m1.tiny",
                             "--image", "strato-guest", "--nic", "none", *args,
                             f"sch-{uuid.uuid4().hex[:6]}")
    return str(out["id"])  # type: ignore[index]


def test_hosts_views(cluster: Cluster, api: Api) -> None:
    """hypervisor list/show with each host's real figures, below and from 2.88;
    compute service list/set --disable (reason) / --enable / --down; aggregates and
    availability zones; then the workers stop (their hosts stay up for an hour)."""
    srv = cluster.api
    rows = cluster.wait_hosts_up()
    assert sorted(r["Hypervisor Hostname"] for r in rows) == HOSTS
    with open("/proc/meminfo") as f:
        total_mb = int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1]) // 1024
    long = {r["Hypervisor Hostname"]: r for r in srv.openstack_json(
        "--os-compute-api-version", "2.87", "hypervisor", "list", "--long")}
    for h in HOSTS:
        assert long[h]["Memory MB"] == total_mb and long[h]["vCPUs"] > 0, long[h]
        assert long[h]["State"] == "up" and long[h]["vCPUs Used"] == 0
    shown = srv.openstack_json("--os-compute-api-version", "2.87", "hypervisor", "show",
                               "host2")
    assert shown["memory_mb"] == total_mb and shown["running_vms"] == 0  # type: ignore[index]
    assert shown["service_host"] == "host2", shown  # type: ignore[index]
    # host2's uptime, from its agent (os-hypervisors/{id}/uptime, parsed by the CLI)
    assert shown.get("host_time") and shown.get("load_average"), shown  # type: ignore[union-attr]
    # 2.88: the figures are gone from the body (placement has them in Nova)
    body = api.get("/os-hypervisors/detail", "2.88")["hypervisors"]
    assert sorted(b["hypervisor_hostname"] for b in body) == HOSTS
    for b in body:
        assert not {"vcpus", "memory_mb", "local_gb", "running_vms", "free_ram_mb",
                    "cpu_info", "current_workload", "disk_available_least"} & set(b), b
        assert {"uptime", "service", "host_ip", "state", "status"} <= set(b)
    old = api.get("/os-hypervisors/detail", "2.87")["hypervisors"]
    assert all(b["memory_mb"] == total_mb and b["free_ram_mb"] == total_mb for b in old)
    assert api.http.get("/compute/v2.1/os-hypervisors/statistics", headers={
        "X-OpenStack-Nova-API-Version": "2.88"}).status_code == 404
    # each host's own facts, from its agent's heartbeat
    assert all(b["uptime"] and " up " in b["uptime"] for b in body), body

    # the workers stop; an hour's service_down_time keeps their hosts up
    for h in cluster.hosts.values():
        h.stop()
    srv.openstack("compute", "service", "set", "--disable", "--disable-reason",
                  "maintenance", "host1", "nova-compute")
    services = {s["Host"]: s for s in srv.openstack_json(
        "compute", "service", "list", "--long", "--service", "nova-compute")}
    assert services["host1"]["Status"] == "disabled"
    assert services["host1"]["Disabled Reason"] == "maintenance"
    assert all(services[h]["State"] == "up" for h in HOSTS)
    assert services["host2"]["Status"] == "enabled"
    hyp = api.get("/os-hypervisors", "2.53")["hypervisors"]
    assert sorted(h["hypervisor_hostname"] for h in hyp if h["state"] == "up") == HOSTS

    # a disabled host takes no new server
    placed = [api.host_of(api.boot()) for _ in range(3)]
    assert "host1" not in placed and sorted(set(placed)) == ["host2", "host3"], placed
    srv.openstack("compute", "service", "set", "--enable", "host1", "nova-compute")
    # forced down (2.11): down for the scheduler too
    srv.openstack("--os-compute-api-version", "2.11", "compute", "service", "set",
                  "--down", "host1", "nova-compute")
    down = {s["Host"]: s for s in srv.openstack_json(
        "--os-compute-api-version", "2.11", "compute", "service", "list", "--long",
        "--service",
        "nova-compute")}
    assert down["host1"]["State"] == "down" and down["host1"]["Forced Down"] is True
    assert api.host_of(api.boot()) != "host1"
    srv.openstack("--os-compute-api-version", "2.11", "compute", "service", "set",
                  "--up", "host1", "nova-compute")
    # the servers placed count on their hosts: running_vms and RAM used (pre-2.88)
    counts = Counter(placed)
    detail = {b["hypervisor_hostname"]: b for b in
              api.get("/os-hypervisors/detail", "2.87")["hypervisors"]}
    for h in ("host2", "host3"):
        assert detail[h]["running_vms"] >= counts[h]
        assert detail[h]["memory_mb_used"] == 512 * detail[h]["running_vms"]

    # an aggregate with a zone: availability zone list shows it; --availability-zone
    srv.openstack("aggregate", "create", "--zone", "az-a", "agg-a")
    srv.openstack("aggregate", "add", "host", "agg-a", "host2")
    srv.openstack("aggregate", "set", "--property", "ssd=true", "agg-a")
    agg = srv.openstack_json("aggregate", "show", "agg-a")
    assert agg["availability_zone"] == "az-a" and agg["hosts"] == ["host2"]  # type: ignore[index]
    assert agg["properties"] == {"ssd": "true"}  # type: ignore[index]
    zones = {z["Zone Name"]: z["Zone Status"] for z in
             srv.openstack_json("availability", "zone", "list", "--compute")}
    # (an admin sees the scheduler's and conductor's "internal" zone too, as in Nova)
    assert zones == {"az-a": "available", "nova": "available", "internal": "available"}
    member_zones = api.get("/os-availability-zone")["availabilityZoneInfo"]
    assert sorted(z["zoneName"] for z in member_zones) == ["az-a", "nova"]
    detail_zones = srv.openstack_json("availability", "zone", "list", "--compute", "--long")
    where = {(z["Zone Name"], z["Host Name"]) for z in detail_zones  # type: ignore[union-attr]
             if z.get("Service Name") == "nova-compute"}
    assert where == {("az-a", "host2"), ("nova", "host1"), ("nova", "host3")}, where
    for sid in (create(srv, "--availability-zone", "az-a"), api.boot(zone="az-a")):
        s = api.server(sid)
        assert s["OS-EXT-SRV-ATTR:host"] == "host2"
        assert s["OS-EXT-AZ:availability_zone"] == "az-a"
    bad = api.http.post("/compute/v2.1/servers", json={"server": {
        "name": "sch-bad", "flavorRef": "1", "networks": "none", "imageRef": api.image,
        "availability_zone": "nowhere"}}, headers={"X-OpenStack-Nova-API-Version": "2.37"})
    assert bad.status_code == 400 and "availability zone" in bad.text, bad.text
    # a flavor asking for the aggregate's metadata lands in it (no zone asked)
    srv.openstack("flavor", "create", "--ram", "512", "--disk", "1", "--vcpus", "1",
                  "--property", "aggregate_instance_extra_specs:ssd=true", "--id",
                  "sch-ssd", "sch-ssd")
    assert api.host_of(api.boot(flavor="sch-ssd")) == "host2"


def group(srv: Server, policy: str, version: str = "2.15") -> str:
    g = srv.openstack_json("--os-compute-api-version", version, "server", "group",
                           "create", "--policy", policy, f"g-{uuid.uuid4().hex[:6]}")
    return str(g["id"])  # type: ignore[index]


def http_group(api: Api, policy: str) -> str:
    r = api.http.post("/compute/v2.1/os-server-groups", json={"server_group": {
        "name": f"g-{uuid.uuid4().hex[:6]}", "policy": policy}},
        headers={"X-OpenStack-Nova-API-Version": "2.64"})
    assert r.status_code == 200, r.text
    return str(r.json()["server_group"]["id"])


def set_service(api: Api, host: str, status: str) -> None:
    sid = next(s["id"] for s in api.get("/os-services?binary=nova-compute", "2.53")[
        "services"] if s["host"] == host)
    r = api.http.put(f"/compute/v2.1/os-services/{sid}", json={"status": status},
                     headers={"X-OpenStack-Nova-API-Version": "2.53"})
    assert r.status_code == 200, r.text


def test_groups_and_hints(cluster: Cluster, api: Api) -> None:
    """affinity: every member on one host (the spread used to pick another host for
    the second member and fail it); anti-affinity: three hosts, a fourth member refused
    with Nova's fault; soft anti-affinity: the fourth allowed; same_host /
    different_host hints; a malformed hint is a 400."""
    srv = cluster.api
    aff = http_group(api, "affinity")
    hosts = {api.host_of(create(srv, "--hint", f"group={aff}")),
             *(api.host_of(api.boot(group=aff)) for _ in range(2))}
    assert len(hosts) == 1 and None not in hosts, hosts

    anti = group(srv, "anti-affinity")
    members = [api.boot(group=anti) for _ in range(3)]
    assert sorted(str(api.host_of(m)) for m in members) == HOSTS
    fourth = api.boot(group=anti)
    s = api.server(fourth)
    assert s["status"] == "ERROR" and s["OS-EXT-SRV-ATTR:host"] is None
    assert s["fault"]["message"] == NO_HOST and s["fault"]["code"] == 500
    shown = srv.openstack_json("server", "show", fourth)
    assert NO_HOST in str(shown["fault"])  # type: ignore[index]

    soft = http_group(api, "soft-anti-affinity")
    placed = [api.host_of(api.boot(group=soft)) for _ in range(4)]
    assert sorted(set(placed)) == HOSTS and None not in placed, placed

    # 2.64 max_server_per_host: two per host
    two = srv.openstack_json("--os-compute-api-version", "2.64", "server", "group",
                             "create", "--policy", "anti-affinity", "--rule",
                             "max_server_per_host=2", f"g-{uuid.uuid4().hex[:6]}")
    gid = str(two["id"])  # type: ignore[index]
    placed = [api.host_of(api.boot(group=gid)) for _ in range(6)]
    assert Counter(placed) == dict.fromkeys(HOSTS, 2), placed
    assert api.server(api.boot(group=gid))["status"] == "ERROR"

    a, b = members[0], members[1]
    ha, hb = api.host_of(a), api.host_of(b)
    assert api.host_of(create(srv, "--hint", f"same_host={a}")) == ha
    third = api.host_of(api.boot(different_host=[a, b]))
    assert third not in (ha, hb) and third in HOSTS

    # 2.74: an admin names the host; the filters still apply (host1 disabled: ERROR)
    assert api.host_of(create(srv, "--host", "host3", version="2.74")) == "host3"
    set_service(api, "host1", "disabled")
    r = api.http.post("/compute/v2.1/servers", json={"server": {
        "name": "sch-74", "flavorRef": "1", "networks": "none", "imageRef": api.image,
        "host": "host1"}}, headers={"X-OpenStack-Nova-API-Version": "2.74"})
    assert r.status_code == 202, r.text
    assert api.server(r.json()["server"]["id"])["status"] == "ERROR"
    set_service(api, "host1", "enabled")
    r = api.http.post("/compute/v2.1/servers", json={"server": {
        "name": "sch-74", "flavorRef": "1", "networks": "none", "imageRef": api.image,
        "host": "nowhere"}}, headers={"X-OpenStack-Nova-API-Version": "2.74"})
    assert r.status_code == 400 and "nowhere" in r.text, r.text

    # malformed hints: Nova's schema, 400 before anything is made
    for hints in ({"group": "not-a-uuid"}, {"same_host": 5}, {"cidr": "10.0.0.0/24"},
                  {"build_near_host_ip": "nope"}, "group"):
        r = api.http.post("/compute/v2.1/servers", json={
            "server": {"name": "sch-bad", "flavorRef": "1", "networks": "none",
                       "imageRef": api.image},
            "os:scheduler_hints": hints},
            headers={"X-OpenStack-Nova-API-Version": "2.37"})
        assert r.status_code == 400, (hints, r.text)


def test_concurrent_creates_never_overcommit(cluster: Cluster, api: Api) -> None:
    """Many concurrent POST /servers race for the room left on the three hosts: a
    flavor sized to half the least free RAM of a host; exactly as many get a host as fit (computed
    from the hypervisors' figures), the others are ERROR NoValidHost, and no host
    holds more RAM than it has."""
    srv = cluster.api
    before = {b["hypervisor_hostname"]: b for b in
              api.get("/os-hypervisors/detail", "2.87")["hypervisors"]}
    room = {h: b["memory_mb"] - b["memory_mb_used"] for h, b in before.items()}
    ram = min(room.values()) // 2  # two fit on the host with the least room
    fits = {h: r // ram for h, r in room.items()}
    expected = sum(fits.values())
    assert 6 <= expected <= 9, fits
    flavor = srv.openstack_json("flavor", "create", "--ram", str(ram), "--disk", "1",
                                "--vcpus", "1", "sch-half")
    image = str(srv.openstack_json("image", "show", "strato-guest")["id"])  # type: ignore[index]
    n = expected + 6
    # one project each: the quota engine locks a project's usage rows, which would
    # serialize one project's creates before they reach the scheduler
    tokens = []
    with srv.client(srv.token()) as c:
        uid = c.post("/identity/v3/users", json={"user": {
            "name": "racer", "password": "pw-racer"}}).json()["user"]["id"]
        role = c.get("/identity/v3/roles", params={"name": "member"}).json()["roles"][0]
        for i in range(n):
            pid = c.post("/identity/v3/projects", json={"project": {
                "name": f"race-{i}"}}).json()["project"]["id"]
            assert c.put(f"/identity/v3/projects/{pid}/users/{uid}/roles/{role['id']}"
                         ).status_code == 204
            tokens.append(srv.token("racer", "pw-racer", f"race-{i}"))
    start = threading.Barrier(n)
    ids: list[str] = []
    errors: list[str] = []

    def boot(i: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=60, headers={
                "X-Auth-Token": tokens[i], "X-OpenStack-Nova-API-Version": "2.37"}) as c:
            start.wait()
            r = c.post("/compute/v2.1/servers", json={"server": {
                "name": f"race-{i}", "flavorRef": flavor["id"],  # type: ignore[index]
                "imageRef": image, "networks": "none"}})
            (ids if r.status_code == 202 else errors).append(
                r.json()["server"]["id"] if r.status_code == 202 else r.text)

    t0 = time.monotonic()
    threads = [threading.Thread(target=boot, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    print(f"{n} concurrent creates answered in {time.monotonic() - t0:.2f}s")
    assert not errors and len(ids) == n, errors
    servers = [api.server(i) for i in ids]
    got = [s for s in servers if s["OS-EXT-SRV-ATTR:host"]]
    refused = [s for s in servers if not s["OS-EXT-SRV-ATTR:host"]]
    print("placed:", Counter(s["OS-EXT-SRV-ATTR:host"] for s in got), "fits:", fits)
    assert len(got) == expected and len(refused) == n - expected
    assert all(s["status"] == "ERROR" and s["fault"]["message"] == NO_HOST
               for s in refused)
    assert Counter(s["OS-EXT-SRV-ATTR:host"] for s in got) == {
        h: k for h, k in fits.items() if k}
    after = api.get("/os-hypervisors/detail", "2.87")["hypervisors"]
    for b in after:
        assert b["memory_mb_used"] <= b["memory_mb"], b
