"""Live migration between two QEMU processes (two drivers = two compute hosts on one
machine), through ``strato.virt.qemu.migration`` -- the issue 20 spike (part M).

The guest runs a loop that prints ``TICK n`` on its serial console every ~20 ms and
writes ``n`` to a file on its disk.  After the move the counter keeps increasing on the
destination's console, no number is skipped or repeated, and the source QEMU is gone.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato.storage import Engine, open_engine
from strato.virt.guestbuild import GuestFiles
from strato.virt.qemu import (
    DiskSpec,
    GuestSpec,
    QemuDriver,
    migration,
    node_prefix,
    process,
    storage_resolver,
)
from tests.ticks import TICKER, Ticks

from .conftest import make_spec, wait_ready


@pytest.fixture
def hosts(tmp_path: Path, store: Engine) -> Iterator[tuple[QemuDriver, QemuDriver, Engine]]:
    """Host A on the session store; host B with its own store (for block migration) --
    both resolve shared-storage disks through A's store, the same files."""
    dest_store = open_engine("local", root=tmp_path / "storeB")
    a = QemuDriver(tmp_path / "hostA", resolve=storage_resolver(store))
    b = QemuDriver(tmp_path / "hostB")
    yield a, b, dest_store
    for d in (a, b):
        for u in d.list_instances():
            d.destroy(u)


def ticking_guest(drv: QemuDriver, guest: GuestFiles, store: Engine) -> GuestSpec:
    spec = make_spec(guest, store)
    drv.spawn(spec)
    wait_ready(drv, spec.uuid)
    with drv.agent(spec.uuid) as ga:
        ga.sh("echo before-move >/mnt/root/marker && sync")
        ga.exec("/bin/sh", ["-c", f"setsid sh -c '{TICKER}' </dev/null >/dev/null 2>&1 &"])
    drv.wait_for_console(spec.uuid, "TICK 3", 1, 60)
    return spec


def dest_spec(spec: GuestSpec, src_store: Engine, dest_store: Engine, block: bool) -> GuestSpec:
    if not block:  # shared storage: the very same disk files (one machine, one store)
        return spec
    disks = []
    for d in spec.disks:
        pool, name = (d.source or "").split("/", 1)
        with src_store.open(pool, name) as img:
            size = img.size()
        dest_store.create(pool, name, size)
        with dest_store.open(pool, name) as img:
            disks.append(DiskSpec(d.device_id, img.blockdev_options(node_prefix(d.device_id))))
    return spec.with_disks(disks)


@pytest.mark.parametrize("block", [False, True], ids=["shared", "block"])
def test_live_migration_keeps_the_guest_running(
        hosts: tuple[QemuDriver, QemuDriver, Engine], guest: GuestFiles, store: Engine,
        block: bool) -> None:
    a, b, dest_store = hosts
    spec = ticking_guest(a, guest, store)
    src_pid = a.pid(spec.uuid)
    assert src_pid is not None
    ticks = Ticks(a.paths(spec.uuid).console)
    try:
        inc = migration.prepare_incoming(b, dest_spec(spec, store, dest_store, block),
                                         block=block)
        ticks.add(b.paths(spec.uuid).console)
        assert inc.block is block
        if block:
            migration.mirror(a, spec.uuid, inc)
        info = migration.migrate(a, spec.uuid, inc)
        moved_at = ticks.last()
        pid = migration.finish(a, b, spec.uuid, inc)
        ticks.wait_past(moved_at + 25)
    finally:
        ticks.stop()
    assert info["status"] == "completed" and info["downtime"] < 5000
    # the source is gone, the guest lives in the destination's QEMU
    assert spec.uuid not in a.list_instances()
    assert pid != src_pid and b.pid(spec.uuid) == pid
    assert b.qmp(spec.uuid, "query-status")["status"] == "running"
    # the counter never went back or skipped: one guest, never restarted
    nums = sorted(ticks.seen)
    assert nums == list(range(nums[0], nums[-1] + 1))
    out = b.console_output(spec.uuid)
    assert "TICK 1\n" not in out.replace("\r", "")  # it did not boot again over there
    # the disk came along: read from the destination's disk, not the page cache
    with b.agent(spec.uuid) as ga:
        res = ga.sh("sync; echo 3 >/proc/sys/vm/drop_caches; cat /mnt/root/marker "
                    "/mnt/root/ticks")
    assert res.exitcode == 0, res.stderr
    marker, on_disk = res.stdout.decode().split()
    assert marker == "before-move" and int(on_disk) >= moved_at


