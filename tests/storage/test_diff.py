"""Change tracking: ``Image.diff_iterate`` on every engine (the contract), plus the local
engine's mapped snapshot reads.

The oracle is the data itself: every byte that differs between two views must lie in a
reported extent (checked byte for byte and against the base class's compare-the-data
default), an extent reported as not existing must read as zeroes, and on the local
engine the extents are exactly the 64 KiB clusters written since the snapshot.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from strato.storage import Engine, Extent, Image, errors
from strato.storage.local import LocalEngine

from .helpers import MiB, pattern

SIZE = 8 * MiB
CLUSTER = 64 << 10  # the local engine's qcow2 overlays


def diff(img: Image, since: str | None, granularity: int = 4 * MiB) -> list[Extent]:
    out = list(img.diff_iterate(since, granularity))
    check_shape(out, img.size(), granularity)
    return out


def check_shape(extents: list[Extent], size: int, granularity: int) -> None:
    """Sorted, disjoint, inside the image, never across a multiple of granularity."""
    pos = 0
    for e in extents:
        assert e.length > 0 and e.offset >= pos and e.offset + e.length <= size, extents
        assert e.offset // granularity == (e.offset + e.length - 1) // granularity, e
        pos = e.offset + e.length


def differing(old: bytes, new: bytes, step: int = 4096) -> list[tuple[int, int]]:
    """Byte ranges where two views differ (``old`` padded with zeroes)."""
    old = old[:len(new)].ljust(len(new), b"\0")
    out: list[tuple[int, int]] = []
    for off in range(0, len(new), step):
        a, b = old[off:off + step], new[off:off + step]
        if a == b:
            continue
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                pos = off + i
                if out and out[-1][1] == pos:
                    out[-1] = (out[-1][0], pos + 1)
                else:
                    out.append((pos, pos + 1))
    return out


def check_diff(img: Image, since: str | None, old: bytes, new: bytes,
               granularity: int = 4 * MiB) -> list[Extent]:
    """The reported extents cover every changed byte, and read as zeroes where they
    say they do not exist."""
    extents = diff(img, since, granularity)
    mask = bytearray(len(new))
    for e in extents:
        mask[e.offset:e.offset + e.length] = b"\1" * e.length
        if not e.exists:
            assert new[e.offset:e.offset + e.length] == bytes(e.length), e
    for start, end in differing(old, new):
        assert mask[start:end] == b"\1" * (end - start), (start, end, extents)
    return extents


def clusters(extents: Iterable[Extent]) -> set[int]:
    out: set[int] = set()
    for e in extents:
        out.update(range(e.offset // CLUSTER, -(-(e.offset + e.length) // CLUSTER)))
    return out


def written(writes: Iterable[tuple[int, int]]) -> set[int]:
    out: set[int] = set()
    for off, n in writes:
        out.update(range(off // CLUSTER, -(-(off + n) // CLUSTER)))
    return out


def blocks(extents: Iterable[Extent], granularity: int) -> set[int]:
    out: set[int] = set()
    for e in extents:
        out.update(range(e.offset // granularity,
                         (e.offset + e.length - 1) // granularity + 1))
    return out


def read_view(engine: Engine, pool: str, name: str, snap: str | None) -> bytes:
    with engine.open(pool, name, snapshot=snap, read_only=True) as img:
        return img.read(0, img.size())


def local(engine: Engine) -> bool:
    return isinstance(engine, LocalEngine)


# --- the contract -----------------------------------------------------------------------
def test_diff_head_snapshots_and_none(engine: Engine) -> None:
    engine.create("volumes", "v", SIZE, order=20)
    with engine.open("volumes", "v") as img:
        assert diff(img, None) == []
        img.write(pattern(1, MiB), 0)
        img.write(pattern(2, 4096), 5 * MiB + 8192)
        v0 = img.read(0, SIZE)
        none = check_diff(img, None, b"", v0)
        assert sum(e.length for e in none) < 2 * MiB and all(e.exists for e in none)
        img.create_snap("a")
        assert diff(img, "a") == []  # nothing written since
        img.write(pattern(3, 100), 3 * MiB + 10)
        img.write(pattern(4, 2 * MiB), 6 * MiB - 4096)  # across a 4 MiB and object edge
        v1 = img.read(0, SIZE)
        head = check_diff(img, "a", v0, v1)
        assert sum(e.length for e in head) < 3 * MiB
        img.create_snap("b")
        img.write(pattern(5, 4096), 7 * MiB)
        v2 = img.read(0, SIZE)
        check_diff(img, "b", v1, v2)
        check_diff(img, "a", v0, v2)
        if local(engine):
            assert clusters(diff(img, "a")) == written(
                [(3 * MiB + 10, 100), (6 * MiB - 4096, 2 * MiB), (7 * MiB, 4096)])
            assert clusters(diff(img, "b")) == written([(7 * MiB, 4096)])
        # granularity cuts extents; a tiny one still covers the same bytes
        small = diff(img, "a", granularity=64 << 10)
        assert sum(e.length for e in small) == sum(e.length for e in diff(img, "a"))
        for bad in (0, -1):
            with pytest.raises(errors.InvalidArgument):
                list(img.diff_iterate("a", bad))
        with pytest.raises(errors.ImageNotFound):
            list(img.diff_iterate("nope"))
    with engine.open("volumes", "v", snapshot="b") as snap_b:
        check_diff(snap_b, "a", v0, v1)
        assert diff(snap_b, "b") == []
        check_diff(snap_b, None, b"", v1)
    with engine.open("volumes", "v", snapshot="a") as snap_a:
        with pytest.raises(errors.InvalidArgument):  # librbd: EINVAL from a newer one
            list(snap_a.diff_iterate("b"))


@pytest.mark.parametrize("seed", [7, 2024])
def test_diff_of_random_writes_covers_every_change(engine: Engine, seed: int) -> None:
    """Random writes (data, zeroes, the same data again), snapshots between them; for
    every pair of views: each changed byte reported, the compare-the-data default's
    blocks all reported too, and on local exactly the written clusters."""
    rng = random.Random(seed)
    engine.create("vms", "r", SIZE, order=20)
    views: list[tuple[str | None, bytes, list[tuple[int, int]]]] = []
    log: list[tuple[int, int]] = []
    with engine.open("vms", "r") as img:
        img.write(pattern(seed, 2 * MiB), MiB)
        for step in range(4):
            img.create_snap(f"s{step}")
            views.append((f"s{step}", img.read(0, SIZE), list(log)))
            for _ in range(rng.randint(1, 5)):
                n = rng.choice([1, 511, 4096, 70000, MiB + 3])
                off = rng.randrange(0, SIZE - n)
                kind = rng.random()
                if kind < 0.2:
                    data = bytes(n)
                elif kind < 0.35:  # rewrite what is there: may or may not be reported
                    data = img.read(off, n)
                else:
                    data = pattern(rng.randrange(1 << 30), n)
                img.write(data, off)
                log.append((off, n))
        views.append((None, img.read(0, SIZE), list(log)))
    g = MiB
    for i, (since, old, old_log) in enumerate(views[:-1]):
        for view, new, new_log in views[i + 1:]:
            with engine.open("vms", "r", snapshot=view, read_only=True) as img:
                ours = check_diff(img, since, old, new)
                default = list(Image.diff_iterate(img, since, g))
                assert blocks(ours, g) >= blocks(default, g), (since, view)
                if local(engine):
                    assert clusters(ours) == written(new_log[len(old_log):]), (since, view)


def test_diff_after_zeroing_and_discard(engine: Engine) -> None:
    engine.create("volumes", "z", SIZE, order=20)
    with engine.open("volumes", "z") as img:
        img.write(pattern(1, 4 * MiB), 0)
        img.create_snap("a")
        old = img.read(0, SIZE)
        img.write(bytes(MiB), MiB)  # whole clusters and objects of zeroes
        if not local(engine):
            img.rbd.discard(3 * MiB, MiB)  # type: ignore[attr-defined]
        new = img.read(0, SIZE)
        extents = check_diff(img, "a", old, new)
        gone = [e for e in extents if not e.exists]
        if local(engine):  # qcow2 zero clusters
            assert [(e.offset, e.length) for e in extents] == [(MiB, MiB)] and gone
        else:  # a discarded object no longer exists; zeroes written are data
            assert (3 * MiB, MiB) in [(e.offset, e.length) for e in gone]
        with pytest.raises(errors.ImageNotFound):
            list(img.diff_iterate("b"))


def test_diff_across_removed_snapshots(engine: Engine) -> None:
    """Snapshots between A and the view removed (their layers merged): same answer."""
    engine.create("volumes", "m", SIZE, order=20)
    with engine.open("volumes", "m") as img:
        img.write(pattern(1, SIZE), 0)
        img.create_snap("a")
        v_a = img.read(0, SIZE)
        img.write(pattern(2, 4096), MiB)
        img.create_snap("mid")
        img.write(pattern(3, 8192), 2 * MiB)
        img.create_snap("b")
        img.write(pattern(4, 4096), 3 * MiB)
        img.create_snap("newest")
        img.write(pattern(5, 4096), 4 * MiB)
        v_b = read_view(engine, "volumes", "m", "b")
        img.remove_snap("mid")  # merged up into b's layer
        img.remove_snap("newest")  # the top merged down
        head = img.read(0, SIZE)
        ext = check_diff(img, "a", v_a, head)
        if local(engine):
            assert clusters(ext) == written([(MiB, 4096), (2 * MiB, 8192), (3 * MiB, 4096),
                                             (4 * MiB, 4096)])
        with pytest.raises(errors.ImageNotFound):
            list(img.diff_iterate("mid"))
    with engine.open("volumes", "m", snapshot="b") as snap_b:
        ext = check_diff(snap_b, "a", v_a, v_b)
        if local(engine):
            assert clusters(ext) == written([(MiB, 4096), (2 * MiB, 8192)])


def test_diff_of_a_clone(engine: Engine) -> None:
    engine.create("images", "p", SIZE, order=20)
    with engine.open("images", "p") as p:
        p.write(pattern(1, MiB), 2 * MiB)
        p.create_snap("snap")
        p.protect_snap("snap")
        parent = p.read(0, SIZE)
    engine.clone("images", "p", "snap", "vms", "c", order=20)
    with engine.open("vms", "c") as c:
        # None: the parent's data is the clone's too
        ext = check_diff(c, None, b"", parent)
        assert sum(e.length for e in ext) <= 2 * MiB
        c.write(pattern(2, 4096), 5 * MiB)
        c.create_snap("c1")
        v1 = c.read(0, SIZE)
        c.write(pattern(3, 4096), 2 * MiB + 4096)  # over the parent's data
        c.write(pattern(4, 4096), 6 * MiB)
        head = c.read(0, SIZE)
        ext = check_diff(c, "c1", v1, head)
        if local(engine):
            assert clusters(ext) == written([(2 * MiB + 4096, 4096), (6 * MiB, 4096)])
        check_diff(c, None, b"", head)
        with pytest.raises(errors.ImageNotFound):  # the parent's snapshot is not the clone's
            list(c.diff_iterate("snap"))


def test_diff_after_resize(engine: Engine) -> None:
    engine.create("volumes", "g", 4 * MiB, order=20)
    with engine.open("volumes", "g") as img:
        img.write(pattern(1, MiB), 0)
        img.create_snap("small")
        old = img.read(0, 4 * MiB)
        img.resize(SIZE)
        assert diff(img, "small") == [] or all(
            not e.exists for e in diff(img, "small"))  # the new tail reads as zeroes
        img.write(pattern(2, 4096), 6 * MiB)  # in the new tail
        img.write(pattern(3, 512), 512)
        new = img.read(0, SIZE)
        ext = check_diff(img, "small", old, new)
        if local(engine):
            assert clusters(ext) == written([(6 * MiB, 4096), (512, 512)])
        img.create_snap("big")
        img.resize(2 * MiB)
        ext = check_diff(img, "big", new, img.read(0, 2 * MiB))
        assert all(e.offset + e.length <= 2 * MiB for e in ext)


# --- local engine specifics -------------------------------------------------------------
@pytest.fixture
def eng(local_root: Path) -> LocalEngine:
    return LocalEngine(local_root)


def test_snapshot_view_reads_map_once(eng: LocalEngine,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup reads a snapshot view extent by extent: the view's chain is mapped once
    (one ``qemu-img map``), then every read is a ``pread``; no process per read.  The
    map follows merges below the view, and a removed snapshot reads no more."""
    from strato.storage import qemuimg

    eng.create("volumes", "s", SIZE)
    with eng.open("volumes", "s") as img:
        img.write(pattern(1, 3 * MiB), 0)
        img.create_snap("a")
        img.write(pattern(2, 70000), MiB - 5)
        img.create_snap("b")
        img.write(pattern(3, 4096), 2 * MiB)
        img.create_snap("c")
        img.write(pattern(4, 4096), 0)
    expect = read_view(eng, "volumes", "s", "c")
    runs: list[str] = []
    real = qemuimg.run

    def counting(*args: str) -> str:
        runs.append(args[0])
        return real(*args)

    monkeypatch.setattr(qemuimg, "run", counting)
    with eng.open("volumes", "s", snapshot="c") as view:
        got = b"".join(view.read(off, 512 * 1024) for off in range(0, SIZE, 512 * 1024))
        assert got == expect and runs == ["map"]
        assert view.read(MiB - 7, 9) == expect[MiB - 7:MiB + 2]
        assert view.read(SIZE - 3, 10) == expect[-3:]
        with eng.open("volumes", "s") as head:  # merged up into c's chain
            head.remove_snap("b")
            head.remove_snap("a")
        runs.clear()
        assert view.read(0, SIZE) == expect
        assert runs == ["map"]  # the layers changed: mapped again, once
        with eng.open("volumes", "s") as head:
            head.remove_snap("c")
        with pytest.raises(errors.ImageNotFound):
            view.read(0, 512)
        assert view._view is None  # the merged layers' files are let go


