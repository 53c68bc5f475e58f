"""Crash safety of the local engine: SIGKILL an operation at named points and mid-merge.

A child process (crash_worker.py) runs one operation with STRATO_STORAGE_CRASHPOINT set,
so it kills itself with SIGKILL exactly there (or the test kills it from outside while
qemu-img is merging).  The next open must see every image exactly as it was before the
operation or as it is after it (same data, snapshots, protection and parent links), and
no journal record or orphaned layer file may remain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from strato.storage import errors
from strato.storage.crash import ENV
from strato.storage.local import LocalEngine

from .helpers import MiB, check_local_store, pattern, sha

WORKER = Path(__file__).with_name("crash_worker.py")
SIZE = 4 * MiB
State = dict[str, Any]


def build(root: Path, big: bool = False) -> LocalEngine:
    """images/p@snap (protected) → vms/c; volumes/v with s1, s2; volumes/w@s2 → wc."""
    eng = LocalEngine(root)
    size = 16 * MiB if big else SIZE
    eng.create("images", "p", size)
    with eng.open("images", "p") as img:
        img.write(pattern(1, size), 0)
        img.create_snap("snap")
        img.protect_snap("snap")
    eng.clone("images", "p", "snap", "vms", "c")
    with eng.open("vms", "c") as c:
        c.write(b"child", 100)
    for name in ("v", "w"):
        eng.create("volumes", name, size)
        with eng.open("volumes", name) as img:
            img.write(pattern(2, MiB), 0)
            img.create_snap("s1")
            img.write(pattern(3, MiB), MiB // 2)
            img.create_snap("s2")
            img.write(pattern(4, size // 2), size // 4)
    with eng.open("volumes", "w") as img:
        img.protect_snap("s2")
    eng.clone("volumes", "w", "s2", "volumes", "wc")
    (root / "import.raw").write_bytes(pattern(5, MiB) + bytes(MiB))
    return eng


def state(eng: LocalEngine) -> State:
    """Everything a user can see, taken after opening every image once (which repairs)."""
    for pool in eng.pools():
        for name in eng.list(pool):
            eng.open(pool, name).close()
    out: State = {}
    for pool in eng.pools():
        for name in eng.list(pool):
            with eng.open(pool, name) as img:
                try:
                    parent: Any = img.parent_info()
                except errors.ImageNotFound:
                    parent = None
                snaps = [(s.name, s.size, s.protected) for s in img.list_snaps()]
                out[f"{pool}/{name}"] = {
                    "size": img.size(), "sha": sha(img.read(0, img.size())),
                    "snaps": snaps, "parent": parent,
                    "children": img.list_children(),
                }
            for s, *_ in snaps:
                with eng.open(pool, name, snapshot=s) as snap:
                    out[f"{pool}/{name}@{s}"] = sha(snap.read(0, snap.size()))
    return out


def run_worker(root: Path, op: str, args: dict[str, Any], point: str | None) -> int:
    env = dict(os.environ)
    env.pop(ENV, None)
    if point:
        env[ENV] = f"{op}:{point}"
    proc = subprocess.run([sys.executable, str(WORKER), str(root), op, json.dumps(args)],
                          env=env, capture_output=True, timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr.decode())
    return proc.returncode


V = {"pool": "volumes", "name": "v"}
CASES: list[tuple[str, str, dict[str, Any], list[tuple[str, str]]]] = [
    ("snapshot", "snapshot", dict(V, snap="s3"),
     [("after-journal", "before"), ("after-overlay", "before"), ("after-metadata", "after")]),
    ("clone", "clone", {"pool": "images", "name": "p", "snap": "snap", "c_pool": "volumes",
                        "c_name": "c2"},
     [("after-journal", "before"), ("after-overlay", "before"), ("after-metadata", "after")]),
    ("flatten", "flatten", {"pool": "vms", "name": "c"},
     [("after-journal", "after"), ("after-rebase", "after"), ("after-metadata", "after")]),
    ("remove_snap_top", "remove_snap", dict(V, snap="s2"),
     [("after-journal", "after"), ("after-resize", "after"), ("after-merge", "after"),
      ("after-metadata", "after")]),
    ("remove_snap_middle", "remove_snap", {"pool": "volumes", "name": "w", "snap": "s1"},
     [("after-journal", "after"), ("after-merge", "after"), ("after-metadata", "after")]),
    ("remove", "remove", {"pool": "vms", "name": "c"},
     [("after-checks", "before"), ("after-metadata", "after")]),
    ("remove_clone", "remove", {"pool": "volumes", "name": "wc"},
     [("after-metadata", "after"), ("after-first-layer", "after")]),
    ("rollback", "rollback", dict(V, snap="s2"),
     [("after-overlay", "before"), ("after-metadata", "after")]),
    ("resize", "resize", dict(V, size=2 * MiB),
     [("after-journal", "after"), ("after-layer", "after")]),
    ("create", "create", {"pool": "vms", "name": "new", "size": MiB},
     [("after-layer", "before")]),
    ("import", "import", {"pool": "images", "name": "imp", "path": "IMPORT"},
     [("after-layer", "before")]),
    ("copy", "copy", dict(V, dest_pool="vms", dest_name="cp"), [("after-layer", "before")]),
    ("deep_copy", "deep_copy", {"pool": "vms", "name": "c", "dest_pool": "vms",
                                "dest_name": "dc"}, [("after-layers", "before")]),
]
PARAMS = [pytest.param(key, op, args, point, expect, id=f"{key}:{point}")
          for key, op, args, points in CASES for point, expect in points]
_AFTER: dict[str, State] = {}


def _fix_args(args: dict[str, Any], root: Path) -> dict[str, Any]:
    return {k: str(root / "import.raw") if v == "IMPORT" else v for k, v in args.items()}


def after_state(key: str, op: str, args: dict[str, Any], tmp_root: Path) -> State:
    """The state the operation leads to when it is not interrupted (cached per case)."""
    if key not in _AFTER:
        build(tmp_root)
        assert run_worker(tmp_root, op, _fix_args(args, tmp_root), None) == 0
        _AFTER[key] = state(LocalEngine(tmp_root))
    return _AFTER[key]


@pytest.mark.parametrize("key,op,args,point,expect", PARAMS)
def test_crash_at_point(tmp_path: Path, key: str, op: str, args: dict[str, Any], point: str,
                        expect: str, local_root: Path) -> None:
    root = tmp_path / "crashed"
    before = state(build(root))
    after = after_state(key, op, args, tmp_path / "reference")
    assert before != after
    assert run_worker(root, op, _fix_args(args, root), point) == -signal.SIGKILL
    eng = LocalEngine(root)  # the next open repairs
    got = state(eng)
    assert got == (before if expect == "before" else after)
    check_local_store(eng)


@pytest.mark.parametrize("point", ["after-journal", "after-merge"])
def test_repair_on_image_open(tmp_path: Path, point: str, local_root: Path) -> None:
    """Opening just the image (no store-wide repair) also finishes the operation."""
    root = tmp_path / "s"
    build(root)
    args = dict(V, snap="s2")
    assert run_worker(root, "remove_snap", args, point) == -signal.SIGKILL
    eng = LocalEngine(root, repair=False)
    with eng.open("volumes", "v") as img:
        assert [s.name for s in img.list_snaps()] == ["s1"]
    assert state(eng) == after_state("remove_snap_top", "remove_snap", args,
                                     tmp_path / "reference")
    check_local_store(eng)


@pytest.mark.parametrize("overlay,expect", [(True, "after"), (False, "before")])
def test_crash_during_live_snapshot(tmp_path: Path, overlay: bool, expect: str,
                                    local_root: Path) -> None:
    """The agent dies between prepare and commit: keep QEMU's overlay if it exists."""
    root = tmp_path / "s"
    before = state(build(root))
    rc = run_worker(root, "live_snapshot", dict(V, snap="live", make_overlay=overlay), None)
    assert rc == -signal.SIGKILL
    eng = LocalEngine(root)
    got = state(eng)
    if expect == "before":
        assert got == before
    else:
        assert [s[0] for s in got["volumes/v"]["snaps"]] == ["s1", "s2", "live"]
        assert got["volumes/v@live"] == before["volumes/v"]["sha"]
        assert got["volumes/v"]["sha"] == before["volumes/v"]["sha"]
    check_local_store(eng)


