"""Live migration between two compute hosts (two ``strato worker`` processes beside one
API process on PostgreSQL, tests/multihost.py), through the real ``openstack`` client.

One cluster: Glance images and Cinder volumes on Ceph, instance disks on the local
engine.  So a server booted from a Ceph volume moves on shared storage (the destination
QEMU opens the same RBD image), and an image-backed server's disk is block-migrated
(mirrored over NBD to a new image in the block store).  In both, a guest writing an
increasing counter to its console and its disk every ~20 ms moves to the other host:
the counter never goes back or skips, the guest never boots again, the instance's host
flips, the source QEMU is gone.  ``server migration list/show`` show the figures while
it runs; an abort leaves the guest where it is; force-complete finishes a migration;
a snapshot after the move runs on the new host.  The migration's bandwidth is held at
16 MiB/s so a migration lasts a few seconds: long enough to watch, abort and force it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, wait_console
from tests.conftest import pg_database
from tests.multihost import Cluster, Host, jobs_of, ran_on
from tests.ticks import TICKER, Ticks

CONF = {"DEFAULT": {"report_interval": "1", "service_down_time": "10"},
        # a killed worker's job is taken over 6 s after its last lease renewal
        "jobs": {"lease_seconds": "6"},
        "compute": {"sync_power_state_interval": "1", "quota_ram": "-1",
                    "quota_cores": "-1", "live_migration_bandwidth": "16",
                    "shutdown_timeout": "3"}}


@pytest.fixture(scope="module")
def module_pg() -> Iterator[str]:
    with pg_database("strato_lm") as url:  # several hosts share one PostgreSQL
        yield url


@pytest.fixture(scope="module")
def cluster(module_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from tests.storage.conftest import ceph_conf

    conf = ceph_conf()
    extra = {k: dict(v) for k, v in CONF.items()}
    extra.update({"storage": {"engine": "rbd", "vms_engine": "local"},
                  "glance_store": {"rbd_store_ceph_conf": conf},
                  "volume": {"rbd_ceph_conf": conf, "enabled_backends": "ceph:volumes"}})
    c = Cluster(tmp_path_factory.mktemp("lm"), module_pg, hosts=2, extra_conf=extra)
    c.setup()
    c.start()
    try:
        c.wait_hosts_up()
        yield c
    finally:
        c.stop()


def other(cluster: Cluster, host: str) -> str:
    return next(h for h in cluster.hosts if h != host)


def boot_ticking(cluster: Cluster, name: str, *args: str) -> tuple[str, Host]:
    """A server whose guest writes ``TICK n`` to its console and ``n`` to a file on
    its disk every ~20 ms."""
    api = cluster.api
    s = api.openstack_json("server", "create", "--flavor", "m1.tiny", "--nic", "none",
                           "--image", "strato-guest", *args, "--wait",
                           f"{name}-{uuid.uuid4().hex[:6]}")
    sid = str(s["id"])  # type: ignore[index]
    host = cluster.host_of(sid)
    drv = host.driver()
    wait_console(drv, sid, "STRATO-GUEST-READY bootcount=")
    drv.wait_for_agent(sid)
    with drv.agent(sid) as ga:
        ga.sh("echo before-move >/mnt/root/marker && sync")
        ga.exec("/bin/sh", ["-c", f"setsid sh -c '{TICKER}' </dev/null >/dev/null 2>&1 &"])
    wait_console(drv, sid, "TICK 3")
    return sid, host


def fill_ram(host: Host, sid: str, mib: int) -> None:
    """``mib`` MiB of the guest's RAM made non-zero (a tmpfs file): zero pages cost a
    migration nothing."""
    with host.driver().agent(sid) as ga:
        res = ga.sh("mkdir -p /fill && mount -t tmpfs -o size=90% tmpfs /fill && "
                    f"dd if=/dev/urandom of=/fill/f bs=1M count={mib} 2>&1", timeout=120)
    assert res.exitcode == 0, res.stdout


_NOVA: dict[int, Nova] = {}


def nova_of(cluster: Cluster) -> Nova:
    """One admin REST client per cluster (polling through the CLI costs seconds a call)."""
    if id(cluster) not in _NOVA:
        _NOVA[id(cluster)] = Nova(cluster.api, "2.80")
    return _NOVA[id(cluster)]


def show(cluster: Cluster, sid: str) -> dict[str, Any]:
    return nova_of(cluster).server(sid)


def wait_settled(cluster: Cluster, sid: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = show(cluster, sid)
        if s["OS-EXT-STS:task_state"] is None and s["status"] != "MIGRATING":
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.3)


def migrations_of(cluster: Cluster, sid: str) -> list[dict[str, Any]]:
    return cluster.api.openstack_json(  # type: ignore[return-value]
        "--os-compute-api-version", "2.80", "server", "migration", "list",
        "--server", sid)


def wait_running_migration(cluster: Cluster, sid: str, timeout: float = 60) -> dict[str, Any]:
    """``server migration list`` until the server's live migration is ``running`` with
    figures; the row."""
    deadline = time.monotonic() + timeout
    nova = nova_of(cluster)
    while True:
        r = nova.req("GET", f"/servers/{sid}/migrations")
        assert r.status_code == 200, r.text
        rows = r.json()["migrations"]
        if rows and rows[0]["status"] == "running" and rows[0]["memory_total_bytes"]:
            return dict(rows[0])
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def gone_from(host: Host, sid: str, timeout: float = 30) -> None:
    """The source's QEMU and directory go right after the switch-over is committed."""
    deadline = time.monotonic() + timeout
    while sid in host.driver().list_instances():
        assert time.monotonic() < deadline, f"{sid} is still on {host.name}"
        time.sleep(0.2)