def test_raw_layer_above_the_snapshot(eng: LocalEngine) -> None:
    """A raw layer between the snapshot and the view has no allocation map: its data
    counts as changed, and so do its holes where the snapshot held data."""
    import subprocess

    from strato.storage import qemuimg

    eng.create("volumes", "raw", SIZE)
    with eng.open("volumes", "raw") as img:
        img.write(pattern(1, 4 * MiB), 0)
        img.create_snap("a")
        img.write(bytes(MiB), MiB)  # zeroes over A's data: a hole once raw
        img.write(pattern(2, 4096), 6 * MiB)
        img.create_snap("b")
        img.write(pattern(3, 4096), 7 * MiB)
    old = read_view(eng, "volumes", "raw", "a")
    # turn b's layer into a raw copy of its view, the layer above re-pointed at it
    meta = eng.load("volumes", "raw")
    raw = {"id": "f" * 32, "fmt": "raw"}
    chain = eng.image_chain(meta, 1)
    qemuimg.run("convert", "-q", "-O", "raw", "-S", "4k",
                qemuimg.json_opts(qemuimg.image_opts(chain)), str(eng.layer_path(raw)))
    subprocess.run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b",
                    str(eng.layer_path(raw)), "-F", "raw", str(eng.layer_path(meta["layers"][2]))],
                   check=True)
    meta["layers"][1] = raw
    meta["snaps"][1]["layer"] = raw["id"]
    eng.save("volumes", "raw", meta)
    with eng.open("volumes", "raw") as img:
        new = img.read(0, SIZE)
        ext = check_diff(img, "a", old, new)
        zeroed = [(e.offset, e.length) for e in ext if not e.exists]
        assert zeroed == [(MiB, MiB)]
    with eng.open("volumes", "raw", snapshot="b") as img:
        check_diff(img, "a", old, img.read(0, SIZE))


