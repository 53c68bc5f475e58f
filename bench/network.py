"""Network: guest-to-guest TCP throughput over strato's network, and ``port create`` latency.

* throughput: two tiny guests booted by strato on one tenant network (security group
  allowing the bench port), one TCP stream of ``MB`` megabytes with busybox ``dd`` +
  ``nc``, timed in the receiving guest; against the *same two QEMU processes* on a
  bridge made by hand (a second NIC hot-plugged into each over QMP, onto a bare bridge
  in a scratch namespace: no filtering, no dnsmasq; see ``bench/_handnet.py``).  Runs
  alternate between the two paths; ``throughput_ratio`` is the median of the
  strato / hand ratios of back-to-back pairs, goal >= 0.9; both paths' medians are
  informational.
* ``port create`` p50 over HTTP (``POST /networking/v2.0/ports``), goal < 50 ms, after
  a warm-up.

Everything it makes lives in namespaces strato (or this bench) creates, on a public
range of its own; the server's ``strato network teardown`` removes what strato made.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._handnet import HandBridge, guest_iface, tcp_throughput
from strato.virt.qemu import QemuDriver
from strato.virt.qemu.agent import GuestAgent
from tests.support import Server, free_port, strato

MB = 32  # per run (~3-4 s under TCG)
RUNS = 7  # per path, alternating
PORT_WARMUP = 10
PORT_CREATES = 60
CIDR = "10.91.0.0/24"
BOOT_TIMEOUT = 180.0


def _ok(r: httpx.Response, *codes: int) -> dict[str, Any]:
    if r.status_code not in (codes or (200, 201)):
        raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r.json() if r.content else {}


def _boot(c: httpx.Client, name: str, image: str, net: str) -> str:
    body = {"server": {"name": name, "imageRef": image, "flavorRef": "42",
                       "networks": [{"uuid": net}], "security_groups": [{"name": "bench"}]}}
    return str(_ok(c.post("/compute/v2.1/servers", json=body), 202)["server"]["id"])


def _wait_active(c: httpx.Client, sid: str) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        server = _ok(c.get(f"/compute/v2.1/servers/{sid}"))["server"]
        if server["status"] == "ACTIVE":
            return
        if server["status"] == "ERROR":
            raise RuntimeError(f"server {sid} went to ERROR: {server.get('fault')}")
        time.sleep(0.5)
    raise RuntimeError(f"server {sid} not ACTIVE after {BOOT_TIMEOUT:.0f} s")


def _address(ga: GuestAgent, mac: str, ip: str, prefix: int) -> None:
    """Wait for the port's address by DHCP on the NIC with the port's MAC."""
    dev = guest_iface(ga, mac)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        have = ga.sh(f"ip -4 addr show dev {dev}").stdout.decode()
        if f"inet {ip}/{prefix}" in have:
            return
        time.sleep(1)
    raise RuntimeError(f"the guest's {dev} did not get {ip} by DHCP: {have!r}")


def run() -> Iterator[dict]:
    work = Path(tempfile.mkdtemp(prefix="strato-bench-network-", dir="/var/tmp"))
    srv = Server(work / "state", free_port(), extra_conf={
        "compute": {"quota_instances": "-1", "quota_cores": "-1", "quota_ram": "-1"},
        "network": {"dataplane": "linux", "public_cidr": "198.18.159.0/24",
                    "dataplane_id": "bnch", "quota_port": "1000"}})
    try:
        srv.setup()
        strato("guest", "--config", str(srv.conf))
        srv.start()
        c = srv.client(srv.token())
        c.headers["OpenStack-API-Version"] = "compute 2.79"
        n = "/networking/v2.0"
        image = _ok(c.get("/image/v2/images?name=strato-guest"))["images"][0]["id"]
        net = _ok(c.post(f"{n}/networks", json={"network": {"name": "bench"}}))["network"]
        _ok(c.post(f"{n}/subnets", json={"subnet": {
            "network_id": net["id"], "ip_version": 4, "cidr": CIDR, "name": "bench"}}))
        sg = _ok(c.post(f"{n}/security-groups", json={"security_group": {
            "name": "bench"}}))["security_group"]
        for rule in ({"protocol": "tcp", "port_range_min": 5001, "port_range_max": 5001},
                     {"protocol": "icmp"}):
            _ok(c.post(f"{n}/security-group-rules", json={"security_group_rule": {
                "security_group_id": sg["id"], "direction": "ingress", "ethertype": "IPv4",
                **rule}}))

        # ---- port create latency (before the guests load the two cores)
        lat = []
        for i in range(PORT_WARMUP + PORT_CREATES):
            started = time.perf_counter()
            port = _ok(c.post(f"{n}/ports", json={"port": {
                "network_id": net["id"], "name": f"p{i}"}}), 201)["port"]
            took = time.perf_counter() - started
            if i >= PORT_WARMUP:
                lat.append(took)
            _ok(c.delete(f"{n}/ports/{port['id']}"), 204)
        lat.sort()
        yield {"bench": "network", "metric": "port_create_p50_ms",
               "value": round(lat[len(lat) // 2] * 1000, 1), "unit": "ms", "goal": "< 50"}
        yield {"bench": "network", "metric": "port_create_p95_ms",
               "value": round(lat[int(len(lat) * 0.95)] * 1000, 1), "unit": "ms",
               "goal": "info"}

        # ---- throughput: two guests on the network
        sids = [_boot(c, f"bench-{i}", image, net["id"]) for i in range(2)]
        for sid in sids:
            _wait_active(c, sid)
        drv = QemuDriver(srv.state / "instances")
        ips = []
        for sid in sids:
            drv.wait_for_agent(sid, timeout=BOOT_TIMEOUT)
            port = _ok(c.get(f"{n}/ports", params={"device_id": sid}))["ports"][0]
            ip = port["fixed_ips"][0]["ip_address"]
            with drv.agent(sid) as ga:
                _address(ga, port["mac_address"], ip, int(CIDR.split("/")[1]))
            ips.append(ip)
        guests = [(drv.paths(sid).qmp, drv.paths(sid).qga) for sid in sids]
        strato_runs, hand_runs = [], []
        with HandBridge(guests) as hb, drv.agent(sids[0], timeout=60) as a, \
                drv.agent(sids[1], timeout=60) as b:
            tcp_throughput(a, b, ips[1], 4)  # warm-up: ARP, conntrack, caches
            tcp_throughput(a, b, hb.addresses[1], 4)
            for _ in range(RUNS):
                strato_runs.append(tcp_throughput(a, b, ips[1], MB))
                hand_runs.append(tcp_throughput(a, b, hb.addresses[1], MB))
        ours, hand = statistics.median(strato_runs), statistics.median(hand_runs)
        # the median of each back-to-back pair's ratio: the load of a shared machine
        # drifts between pairs far more than within one
        ratio = statistics.median(o / h for o, h in zip(strato_runs, hand_runs, strict=True))
        yield {"bench": "network", "metric": "throughput_ratio",
               "value": round(ratio, 3), "unit": "ratio", "goal": ">= 0.9"}
        yield {"bench": "network", "metric": "throughput_strato_mb_s",
               "value": round(ours, 2), "unit": "MB/s", "goal": "info"}
        yield {"bench": "network", "metric": "throughput_hand_bridge_mb_s",
               "value": round(hand, 2), "unit": "MB/s", "goal": "info"}
        for sid in sids:
            c.delete(f"/compute/v2.1/servers/{sid}")
    finally:
        srv.stop()  # on the Linux data plane: guests destroyed, `strato network teardown`
        drv = QemuDriver(srv.state / "instances")
        for sid in drv.list_instances():
            drv.destroy(sid)
        shutil.rmtree(work, ignore_errors=True)
