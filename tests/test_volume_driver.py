"""The RBD-style volume driver on a real local block store: the options seed 002 names."""

from __future__ import annotations

from pathlib import Path

import pytest

from strato.storage import open_engine
from strato.volume.driver import DriverOptions, RBDDriver, VolumeIsBusy

GiB = 1 << 30


def _driver(tmp_path: Path, **opts) -> RBDDriver:  # type: ignore[no-untyped-def]
    engine = open_engine("local", root=tmp_path / "blocks")
    return RBDDriver(engine, DriverOptions(conversion_dir=tmp_path / "conv", **opts))


def test_max_clone_depth_zero_means_a_full_copy(tmp_path: Path) -> None:
    d = _driver(tmp_path, max_clone_depth=0)
    d.create_volume("a", 1)
    with d.engine.open("volumes", "volume-a") as a:
        a.write(b"x" * 4096, 0)
    d.create_cloned_volume("b", 2, "a")
    with d.engine.open("volumes", "volume-b") as b:
        assert b.clone_depth() == 0 and b.size() == 2 * GiB
        assert b.read(0, 4096) == b"x" * 4096
    with d.engine.open("volumes", "volume-a") as a:
        assert a.list_snaps() == []  # no clone snapshot was needed
    d.delete_volume("a")
    d.delete_volume("b")
    assert d.engine.list("volumes") == []


def test_flatten_volume_from_snapshot(tmp_path: Path) -> None:
    d = _driver(tmp_path, flatten_volume_from_snapshot=True)
    d.create_volume("a", 1)
    with d.engine.open("volumes", "volume-a") as a:
        a.write(b"y" * 4096, 0)
    d.create_snapshot("a", "s")
    d.create_snapshot("a", "s")  # idempotent: a retried job finishes, never fails
    d.create_from_snapshot("c", 1, "a", "s")
    with d.engine.open("volumes", "volume-c") as c:
        assert c.clone_depth() == 0 and c.read(0, 4096) == b"y" * 4096
    d.delete_snapshot("a", "s")  # nothing depends on it: it goes
    d.delete_volume("a")
    d.delete_volume("c")
    assert d.engine.list("volumes") == []


def test_backup_snapshots_go_other_snapshots_refuse(tmp_path: Path) -> None:
    d = _driver(tmp_path)
    d.create_volume("a", 1)
    with d.engine.open("volumes", "volume-a") as a:
        a.create_snap("backup.1234.snap.1")
        a.create_snap("keep-me")
    with pytest.raises(VolumeIsBusy, match="keep-me"):
        d.delete_volume("a")
    with d.engine.open("volumes", "volume-a") as a:
        assert [s.name for s in a.list_snaps()] == ["keep-me"]
        a.remove_snap("keep-me")
    d.delete_volume("a")
    d.delete_volume("a")  # already gone: deletes cleanly
    assert d.engine.list("volumes") == []


def test_a_deleted_disk_goes_when_its_last_clone_goes(tmp_path: Path) -> None:
    """Any snapshot of a ``.deleted`` image (not only ``.clone_snap``) is released."""
    from strato.storage.refs import drop_unneeded_snaps, retire

    d = _driver(tmp_path)
    eng = d.engine
    eng.create("vms", "i_disk", 1 << 20)
    with eng.open("vms", "i_disk") as disk:
        disk.create_snap("instance-snap")
        disk.protect_snap("instance-snap")
        disk.create_snap("unused")
    eng.clone("vms", "i_disk", "instance-snap", "images", "img")
    with eng.open("vms", "i_disk") as disk:
        needed = drop_unneeded_snaps(eng, disk, [s.name for s in disk.list_snaps()])
    assert needed
    retire(eng, "vms", "i_disk", needed, None)
    assert eng.list("vms") == ["i_disk.deleted"]
    with eng.open("vms", "i_disk.deleted") as kept:
        assert [s.name for s in kept.list_snaps()] == ["instance-snap"]
    from strato.storage.refs import parent_of, release_parent

    parent = parent_of(eng, "images", "img")
    eng.remove("images", "img")
    release_parent(eng, *parent)
    assert eng.list("vms") == [] and eng.list("images") == []
