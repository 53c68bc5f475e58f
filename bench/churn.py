"""Snapshot churn on a running guest: chains stay short, the guest stays fast.

One guest (the tiny guest, its root disk a clone of an image, as strato boots them) on
the local engine.  100 cycles of: the guest writes 1 MiB, a live snapshot of its disk
(QMP, as createImage takes it), and the oldest snapshot removed once more than 5 are
kept — removal merges the layer through the guest's own QEMU.  Figures:

* ``chain_depth_after``: the layers QEMU opens for the disk after the churn (5
  snapshots kept: the image's layer + 5 frozen + top = 7 at best);
* ``seq_read_after_vs_before``: the guest's sequential read (O_DIRECT, 256 MiB) after
  the churn over before it;
* ``online_delete_vs_offline_commit``: removing a snapshot with 1 GiB written above it
  while the guest runs (QEMU's active commit), over an offline ``qemu-img commit`` of a
  copy of the same two layers, timed in the same run (both made durable: fsync).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

from strato.storage.local import LocalEngine, fsync_file
from strato.virt.guestbuild import READY_MARKER, build_guest
from strato.virt.qemu import DiskSpec, GuestSpec, QemuDriver, node_prefix, storage_resolver

CYCLES, KEEP = 100, 5
DISK = 3 << 30
DATA_MB = 256  # read back before and after the churn
BIG_MB = 1024  # written above the snapshot whose removal is timed


def _sh(drv: QemuDriver, uid: str, script: str, timeout: float = 1800) -> str:
    with drv.agent(uid, timeout=timeout) as ga:
        r = ga.sh(script, timeout=timeout)
    assert r.exitcode == 0, r.stdout + r.stderr
    return r.stdout.decode()


def _write(drv: QemuDriver, uid: str, mb: int, seek_mb: int) -> None:
    """Incompressible data (one random 1 MiB block repeated) onto the raw disk."""
    _sh(drv, uid, "dd if=/dev/urandom of=/tmp/block bs=1M count=1 2>/dev/null && "
        f"i=0; while [ $i -lt {mb} ]; do cat /tmp/block; i=$((i+1)); done | "
        f"dd of=/dev/vda bs=1M seek={seek_mb} iflag=fullblock conv=fsync 2>/dev/null")


def _read_seconds(drv: QemuDriver, uid: str) -> float:
    """The guest reads the data set sequentially in 64 KiB requests, bypassing its page
    cache, four times over in one go (after one warm-up pass and a host sync, so both
    sides read from the host's cache alike); the median of three such runs."""
    subprocess.run(["sync"], check=True)
    read = (f"i=0; while [ $i -lt 4 ]; do dd if=/dev/vda of=/dev/null bs=64k "
            f"count={DATA_MB * 16} skip={128 * 16} iflag=direct 2>/dev/null; i=$((i+1)); done")
    times = []
    for _ in range(4):  # timed by the guest's clock: the agent's polling is too coarse
        a, b = _sh(drv, uid, f"a=$(cut -d' ' -f1 /proc/uptime); {read}; "
                   "b=$(cut -d' ' -f1 /proc/uptime); echo $a $b").split()
        times.append(float(b) - float(a))
    print(f"churn: sequential reads {[round(t, 3) for t in times]} s", file=sys.stderr)
    return statistics.median(times[1:])


def _offline_commit_seconds(eng: LocalEngine, meta: dict, work: Path) -> float:
    """``qemu-img commit`` of copies of the top and the layer under it."""
    lower, upper = (eng.layer_path(layer) for layer in meta["layers"][-2:])
    lo, up = work / f"lower{lower.suffix}", work / "upper.qcow2"
    for src, dst in ((lower, lo), (upper, up)):
        subprocess.run(["qemu-img", "convert", "-U", "-q", "-f", src.suffix[1:], "-O",
                        src.suffix[1:], *(["-B", str(lo), "-F", lo.suffix[1:]]
                                          if dst == up else []), str(src), str(dst)],
                       check=True)
    subprocess.run(["sync"], check=True)
    started = time.perf_counter()
    subprocess.run(["qemu-img", "commit", "-q", "-d", "-f", "qcow2", str(up)], check=True)
    fsync_file(lo)  # as the store's own offline merge does
    took = time.perf_counter() - started
    lo.unlink()
    up.unlink()
    return took


def run() -> Iterator[dict]:
    work = Path(tempfile.mkdtemp(prefix="strato-bench-churn-", dir="/var/tmp"))
    uid = uuidlib.uuid4().hex
    eng = LocalEngine(work / "store")
    drv = QemuDriver(work / "instances", resolve=storage_resolver(eng))
    disk = f"{uid}_disk"
    try:
        guest = build_guest(work / "guest")
        eng.import_from("images", "base", guest.disk)
        with eng.open("images", "base") as img:
            img.create_snap("snap")
            img.protect_snap("snap")
        eng.clone("images", "base", "snap", "vms", disk)
        with eng.open("vms", disk) as img:
            img.resize(DISK)
            opts = img.blockdev_options(node_prefix("vda"))
        drv.spawn(GuestSpec(uid, "churn", 256, 1, guest.kernel, guest.initramfs,
                            guest.cmdline, (DiskSpec("vda", opts, source=f"vms/{disk}"),)))
        drv.wait_for_console(uid, f"{READY_MARKER} bootcount=1", 1, 120)
        drv.wait_for_agent(uid, 120)
        _write(drv, uid, DATA_MB, 128)
        before = _read_seconds(drv, uid)

        snaps: list[str] = []
        deepest, removal = 0, []
        for i in range(CYCLES):
            _write(drv, uid, 1, 128 + DATA_MB + (i % 64))
            with eng.open("vms", disk) as img:
                drv.snapshot_disk(uid, "vda", img, f"s{i}", quiesce=False)
                snaps.append(f"s{i}")
                deepest = max(deepest, len(eng.image_chain(eng.load("vms", disk))))
                if len(snaps) > KEEP:
                    started = time.perf_counter()
                    img.remove_snap(snaps.pop(0))
                    removal.append(time.perf_counter() - started)
        meta = eng.load("vms", disk)
        depth = len(eng.image_chain(meta))  # what QEMU opens: the image's layer too
        assert not any(s.get("removed") for s in meta["snaps"]), "merges left waiting"
        after = _read_seconds(drv, uid)
        assert drv.pid(uid) is not None, "the guest died"

        # 1 GiB above the newest snapshot, then its removal (active commit) vs offline
        _write(drv, uid, BIG_MB, 128 + DATA_MB + 64)
        offline = _offline_commit_seconds(eng, eng.load("vms", disk), work)
        subprocess.run(["sync"], check=True)
        started = time.perf_counter()
        with eng.open("vms", disk) as img:
            img.remove_snap(snaps.pop())
        online = time.perf_counter() - started
        assert drv.pid(uid) is not None, "the guest died"
    finally:
        for u in drv.list_instances():
            drv.destroy(u)
        shutil.rmtree(work, ignore_errors=True)
    yield {"bench": "churn", "metric": "chain_depth_after", "value": depth,
           "unit": "layers", "goal": "<= 7"}
    yield {"bench": "churn", "metric": "chain_depth_max", "value": deepest,
           "unit": "layers", "goal": "info"}
    yield {"bench": "churn", "metric": "seq_read_after_vs_before",
           "value": round(before / after, 3), "unit": "x", "goal": ">= 0.9"}
    yield {"bench": "churn", "metric": "remove_oldest_p50_seconds",
           "value": round(statistics.median(removal), 3), "unit": "s", "goal": "info"}
    yield {"bench": "churn", "metric": "online_delete_vs_offline_commit",
           "value": round(online / offline, 3), "unit": "x", "goal": "<= 2"}
    yield {"bench": "churn", "metric": "online_delete_1g_seconds", "value": round(online, 3),
           "unit": "s", "goal": "info"}
    yield {"bench": "churn", "metric": "offline_commit_1g_seconds",
           "value": round(offline, 3), "unit": "s", "goal": "info"}