def assert_moved(cluster: Cluster, sid: str, src: Host, dest: Host, ticks: Ticks,
                 moved_at: int) -> None:
    """One guest, never restarted, now only on ``dest``, its counter unbroken."""
    drv = dest.driver()
    try:
        ticks.wait_past(moved_at + 25)
    except AssertionError:
        print(drv.console_output(sid)[-3000:])
        raise
    ticks.stop()
    nums = sorted(ticks.seen)
    assert nums == list(range(nums[0], nums[-1] + 1)), "a tick was lost or repeated"
    gone_from(src, sid)
    assert drv.qmp(sid, "query-status")["status"] == "running"
    out = drv.console_output(sid).replace("\r", "")
    assert "bootcount=2" not in out and "TICK 1\n" not in out  # not booted again there
    with drv.agent(sid) as ga:  # the disk came along: read past the page cache
        res = ga.sh("sync; echo 3 >/proc/sys/vm/drop_caches; cat /mnt/root/marker "
                    "/mnt/root/ticks")
    assert res.exitcode == 0, res.stderr
    marker, on_disk = res.stdout.decode().split()
    assert marker == "before-move" and int(on_disk) >= moved_at


def live_migrations(cluster: Cluster, sid: str) -> list[dict[str, Any]]:
    nova = nova_of(cluster)
    return [x for x in nova.req("GET", f"/os-migrations?instance_uuid={sid}").json()[
        "migrations"] if x["migration_type"] == "live-migration"]


