"""Backup store benchmark (issue 18): incremental backups cost the changed data, full
backups go as fast as ``dd``.

On each engine — local (its own temp dir under /var/tmp, not tmpfs) and rbd (a Ceph
cluster of its own, started with scripts/ceph.sh as the ``ceph`` bench does) — measured
side by side in one run, through ``BackupStore.write`` on real engine images:

- incremental backup time with 64 MiB changed (16 pieces of 4 MiB spread over the
  volume) on an 8 GiB volume, divided by the same on a 1 GiB volume (goal <= 1.5: the
  cost follows the changed data, not the volume's size); both volumes hold the same
  256 MiB of data below; rounds alternate between them and the medians count;
- full backup throughput of a volume written with data, divided by ``dd bs=4M`` of the
  same data between the same disks (goal >= 0.8): on local the snapshot's frozen layer
  file copied with ``dd conv=fsync`` into the backup store's directory; on rbd
  ``qemu-img dd`` from the volume's snapshot into an image of the backup pool.  Runs
  alternate and the best of each side counts.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from strato.backup.store import BackupData, BackupStore
from strato.storage import Engine, open_engine

GiB = 1 << 30
MiB = 1 << 20
BIG = 8 * GiB
SMALL = 1 * GiB
BASE_DATA = 256 * MiB
CHANGED = 64 * MiB
PIECE = 4 * MiB
FULL = {"local": 2 * GiB, "rbd": 1 * GiB}
ROUNDS = 5  # incremental rounds per volume (each its own fresh 64 MiB); medians count
FULL_ROUNDS = 5  # the disk is shared and noisy: best of five for each side


def _figure(metric: str, value: float, unit: str, goal: str) -> dict:
    return {"bench": "backup", "metric": metric, "value": round(value, 4), "unit": unit,
            "goal": goal}


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run() -> Iterable[dict]:
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path("/work")
    tmp = Path(tempfile.mkdtemp(prefix="strato-bench-backup-", dir=base))
    try:
        vol = open_engine("local", root=tmp / "vol")
        store = BackupStore(open_engine("local", root=tmp / "bk", pools=("backups",)),
                            "backups")
        yield from _engine_figures("local", vol, store, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    yield from _rbd()


def _rbd() -> Iterator[dict]:
    from bench.ceph import _check_installed, cluster

    _check_installed()
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path("/work")
    tmp = Path(tempfile.mkdtemp(prefix="strato-bench-backup-ceph-", dir=base))
    try:
        with cluster(tmp) as (conf, _bootstrap):
            vol = open_engine("rbd", ceph_conf=conf)
            bk = open_engine("rbd", ceph_conf=conf, pools=("backups",))
            try:
                yield from _engine_figures("rbd", vol, BackupStore(bk, "backups"), tmp,
                                           conf=conf)
            finally:
                vol.close()  # type: ignore[attr-defined]
                bk.close()  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(img_engine: Engine, name: str, data: bytes, offsets: Iterable[int]) -> None:
    with img_engine.open("volumes", name) as img:
        for off in offsets:
            img.write(data, off)
        img.flush()


def _engine_figures(kind: str, vol: Engine, store: BackupStore, tmp: Path,
                    conf: Path | None = None) -> Iterator[dict]:
    # --- incremental: 64 MiB changed on 8 GiB vs on 1 GiB --------------------------------
    block = os.urandom(PIECE)
    parents: dict[str, tuple[BackupData, str]] = {}
    for name, size in (("big", BIG), ("small", SMALL)):
        vol.create("volumes", name, size)
        _write(vol, name, os.urandom(BASE_DATA), [0])
        with vol.open("volumes", name) as img:
            img.create_snap("s0")
        with vol.open("volumes", name, snapshot="s0") as src:
            parents[name] = (store.write(f"{name}-0", src, None, None), "s0")
    times: dict[str, list[float]] = {"big": [], "small": []}
    for rnd in range(1, ROUNDS + 1):
        for name, size in (("big", BIG), ("small", SMALL)):
            step = size // (CHANGED // PIECE)
            # 4 MiB in each sixteenth of the volume, another place every round
            offsets = [i * step + (rnd + i) % (step // PIECE) * PIECE
                       for i in range(CHANGED // PIECE)]
            _write(vol, name, block, offsets)
            snap = f"s{rnd}"
            with vol.open("volumes", name) as img:
                img.create_snap(snap)
            parent, parent_snap = parents[name]
            with vol.open("volumes", name, snapshot=snap) as src:
                t = time.perf_counter()
                data = store.write(f"{name}-{rnd}", src, parent, parent_snap)
                times[name].append(time.perf_counter() - t)
            assert sum(c.length for c in data.chunks) <= CHANGED, "copied more than changed"
            # the next round is incremental to this one; the old snapshot goes
            with vol.open("volumes", name) as img:
                img.remove_snap(parent_snap)
            store.delete(parent.backup_id)
            parents[name] = (data, snap)
    big, small = statistics.median(times["big"]), statistics.median(times["small"])
    yield _figure(f"incremental_64MiB_time_ratio_8GiB_vs_1GiB_{kind}", big / small, "ratio",
                  "<= 1.5")
    yield _figure(f"incremental_64MiB_time_8GiB_{kind}", big, "s", "info")
    yield _figure(f"incremental_64MiB_time_1GiB_{kind}", small, "s", "info")
    for name in ("big", "small"):
        data, snap = parents[name]
        store.delete(data.backup_id)
        with vol.open("volumes", name) as img:
            img.remove_snap(snap)
        vol.remove("volumes", name)

    # --- full backup vs dd of the same data between the same disks ------------------------
    size = FULL[kind]
    vol.create("volumes", "full", size)
    chunk = os.urandom(64 * MiB)
    _write(vol, "full", chunk, range(0, size, len(chunk)))
    with vol.open("volumes", "full") as img:
        img.create_snap("snap")
    dd_t: list[float] = []
    bk_t: list[float] = []
    for i in range(FULL_ROUNDS):
        dd_t.append(_dd(kind, vol, store, tmp, conf))

        def full(i: int = i) -> None:
            with vol.open("volumes", "full", snapshot="snap") as src:
                store.write(f"full-{i}", src, None, None)

        bk_t.append(_timed(full))
        store.delete(f"full-{i}")
    yield _figure(f"full_backup_vs_dd_{kind}", min(dd_t) / min(bk_t), "ratio", ">= 0.8")
    yield _figure(f"full_backup_throughput_{kind}", size / min(bk_t) / MiB, "MiB/s", "info")
    yield _figure(f"dd_throughput_{kind}", size / min(dd_t) / MiB, "MiB/s", "info")
    with vol.open("volumes", "full") as img:
        img.remove_snap("snap")
    vol.remove("volumes", "full")


def _dd(kind: str, vol: Engine, store: BackupStore, tmp: Path, conf: Path | None) -> float:
    """Seconds ``dd`` takes to copy the snapshot's data to the backup store's disk."""
    if kind == "local":
        with vol.open("volumes", "full", snapshot="snap") as src:
            path = src.data_file()
        assert path is not None, "a snapshot of a written volume is one raw layer file"
        out = Path(store.engine.root) / "dd.raw"  # type: ignore[attr-defined]
        took = _timed(lambda: subprocess.run(
            ["dd", f"if={path}", f"of={out}", "bs=4M", "conv=fsync", "status=none"],
            check=True))
        out.unlink()
        return took
    assert conf is not None
    took = _timed(lambda: subprocess.run(
        ["qemu-img", "dd", "-f", "raw", "-O", "raw", "bs=4M",
         f"if=rbd:volumes/full@snap:conf={conf}", f"of=rbd:{store.pool}/dd:conf={conf}"],
        check=True))
    store.engine.remove(store.pool, "dd")
    return took
