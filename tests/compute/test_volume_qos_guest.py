"""Front-end QoS specs enforced by QEMU on a real guest: a boot-from-volume root disk
and a hot-attached volume get their type's limits (QMP ``query-block``), a read inside
the guest with O_DIRECT runs at ``total_bytes_sec``, the limits survive a stop/start,
and (as in Cinder/Nova) a changed association only reaches new attachments."""

from __future__ import annotations

import os
import time
import uuid

from strato.storage.crash import ENV as CRASH_ENV
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, boot_ready, wait_guest_serial, wait_volume
from tests.support import Server

RATE = 2 * 1024 * 1024  # total_bytes_sec of the data volume: 2 MiB/s
READ_MB = 6


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _throttles(driver: QemuDriver, sid: str) -> dict[str, dict[str, int]]:
    """Guest device -> its limits as QEMU has them (``query-block``'s ``inserted``)."""
    out = {}
    for dev in driver.qmp(sid, "query-block"):
        qdev = str(dev.get("qdev") or "")
        ins = dev.get("inserted") or {}
        if qdev.startswith("/machine/peripheral/") and ins:
            out[qdev.split("/")[3]] = {k: ins[k] for k in ("bps", "iops", "bps_rd", "iops_rd")}
    return out


def _qos_type(srv: Server, *props: str) -> tuple[str, str, str]:
    """A volume type with a new front-end QoS associated; (type name, type id, qos id)."""
    qname, tname = _name("qos"), _name("qt")
    qid = str(srv.openstack_json("volume", "qos", "create", "--consumer", "front-end",
                                 *[a for p in props for a in ("--property", p)],
                                 qname)["id"])  # type: ignore[index]
    tid = str(srv.openstack_json("volume", "type", "create", tname)["id"])  # type: ignore[index]
    srv.openstack("volume", "qos", "associate", qid, tid)
    return tname, tid, qid


def test_front_end_qos_throttles_the_guest(compute_server: Server, nova: Nova,
                                           driver: QemuDriver) -> None:
    srv = compute_server
    root_type, _, root_qos = _qos_type(srv, "total_iops_sec=4000",
                                       "total_bytes_sec=104857600")
    data_type, data_tid, data_qos = _qos_type(srv, f"total_bytes_sec={RATE}")

    # boot from a volume of the throttled root type
    root = str(srv.openstack_json("volume", "create", "--image", "strato-guest", "--size",
                                  "1", "--type", root_type, _name("root"))["id"])  # type: ignore[index]
    wait_volume(nova, root, "available")
    sid = boot_ready(srv, "--volume", root, prefix="qos")
    assert _throttles(driver, sid)["vda"]["iops"] == 4000
    assert _throttles(driver, sid)["vda"]["bps"] == 104857600

    # hot-attach a data volume of the 2 MiB/s type
    data = str(srv.openstack_json("volume", "create", "--size", "1", "--type", data_type,
                                  _name("data"))["id"])  # type: ignore[index]
    wait_volume(nova, data, "available")
    srv.openstack("server", "add", "volume", sid, data)
    wait_volume(nova, data, "in-use")
    wait_guest_serial(driver, sid, data[:20])
    limits = _throttles(driver, sid)["vdb"]
    assert (limits["bps"], limits["iops"]) == (RATE, 0), limits

    # measured inside the guest: an O_DIRECT read (the page cache cannot serve it)
    script = (f"for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = {data[:20]} ] && "
              "dev=/dev/${d##*/}; done; read a _ < /proc/uptime; "
              f"dd if=$dev of=/dev/null bs=64k iflag=direct count={READ_MB * 16} 2>&1 || "
              "exit 9; read b _ < /proc/uptime; echo ELAPSED $a $b")
    with driver.agent(sid) as ga:
        res = ga.sh(script, timeout=60)
    out = res.stdout.decode()
    assert res.exitcode == 0, (res.exitcode, out, res.stderr)
    start, end = (float(x) for x in out.split("ELAPSED", 1)[1].split())
    rate = READ_MB * 1024 * 1024 / (end - start)
    # within 10% of the limit (QEMU lets a burst of a tenth of a second through)
    assert abs(rate - RATE) <= 0.1 * RATE, (rate, out)

    # the spec keeps the limits: a stop/start applies them again
    srv.openstack("server", "stop", sid)
    nova.wait(sid, "SHUTOFF")
    srv.openstack("server", "start", sid)
    nova.wait(sid, "ACTIVE")
    driver.wait_for_agent(sid)
    after = _throttles(driver, sid)
    assert after["vda"]["iops"] == 4000 and after["vdb"]["bps"] == RATE, after

    # kill -9 inside a start, QEMU spawned (held at -S) before its limits are set: the
    # restarted agent sets them and runs the guest, never one without its limits
    srv.openstack("server", "stop", sid)
    nova.wait(sid, "SHUTOFF")
    srv.stop(teardown=False)
    os.environ[CRASH_ENV] = "launch:before-throttle"
    try:
        srv.start()
    finally:
        os.environ.pop(CRASH_ENV)
    srv.openstack("server", "start", sid, check=False)
    assert srv.proc is not None and srv.proc.wait(60) == -9
    assert driver.qmp(sid, "query-status")["status"] == "prelaunch"
    assert _throttles(driver, sid)["vdb"]["bps"] == 0
    srv.start()
    deadline = time.monotonic() + 60
    while driver.qmp(sid, "query-status")["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    after = _throttles(driver, sid)
    assert after["vda"]["iops"] == 4000 and after["vdb"]["bps"] == RATE, after
    nova.wait(sid, "ACTIVE")  # the start job, taken again after its lease, converges
    driver.wait_for_agent(sid)
    start = next(a for a in nova.req("GET", f"/servers/{sid}/os-instance-actions").json()[
        "instanceActions"] if a["action"] == "start")
    events = nova.req("GET", f"/servers/{sid}/os-instance-actions/{start['request_id']}"
                      ).json()["instanceAction"]["events"]
    assert [e["result"] for e in events] == ["Success"], events

    # another association reaches only a new attachment (Cinder: info taken at attach)
    srv.openstack("volume", "qos", "disassociate", "--volume-type", data_tid, data_qos)
    assert _throttles(driver, sid)["vdb"]["bps"] == RATE
    wait_guest_serial(driver, sid, data[:20])
    srv.openstack("server", "remove", "volume", sid, data)
    wait_volume(nova, data, "available")
    srv.openstack("server", "add", "volume", sid, data)
    wait_volume(nova, data, "in-use")
    assert _throttles(driver, sid)["vdb"]["bps"] == 0

    srv.openstack("server", "delete", "--wait", sid)
    wait_volume(nova, root, "available")
    srv.openstack("volume", "delete", root, data)
    srv.openstack("volume", "qos", "delete", "--force", root_qos)
    srv.openstack("volume", "qos", "delete", data_qos)
