"""Crash safety of merges under a running QEMU: SIGKILL the store at each step.

A ``qemu-storage-daemon`` holds the image and keeps running (as a guest's QEMU outlives
a killed strato); a child process removes a snapshot and SIGKILLs itself at a named
point.  Afterwards the next open of the store (which repairs) must leave the chain
merged or intact, the QEMU's view of the data unchanged, and a second removal (or the
repair itself) must finish the job.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from strato.storage.crash import ENV
from strato.storage.local import LocalEngine

from .helpers import MiB, check_local_store, sha
from .holder import Holder

WORKER = Path(__file__).with_name("crash_worker.py")
POINTS = ["after-journal", "after-mark", "before-job", "job-started", "before-pivot",
          "job-concluded", "after-job", "after-merge", "after-metadata"]
SIZE = 16 * MiB


@pytest.mark.parametrize("which", ["newest", "oldest"])
@pytest.mark.parametrize("point", POINTS)
def test_kill_during_online_merge(tmp_path: Path, which: str, point: str) -> None:
    root = tmp_path / "store"
    eng = LocalEngine(root)
    eng.create("vms", "disk", SIZE)
    with Holder(eng, "vms", "disk", tmp_path / "h") as h:
        fill, expect = h.fill, h.expect
        fill(0x01, 0, 8 * MiB)
        for i in range(3):
            h.snapshot(f"s{i}")
            fill(0x10 + i, (i + 2) * MiB, 3 * MiB)
        layers = len(eng.load("vms", "disk")["layers"])
        snap = "s2" if which == "newest" else "s0"
        env = dict(os.environ, **{ENV: f"remove_snap:{point}"})
        res = subprocess.run([sys.executable, str(WORKER), str(root), "remove_snap",
                              f'{{"pool": "vms", "name": "disk", "snap": "{snap}"}}'],
                             env=env, capture_output=True, text=True, timeout=120)
        if point == "before-pivot" and which == "oldest":
            assert res.returncode == 0, res.stderr  # a stream never pivots
        else:
            assert res.returncode == -9, f"never reached {point}: {res.stderr}"
        assert sha(h.read_all()) == sha(bytes(expect)), "the guest's view changed"

        eng = LocalEngine(root)  # a restarted strato: repair rolls the merge forward
        with eng.open("vms", "disk") as img:
            if snap in {s.name for s in img.list_snaps()}:  # killed before the commit point
                img.remove_snap(snap)
            assert snap not in {s.name for s in img.list_snaps()}
            assert img.compact() == 0
        assert len(eng.load("vms", "disk")["layers"]) == layers - 1
        assert sha(h.read_all()) == sha(bytes(expect))
        fill(0x77, 14 * MiB, MiB)  # the guest goes on writing where the store says
        assert sha(h.read_all()) == sha(bytes(expect))
    with eng.open("vms", "disk") as img:
        assert sha(img.read(0, SIZE)) == sha(bytes(expect))
    check_local_store(eng)
    assert sorted(p.name for p in (root / "layers").iterdir()) == sorted(
        eng.layer_path(layer).name for layer in eng.load("vms", "disk")["layers"])
