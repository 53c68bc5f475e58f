"""Block store (rbd engine) benchmark on a real single-node Ceph cluster of its own.

Starts a cluster with scripts/ceph.sh in a temp dir under /var/tmp (osd on a sparse
file big enough for the data written), then measures, in one run:

- strato's overhead: snapshot and clone latency through the rbd engine divided by the
  same librbd calls made directly (goal <= 3: the engine adds checks, not work);
- no data copying: snapshot and clone time of an image with 8 GiB written divided by
  the same for an image with 64 MiB written (goal <= 1.5).

Medians of interleaved rounds, so noise from other work on the machine hits both sides.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # librbd is imported only once the cluster runs
    from strato.storage.rbd import RbdEngine

GiB = 1 << 30
MiB = 1 << 20
BIG = 8 * GiB
SMALL = 64 * MiB
OSD_SIZE = "24G"  # sparse: 8 GiB + 64 MiB of data, rocksdb, and room to spare
ROUNDS = 15
ROOT = Path(__file__).resolve().parent.parent


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _figure(metric: str, value: float, unit: str, goal: str) -> dict:
    return {"bench": "ceph", "metric": metric, "value": round(value, 4), "unit": unit,
            "goal": goal}


@contextmanager
def cluster(tmp: Path) -> Iterator[tuple[Path, float]]:
    """A cluster of our own: (its ceph.conf, bootstrap seconds); stopped on the way out."""
    script = ROOT / "scripts" / "ceph.sh"
    env = {**os.environ, "STRATO_CEPH_OSD_SIZE": OSD_SIZE}
    t = time.perf_counter()
    out = subprocess.run([str(script), "start", str(tmp / "cluster")], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    took = time.perf_counter() - t
    try:
        yield Path(out.strip().splitlines()[-1]), took
    finally:
        subprocess.run([str(script), "stop", str(tmp / "cluster")], check=False)


def _check_installed() -> None:
    """Ceph's daemons and librados/librbd bindings: scripts/setup-ceph.sh installs them."""
    missing = [b for b in ("ceph-mon", "ceph-osd") if shutil.which(b) is None]
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError as exc:
        missing.append(f"python module {exc.name}")
    if missing:
        raise SystemExit(f"bench ceph: Ceph is not installed here ({', '.join(missing)} "
                         "missing): run `make bench B=ceph`, or scripts/setup-ceph.sh first")


def run() -> Iterable[dict]:
    _check_installed()
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path("/work")
    tmp = Path(tempfile.mkdtemp(prefix="strato-bench-ceph-", dir=base))
    try:
        with cluster(tmp) as (conf, bootstrap):
            yield _figure("cluster_bootstrap", bootstrap, "s", "< 30")
            yield from _run(conf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fill(engine: RbdEngine, name: str, written: int) -> None:
    block = os.urandom(64 * MiB)
    engine.create("vms", name, BIG)
    with engine.open("vms", name) as img:
        for off in range(0, written, len(block)):
            img.write(block, off)
        img.flush()


def _run(conf: Path) -> Iterable[dict]:
    import rbd

    from strato.storage.rbd import RbdEngine

    eng = RbdEngine(conf)
    t = time.perf_counter()
    for name, written in (("big", BIG), ("small", SMALL)):
        _fill(eng, name, written)
    yield _figure("write_8GiB_throughput", (BIG + SMALL) / (time.perf_counter() - t) / MiB,
                  "MiB/s", "info")
    vms, volumes = eng.ioctx("vms"), eng.ioctx("volumes")
    raw_rbd = rbd.RBD()
    names = ("big", "small")
    snap: dict[tuple[str, str], list[float]] = {(n, k): [] for n in names for k in ("s", "r")}
    clone: dict[tuple[str, str], list[float]] = {(n, k): [] for n in names for k in ("s", "r")}
    for i in range(ROUNDS):  # each snapshot on a fresh handle: both take the image's lock
        for name in names:
            with eng.open("vms", name) as img:
                snap[name, "s"].append(_timed(lambda img=img, i=i: img.create_snap(f"s{i}")))
            raw = rbd.Image(vms, name)
            try:
                snap[name, "r"].append(_timed(lambda raw=raw, i=i: raw.create_snap(f"r{i}")))
                raw.remove_snap(f"r{i}")
                raw.remove_snap(f"s{i}")
            finally:
                raw.close()
    for name in names:
        with eng.open("vms", name) as img:
            img.create_snap("snap")
            img.protect_snap("snap")
    for i in range(ROUNDS):
        for name in names:
            clone[name, "s"].append(_timed(
                lambda name=name, i=i: eng.clone("vms", name, "snap", "volumes", f"{name}-s{i}")))
            clone[name, "r"].append(_timed(
                lambda name=name, i=i: raw_rbd.clone(vms, name, "snap", volumes, f"{name}-r{i}")))
    s = {k: statistics.median(v) for k, v in snap.items()}
    c = {k: statistics.median(v) for k, v in clone.items()}

    def overhead(times: dict[tuple[str, str], list[float]]) -> float:
        """Median through strato / median through librbd, both images' rounds pooled."""
        ours = statistics.median(times["big", "s"] + times["small", "s"])
        theirs = statistics.median(times["big", "r"] + times["small", "r"])
        return ours / theirs

    yield _figure("snapshot_strato_vs_librbd", overhead(snap), "ratio", "<= 3")
    yield _figure("clone_strato_vs_librbd", overhead(clone), "ratio", "<= 3")
    yield _figure("snapshot_time_ratio_8GiB_vs_64MiB", s["big", "s"] / s["small", "s"], "ratio",
                  "<= 1.5")
    yield _figure("clone_time_ratio_8GiB_vs_64MiB", c["big", "s"] / c["small", "s"], "ratio",
                  "<= 1.5")
    yield _figure("snapshot_time_8GiB", s["big", "s"] * 1000, "ms", "info")
    yield _figure("clone_time_8GiB", c["big", "s"] * 1000, "ms", "info")
    yield _figure("snapshot_time_librbd_64MiB", s["small", "r"] * 1000, "ms", "info")
    yield _figure("clone_time_librbd_64MiB", c["small", "r"] * 1000, "ms", "info")
    eng.close()
