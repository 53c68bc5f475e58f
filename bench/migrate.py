"""Live migration: downtime and total time of a guest with 512 MiB of RAM, most of it
dirty, moved back and forth between two compute hosts' QEMU drivers on this machine
(shared storage: the same disk files, as Ceph gives several hosts).

* ``downtime_p50_ms``: QEMU's measured downtime (vCPUs stopped on the source to running
  on the destination) over ``RUNS`` migrations -- goal < 300 ms; the largest gap the
  guest's own 20 ms counter shows on its console is reported beside it (informational);
* ``total_vs_loopback_p50``: the migration's total time (QMP ``total-time``, from
  ``migrate`` to ``completed``) divided by the time one TCP stream over 127.0.0.1 takes
  to carry the guest's RAM size, measured just before each migration (paired: on a
  shared machine both see the same load) -- goal <= 3.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from strato.storage import Engine, open_engine
from strato.virt.guestbuild import READY_MARKER, GuestFiles, build_guest
from strato.virt.qemu import (
    DiskSpec,
    GuestSpec,
    QemuDriver,
    migration,
    node_prefix,
    storage_resolver,
)
from tests.ticks import Ticks, ticker

RUNS = 8
MEMORY_MB = 512
FILL_MIB = 400


def loopback_rate(nbytes: int) -> float:
    """Bytes/s of one TCP stream over 127.0.0.1 carrying ``nbytes``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = 0

    def sink() -> None:
        nonlocal got
        c, _ = srv.accept()
        buf = bytearray(4 << 20)
        while (n := c.recv_into(buf)) > 0:
            got += n
        c.close()

    t = threading.Thread(target=sink)
    t.start()
    chunk = bytes(range(256)) * (16 << 10)  # 4 MiB, not all zero
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as c:
        for _ in range(nbytes // len(chunk)):
            c.sendall(chunk)
    t.join()
    elapsed = time.monotonic() - start
    srv.close()
    assert got == nbytes
    return nbytes / elapsed


def _spec(guest: GuestFiles, store: Engine) -> GuestSpec:
    uid = str(uuid.uuid4())
    store.import_from("vms", f"{uid}_disk", guest.disk)
    with store.open("vms", f"{uid}_disk") as img:
        opts = img.blockdev_options(node_prefix("vda"))
    return GuestSpec(uuid=uid, name="bench-migrate", memory_mb=MEMORY_MB, vcpus=1,
                     kernel=guest.kernel, initramfs=guest.initramfs, cmdline=guest.cmdline,
                     disks=(DiskSpec("vda", opts, source=f"vms/{uid}_disk"),))


def run() -> Iterator[dict]:
    work = Path(tempfile.mkdtemp(prefix="strato-bench-migrate-", dir="/var/tmp"))
    hosts: list[QemuDriver] = []
    downtimes: list[float] = []
    ratios: list[float] = []
    pauses: list[float] = []
    loops: list[float] = []
    totals: list[float] = []
    ram = MEMORY_MB << 20
    try:
        guest = build_guest(work / "guest")
        store = open_engine("local", root=work / "store")
        hosts = [QemuDriver(work / f"host{i}", resolve=storage_resolver(store))
                 for i in (1, 2)]
        spec = _spec(guest, store)
        hosts[0].spawn(spec)
        hosts[0].wait_for_console(spec.uuid, READY_MARKER, 1, 180)
        hosts[0].wait_for_agent(spec.uuid, 180)
        with hosts[0].agent(spec.uuid) as ga:
            res = ga.sh("mkdir -p /fill && mount -t tmpfs -o size=90% tmpfs /fill && "
                        f"dd if=/dev/urandom of=/fill/f bs=1M count={FILL_MIB} 2>&1",
                        timeout=600)
            assert res.exitcode == 0, res.stdout + res.stderr
            loop = ticker(disk=False)
            ga.exec("/bin/sh", ["-c", f"setsid sh -c '{loop}' </dev/null >/dev/null 2>&1 &"])
        hosts[0].wait_for_console(spec.uuid, "TICK 5", 1, 60)
        for i in range(RUNS):
            src, dest = hosts[i % 2], hosts[(i + 1) % 2]
            rate = loopback_rate(ram)
            loops.append(ram / rate)
            ticks = Ticks(src.paths(spec.uuid).console, poll=0.002)
            time.sleep(0.5)
            inc = migration.prepare_incoming(dest, src.spec(spec.uuid),
                                             slots=src._state(spec.uuid)["slots"])
            ticks.add(dest.paths(spec.uuid).console)
            info = migration.migrate(src, spec.uuid, inc)
            migration.finish(src, dest, spec.uuid, inc)
            time.sleep(0.5)
            ticks.stop()
            assert ticks.unbroken(), "the guest's counter skipped or went back"
            pauses.append(ticks.largest_gap())
            downtimes.append(float(info["downtime"]))
            totals.append(info["total-time"] / 1000)
            ratios.append(totals[-1] / loops[-1])
            transferred = info.get("ram", {}).get("transferred", 0)
            print(f"  migration {i + 1}: downtime {info['downtime']} ms, total "
                  f"{info['total-time']} ms, {transferred >> 20} MiB sent, loopback "
                  f"{loops[-1] * 1000:.0f} ms, guest-seen pause {pauses[-1] * 1000:.0f} ms",
                  flush=True)
    finally:
        for h in hosts:
            for u in h.list_instances():
                h.destroy(u)
        shutil.rmtree(work, ignore_errors=True)
    yield {"bench": "migrate", "metric": "loopback_copy_512MiB_p50_seconds",
           "value": round(statistics.median(loops), 3), "unit": "s", "goal": "info"}
    yield {"bench": "migrate", "metric": "total_p50_seconds",
           "value": round(statistics.median(totals), 3), "unit": "s", "goal": "info"}
    yield {"bench": "migrate", "metric": "downtime_p50_ms",
           "value": round(statistics.median(downtimes), 1), "unit": "ms", "goal": "< 300"}
    yield {"bench": "migrate", "metric": "downtime_max_ms",
           "value": round(max(downtimes), 1), "unit": "ms", "goal": "info"}
    yield {"bench": "migrate", "metric": "guest_seen_pause_p50_ms",
           "value": round(statistics.median(pauses) * 1000, 1), "unit": "ms", "goal": "info"}
    yield {"bench": "migrate", "metric": "total_vs_loopback_p50",
           "value": round(statistics.median(ratios), 2), "unit": "x", "goal": "<= 3"}
