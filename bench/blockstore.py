"""Block store (local engine) benchmark: no data copying on snapshot/clone; bulk I/O speed.

Figures, all measured side by side in one run on the same disk (a temp dir under
/var/tmp, not tmpfs):

- snapshot and clone time of an image with 8 GiB written, divided by the same for an
  image with 64 MiB written (goal <= 1.5: neither operation copies data);
- import and export throughput divided by ``dd bs=4M conv=fsync`` copying the same
  file (goal >= 0.8).  Every contender ends with the data fsynced; the best of three
  interleaved runs counts for each.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from strato.storage.local import LocalEngine

GiB = 1 << 30
MiB = 1 << 20
BIG = 8 * GiB
SMALL = 64 * MiB
IO_FILE = 2 * GiB
ROUNDS = 9


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _fill(path: Path, size: int) -> None:
    """Write ``size`` bytes of non-zero data (a random 64 MiB block, repeated)."""
    block = os.urandom(64 * MiB)
    with open(path, "wb") as f:
        for off in range(0, size, len(block)):
            f.write(block[: min(len(block), size - off)])
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _snap_clone_times(eng: LocalEngine, names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Median snapshot and clone time per image, the images measured in alternation.

    Each snapshot freezes the fully written base (it is merged back after timing), and
    alternating the images spreads noise from other work on the machine over both.
    """
    snaps: dict[str, list[float]] = {n: [] for n in names}
    clones: dict[str, list[float]] = {n: [] for n in names}
    for i in range(ROUNDS):
        for name in names:
            with eng.open("vms", name) as img:
                snaps[name].append(_timed(lambda img=img, i=i: img.create_snap(f"s{i}")))
                img.remove_snap(f"s{i}")  # an empty overlay merges back: base is top again
    for name in names:
        with eng.open("vms", name) as img:
            img.create_snap("snap")
            img.protect_snap("snap")
    for i in range(ROUNDS):
        for name in names:
            clones[name].append(_timed(
                lambda name=name, i=i: eng.clone("vms", name, "snap", "volumes", f"{name}-c{i}")))
    return {n: (statistics.median(snaps[n]), statistics.median(clones[n])) for n in names}


def _figure(metric: str, value: float, unit: str, goal: str) -> dict:
    return {"bench": "blockstore", "metric": metric, "value": round(value, 4), "unit": unit,
            "goal": goal}


def run() -> Iterable[dict]:
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path("/work")
    tmp = Path(tempfile.mkdtemp(prefix="strato-bench-", dir=base))
    try:
        yield from _run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path) -> Iterable[dict]:
    eng = LocalEngine(tmp / "store")
    # --- snapshot / clone: 8 GiB written vs 64 MiB written (same virtual size) -------
    block = os.urandom(64 * MiB)
    for name, written in (("big", BIG), ("small", SMALL)):
        eng.create("vms", name, BIG)
        with eng.open("vms", name) as img:
            for off in range(0, written, len(block)):
                img.write(block, off)
    times = _snap_clone_times(eng, ("big", "small"))
    (big_snap, big_clone), (small_snap, small_clone) = times["big"], times["small"]
    yield _figure("snapshot_time_ratio_8GiB_vs_64MiB", big_snap / small_snap, "ratio", "<= 1.5")
    yield _figure("clone_time_ratio_8GiB_vs_64MiB", big_clone / small_clone, "ratio", "<= 1.5")
    yield _figure("snapshot_time_8GiB", big_snap * 1000, "ms", "info")
    yield _figure("clone_time_8GiB", big_clone * 1000, "ms", "info")
    for i in range(ROUNDS):
        for name in ("big", "small"):
            eng.remove("volumes", f"{name}-c{i}")
    for name in ("big", "small"):
        with eng.open("vms", name) as img:
            img.unprotect_snap("snap")
            img.remove_snap("snap")
        eng.remove("vms", name)

    # --- import / export vs dd -----------------------------------------------------------
    src = tmp / "src.raw"
    _fill(src, IO_FILE)
    dd_t, imp_t, exp_t = [], [], []
    for i in range(3):
        out = tmp / "dd.raw"
        dd_t.append(_timed(lambda out=out: subprocess.run(
            ["dd", f"if={src}", f"of={out}", "bs=4M", "conv=fsync", "status=none"],
            check=True)))
        out.unlink()
        imp_t.append(_timed(lambda i=i: eng.import_from("images", f"imp{i}", src)))
        dest = tmp / "export.raw"

        def export(i: int = i, dest: Path = dest) -> None:
            with eng.open("images", f"imp{i}") as img:
                img.export_to(dest)
            _fsync(dest)

        exp_t.append(_timed(export))
        dest.unlink()
        eng.remove("images", f"imp{i}")
    dd_bw = IO_FILE / min(dd_t) / MiB
    yield _figure("dd_throughput", dd_bw, "MiB/s", "info")
    yield _figure("import_throughput", IO_FILE / min(imp_t) / MiB, "MiB/s", "info")
    yield _figure("export_throughput", IO_FILE / min(exp_t) / MiB, "MiB/s", "info")
    yield _figure("import_vs_dd", min(dd_t) / min(imp_t), "ratio", ">= 0.8")
    yield _figure("export_vs_dd", min(dd_t) / min(exp_t), "ratio", ">= 0.8")