def test_diff_while_a_qemu_writes(engine: Engine, tmp_path: Path) -> None:
    """Live snapshots of an image a QEMU writes: the diff between snapshot views, and
    from a snapshot to the head the QEMU holds, also after a snapshot between them was
    merged while the QEMU kept the image."""
    from .holder import Holder

    engine.create("vms", "q", SIZE)
    with Holder(engine, "vms", "q", tmp_path / "h") as h:
        h.fill(0x01, 0, 4 * MiB)
        h.snapshot("s0")
        v0 = bytes(h.expect)
        h.fill(0x02, MiB, 64 << 10)
        h.snapshot("s1")
        h.fill(0x03, 5 * MiB, 4096)
        h.snapshot("s2")
        v2 = bytes(h.expect)
        h.fill(0x04, 7 * MiB, 4096)
        with engine.open("vms", "q") as img:  # the QEMU flushed when qemu-io closed
            ext = check_diff(img, "s2", v2, bytes(h.expect))
            if local(engine):
                assert clusters(ext) == written([(7 * MiB, 4096)])
            img.remove_snap("s1")  # merged by the QEMU
        with engine.open("vms", "q", snapshot="s2") as s2:
            ext = check_diff(s2, "s0", v0, v2)
            if local(engine):
                assert clusters(ext) == written([(MiB, 64 << 10), (5 * MiB, 4096)])
        with engine.open("vms", "q") as img:
            check_diff(img, "s0", v0, bytes(h.expect))
            img.remove_snap("s0")
            img.remove_snap("s2")