def test_shared_storage_on_ceph_abort_and_force_complete(cluster: Cluster) -> None:
    """A server booted from a Ceph volume: its disk is shared storage."""
    t0 = time.monotonic()
    api = cluster.api
    sid, src = boot_ticking(cluster, "lmv", "--boot-from-volume", "1")
    dest = cluster.hosts[other(cluster, src.name)]
    # ~6 s at 16 MiB/s: long enough to look at it through the CLI (with 48 MiB it once
    # completed before `server migration show` ran)
    fill_ram(src, sid, 96)
    ticks = Ticks(src.driver().paths(sid).console, dest.driver().paths(sid).console)
    try:
        api.openstack("server", "migrate", "--live-migration", "--host", dest.name, sid)
        # while it runs: MIGRATING, and the migration with its figures
        row = wait_running_migration(cluster, sid)
        assert show(cluster, sid)["status"] == "MIGRATING"
        assert row["source_compute"] == src.name and row["dest_compute"] == dest.name
        assert row["memory_total_bytes"] >= 100 << 20  # m1.tiny: 128 MiB (+ ROMs)
        assert 0 < row["memory_processed_bytes"] < row["memory_total_bytes"]
        # by its uuid: OSC 10.5 swaps server and migration in the by-id call to the SDK
        shown = api.openstack_json("--os-compute-api-version", "2.80", "server",
                                   "migration", "show", sid, row["uuid"])
        assert shown["ID"] == row["id"]  # type: ignore[index]
        s = wait_settled(cluster, sid)
        moved_at = ticks.last()
        assert s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] == dest.name, s
        assert_moved(cluster, sid, src, dest, ticks, moved_at)
    finally:
        ticks.stop()
    # the record, the action and its events (Nova's names)
    m = migrations_of(cluster, sid)
    assert [(x["Status"], x["Source Compute"], x["Dest Compute"], x["Type"]) for x in m] \
        == [("completed", src.name, dest.name, "live-migration")], m
    nova = nova_of(cluster)
    assert nova.req("GET", f"/servers/{sid}/migrations").json()["migrations"] == []
    actions = nova.req("GET", f"/servers/{sid}/os-instance-actions").json()[
        "instanceActions"]
    lm = next(a for a in actions if a["action"] == "live-migration")
    events = nova.req("GET", f"/servers/{sid}/os-instance-actions/{lm['request_id']}"
                      ).json()["instanceAction"]["events"]
    assert {(e["event"], e["result"], e["host"]) for e in events} == {
        ("compute_live_migration", "Success", src.name),
        ("compute_pre_live_migration", "Success", dest.name),
        ("compute_post_live_migration_at_destination", "Success", dest.name)}

    # abort on the way back: the guest stays where it is, running; nothing over there
    src, dest = dest, src
    ticks = Ticks(src.driver().paths(sid).console)
    try:
        api.openstack("server", "migrate", "--live-migration", sid)
        row = wait_running_migration(cluster, sid)
        assert row["dest_compute"] == dest.name  # the scheduler's choice: the other one
        api.openstack("--os-compute-api-version", "2.24", "server", "migration", "abort",
                      sid, str(row["id"]))
        s = wait_settled(cluster, sid)
        assert s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] == src.name, s
        ticks.wait_past(ticks.last() + 10)
    finally:
        ticks.stop()
    nums = sorted(ticks.seen)
    assert nums == list(range(nums[0], nums[-1] + 1))
    assert src.driver().qmp(sid, "query-status")["status"] == "running"
    deadline = time.monotonic() + 30
    while sid in dest.driver().list_instances():  # the rollback job there
        assert time.monotonic() < deadline, "the destination kept the aborted guest"
        time.sleep(0.2)
    assert [x["status"] for x in live_migrations(cluster, sid)] == ["cancelled",
                                                                     "completed"]
    # force-complete: paused until it runs over there, then running again
    api.openstack("server", "migrate", "--live-migration", sid)
    row = wait_running_migration(cluster, sid)
    api.openstack("--os-compute-api-version", "2.22", "server", "migration", "force",
                  "complete", sid, str(row["id"]))
    s = wait_settled(cluster, sid, 60)
    assert s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] == dest.name, s
    drv = dest.driver()
    deadline = time.monotonic() + 30
    while drv.qmp(sid, "query-status")["status"] != "running":
        assert time.monotonic() < deadline, "force-complete left the guest paused"
        time.sleep(0.2)
    gone_from(src, sid)
    assert [x["status"] for x in live_migrations(cluster, sid)][0] == "completed"
    forced = [a for a in nova.req("GET", f"/servers/{sid}/os-instance-actions").json()[
        "instanceActions"] if a["action"] in ("live_migration_abort",
                                              "live_migration_force_complete")]
    assert sorted(a["action"] for a in forced) == ["live_migration_abort",
                                                   "live_migration_force_complete"]
    api.openstack("server", "delete", "--wait", sid)
    print(f"shared storage, abort, force-complete: {time.monotonic() - t0:.1f}s")


