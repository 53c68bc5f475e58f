"""Moves between two compute hosts (two ``strato worker`` processes, tests/multihost.py)
on PostgreSQL and Ceph, through the real `openstack` client: a resize that lands on
the other host (confirm: the source let go, the data kept; revert: back on the source
with the old flavor and the disk exactly as before), a cold migration to a named host,
and the evacuation of a server whose host was killed (with its QEMU) onto the other
host on the same RBD disk — refused while the host is up — after which the dead host,
restarted, does not keep the evacuated guest.  One cluster and one guest for the
module: each test continues from where the previous one left the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.compute.conftest import Nova, wait_console
from tests.conftest import pg_database
from tests.multihost import Cluster, Host
from tests.storage.conftest import ceph_conf

GiB = 1 << 30


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with pg_database() as url:  # several hosts share one PostgreSQL
        yield url


@pytest.fixture(scope="module")
def cluster(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("mv"), pg_url, hosts=2, ceph=ceph_conf(),
                extra_conf={
        # heartbeats every second, down after 5 s without one
        "DEFAULT": {"report_interval": "1", "service_down_time": "5"},
        "compute": {"sync_power_state_interval": "1",
                    "quota_ram": "-1", "quota_cores": "-1"}})
    c.setup()
    c.start()
    try:
        c.wait_hosts_up()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def nova(cluster: Cluster) -> Nova:
    """The admin's REST client for the reads (the actions go through `openstack`)."""
    return Nova(cluster.api, "2.88")


@pytest.fixture(scope="module")
def server(cluster: Cluster, nova: Nova) -> str:
    """One image-backed server (m1.tiny: 512 MiB, 1 vCPU, 1 GiB) with a marker file."""
    api = cluster.api
    for name, ram, vcpus, disk in (("mv-big", 640, 2, 2), ("mv-bigger", 768, 2, 3)):
        r = nova.req("POST", "/flavors", json={"flavor": {
            "name": name, "ram": ram, "vcpus": vcpus, "disk": disk}})
        assert r.status_code == 200, r.text
    s = api.openstack_json("server", "create", "--flavor", "m1.tiny", "--nic", "none",
                           "--image", "strato-guest", "--wait", f"mv-{uuid.uuid4().hex[:6]}")
    sid = str(s["id"])  # type: ignore[index]
    ready(cluster, sid)
    sh(cluster, sid, "echo one > /mnt/root/marker; sync")
    return sid


# ---------------------------------------------------------------- helpers
def running_on(cluster: Cluster, sid: str) -> Host:
    """The one host whose QEMU runs the server (in VERIFY_RESIZE the source keeps the
    stopped guest's directory for a revert)."""
    hosts = [h for h in cluster.hosts.values() if h.driver().pid(sid) is not None]
    assert len(hosts) == 1, [h.name for h in hosts]
    return hosts[0]


def ready(cluster: Cluster, sid: str) -> Host:
    """The host whose QEMU runs the server, once its guest has booted and its agent
    answers; it is the one the API names."""
    host = running_on(cluster, sid)
    assert show(cluster, sid)["OS-EXT-SRV-ATTR:host"] == host.name
    drv = host.driver()
    assert drv.pid(sid) is not None
    wait_console(drv, sid, "STRATO-GUEST-READY bootcount=")
    drv.wait_for_agent(sid)
    return host


def sh(cluster: Cluster, sid: str, script: str) -> str:
    with running_on(cluster, sid).driver().agent(sid) as ga:
        res = ga.sh(script)
        assert res.exitcode == 0, res
        return res.stdout.decode()


def show(cluster: Cluster, sid: str) -> dict[str, Any]:
    return Nova(cluster.api, "2.88").server(sid)


def wait_status(cluster: Cluster, sid: str, status: str, timeout: float = 120) -> dict:
    nova = Nova(cluster.api, "2.88")
    deadline = time.monotonic() + timeout
    while True:
        s = nova.server(sid)
        if s["status"] == status and s["OS-EXT-STS:task_state"] is None:
            return s
        assert s["status"] != "ERROR", s
        assert time.monotonic() < deadline, s
        time.sleep(0.3)


def migrations_of(cluster: Cluster, sid: str) -> list[dict[str, Any]]:
    """``os-migrations`` of the server, newest first (the admin's view)."""
    r = Nova(cluster.api, "2.80").req("GET", f"/os-migrations?instance_uuid={sid}")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["migrations"]
    return rows


def moved(m: dict[str, Any]) -> tuple[str, str, str, str]:
    return m["source_compute"], m["dest_compute"], m["migration_type"], m["status"]