def test_abort_leaves_the_guest_on_the_source(
        hosts: tuple[QemuDriver, QemuDriver, Engine], guest: GuestFiles,
        store: Engine) -> None:
    a, b, dest_store = hosts
    spec = ticking_guest(a, guest, store)
    ticks = Ticks(a.paths(spec.uuid).console)
    try:
        inc = migration.prepare_incoming(b, dest_spec(spec, store, dest_store, True),
                                         block=True)
        migration.mirror(a, spec.uuid, inc)
        migration.abort(a, b, spec.uuid, inc)
        at = ticks.last()
        ticks.wait_past(at + 10)
    finally:
        ticks.stop()
    assert spec.uuid not in b.list_instances()
    assert a.qmp(spec.uuid, "query-status")["status"] == "running"
    assert a.qmp(spec.uuid, "query-block-jobs") == []


#: a writer that keeps the guest's RAM and kernel busy: a 256 KiB tmpfs file rewritten
#: with one repeated counter line, a TICK on the console and the counter on disk (synced)
BUSY = ("dmesg -n 2; mkdir -p /fill && mount -t tmpfs tmpfs /fill; i=0; while :; do i=$((i+1)); "
        "yes $(printf %08d $i) | head -c 262143 >/fill/cur.tmp; mv /fill/cur.tmp /fill/cur; "
        "echo \"TICK $i\" >/dev/ttyS0; echo $i >/mnt/root/ticks; "
        "[ $((i % 10)) = 0 ] && sync; sleep 0.05; done")
OOPS = re.compile(r"Oops|BUG:|Kernel panic|general protection|Unable to handle")


def test_slow_moves_lose_no_store(hosts: tuple[QemuDriver, QemuDriver, Engine],
                                  guest: GuestFiles, store: Engine) -> None:
    """Three moves at 16 MiB/s (many dirty-sync rounds each) of a guest that keeps
    writing: after each, its kernel is well and the file it rewrites in RAM is whole.
    QEMU 7.2 under TCG lost stores here -- its guests oopsed within a few such moves;
    ``process.memory_arg`` gives them a RAM size that avoids the faulty path."""
    a, b, _ = hosts
    spec = dataclasses.replace(make_spec(guest, store), memory_mb=256)
    a.spawn(spec)
    wait_ready(a, spec.uuid)
    arg = process.memory_arg(256)  # "256", or "262136k" under TCG with QEMU < 9.0
    size = int(arg[:-1]) * 1024 if arg.endswith("k") else int(arg) << 20
    assert a.qmp(spec.uuid, "query-memory-size-summary")["base-memory"] == size
    with a.agent(spec.uuid) as ga:
        ga.exec("/bin/sh", ["-c", f"setsid sh -c '{BUSY}' </dev/null >/dev/null 2>&1 &"])
    a.wait_for_console(spec.uuid, "TICK 3", 1, 60)
    src, dst = a, b
    for move in range(3):
        inc = migration.prepare_incoming(dst, spec)
        info = migration.migrate(src, spec.uuid, inc, bandwidth=16 << 20)
        migration.finish(src, dst, spec.uuid, inc)
        time.sleep(2)
        out = dst.console_output(spec.uuid)
        assert not OOPS.search(out), f"move {move}: {out[-3000:]}"
        with dst.agent(spec.uuid, timeout=60) as ga:
            res = ga.sh("sort -u /fill/cur | wc -l", timeout=60)
        assert res.stdout.decode().split() == ["1"], (move, res.stdout, info)
        assert dst.qmp(spec.uuid, "query-memory-size-summary")["base-memory"] == size
        src, dst = dst, src
