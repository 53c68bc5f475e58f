"""The backup store (strato/backup/store.py) on real engines: the local one (qemu-img
layers in a directory of its own) and rbd (a pool of its own in a real Ceph cluster,
when STRATO_TEST_CEPH_CONF names one).

Every restore is checked byte for byte against the volume's snapshot it was taken from;
crashes are real SIGKILLs of a child process writing a backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strato import config
from strato.backup import store as store_mod
from strato.backup.store import CHUNK, BackupCorrupt, BackupData, BackupStore, Chunk
from strato.storage import Engine, Image, errors, open_engine
from strato.storage.crash import ENV as CRASH_ENV
from tests.storage.conftest import ceph_conf, purge
from tests.storage.helpers import MiB, pattern

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("backup_worker.py")
SIZE = 24 * MiB
_RBD: dict[str, tuple[Engine, Engine]] = {}


@dataclass
class Pair:
    """A volume engine and the backup store that backs it up (another engine)."""

    kind: str
    vol: Engine
    store: BackupStore
    where: str  # the worker's argument: a directory (local) or a ceph.conf (rbd)

    def volume(self, name: str, size: int = SIZE) -> Image:
        self.vol.create("volumes", name, size)
        return self.vol.open("volumes", name)

    def view(self, name: str, snap: str | None = None) -> Image:
        return self.vol.open("volumes", name, snapshot=snap, read_only=snap is not None)

    def content(self, name: str, snap: str | None = None) -> bytes:
        with self.view(name, snap) as img:
            return img.read(0, img.size())

    def backup(self, backup_id: str, name: str, snap: str, parent: BackupData | None = None,
               parent_snap: str | None = None) -> BackupData:
        with self.view(name, snap) as src:
            return self.store.write(backup_id, src, parent, parent_snap)

    def restore_new(self, chain: list[BackupData], name: str) -> bytes:
        with self.volume(name, chain[-1].size) as target:
            self.store.restore(chain, target)
        return self.content(name)


def _purge_store(engine: Engine) -> None:
    for name in engine.list("backups"):
        engine.remove("backups", name)


@pytest.fixture(params=["local", "rbd"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    if request.param == "local":
        vol = open_engine("local", root=tmp_path / "vol")
        bk = open_engine("local", root=tmp_path / "bk", pools=("backups",))
        yield Pair("local", vol, BackupStore(bk, "backups"), str(tmp_path))
        return
    conf = ceph_conf()
    if conf not in _RBD:
        _RBD[conf] = (open_engine("rbd", ceph_conf=conf, connection_retries=2),
                      open_engine("rbd", ceph_conf=conf, pools=("backups",),
                                  connection_retries=2))
    vol, bk = _RBD[conf]
    purge(vol)
    _purge_store(bk)
    yield Pair("rbd", vol, BackupStore(bk, "backups"), conf)
    purge(vol)
    _purge_store(bk)


def _fill(img: Image, seed: int, spans: list[tuple[int, int]]) -> None:
    for i, (offset, length) in enumerate(spans):
        img.write(pattern(seed * 100 + i, length), offset)


def _check_chunks(pair: Pair, data: BackupData) -> None:
    """Every chunk is at most 4 MiB, inside one 4 MiB object, and its sha256 is what the
    store holds at its offset."""
    with pair.store.engine.open(pair.store.pool, f"backup.{data.backup_id}",
                                read_only=True) as obj:
        assert obj.size() == data.size
        for c in data.chunks:
            assert 0 < c.length <= CHUNK
            assert c.offset // CHUNK == (c.offset + c.length - 1) // CHUNK
            assert hashlib.sha256(obj.read(c.offset, c.length)).hexdigest() == c.sha256


def test_full_backup_restores_byte_identical(pair: Pair) -> None:
    with pair.volume("v") as v:
        _fill(v, 1, [(0, 3 * MiB), (5 * MiB + 123 * 512, 6 * MiB), (20 * MiB, MiB)])
        v.create_snap("s1")
        v.write(pattern(9, MiB), 0)  # after the snapshot: not in the backup
    full = pair.backup("b1", "v", "s1")
    assert full.parent_id is None and full.size == SIZE and full.zeroed == ()
    _check_chunks(pair, full)
    covered = {c.offset // CHUNK for c in full.chunks}
    assert covered == {0, 1, 2, 5}  # the 4 MiB blocks with data; holes are not stored
    assert pair.restore_new([full], "r") == pair.content("v", "s1")
    assert pair.store.exists("b1")
    assert f"backup.b1{store_mod.PARTIAL}" not in pair.store.engine.list("backups")


def test_incremental_chain_of_three(pair: Pair) -> None:
    with pair.volume("v") as v:
        _fill(v, 1, [(0, SIZE)])
        v.create_snap("s1")
        v.write(pattern(2, MiB), 9 * MiB)
        v.create_snap("s2")
        v.write(pattern(3, 4096), 17 * MiB + 4096)
        v.write(pattern(4, 2 * MiB), 3 * MiB)  # across a chunk boundary
        v.create_snap("s3")
    b1 = pair.backup("b1", "v", "s1")
    b2 = pair.backup("b2", "v", "s2", b1, "s1")
    b3 = pair.backup("b3", "v", "s3", b2, "s2")
    assert [b.parent_id for b in (b1, b2, b3)] == [None, "b1", "b2"]
    assert len(b1.chunks) == SIZE // CHUNK
    # incrementals hold only the 4 MiB blocks that changed
    assert {c.offset // CHUNK for c in b2.chunks} == {2}
    assert {c.offset // CHUNK for c in b3.chunks} == {0, 1, 4}
    for b in (b1, b2, b3):
        _check_chunks(pair, b)
    assert pair.restore_new([b1, b2, b3], "r3") == pair.content("v", "s3")
    assert pair.restore_new([b1, b2], "r2") == pair.content("v", "s2")


def test_restore_into_an_existing_dirty_volume(pair: Pair) -> None:
    with pair.volume("v") as v:
        _fill(v, 1, [(MiB, 2 * MiB), (12 * MiB, 5 * MiB)])
        v.create_snap("s1")
        v.write(pattern(2, MiB), 13 * MiB)
        v.create_snap("s2")
    b1 = pair.backup("b1", "v", "s1")
    b2 = pair.backup("b2", "v", "s2", b1, "s1")
    with pair.volume("dirty", SIZE) as target:
        target.write(pattern(7, SIZE), 0)  # data everywhere, also where the backup has none
        target.create_snap("before")  # a volume with history: a chain on the local engine
        target.write(pattern(8, 3 * MiB), 18 * MiB)
        pair.store.restore([b1, b2], target)
    assert pair.content("dirty") == pair.content("v", "s2")


def test_corrupted_chunk_is_refused(pair: Pair) -> None:
    with pair.volume("v") as v:
        _fill(v, 1, [(0, 10 * MiB)])
        v.create_snap("s1")
    full = pair.backup("b1", "v", "s1")
    victim = full.chunks[1]
    with pair.store.engine.open("backups", "backup.b1") as obj:
        obj.write(b"\xff" * 512, victim.offset + 4096)
    with pair.volume("r") as target, pytest.raises(BackupCorrupt, match=str(victim.offset)):
        pair.store.restore([full], target)
    bad = BackupData("b1", SIZE, (Chunk(0, CHUNK, "0" * 64),))
    with pair.volume("r2") as target, pytest.raises(BackupCorrupt):
        pair.store.restore([bad], target)


def test_resize_between_backups(pair: Pair) -> None:
    with pair.volume("v", 16 * MiB) as v:
        _fill(v, 1, [(0, 16 * MiB)])
        v.create_snap("s1")
        v.resize(28 * MiB)  # grows: the new tail reads zeroes, then some of it is written
        v.write(pattern(2, 2 * MiB), 22 * MiB)
        v.create_snap("s2")
        v.resize(12 * MiB)  # shrinks below the first size
        v.write(pattern(3, MiB), 2 * MiB)
        v.create_snap("s3")
        v.resize(20 * MiB)  # grows again: 12..20 MiB must read zeroes, not s1's old data
        v.create_snap("s4")
    b1 = pair.backup("b1", "v", "s1")
    b2 = pair.backup("b2", "v", "s2", b1, "s1")
    b3 = pair.backup("b3", "v", "s3", b2, "s2")
    b4 = pair.backup("b4", "v", "s4", b3, "s3")
    assert [b.size for b in (b1, b2, b3, b4)] == [16 * MiB, 28 * MiB, 12 * MiB, 20 * MiB]
    assert pair.restore_new([b1, b2], "r2") == pair.content("v", "s2")
    assert pair.restore_new([b1, b2, b3], "r3") == pair.content("v", "s3")
    expected = pair.content("v", "s4")
    assert expected[12 * MiB:] == bytes(8 * MiB)
    assert pair.restore_new([b1, b2, b3, b4], "r4") == expected
    with pair.volume("small", 8 * MiB) as target, pytest.raises(errors.InvalidArgument):
        pair.store.restore([b1, b2, b3, b4], target)


def test_discarded_data_becomes_zeroed(pair: Pair) -> None:
    with pair.volume("v") as v:
        _fill(v, 1, [(0, SIZE)])
        v.create_snap("s1")
        v.write(bytes(2 * CHUNK), 2 * CHUNK)  # what a guest's discard leaves: zeroes
        if pair.kind == "rbd":
            v.rbd.discard(5 * CHUNK, CHUNK)  # type: ignore[attr-defined]  # a real one
        else:
            v.write(bytes(CHUNK), 5 * CHUNK)
        v.create_snap("s2")
    b1 = pair.backup("b1", "v", "s1")
    b2 = pair.backup("b2", "v", "s2", b1, "s1")
    assert b2.chunks == ()
    assert b2.zeroed == ((2 * CHUNK, 2 * CHUNK), (5 * CHUNK, CHUNK))
    expected = pair.content("v", "s2")
    assert expected[2 * CHUNK:4 * CHUNK] == bytes(2 * CHUNK)
    assert pair.restore_new([b1, b2], "r") == expected
    with pair.volume("dirty") as target:
        target.write(pattern(5, SIZE), 0)
        pair.store.restore([b1, b2], target)
    assert pair.content("dirty") == expected
    round_trip = BackupData.from_dict(b2.to_dict())
    assert round_trip == b2


def test_clone_volume_includes_its_parent_data(pair: Pair) -> None:
    pair.vol.create("images", "base", SIZE)
    with pair.vol.open("images", "base") as base:
        _fill(base, 1, [(0, 8 * MiB), (16 * MiB, 4 * MiB)])
        base.create_snap("snap")
        base.protect_snap("snap")
    pair.vol.clone("images", "base", "snap", "volumes", "v")
    with pair.view("v") as v:
        v.write(pattern(2, MiB), 2 * MiB)
        v.create_snap("s1")
    full = pair.backup("b1", "v", "s1")
    assert {c.offset // CHUNK for c in full.chunks} == {0, 1, 4}
    assert pair.restore_new([full], "r") == pair.content("v", "s1")
    # the restored volume stands alone: no parent, the base can go
    with pair.vol.open("volumes", "r") as r:
        with pytest.raises(errors.ImageNotFound):
            r.parent_info()


def test_rerun_after_a_crash_mid_write(pair: Pair) -> None:
    """A child writing a backup is SIGKILLed in the middle; the rerun replaces what it
    left, and nothing but the committed backup remains in the store."""
    with pair.volume("v") as v:
        _fill(v, 1, [(0, 6 * MiB)])
        v.create_snap("s0")  # s1 is then a chain on the local engine: chunk by chunk
        _fill(v, 2, [(8 * MiB, 10 * MiB)])
        v.create_snap("s1")
    env = {**os.environ, CRASH_ENV: "backup_write:after-first-chunk",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(WORKER), pair.kind, pair.where, "b1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert pair.store.engine.list("backups") == ["backup.b1.partial"]
    assert not pair.store.exists("b1")
    assert pair.store.stored_ids() == {"b1"}  # a caller's orphan check sees it
    full = pair.backup("b1", "v", "s1")  # the rerun (a job retried after a restart)
    assert pair.store.engine.list("backups") == ["backup.b1"]
    assert pair.restore_new([full], "r") == pair.content("v", "s1")
    pair.store.delete("b1")
    pair.store.delete("b1")  # already gone: no error
    assert pair.store.engine.list("backups") == []
    assert pair.store.stored_ids() == set()


@pytest.mark.parametrize("point", ["import:after-layer", "backup_write:after-create",
                                   "backup_write:before-rename",
                                   "backup_write:after-rename"])
def test_crash_points_of_a_full_backup_local(tmp_path: Path, point: str) -> None:
    """Every step of the local full-backup path (the engine's import of the frozen layer
    file), killed there, then rerun: one committed object, no layer file left over."""
    pair = Pair("local", open_engine("local", root=tmp_path / "vol"),
                BackupStore(open_engine("local", root=tmp_path / "bk", pools=("backups",)),
                            "backups"), str(tmp_path))
    with pair.volume("v") as v:
        _fill(v, 1, [(0, 6 * MiB), (12 * MiB, MiB)])
        v.create_snap("s1")
    with pair.view("v", "s1") as src:
        assert src.data_file() is not None  # the import path
    env = {**os.environ, CRASH_ENV: point, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(WORKER), "local", str(tmp_path), "b1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    bk = open_engine("local", root=tmp_path / "bk", pools=("backups",))  # repairs
    store = BackupStore(bk, "backups")
    with pair.view("v", "s1") as src:
        full = store.write("b1", src, None, None)
    assert bk.list("backups") == ["backup.b1"]
    layers = list((tmp_path / "bk" / "layers").iterdir())
    assert len(layers) == 1  # the committed object's one raw layer, nothing orphaned
    pair.store = store
    assert pair.restore_new([full], "r") == pair.content("v", "s1")


def test_restore_killed_midway_then_rerun(tmp_path: Path) -> None:
    """A restore SIGKILLed after its first chunk left the target half old, half new;
    running it again (what a retried job does) ends byte-identical."""
    pair = Pair("local", open_engine("local", root=tmp_path / "vol"),
                BackupStore(open_engine("local", root=tmp_path / "bk", pools=("backups",)),
                            "backups"), str(tmp_path))
    with pair.volume("v") as v:
        _fill(v, 1, [(0, 10 * MiB), (16 * MiB, 4 * MiB)])
        v.create_snap("s1")
        v.write(pattern(2, 2 * MiB), 17 * MiB)
        v.create_snap("s2")
    b1 = pair.backup("b1", "v", "s1")
    b2 = pair.backup("b2", "v", "s2", b1, "s1")
    with pair.volume("t") as target:
        target.write(pattern(3, SIZE), 0)
    records = tmp_path / "chain.json"
    records.write_text(json.dumps([b.to_dict() for b in (b1, b2)]))
    env = {**os.environ, CRASH_ENV: "backup_restore:after-chunk", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(WORKER), "local", str(tmp_path), "-",
                           str(records), "t"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    expected = pair.content("v", "s2")
    assert pair.content("t") != expected  # stopped midway
    vol = open_engine("local", root=tmp_path / "vol")  # a new process: repairs first
    with vol.open("volumes", "t") as target:
        pair.store.restore([b1, b2], target)
    assert pair.content("t") == expected


def test_backup_data_records() -> None:
    data = BackupData("b2", 8 * MiB, (Chunk(0, 4096, "a" * 64),), ((CHUNK, CHUNK),), "b1",
                      {"object": "backup.b2"})
    d = data.to_dict()
    assert BackupData.from_dict(d) == data
    assert d["chunks"] == [[0, 4096, "a" * 64]]
    for bad in ({**d, "size": -1}, {**d, "chunks": [[0, CHUNK + 1, "a" * 64]]},
                {**d, "chunks": [[0, 10, "xyz"]]}, {**d, "chunks": [[8 * MiB, 512, "a" * 64]]},
                {**d, "format": 99}, {k: v for k, v in d.items() if k != "size"},
                {**d, "zeroed": [[0]]}, {**d, "extra": []}):
        with pytest.raises(ValueError):
            BackupData.from_dict(bad)


def test_wrong_chains_are_refused(pair: Pair) -> None:
    with pair.volume("v") as v:
        _fill(v, 1, [(0, MiB)])
        v.create_snap("s1")
    b1 = pair.backup("b1", "v", "s1")
    b2 = pair.backup("b2", "v", "s1", b1, "s1")
    assert b2.chunks == () and b2.zeroed == ()
    with pair.volume("r") as target:
        for chain in ([], [b2], [b1, b2, b2]):
            with pytest.raises(errors.InvalidArgument):
                pair.store.restore(chain, target)
        pair.store.delete("b1")
        with pytest.raises(BackupCorrupt, match="no data"):
            pair.store.restore([b1, b2], target)
    with pair.view("v", "s1") as src, pytest.raises(errors.InvalidArgument):
        pair.store.write("b3", src, b1, None)


# --- open_backup_store: never the volumes' own engine or pool ---------------------------------
def _conf(tmp_path: Path, **backup: str) -> config.Config:
    overrides = [("DEFAULT", "state_path", str(tmp_path))]
    overrides += [("backup", k, v) for k, v in backup.items()]
    return config.load(None, overrides)


def test_local_store_is_its_own_directory(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    store = store_mod.open_backup_store(conf, "local")
    assert store is store_mod.open_backup_store(conf, "local")  # cached
    assert store.engine.name == "local" and store.pool == "backups"
    root = Path(store.engine.root)  # type: ignore[attr-defined]
    assert root == (tmp_path / "backups").resolve()
    assert root != Path(conf.storage.local_path).resolve()
    vol = open_engine("local", root=conf.storage.local_path)
    assert vol.fsid() != store.engine.fsid()
    with pytest.raises(store_mod.BackupStoreConfigError, match="local_path"):
        store_mod.open_backup_store(_conf(tmp_path, store_dir=str(tmp_path / "blocks")),
                                    "local")


def test_rbd_store_is_its_own_pool(tmp_path: Path) -> None:
    conf_path = ceph_conf()
    conf = config.load(None, [("DEFAULT", "state_path", str(tmp_path)),
                              ("volume", "rbd_ceph_conf", conf_path)])
    store = store_mod.open_backup_store(conf, "rbd")
    assert store.engine.name == "rbd" and store.pool == "backups"
    assert store.engine.pools() == ["backups"]
    assert "backups" not in {"volumes", "images", "vms"}
    for pool in ("volumes", "images", "vms"):
        bad = config.load(None, [("DEFAULT", "state_path", str(tmp_path)),
                                 ("volume", "rbd_ceph_conf", conf_path),
                                 ("backup", "rbd_pool", pool)])
        with pytest.raises(store_mod.BackupStoreConfigError):
            store_mod.open_backup_store(bad, "rbd")
    missing = config.load(None, [("DEFAULT", "state_path", str(tmp_path)),
                                 ("volume", "rbd_ceph_conf", conf_path),
                                 ("backup", "rbd_pool", "no-such-pool")])
    with pytest.raises(errors.PoolNotFound, match="ceph osd pool create"):
        store_mod.open_backup_store(missing, "rbd")
    # rbd volumes may be backed up to a local directory instead ([backup] backend)
    local = store_mod.open_backup_store(
        config.load(None, [("DEFAULT", "state_path", str(tmp_path)),
                           ("backup", "backend", "local")]), "rbd")
    assert local.engine.name == "local"