def events_of(cluster: Cluster, sid: str, action: str) -> dict[str, tuple[str, str]]:
    """The events of the server's latest ``action``: name -> (result, host)."""
    nova = Nova(cluster.api, "2.62")  # events name their host from 2.62
    r = nova.req("GET", f"/servers/{sid}/os-instance-actions")
    req = next(a["request_id"] for a in r.json()["instanceActions"] if a["action"] == action)
    shown = nova.req("GET", f"/servers/{sid}/os-instance-actions/{req}").json()
    return {e["event"]: (e["result"], e["host"]) for e in shown["instanceAction"]["events"]}


def rbd(*args: str) -> str:
    return subprocess.run(["rbd", "-c", ceph_conf(), *args], check=True,
                          capture_output=True, text=True).stdout


def disk_info(sid: str) -> dict[str, Any]:
    return json.loads(rbd("info", "--format", "json", f"vms/{sid}_disk"))


def disk_snaps(sid: str) -> set[str]:
    return {s["name"] for s in json.loads(rbd("snap", "ls", "--format", "json",
                                              f"vms/{sid}_disk"))}


def other(cluster: Cluster, host: Host) -> Host:
    return next(h for h in cluster.hosts.values() if h.name != host.name)


# ---------------------------------------------------------------- tests
def test_refusals_per_microversion(cluster: Cluster, nova: Nova, server: str) -> None:
    """Nova's bodies and refusals for migrate and evacuate, checked before anything
    moves (the server's host is up)."""
    sid, host = server, running_on(cluster, server).name

    def act(version: str, body: dict, status: int, text: str) -> None:
        r = Nova(cluster.api, version).req("POST", f"/servers/{sid}/action", json=body)
        assert r.status_code == status, (body, version, r.text)
        assert text in r.json()[next(iter(r.json()))]["message"], (body, r.text)

    act("2.56", {"migrate": {"host": host, "bogus": 1}}, 400, "bogus")
    act("2.56", {"migrate": {"host": host}}, 400, "Cannot migrate to the host where")
    act("2.56", {"migrate": {"host": "nowhere"}}, 400, "Compute host nowhere could not")
    act("2.1", {"evacuate": {}}, 400, "onSharedStorage")
    act("2.1", {"evacuate": {"onSharedStorage": True, "adminPass": "x"}}, 400,
        "admin password can't be changed on existing disk")
    act("2.14", {"evacuate": {"onSharedStorage": False}}, 400, "onSharedStorage")
    act("2.29", {"evacuate": {"force": True}}, 400, "Can't force to a non-provided")
    act("2.68", {"evacuate": {"host": host, "force": True}}, 400, "force")
    act("2.14", {"evacuate": {"host": "nowhere"}}, 404, "Compute host nowhere not found.")
    act("2.14", {"evacuate": {"host": host}}, 400, "The target host can't be the same one.")
    act("2.14", {"evacuate": {}}, 400, f"Compute service of {host} is still in use.")
    act("2.92", {"evacuate": {"adminPass": "pw"}}, 400, "is still in use")
    # admin-only: a member of the server's own project is forbidden both
    ks = cluster.api.client(nova.token)
    project = ks.get("/identity/v3/projects?name=admin").json()["projects"][0]["id"]
    role = ks.get("/identity/v3/roles?name=member").json()["roles"][0]["id"]
    name, password = f"mv-member-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    user = ks.post("/identity/v3/users", json={"user": {
        "name": name, "password": password, "domain_id": "default"}}).json()["user"]["id"]
    assert ks.put(f"/identity/v3/projects/{project}/users/{user}/roles/{role}") \
        .status_code == 204
    member = cluster.api.client(cluster.api.token(name, password))
    for body in ({"migrate": None}, {"evacuate": {}}):
        r = member.post(f"/compute/v2.1/servers/{sid}/action", json=body,
                        headers={"OpenStack-API-Version": "compute 2.88"})
        assert r.status_code == 403, r.text
        assert "os_compute_api:os-" in r.json()["forbidden"]["message"]
    assert migrations_of(cluster, sid) == []  # nothing was recorded
    assert nova.server(sid)["status"] == "ACTIVE"


