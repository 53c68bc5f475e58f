"""Spike (issue 20, part M): live-migrate the tiny guest between two QEMU processes on
this machine (two ``QemuDriver``s = two hosts) and measure downtime and total time.

    PYTHONPATH=. .venv/bin/python scripts/spike/migrate_bench.py --mem 512 --fill 384 --runs 3

Prints JSON lines: QMP ``downtime``/``total-time`` (ms), the guest-visible pause (the
largest gap between consecutive ``TICK n`` lines the guest writes to its serial console
every ~20 ms, as seen by the host), and the loopback copy rate of the same bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import tempfile
import threading
import time
import uuid as uuidlib
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

TICK = re.compile(rb"TICK (\d+)")
#: a guest loop: a counter on the serial console and in a file on its disk
TICKER = ("i=0; while :; do i=$((i+1)); echo \"TICK $i\" >/dev/ttyS0; "
          "echo $i >/mnt/root/ticks; [ $((i % 10)) = 0 ] && sync; sleep 0.02; done")


def loopback_rate(nbytes: int) -> float:
    """Bytes/s of one TCP stream over 127.0.0.1 (the bench's denominator)."""
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
    chunk = b"\x5a" * (4 << 20)
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as c:
        for _ in range(nbytes // len(chunk)):
            c.sendall(chunk)
    t.join()
    el = time.monotonic() - start
    srv.close()
    assert got == nbytes
    return nbytes / el


class Ticks:
    """Watch console logs; record when each TICK number was first seen."""

    def __init__(self, *logs: Path) -> None:
        self.logs = list(logs)
        self.offsets = {p: 0 for p in self.logs}
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def add(self, log: Path) -> None:
        self.offsets.setdefault(log, 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for p, off in list(self.offsets.items()):
                try:
                    with open(p, "rb") as f:
                        f.seek(off)
                        data = f.read()
                except FileNotFoundError:
                    continue
                cut = data.rfind(b"\n") + 1
                self.offsets[p] = off + cut
                for m in TICK.finditer(data[:cut]):
                    self.seen.setdefault(int(m.group(1)), now)
            time.sleep(0.002)

    def start(self) -> Ticks:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def last(self) -> int:
        return max(self.seen, default=0)

    def max_gap(self, after: float) -> float:
        """Largest host-seen gap (s) between consecutive ticks seen after ``after``."""
        items = sorted(self.seen.items())
        gaps = [b[1] - a[1] for a, b in zip(items, items[1:], strict=False)
                if b[1] >= after]
        mono = all(b[0] == a[0] + 1 for a, b in zip(items, items[1:], strict=False))
        assert mono, "a tick was lost or went back"
        return max(gaps, default=0.0)


def make_spec(guest: GuestFiles, store: Engine, memory_mb: int) -> GuestSpec:
    uuid = uuidlib.uuid4().hex
    store.import_from("vms", f"{uuid}_disk", guest.disk)
    with store.open("vms", f"{uuid}_disk") as img:
        opts = img.blockdev_options(node_prefix("vda"))
    return GuestSpec(uuid=uuid, name=f"mig-{uuid[:8]}", memory_mb=memory_mb, vcpus=1,
                     kernel=guest.kernel, initramfs=guest.initramfs, cmdline=guest.cmdline,
                     disks=(DiskSpec("vda", opts, source=f"vms/{uuid}_disk"),))


def block_spec(spec: GuestSpec, dest_store: Engine, src_store: Engine) -> GuestSpec:
    """The destination's spec for block migration: same disks, new empty images of the
    same size in the destination host's store."""
    disks = []
    for d in spec.disks:
        pool, name = (d.source or "").split("/", 1)
        with src_store.open(pool, name) as img:
            size = img.size()
        dest_store.create(pool, name, size)
        with dest_store.open(pool, name) as img:
            disks.append(DiskSpec(d.device_id, img.blockdev_options(node_prefix(d.device_id)),
                                  source=d.source))
    return spec.with_disks(disks)


def boot_ticking(drv: QemuDriver, spec: GuestSpec) -> None:
    drv.spawn(spec)
    drv.wait_for_console(spec.uuid, f"{READY_MARKER} bootcount=1", 1, 120)
    drv.wait_for_agent(spec.uuid, 120)
    with drv.agent(spec.uuid) as ga:
        ga.exec("/bin/sh", ["-c", f"setsid sh -c '{TICKER}' </dev/null >/dev/null 2>&1 &"])
    drv.wait_for_console(spec.uuid, "TICK 5", 1, 60)


def fill_ram(drv: QemuDriver, uuid: str, mib: int) -> None:
    """Make ``mib`` MiB of the guest's RAM non-zero (a file on its initramfs root, which
    lives in RAM): zero pages cost QEMU's migration almost nothing."""
    if mib:
        with drv.agent(uuid) as ga:
            res = ga.sh("mkdir -p /fillfs && mount -t tmpfs -o size=90% tmpfs /fillfs && "
                        f"dd if=/dev/urandom of=/fillfs/f bs=1M count={mib} 2>&1", timeout=300)
        assert res.exitcode == 0, res.stdout + res.stderr


def run_once(mode: str, guest: GuestFiles, root: Path, memory_mb: int,
             fill_mib: int = 0, multifd: int = 0) -> dict[str, object]:
    src_store = open_engine("local", root=root / "storeA")
    dest_store = src_store if mode == "shared" else open_engine("local", root=root / "storeB")
    a = QemuDriver(root / "hostA", resolve=storage_resolver(src_store))
    b = QemuDriver(root / "hostB", resolve=storage_resolver(dest_store))
    spec = make_spec(guest, src_store, memory_mb)
    try:
        boot_ticking(a, spec)
        tf = time.monotonic()
        fill_ram(a, spec.uuid, fill_mib)
        fill_s = time.monotonic() - tf
        ticks = Ticks(a.paths(spec.uuid).console).start()
        time.sleep(1.0)
        t0 = time.monotonic()
        dspec = spec if mode == "shared" else block_spec(spec, dest_store, src_store)
        inc = migration.prepare_incoming(b, dspec, block=mode == "block", multifd=multifd)
        ticks.add(b.paths(spec.uuid).console)
        t1 = time.monotonic()
        if inc.block:
            migration.mirror(a, spec.uuid, inc)
        t2 = time.monotonic()
        info = migration.migrate(a, spec.uuid, inc)
        t3 = time.monotonic()
        migration.finish(a, b, spec.uuid, inc)
        t4 = time.monotonic()
        before = ticks.last()
        deadline = time.monotonic() + 30
        while ticks.last() < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        ticks.stop()
        assert ticks.last() >= before + 20, "guest stopped ticking after migration"
        with b.agent(spec.uuid) as ga:
            on_disk = int(ga.read_file("/mnt/root/ticks").decode().strip() or 0)
        return {
            "mode": mode, "memory_mb": memory_mb, "fill_mib": fill_mib, "multifd": multifd,
            "fill_s": round(fill_s, 1),
            "qmp_downtime_ms": info.get("downtime"), "qmp_total_ms": info.get("total-time"),
            "ram_transferred": info.get("ram", {}).get("transferred"),
            "ram_dirty_sync": info.get("ram", {}).get("dirty-sync-count"),
            "prepare_s": round(t1 - t0, 3), "mirror_s": round(t2 - t1, 3),
            "migrate_s": round(t3 - t2, 3), "finish_s": round(t4 - t3, 3),
            "total_s": round(t4 - t0, 3),
            "guest_visible_pause_ms": round(ticks.max_gap(t2) * 1000, 1),
            "ticks_last": ticks.last(), "ticks_on_disk": on_disk,
        }
    finally:
        for d in (a, b):
            for u in d.list_instances():
                d.destroy(u)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", type=int, default=512)
    ap.add_argument("--mode", default="both", choices=("shared", "block", "both"))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--multifd", type=int, default=0, help="multifd channels (0: off)")
    ap.add_argument("--fill", type=int, default=0, help="MiB of guest RAM made non-zero")
    ap.add_argument("--guest-dir", default="/tmp/Mguest")
    args = ap.parse_args()
    guest = build_guest(Path(args.guest_dir))
    rate = loopback_rate(args.mem << 20)
    print(json.dumps({"loopback_MiB_s": round(rate / (1 << 20), 1),
                      "loopback_s_for_ram": round((args.mem << 20) / rate, 3)}), flush=True)
    modes = ("shared", "block") if args.mode == "both" else (args.mode,)
    for _ in range(args.runs):
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="Mmig") as tmp:
                print(json.dumps(run_once(mode, guest, Path(tmp), args.mem, args.fill,
                                                  args.multifd)), flush=True)


if __name__ == "__main__":
    main()