@pytest.mark.parametrize("key,op,args,crashpoint", [
    ("flatten", "flatten", {"pool": "vms", "name": "c"}, "qemu-img:rebase:10"),
    ("remove_snap_top", "remove_snap", dict(V, snap="s2"), "qemu-img:commit:10"),
    ("remove_snap_middle", "remove_snap", {"pool": "volumes", "name": "w", "snap": "s1"},
     "qemu-img:rebase:5"),
])
def test_crash_inside_qemu_img(tmp_path: Path, key: str, op: str, args: dict[str, Any],
                               crashpoint: str, local_root: Path) -> None:
    """Die a few ms into the merge itself (qemu-img dies with us): rolled forward."""
    ref = tmp_path / "reference"
    build(ref, big=True)
    assert run_worker(ref, op, args, None) == 0
    after = state(LocalEngine(ref))
    root = tmp_path / "s"
    build(root, big=True)
    env = dict(os.environ, **{ENV: crashpoint})
    proc = subprocess.run([sys.executable, str(WORKER), str(root), op, json.dumps(args)],
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    eng = LocalEngine(root)
    assert state(eng) == after
    check_local_store(eng)


@pytest.mark.slow
@pytest.mark.parametrize("key,op,args", [
    ("flatten", "flatten", {"pool": "vms", "name": "c"}),
    ("remove_snap_top", "remove_snap", dict(V, snap="s2")),
    ("remove_snap_middle", "remove_snap", {"pool": "volumes", "name": "w", "snap": "s1"}),
])
def test_kill_mid_merge(tmp_path: Path, key: str, op: str, args: dict[str, Any],
                        local_root: Path) -> None:
    """SIGKILL from outside while qemu-img is copying data (16 MiB images)."""
    ref = tmp_path / "reference"
    build(ref, big=True)
    assert run_worker(ref, op, args, None) == 0
    after = state(LocalEngine(ref))
    outcomes = set()
    before: State | None = None
    for attempt, delay in enumerate((0.0, 0.03)):
        root = tmp_path / f"s{attempt}"
        eng = build(root, big=True)
        before = before or state(eng)  # the same for every attempt
        journal = root / "journal"
        proc = subprocess.Popen([sys.executable, str(WORKER), str(root), op, json.dumps(args)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not list(journal.glob("*.json")) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        eng = LocalEngine(root)
        got = state(eng)
        assert got in (before, after)
        outcomes.add("after" if got == after else "before")
        check_local_store(eng)
    assert outcomes