def test_block_migration_on_the_local_engine(cluster: Cluster, module_pg: str) -> None:
    """An image-backed server, its disk on the local engine: mirrored over NBD to a new
    image; the source's disk goes and the new one takes the root disk's name; a
    snapshot afterwards runs on the new host."""
    t0 = time.monotonic()
    api = cluster.api
    sid, src = boot_ticking(cluster, "lmb")
    dest = cluster.hosts[other(cluster, src.name)]
    ticks = Ticks(src.driver().paths(sid).console, dest.driver().paths(sid).console)
    try:
        api.openstack("server", "migrate", "--live-migration", "--block-migration", sid)
        s = wait_settled(cluster, sid)
        moved_at = ticks.last()
        assert s["status"] == "ACTIVE" and s["OS-EXT-SRV-ATTR:host"] == dest.name, s
        assert_moved(cluster, sid, src, dest, ticks, moved_at)
    finally:
        ticks.stop()
    pool = cluster.api.state / "blocks" / "pools" / "vms"
    deadline = time.monotonic() + 30
    while sorted(p.name for p in pool.glob(f"{sid}*")) != [f"{sid}_disk.json"]:
        assert time.monotonic() < deadline, sorted(p.name for p in pool.glob(f"{sid}*"))
        time.sleep(0.2)
    spec = QemuDriver(dest.instances).spec(sid)
    assert [d.source for d in spec.disks] == [f"vms/{sid}_disk"]
    assert [(x["status"], x["dest_compute"]) for x in live_migrations(cluster, sid)] == [
        ("completed", dest.name)]
    # jobs follow the guest: a snapshot now runs on the new host
    api.openstack("server", "image", "create", "--wait", "--name", f"lm-{sid[:6]}", sid)
    snaps = [(j, n, t) for j, n, t, _, _ in jobs_of(module_pg, sid) if n == "compute.snapshot"]
    assert snaps and all(t == f"host:{dest.name}" for _, _, t in snaps), snaps
    assert all(ran_on(cluster, j, n) == [dest.name] for j, n, _ in snaps)
    api.openstack("server", "delete", "--wait", sid)
    assert sid not in dest.driver().list_instances()
    assert not list(pool.glob(f"{sid}*"))
    print(f"block migration on the local engine: {time.monotonic() - t0:.1f}s")


def test_refusals(cluster: Cluster) -> None:
    """Nova's 400/403/409 for live migrations it refuses; nothing recorded for them."""
    api = cluster.api
    s = api.openstack_json("server", "create", "--flavor", "m1.tiny", "--nic", "none",
                           "--image", "strato-guest", "--wait", "lmr")
    sid = str(s["id"])  # type: ignore[index]
    host = show(cluster, sid)["OS-EXT-SRV-ATTR:host"]
    nova = Nova(api, "2.92")

    def live(body: dict[str, Any], version: str = "2.92") -> Any:
        return nova.req("POST", f"/servers/{sid}/action", version,
                        json={"os-migrateLive": body})

    r = live({"host": host, "block_migration": "auto"})
    assert r.status_code == 400 and "to current host" in r.text, r.text
    r = live({"host": "nowhere", "block_migration": "auto"})
    assert r.status_code == 400 and "Compute host nowhere could not be found" in r.text
    r = live({"host": None, "block_migration": False})  # a local disk
    assert r.status_code == 400 and "is not on shared storage" in r.text, r.text
    r = live({"host": None, "block_migration": "auto", "force": True})  # gone in 2.68
    assert r.status_code == 400 and "force" in r.text, r.text
    r = live({"host": None, "block_migration": "auto", "disk_over_commit": False}, "2.25")
    assert r.status_code == 400, r.text
    r = live({"host": None, "block_migration": "auto"}, "2.24")  # "auto" from 2.25
    assert r.status_code == 400, r.text
    r = live({"block_migration": True})
    assert r.status_code == 400 and "'host' is a required property" in r.text
    api.openstack("server", "stop", sid)
    deadline = time.monotonic() + 60
    while show(cluster, sid)["status"] != "SHUTOFF":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    r = live({"host": None, "block_migration": "auto"})
    assert r.status_code == 409 and "vm_state stopped" in r.text, r.text
    r = nova.req("GET", f"/servers/{sid}/migrations/1", "2.80")
    assert r.status_code == 404
    assert nova.req("GET", f"/os-migrations?instance_uuid={sid}").json()["migrations"] == []
    api.openstack("server", "delete", "--wait", sid)


