"""The block store contract: every engine must pass this module unchanged.

Real data throughout: known patterns are written, snapshotted, overwritten, cloned,
flattened and removed in every allowed and refused order, with checksums compared at
each step.  Only the public interface is used (plus an on-disk invariant check that is
a no-op for engines other than ``local``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from strato.storage import Engine, errors, parse_location

from .helpers import MiB, apply, check_local_store, head_sha, pattern, sha, snap_sha

SIZE = 4 * MiB


def make(engine: Engine, pool: str, name: str, content: bytes) -> None:
    engine.create(pool, name, len(content))
    with engine.open(pool, name) as img:
        img.write(content, 0)


# --- images -------------------------------------------------------------------------------
def test_create_list_stat_remove(engine: Engine) -> None:
    assert set(engine.pools()) >= {"images", "vms", "volumes"}
    for pool in ("images", "vms", "volumes"):
        engine.create(pool, f"img-{pool}", SIZE, order=20)
    engine.create("volumes", "volume-2", 2 * MiB)
    assert engine.list("volumes") == ["img-volumes", "volume-2"]
    assert engine.list("images") == ["img-images"]
    with engine.open("volumes", "img-volumes") as img:
        st = img.stat()
        assert (st["size"], st["order"], st["obj_size"], st["num_objs"]) == (SIZE, 20, MiB, 4)
        assert img.size() == SIZE
        assert img.read(0, SIZE) == bytes(SIZE)  # new images read as zeros
        assert img.clone_depth() == 0
        with pytest.raises(errors.ImageNotFound):
            img.parent_info()
    with engine.open("images", "img-images") as img:
        assert img.stat()["order"] == 20
    with pytest.raises(errors.ImageExists):
        engine.create("volumes", "volume-2", MiB)
    engine.remove("volumes", "volume-2")
    assert engine.list("volumes") == ["img-volumes"]
    with pytest.raises(errors.ImageNotFound):
        engine.open("volumes", "volume-2")
    with pytest.raises(errors.ImageNotFound):
        engine.remove("volumes", "volume-2")
    with pytest.raises(errors.PoolNotFound):
        engine.create("nope", "x", MiB)
    for bad in (-512, 1000):
        with pytest.raises(errors.InvalidArgument):
            engine.create("vms", "bad", bad)
    for order in (11, 26):
        with pytest.raises(errors.InvalidArgument):
            engine.create("vms", "bad", MiB, order=order)
    check_local_store(engine)


def test_default_order_and_fsid(engine: Engine) -> None:
    engine.create("images", "a", MiB)
    with engine.open("images", "a") as img:
        assert img.stat()["order"] == 22
        loc = parse_location(img.location())
    assert (loc.fsid, loc.pool, loc.image, loc.snapshot) == (engine.fsid(), "images", "a", None)
    assert engine.location("images", "a", "snap") == f"rbd://{engine.fsid()}/images/a/snap"


def test_read_write_offsets(engine: Engine) -> None:
    engine.create("vms", "disk", SIZE)
    expect = bytes(SIZE)
    with engine.open("vms", "disk") as img:
        for seed, (off, n) in enumerate([(0, 4096), (5000, 333), (MiB - 7, 20),
                                         (SIZE - 512, 512), (2 * MiB, MiB)]):
            data = pattern(seed, n)
            assert img.write(data, off) == n
            expect = apply(expect, data, off)
            assert img.read(off, n) == data
        assert sha(img.read(0, SIZE)) == sha(expect)
        assert img.read(SIZE - 10, 100) == expect[-10:]  # short read at the end
        assert img.read(SIZE, 10) == b""
        with pytest.raises(errors.InvalidArgument):
            img.write(b"x" * 10, SIZE - 5)
        img.write(bytes(4096), 0)  # zeros are data too
        expect = apply(expect, bytes(4096), 0)
        assert sha(img.read(0, SIZE)) == sha(expect)
    # same through a snapshot overlay (the write path changes once there is one)
    with engine.open("vms", "disk") as img:
        img.create_snap("s")
        for seed, (off, n) in enumerate([(1, 1), (4095, 2), (3 * MiB + 17, 70000)], 10):
            data = pattern(seed, n)
            img.write(data, off)
            expect = apply(expect, data, off)
            assert img.read(off, n) == data
        img.write(bytes(MiB), 2 * MiB)
        expect = apply(expect, bytes(MiB), 2 * MiB)
        assert sha(img.read(0, SIZE)) == sha(expect)


def test_rename(engine: Engine) -> None:
    content = pattern(1, SIZE)
    make(engine, "images", "old", content)
    engine.create("images", "taken", MiB)
    with pytest.raises(errors.ImageExists):
        engine.rename("images", "old", "taken")
    with pytest.raises(errors.ImageNotFound):
        engine.rename("images", "missing", "x")
    engine.rename("images", "old", "new.deleted")
    assert engine.list("images") == ["new.deleted", "taken"]
    assert head_sha(engine, "images", "new.deleted") == sha(content)
    # a clone still finds its parent after the parent is renamed
    with engine.open("images", "new.deleted") as img:
        img.create_snap("snap")
        img.protect_snap("snap")
    engine.clone("images", "new.deleted", "snap", "vms", "child")
    engine.rename("images", "new.deleted", "renamed")
    with engine.open("vms", "child") as child:
        assert child.parent_info() == ("images", "renamed", "snap")
        assert sha(child.read(0, SIZE)) == sha(content)
    check_local_store(engine)


def test_resize(engine: Engine) -> None:
    content = pattern(2, SIZE)
    make(engine, "volumes", "v", content)
    with engine.open("volumes", "v") as img:
        img.resize(2 * SIZE)
        assert img.size() == 2 * SIZE
        assert sha(img.read(0, 2 * SIZE)) == sha(content + bytes(SIZE))
        img.resize(MiB)
        assert img.read(0, 2 * MiB) == content[:MiB]
        img.resize(SIZE)  # shrunk data must not come back
        assert sha(img.read(0, SIZE)) == sha(content[:MiB] + bytes(SIZE - MiB))
        # with a snapshot: the top overlay changes size, the snapshot keeps its own
        img.create_snap("s")
        img.resize(MiB)
        img.resize(3 * MiB)
        assert sha(img.read(0, 3 * MiB)) == sha(content[:MiB] + bytes(2 * MiB))
        with pytest.raises(errors.InvalidArgument):
            img.resize(1000)
    with engine.open("volumes", "v", snapshot="s") as snap:
        assert snap.size() == SIZE
        assert sha(snap.read(0, SIZE)) == sha(content[:MiB] + bytes(SIZE - MiB))
    with engine.open("volumes", "v") as img:
        img.remove_snap("s")  # merges a bigger frozen layer under a smaller top
        assert img.size() == 3 * MiB
        assert sha(img.read(0, 3 * MiB)) == sha(content[:MiB] + bytes(2 * MiB))
    check_local_store(engine)


# --- import / export ----------------------------------------------------------------------
def test_import_export_file_sparse(engine: Engine, tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    data = bytes(MiB) + pattern(3, MiB) + bytes(2 * MiB) + pattern(4, 4096) + bytes(MiB - 4096)
    src.write_bytes(data)
    engine.import_from("images", "img", src)
    with engine.open("images", "img") as img:
        assert img.size() == len(data)
        assert sha(img.read(0, len(data))) == sha(data)
        out = tmp_path / "out.raw"
        assert img.export_to(out) == len(data)
        assert sha(out.read_bytes()) == sha(data)
        assert os.stat(out).st_blocks * 512 < 2 * MiB  # zero runs were not written
        buf = io.BytesIO()
        assert img.export_to(buf) == len(data)
        assert sha(buf.getvalue()) == sha(data)
        assert sha(b"".join(img.iter_chunks(MiB))) == sha(data)
    with pytest.raises(errors.ImageExists):
        engine.import_from("images", "img", src)
    check_local_store(engine)


def test_import_export_stream(engine: Engine) -> None:
    data = pattern(5, 3 * MiB) + bytes(3 * MiB) + pattern(6, 1000)
    engine.import_from("volumes", "vol", io.BytesIO(data))
    with engine.open("volumes", "vol") as img:
        size = img.size()
        assert size == -(-len(data) // 512) * 512
        got = img.read(0, size)
        assert got[:len(data)] == data and got[len(data):] == bytes(size - len(data))
        img.create_snap("s")  # export through an overlay too
        img.write(b"abc", 10)
        buf = io.BytesIO()
        img.export_to(buf)
        assert sha(buf.getvalue()) == sha(apply(got, b"abc", 10))


def test_import_qcow2_and_refuse_foreign(engine: Engine, tmp_path: Path) -> None:
    import subprocess

    raw = tmp_path / "d.raw"
    raw.write_bytes(pattern(7, MiB))
    q = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(q)],
                   check=True)
    engine.import_from("images", "q", q, fmt="qcow2")
    assert head_sha(engine, "images", "q") == sha(raw.read_bytes())
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(raw), "-F", "raw",
                    str(backed)], check=True)
    with pytest.raises(errors.InvalidArgument):
        engine.import_from("images", "bad", backed, fmt="qcow2")
    ext = tmp_path / "ext.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={tmp_path / 'ext.data'}", str(ext), "1M"], check=True)
    with pytest.raises(errors.InvalidArgument):
        engine.import_from("images", "bad", ext, fmt="qcow2")
    assert "bad" not in engine.list("images")
    check_local_store(engine)


# --- snapshots ----------------------------------------------------------------------------
def test_snapshots(engine: Engine) -> None:
    a = pattern(10, SIZE)
    make(engine, "volumes", "v", a)
    with engine.open("volumes", "v") as img:
        img.create_snap("s1")
        b = apply(a, pattern(11, MiB), MiB)
        img.write(b[MiB:2 * MiB], MiB)
        img.create_snap("s2")
        c = apply(b, pattern(12, 5000), 3 * MiB + 3)
        img.write(c[3 * MiB + 3:3 * MiB + 5003], 3 * MiB + 3)
        with pytest.raises(errors.ImageExists):
            img.create_snap("s1")
        snaps = img.list_snaps()
        assert [s.name for s in snaps] == ["s1", "s2"]
        assert all(s.size == SIZE and not s.protected for s in snaps)
        assert snaps[0].id < snaps[1].id
        assert sha(img.read(0, SIZE)) == sha(c)
    assert snap_sha(engine, "volumes", "v", "s1") == sha(a)
    assert snap_sha(engine, "volumes", "v", "s2") == sha(b)
    with engine.open("volumes", "v", snapshot="s1") as snap:
        with pytest.raises(errors.ReadOnlyImage):
            snap.write(b"x", 0)
        assert snap.location().endswith("/volumes/v/s1")
    with pytest.raises(errors.ImageNotFound):
        engine.open("volumes", "v", snapshot="nope")
    with pytest.raises(errors.ImageHasSnapshots):
        engine.remove("volumes", "v")
    with engine.open("volumes", "v") as img:
        with pytest.raises(errors.ImageNotFound):
            img.remove_snap("nope")
        img.remove_snap("s1")  # oldest: merged into the next snapshot's layer
        assert [s.name for s in img.list_snaps()] == ["s2"]
    assert snap_sha(engine, "volumes", "v", "s2") == sha(b)
    assert head_sha(engine, "volumes", "v") == sha(c)
    with engine.open("volumes", "v") as img:
        img.create_snap("s3")
        img.write(b"tail", SIZE - 4)
        d = apply(c, b"tail", SIZE - 4)
        img.remove_snap("s3")  # newest: the top is merged down
        img.remove_snap("s2")
        assert img.list_snaps() == []
        assert sha(img.read(0, SIZE)) == sha(d)
    check_local_store(engine)
    engine.remove("volumes", "v")
    check_local_store(engine)


def test_rollback_to_newest_snapshot(engine: Engine) -> None:
    first, second = pattern(11, SIZE), pattern(12, MiB)
    make(engine, "volumes", "rb", first)
    with engine.open("volumes", "rb") as img:
        img.create_snap("s1")
        img.write(second, MiB)
        img.resize(2 * SIZE)  # grown after the snapshot: rollback shrinks it back
        img.rollback_to_snap("s1")
        assert img.size() == SIZE and sha(img.read(0, SIZE)) == sha(first)
        img.write(second, 0)  # the head is writable again, the snapshot untouched
    assert snap_sha(engine, "volumes", "rb", "s1") == sha(first)
    assert head_sha(engine, "volumes", "rb") == sha(apply(first, second, 0))
    with engine.open("volumes", "rb") as img:
        img.create_snap("s2")
        with pytest.raises(errors.SnapshotNotFound):
            img.rollback_to_snap("nope")
        img.rollback_to_snap("s2")
        assert sha(img.read(0, SIZE)) == sha(apply(first, second, 0))
    check_local_store(engine)


def test_protect_rules(engine: Engine) -> None:
    make(engine, "images", "img", pattern(20, SIZE))
    with engine.open("images", "img") as img:
        img.create_snap("snap")
        assert not img.is_protected_snap("snap")
        with pytest.raises(errors.InvalidArgument):
            img.unprotect_snap("snap")  # not protected
        img.protect_snap("snap")
        assert img.is_protected_snap("snap")
        assert img.list_snaps()[0].protected
        with pytest.raises(errors.ImageBusy):
            img.protect_snap("snap")  # twice
        with pytest.raises(errors.ImageBusy):
            img.remove_snap("snap")  # protected
        with pytest.raises(errors.ImageNotFound):
            img.protect_snap("missing")
        img.unprotect_snap("snap")
        img.remove_snap("snap")
    check_local_store(engine)


# --- clones -------------------------------------------------------------------------------
def test_clone_copy_on_write(engine: Engine) -> None:
    base = pattern(30, SIZE)
    make(engine, "images", "glance", base)
    with engine.open("images", "glance") as img:
        img.create_snap("snap")
        with pytest.raises(errors.InvalidArgument):
            engine.clone("images", "glance", "snap", "vms", "x_disk")  # unprotected
        img.protect_snap("snap")
        img.write(pattern(31, MiB), 0)  # the parent head moves on; clones must not see it
    with pytest.raises(errors.ImageNotFound):
        engine.clone("images", "glance", "nosnap", "vms", "x_disk")
    engine.clone("images", "glance", "snap", "vms", "inst_disk")
    engine.clone("images", "glance", "snap", "volumes", "volume-1")
    with pytest.raises(errors.ImageExists):
        engine.clone("images", "glance", "snap", "vms", "inst_disk")
    with engine.open("vms", "inst_disk") as child:
        assert sha(child.read(0, SIZE)) == sha(base)  # reads the parent until written
        assert child.parent_info() == ("images", "glance", "snap")
        assert child.stat()["parent_name"] == "glance"
        assert child.clone_depth() == 1
        child.write(pattern(32, 8192), 4096)
        mine = apply(base, pattern(32, 8192), 4096)
        assert sha(child.read(0, SIZE)) == sha(mine)
    assert snap_sha(engine, "images", "glance", "snap") == sha(base)
    assert head_sha(engine, "volumes", "volume-1") == sha(base)
    with engine.open("images", "glance", snapshot="snap") as snap:
        assert snap.list_children() == [("vms", "inst_disk"), ("volumes", "volume-1")]
    with engine.open("images", "glance") as img:
        assert img.list_children() == [("vms", "inst_disk"), ("volumes", "volume-1")]
    # a clone of a clone
    with engine.open("vms", "inst_disk") as child:
        child.create_snap("c")
        child.protect_snap("c")
    engine.clone("vms", "inst_disk", "c", "volumes", "grandchild")
    with engine.open("volumes", "grandchild") as gc:
        assert gc.clone_depth() == 2
        assert sha(gc.read(0, SIZE)) == sha(mine)
        gc.resize(2 * SIZE)
        assert sha(gc.read(0, 2 * SIZE)) == sha(mine + bytes(SIZE))
    check_local_store(engine)


def test_flatten(engine: Engine) -> None:
    base = pattern(40, SIZE)
    make(engine, "images", "p", base)
    with engine.open("images", "p") as img:
        img.create_snap("snap")
        img.protect_snap("snap")
    engine.clone("images", "p", "snap", "vms", "c")
    with engine.open("vms", "c") as c:
        c.write(b"child", 100)
        c.create_snap("cs")  # a clone with its own snapshot
        c.write(b"later", 200)
        expect = apply(apply(base, b"child", 100), b"later", 200)
        with pytest.raises(errors.InvalidArgument):
            engine.open("images", "p").flatten()  # not a clone
        c.flatten()
        with pytest.raises(errors.ImageNotFound):
            c.parent_info()
        assert c.clone_depth() == 0
        assert sha(c.read(0, SIZE)) == sha(expect)
    assert snap_sha(engine, "vms", "c", "cs") == sha(apply(base, b"child", 100))
    with engine.open("images", "p") as img:
        assert img.list_children() == []
        img.unprotect_snap("snap")  # no children left
        img.remove_snap("snap")
    engine.remove("images", "p")
    assert head_sha(engine, "vms", "c") == sha(expect)
    check_local_store(engine)


def test_remove_orders(engine: Engine) -> None:
    """Every refused step refuses, every allowed order works, data intact at each step."""
    base = pattern(50, SIZE)
    make(engine, "images", "p", base)
    with engine.open("images", "p") as img:
        img.create_snap("snap")
        img.protect_snap("snap")
    engine.clone("images", "p", "snap", "vms", "a")
    engine.clone("images", "p", "snap", "vms", "b")
    with engine.open("vms", "b") as b:
        b.write(b"bbb", 0)
    with pytest.raises(errors.ImageHasSnapshots):
        engine.remove("images", "p")
    with engine.open("images", "p") as img:
        with pytest.raises(errors.ImageBusy):
            img.remove_snap("snap")
        with pytest.raises(errors.ImageBusy):
            img.unprotect_snap("snap")  # has children
    engine.remove("vms", "a")  # a child goes first
    with engine.open("images", "p") as img:
        assert img.list_children() == [("vms", "b")]
        with pytest.raises(errors.ImageBusy):
            img.unprotect_snap("snap")
    with engine.open("vms", "b") as b:
        b.flatten()  # the other one becomes independent
    with engine.open("images", "p") as img:
        img.unprotect_snap("snap")
        img.remove_snap("snap")
    engine.remove("images", "p")
    assert head_sha(engine, "vms", "b") == sha(apply(base, b"bbb", 0))
    check_local_store(engine)


def test_remove_snapshot_below_a_cloned_one(engine: Engine) -> None:
    """Merging an old snapshot must keep clones of a newer snapshot readable."""
    a = pattern(60, SIZE)
    make(engine, "volumes", "v", a)
    with engine.open("volumes", "v") as img:
        img.create_snap("old")
        b = apply(a, pattern(61, MiB), 0)
        img.write(b[:MiB], 0)
        img.create_snap("new")
        img.protect_snap("new")
        img.write(b"head", 0)
    engine.clone("volumes", "v", "new", "volumes", "volume-c")
    with engine.open("volumes", "v") as img:
        img.remove_snap("old")
    assert head_sha(engine, "volumes", "volume-c") == sha(b)
    assert snap_sha(engine, "volumes", "v", "new") == sha(b)
    assert head_sha(engine, "volumes", "v") == sha(apply(b, b"head", 0))
    check_local_store(engine)


def test_copy_and_deep_copy(engine: Engine) -> None:
    base = pattern(70, SIZE)
    make(engine, "images", "p", base)
    with engine.open("images", "p") as img:
        img.create_snap("snap")
        img.protect_snap("snap")
    engine.clone("images", "p", "snap", "volumes", "c")
    with engine.open("volumes", "c") as c:
        c.write(b"one", 0)
        c.create_snap("cs")
        c.write(b"two", 10)
        expect = apply(apply(base, b"one", 0), b"two", 10)
        c.copy("volumes", "flat")
        c.deep_copy("vms", "deep")
        with pytest.raises(errors.ImageExists):
            c.copy("volumes", "flat")
    with engine.open("volumes", "flat") as flat:
        assert flat.clone_depth() == 0 and flat.list_snaps() == []
        assert sha(flat.read(0, SIZE)) == sha(expect)
    with engine.open("vms", "deep") as deep:
        assert deep.parent_info() == ("images", "p", "snap")
        assert [s.name for s in deep.list_snaps()] == ["cs"]
        assert sha(deep.read(0, SIZE)) == sha(expect)
        deep.write(b"three", 20)  # independent of the source
    assert snap_sha(engine, "vms", "deep", "cs") == sha(apply(base, b"one", 0))
    assert head_sha(engine, "volumes", "c") == sha(expect)
    with engine.open("images", "p", snapshot="snap") as snap:
        assert snap.list_children() == [("vms", "deep"), ("volumes", "c")]
    check_local_store(engine)


def test_names_from_the_seeds(engine: Engine) -> None:
    for pool, name in [("images", "0b4d6a8e-0000-4000-8000-000000000001"),
                       ("vms", "0b4d6a8e-0000-4000-8000-000000000002_disk"),
                       ("volumes", "volume-9"), ("volumes", "snapshot-3"),
                       ("volumes", "volume-9.clone_snap"), ("volumes", "x.deleted")]:
        engine.create(pool, name, MiB)
        assert name in engine.list(pool)
    for bad in ("", "a/b"):
        with pytest.raises(errors.InvalidArgument):
            engine.create("vms", bad, MiB)


# --- an image a running QEMU holds ----------------------------------------------------------
def _layers(engine: Engine, pool: str, name: str) -> int:
    """How many layers the image's chain has (1 on engines without layers)."""
    from strato.storage.local import LocalEngine

    return len(engine.load(pool, name)["layers"]) if isinstance(engine, LocalEngine) else 1