def test_resize_moves_to_the_other_host_and_confirm(cluster: Cluster, nova: Nova,
                                                    server: str) -> None:
    t0 = time.monotonic()
    sid, src = server, running_on(cluster, server)
    cluster.api.openstack("server", "resize", "--flavor", "mv-big", "--wait", sid)
    s = wait_status(cluster, sid, "VERIFY_RESIZE")
    dest = ready(cluster, sid)
    assert dest.name != src.name, "allow_resize_to_same_host is false: another host"
    assert s["flavor"]["original_name"] == "mv-big"
    # the guest runs on the same RBD image, grown, with its data
    assert disk_info(sid)["size"] == 2 * GiB
    assert sh(cluster, sid, "cat /mnt/root/marker").strip() == "one"
    assert sh(cluster, sid, "nproc").strip() == "2"
    assert src.driver().pid(sid) is None  # stopped on the source, kept for a revert
    m = migrations_of(cluster, sid)[0]
    assert moved(m) == (src.name, dest.name, "resize", "finished"), m
    for action in ({"migrate": None}, {"evacuate": {}}, {"resize": {"flavorRef": "1"}}):
        r = nova.req("POST", f"/servers/{sid}/action", json=action)
        assert r.status_code == 409, r.text  # VERIFY_RESIZE: only confirm or revert
        assert "vm_state resized" in r.json()["conflictingRequest"]["message"]
    ev = events_of(cluster, sid, "resize")
    assert ev["compute_prep_resize"] == ("Success", src.name), ev
    assert ev["compute_resize_instance"] == ("Success", src.name), ev
    assert ev["compute_finish_resize"] == ("Success", dest.name), ev

    cluster.api.openstack("server", "resize", "confirm", sid)
    s = wait_status(cluster, sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == dest.name and s["flavor"]["original_name"] == "mv-big"
    deadline = time.monotonic() + 30
    while sid in src.driver().list_instances():  # the source's guest directory goes
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert migrations_of(cluster, sid)[0]["status"] == "confirmed"
    assert not {n for n in disk_snaps(sid) if n.startswith("resize-")}
    ev = events_of(cluster, sid, "confirmResize")
    assert ev["compute_confirm_resize"] == ("Success", src.name), ev
    assert sh(cluster, sid, "cat /mnt/root/marker").strip() == "one"
    print(f"resize across hosts + confirm: {time.monotonic() - t0:.1f}s")


def test_resize_revert_returns_to_the_source_as_before(cluster: Cluster,
                                                       server: str) -> None:
    t0 = time.monotonic()
    sid, src = server, running_on(cluster, server)
    sh(cluster, sid, "echo two > /mnt/root/marker; sync")
    before = disk_info(sid)["size"]
    cluster.api.openstack("server", "resize", "--flavor", "mv-bigger", "--wait", sid)
    wait_status(cluster, sid, "VERIFY_RESIZE")
    dest = ready(cluster, sid)
    assert dest.name != src.name
    assert disk_info(sid)["size"] == 3 * GiB
    sh(cluster, sid, "echo three > /mnt/root/marker; sync")  # undone by the revert

    cluster.api.openstack("server", "resize", "revert", sid)
    s = wait_status(cluster, sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == src.name and s["flavor"]["original_name"] == "mv-big"
    back = ready(cluster, sid)
    assert back.name == src.name
    assert sid not in dest.driver().list_instances()  # the destination let it go
    assert disk_info(sid)["size"] == before
    assert sh(cluster, sid, "cat /mnt/root/marker").strip() == "two"
    m = migrations_of(cluster, sid)[0]
    assert moved(m) == (src.name, dest.name, "resize", "reverted"), m
    ev = events_of(cluster, sid, "revertResize")
    assert ev["compute_revert_resize"] == ("Success", dest.name), ev
    assert ev["compute_finish_revert_resize"] == ("Success", src.name), ev
    print(f"resize across hosts + revert: {time.monotonic() - t0:.1f}s")


def test_cold_migrate_to_a_named_host(cluster: Cluster, server: str) -> None:
    """A stopped server this time: it stays stopped through the move, and starts on
    its new host."""
    t0 = time.monotonic()
    api, sid = cluster.api, server
    src = running_on(cluster, sid)
    dest = other(cluster, src)
    same = api.openstack("server", "migrate", "--host", src.name, sid, check=False)
    assert same.returncode != 0 and "Cannot migrate to the host where the server " \
        "resides" in same.stderr, same.stderr
    api.openstack("server", "stop", sid)
    wait_status(cluster, sid, "SHUTOFF")

    api.openstack("server", "migrate", "--host", dest.name, "--wait", sid)
    s = wait_status(cluster, sid, "VERIFY_RESIZE")
    assert s["OS-EXT-SRV-ATTR:host"] == dest.name and s["OS-EXT-STS:power_state"] == 4
    assert sid in dest.driver().list_instances()  # defined there, not started
    assert all(h.driver().pid(sid) is None for h in cluster.hosts.values())
    m = migrations_of(cluster, sid)[0]
    assert moved(m) == (src.name, dest.name, "migration", "finished"), m
    api.openstack("server", "migrate", "confirm", sid)
    s = wait_status(cluster, sid, "SHUTOFF")
    assert s["OS-EXT-SRV-ATTR:host"] == dest.name and s["flavor"]["original_name"] == "mv-big"
    assert migrations_of(cluster, sid)[0]["status"] == "confirmed"
    assert sid not in src.driver().list_instances()
    api.openstack("server", "start", sid)  # routed to its new host
    wait_status(cluster, sid, "ACTIVE")
    assert ready(cluster, sid).name == dest.name
    assert sh(cluster, sid, "cat /mnt/root/marker").strip() == "two"
    print(f"cold migrate --host of a stopped server + confirm + start: "
          f"{time.monotonic() - t0:.1f}s")


def test_evacuate_a_dead_host(cluster: Cluster, server: str) -> None:
    t0 = time.monotonic()
    api, sid = cluster.api, server
    dead = running_on(cluster, sid)
    alive = other(cluster, dead)
    sh(cluster, sid, "echo four > /mnt/root/marker; sync")

    refused = api.openstack("server", "evacuate", sid, check=False)
    assert refused.returncode != 0 and f"Compute service of {dead.name} is still in " \
        "use" in refused.stderr, refused.stderr

    # the host dies with its guests (their directories stay, as after a power cut)
    pid = dead.driver().pid(sid)
    assert pid is not None
    dead.kill9()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        hyps = Nova(api, "2.88").req("GET", "/os-hypervisors/detail").json()
        rows = {h["hypervisor_hostname"]: h["state"] for h in hyps["hypervisors"]}
        if rows[dead.name] == "down":
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)
    t_down = time.monotonic()

    # (no --wait: openstackclient 10.5 compares the lower-cased status with "ACTIVE")
    api.openstack("server", "evacuate", sid)
    s = wait_status(cluster, sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == alive.name
    drv = alive.driver()
    wait_console(drv, sid, "STRATO-GUEST-READY bootcount=")
    drv.wait_for_agent(sid)
    with drv.agent(sid) as ga:  # the same RBD disk: what was written before is there
        assert ga.sh("cat /mnt/root/marker").stdout.decode().strip() == "four"
    m = migrations_of(cluster, sid)[0]
    assert moved(m) == (dead.name, alive.name, "evacuation", "done"), m
    ev = events_of(cluster, sid, "evacuate")
    assert ev["compute_rebuild_instance"] == ("Success", alive.name), ev
    took = time.monotonic() - t_down
    assert sid in dead.driver().list_instances()  # the dead host's leftovers, still

    # the dead host comes back: its agent destroys the evacuated guest, never its disk
    dead.start()
    cluster.wait_hosts_up()
    deadline = time.monotonic() + 30
    while sid in dead.driver().list_instances():
        assert time.monotonic() < deadline, "the evacuated guest stayed on its old host"
        time.sleep(0.3)
    assert dead.driver().pid(sid) is None
    assert migrations_of(cluster, sid)[0]["status"] == "completed"
    time.sleep(2)  # a few power syncs of both hosts
    s = show(cluster, sid)
    assert (s["status"], s["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", alive.name), s
    assert drv.pid(sid) is not None
    with drv.agent(sid) as ga:
        assert ga.sh("cat /mnt/root/marker").stdout.decode().strip() == "four"
    print(f"evacuate: {took:.1f}s from host down to ACTIVE elsewhere; "
          f"all {time.monotonic() - t0:.1f}s")


def test_delete_in_verify_resize_then_the_source_restarts(cluster: Cluster,
                                                         server: str) -> None:
    """A stopped server resized to the other host (defined there, not started) and
    deleted in VERIFY_RESIZE: the delete cleans the destination and the disk; the
    source's stale guest directory goes when its worker restarts.  Nothing is left."""
    api, sid = cluster.api, server
    src = running_on(cluster, sid)
    api.openstack("server", "stop", sid)
    wait_status(cluster, sid, "SHUTOFF")
    api.openstack("server", "resize", "--flavor", "mv-bigger", "--wait", sid)
    dest = cluster.hosts[show(cluster, sid)["OS-EXT-SRV-ATTR:host"]]
    assert dest.name != src.name
    assert sid in src.driver().list_instances() and sid in dest.driver().list_instances()
    api.openstack("server", "delete", "--wait", sid)
    assert sid not in dest.driver().list_instances()
    assert f"{sid}_disk" not in rbd("ls", "-p", "vms").split()
    assert sid in src.driver().list_instances()  # the source was not told
    src.stop()
    src.start()
    cluster.wait_hosts_up()
    deadline = time.monotonic() + 30
    while sid in src.driver().list_instances():
        assert time.monotonic() < deadline, "the deleted server's guest stayed"
        time.sleep(0.3)
    for h in cluster.hosts.values():
        assert h.driver().list_instances() == [], h.name