def test_source_worker_killed_mid_migration(cluster: Cluster) -> None:
    """kill -9 of the source's worker while QEMU migrates (the guests outlive it, as
    QEMU runs daemonized): when it comes back, its job's rerun reads where QEMU got to
    and finishes the move (or rolls it back): the guest runs on exactly one host, the
    one the API names, and was never restarted."""
    api = cluster.api
    sid, src = boot_ticking(cluster, "lmk", "--boot-from-volume", "1")
    dest = cluster.hosts[other(cluster, src.name)]
    fill_ram(src, sid, 64)
    ticks = Ticks(src.driver().paths(sid).console, dest.driver().paths(sid).console)
    try:
        api.openstack("server", "migrate", "--live-migration", sid)
        wait_running_migration(cluster, sid)
        src.kill_worker()
        time.sleep(1)
        src.start()
        s = wait_settled(cluster, sid, 120)
        assert s["status"] == "ACTIVE", s
        now = cluster.hosts[s["OS-EXT-SRV-ATTR:host"]]
        gone = cluster.hosts[other(cluster, now.name)]
        deadline = time.monotonic() + 30
        while sid in gone.driver().list_instances():  # the loser's copy goes
            assert time.monotonic() < deadline, f"{sid} still on {gone.name}"
            time.sleep(0.2)
        assert now.driver().qmp(sid, "query-status")["status"] == "running"
        try:
            ticks.wait_past(ticks.last() + 25)
        except AssertionError:
            print(now.driver().console_output(sid)[-3000:])
            raise
    finally:
        ticks.stop()
    nums = sorted(ticks.seen)
    assert nums == list(range(nums[0], nums[-1] + 1)), "a tick was lost or repeated"
    out = now.driver().console_output(sid).replace("\r", "")
    assert "bootcount=2" not in out
    status = {x["status"] for x in live_migrations(cluster, sid)}
    assert status == ({"completed"} if now is dest else {"error"}), (status, now.name)
    print(f"after kill -9 of {src.name}'s worker: the guest runs on {now.name}")
    api.openstack("server", "delete", "--wait", sid)


@pytest.mark.parametrize("rule", ["os-migrate-server:migrate_live", "servers:migrations:show",
                                  "servers:migrations:delete",
                                  "servers:migrations:force_complete"])
def test_policies_are_admin_only(rule: str) -> None:
    """Nova's defaults: live migration and its in-progress migrations are the admin's."""
    from strato.context import RequestContext
    from strato.policy import Enforcer

    enforcer = Enforcer()
    member = RequestContext(user_id="u", project_id="p", roles=["member", "reader"])
    admin = RequestContext(user_id="a", project_id="p", roles=["admin", "member", "reader"])
    assert not enforcer.allowed(member, f"os_compute_api:{rule}")
    assert enforcer.allowed(admin, f"os_compute_api:{rule}")


@pytest.mark.parametrize(("version", "body", "expect"), [
    ((2, 1), {"host": None, "block_migration": False, "disk_over_commit": False},
     (None, False, False)),
    ((2, 1), {"host": "h", "block_migration": "true", "disk_over_commit": "0"},
     ("h", True, False)),
    ((2, 25), {"host": None, "block_migration": "auto"}, (None, "auto", False)),
    ((2, 30), {"host": "h", "block_migration": "auto", "force": True}, ("h", "auto", True)),
    ((2, 68), {"host": "h", "block_migration": False}, ("h", False, False)),
])
def test_body_per_microversion(version: tuple[int, int], body: dict[str, Any],
                               expect: tuple[Any, ...]) -> None:
    from strato.compute.live_migration import parse_body

    assert parse_body(body, version) == expect


@pytest.mark.parametrize(("version", "body"), [
    ((2, 1), {"host": None, "block_migration": False}),  # disk_over_commit required
    ((2, 24), {"host": None, "block_migration": "auto", "disk_over_commit": False}),
    ((2, 25), {"host": None, "block_migration": "auto", "disk_over_commit": False}),
    ((2, 29), {"host": None, "block_migration": "auto", "force": True}),
    ((2, 68), {"host": None, "block_migration": "auto", "force": True}),
    ((2, 25), {"host": "", "block_migration": "auto"}),
    ((2, 25), {"host": None, "block_migration": "maybe"}),
    ((2, 25), ["not", "an", "object"]),
])
def test_bad_bodies(version: tuple[int, int], body: Any) -> None:
    from strato.compute.live_migration import parse_body
    from strato.exceptions import BadRequest

    with pytest.raises(BadRequest):
        parse_body(body, version)
