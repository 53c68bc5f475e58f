"""The rbd engine beyond the shared contract: connection handling and QEMU's view.

The unreachable-cluster test needs only the Ceph client libraries; the others a test
cluster (``STRATO_TEST_CEPH_CONF``, see conftest.py).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato.storage import errors, open_engine, parse_location

from .conftest import FACTORIES, ceph_conf, purge
from .helpers import MiB, pattern, sha

pytest.importorskip("rbd", reason="python3-rbd not importable (scripts/setup-ceph.sh)")

from strato.storage.rbd import ClusterUnavailable, RbdEngine  # noqa: E402


@pytest.fixture
def rbd_engine(tmp_path: Path) -> Iterator[RbdEngine]:
    engine = FACTORIES["rbd"](tmp_path)
    assert isinstance(engine, RbdEngine)
    yield engine
    purge(engine)


def _dead_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dead_cluster(tmp_path: Path, port: int) -> Path:
    """A well-formed ceph.conf and cephx keyring for a mon that is not there."""
    secret = struct.pack("<HIIH", 1, int(time.time()), 0, 16) + os.urandom(16)
    keyring = tmp_path / "keyring"
    keyring.write_text(f"[client.admin]\n\tkey = {base64.b64encode(secret).decode()}\n")
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\nfsid = {uuid.uuid4()}\nmon_host = [v2:127.0.0.1:{port}]\n"
                    f"auth_client_required = cephx\nkeyring = {keyring}\n")
    return conf


def test_unreachable_cluster_fails_clearly_in_time(tmp_path: Path) -> None:
    conf = _dead_cluster(tmp_path, _dead_port())
    engine = open_engine("rbd", ceph_conf=conf, connect_timeout=1, connection_retries=2,
                         connection_interval=0.5)
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable) as exc:
        engine.list("images")
    took = time.monotonic() - started
    assert isinstance(exc.value, errors.Error)
    assert "unreachable" in str(exc.value) and "2 attempt" in str(exc.value)
    assert 2 * 1 <= took < 2 * 1 + 0.5 + 3, took  # two bounded attempts, no hang
    with pytest.raises(ClusterUnavailable):
        open_engine("rbd", ceph_conf=tmp_path / "missing.conf").fsid()


def test_one_connection_per_engine(rbd_engine: RbdEngine) -> None:
    handle = rbd_engine.cluster.handle()
    rbd_engine.create("vms", "a", MiB)
    with rbd_engine.open("vms", "a") as img:
        img.write(b"x", 0)
    assert rbd_engine.list("vms") == ["a"]
    assert rbd_engine.cluster.handle() is handle
    assert rbd_engine.ioctx("vms") is rbd_engine.ioctx("vms")


def test_fsid_is_the_clusters(rbd_engine: RbdEngine) -> None:
    conf = Path(ceph_conf()).read_text()
    fsid = next(line.split("=", 1)[1].strip() for line in conf.splitlines()
                if line.replace(" ", "").startswith("fsid="))
    assert rbd_engine.fsid() == fsid
    rbd_engine.create("images", "i", MiB)
    with rbd_engine.open("images", "i") as img:
        assert parse_location(img.location()).fsid == fsid


def test_pool_missing_from_cluster(tmp_path: Path) -> None:
    engine = open_engine("rbd", ceph_conf=ceph_conf(), pools=("images", "nopool"))
    with pytest.raises(errors.PoolNotFound):
        engine.list("nopool")
    with pytest.raises(errors.PoolNotFound):
        engine.list("vms")  # not configured for this engine
    engine.close()


def test_live_snapshot_is_the_engines(rbd_engine: RbdEngine) -> None:
    rbd_engine.create("vms", "d", MiB)
    with rbd_engine.open("vms", "d") as img:
        assert img.prepare_live_snapshot("s", "vda") is None
        img.create_snap("s")
        assert [s.name for s in img.list_snaps()] == ["s"]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_blockdev_options_open_in_qemu(rbd_engine: RbdEngine, tmp_path: Path) -> None:
    data = pattern(1, 2 * MiB)
    rbd_engine.create("vms", "disk", len(data))
    with rbd_engine.open("vms", "disk") as img:
        img.write(data, 0)
        img.create_snap("s")
        img.write(bytes(MiB), 0)
        head = img.blockdev_options("vda")
    with rbd_engine.open("vms", "disk", snapshot="s") as snap:
        at_snap = snap.blockdev_options("vda")
    assert head["driver"] == "rbd" and head["pool"] == "vms" and head["image"] == "disk"
    assert head["read-only"] is False and "snapshot" not in head
    assert head["node-name"].startswith("vda-") and len(head["node-name"]) <= 31
    assert at_snap["snapshot"] == "s" and at_snap["read-only"] is True
    for opts, expect in ((head, bytes(MiB) + data[MiB:]), (at_snap, data)):
        opts = {k: v for k, v in opts.items() if k not in ("node-name", "read-only")}
        src = "json:" + json.dumps({"driver": "raw", "file": opts})
        out = tmp_path / "out.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", src, str(out)], check=True)
        assert sha(out.read_bytes()) == sha(expect)


def test_import_leaves_zero_runs_unallocated(rbd_engine: RbdEngine, tmp_path: Path) -> None:
    from strato.storage.rbd_io import allocated

    src = tmp_path / "sparse.raw"
    with open(src, "wb") as f:  # a hole, explicit zeros, then data at 40 MiB
        f.truncate(64 * MiB)
        f.seek(32 * MiB)
        f.write(bytes(4 * MiB))
        f.seek(40 * MiB + 8192)
        f.write(pattern(2, 4096))
    rbd_engine.import_from("images", "sparse", src)
    with open(src, "rb") as f:
        stream = io.BytesIO(f.read())
    rbd_engine.import_from("images", "streamed", stream)
    for name in ("sparse", "streamed"):
        with rbd_engine.open("images", name) as img:
            assert img.size() == 64 * MiB
            extents = allocated(img.rbd, img.size())
            assert sum(n for _, n in extents) <= 4 * MiB, extents  # one object at most
            assert all(40 * MiB - 4 * MiB < off <= 40 * MiB + 8192 for off, _ in extents)
            assert sha(img.read(0, img.size())) == sha(src.read_bytes())


def test_export_clone_includes_parent_data(rbd_engine: RbdEngine, tmp_path: Path) -> None:
    base = pattern(3, 8 * MiB)
    rbd_engine.create("images", "p", len(base))
    with rbd_engine.open("images", "p") as img:
        img.write(base, 0)
        img.create_snap("snap")
        img.protect_snap("snap")
    rbd_engine.clone("images", "p", "snap", "vms", "c")
    with rbd_engine.open("vms", "c") as child:
        child.write(b"child", 5 * MiB)
        child.resize(12 * MiB)
        out = tmp_path / "c.raw"
        assert child.export_to(out) == 12 * MiB
    expect = base[:5 * MiB] + b"child" + base[5 * MiB + 5:] + bytes(4 * MiB)
    assert sha(out.read_bytes()) == sha(expect)
    assert os.stat(out).st_blocks * 512 <= 9 * MiB  # the grown tail stayed a hole


def test_diff_iterate_with_and_without_fast_diff(rbd_engine: RbdEngine) -> None:
    """With fast-diff the object maps pick the objects and librbd's exact diff runs on
    those; without it the exact diff runs over the whole image: same extents."""
    import rbd

    answers = []
    for fast in (True, False):
        name = f"d-{fast}"
        rbd_engine.create("volumes", name, 16 * MiB, order=20)
        with rbd_engine.open("volumes", name) as img:
            if not fast:
                img.rbd.update_features(rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_OBJECT_MAP,
                                        False)
            assert bool(img.rbd.features() & rbd.RBD_FEATURE_FAST_DIFF) == fast
            img.write(pattern(1, 3 * MiB), MiB)
            img.create_snap("a")
            img.write(pattern(2, 5000), 2 * MiB - 100)
            img.write(pattern(3, 4096), 9 * MiB)
            img.rbd.discard(3 * MiB, MiB)
            answers.append((list(img.diff_iterate("a", MiB)), list(img.diff_iterate(None))))
    assert answers[0] == answers[1]
    since_a, everything = answers[0]
    assert [(e.offset, e.length, e.exists) for e in since_a] == [
        (2 * MiB - 100, 100, True), (2 * MiB, 4900, True), (3 * MiB, MiB, False),
        (9 * MiB, 4096, True)]
    assert sum(e.length for e in everything if e.exists) == 2 * MiB + 4096