def test_snapshots_removed_while_a_qemu_holds_the_image(engine: Engine, tmp_path: Path) -> None:
    """Live snapshots of an image a QEMU writes, removed in every position (oldest: its
    layer is streamed up; newest: the top is committed down; one with a clone on the
    layer above it) while the QEMU keeps writing: no ImageBusy, the QEMU's view and the
    snapshots' data never change, and the chain ends as short as it began."""
    from .holder import Holder

    size = 16 * MiB
    engine.create("vms", "disk", size)
    with Holder(engine, "vms", "disk", tmp_path / "holder") as h:
        fill, expect = h.fill, h.expect
        fill(0x01, 0, 4 * MiB)
        start = _layers(engine, "vms", "disk")
        kept: dict[str, str] = {}
        for i in range(4):
            h.snapshot(f"s{i}")
            kept[f"s{i}"] = sha(bytes(expect))
            fill(0x10 + i, (i + 1) * MiB, 2 * MiB)
        with engine.open("vms", "disk") as img:
            img.protect_snap("s2")
        engine.clone("vms", "disk", "s2", "volumes", "child")
        for k, name in enumerate(["s0", "s3", "s1"]):
            with engine.open("vms", "disk") as img:
                img.remove_snap(name)
                assert name not in {s.name for s in img.list_snaps()}
            assert sha(h.read_all()) == sha(bytes(expect)), f"view changed by removing {name}"
            assert snap_sha(engine, "vms", "disk", "s2") == kept["s2"]
            assert head_sha(engine, "volumes", "child") == kept["s2"]
            fill(0x40 + k, 10 * MiB, MiB)
        engine.remove("volumes", "child")
        with engine.open("vms", "disk") as img:
            img.unprotect_snap("s2")
            img.remove_snap("s2")
            assert img.list_snaps() == []
        assert sha(h.read_all()) == sha(bytes(expect))
        assert _layers(engine, "vms", "disk") == start
        fill(0x55, 12 * MiB, MiB)
    assert head_sha(engine, "vms", "disk") == sha(bytes(expect))
    with engine.open("vms", "disk") as img:
        assert img.compact() == 0
    check_local_store(engine)
    engine.remove("vms", "disk")
