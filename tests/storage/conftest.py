"""Engine fixtures for the block store tests.

``engine`` is parametrized by engine name.  ``rbd`` needs a running Ceph cluster:
its ceph.conf comes from ``STRATO_TEST_CEPH_CONF`` (scripts/ceph.sh start prints one);
without it the rbd tests skip, or fail when ``STRATO_REQUIRE_CEPH=1`` (CI).  One engine
(one librados connection) serves the whole session; every test starts and ends with
the pools emptied, so tests stay independent.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from strato.storage import Engine, errors, open_engine

ENGINES = ["local", "rbd"]
_RBD: dict[str, Engine] = {}


def ceph_conf() -> str:
    """The test cluster's ceph.conf, or skip (fail under STRATO_REQUIRE_CEPH=1)."""
    conf = os.environ.get("STRATO_TEST_CEPH_CONF")
    if not conf:
        if os.environ.get("STRATO_REQUIRE_CEPH") == "1":
            pytest.fail("STRATO_REQUIRE_CEPH=1 but STRATO_TEST_CEPH_CONF is not set")
        pytest.skip("no Ceph cluster: set STRATO_TEST_CEPH_CONF (scripts/ceph.sh start DIR)")
    return conf


def purge(engine: Engine) -> None:
    """Remove every image of the engine's pools: clones first, snapshots unprotected."""
    for _ in range(16):
        left = [(pool, name) for pool in engine.pools() for name in engine.list(pool)]
        if not left:
            return
        for pool, name in left:
            try:
                with engine.open(pool, name) as img:
                    for snap in img.list_snaps():
                        try:
                            if snap.protected:
                                img.unprotect_snap(snap.name)
                            img.remove_snap(snap.name)
                        except errors.ImageBusy:
                            continue  # still has clones: they go first
                engine.remove(pool, name)
            except (errors.ImageBusy, errors.ImageHasSnapshots, errors.ImageNotFound):
                continue
    raise AssertionError(f"cannot empty the test pools: {left}")


def _local(tmp_path: Path) -> Engine:
    return open_engine("local", root=tmp_path / "store")


def _rbd(tmp_path: Path) -> Engine:
    conf = ceph_conf()
    if conf not in _RBD:
        _RBD[conf] = open_engine("rbd", ceph_conf=conf, connect_timeout=10.0,
                                 connection_retries=2)
    engine = _RBD[conf]
    purge(engine)
    return engine


FACTORIES: dict[str, Callable[[Path], Engine]] = {"local": _local, "rbd": _rbd}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "local" and shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    eng = FACTORIES[request.param](tmp_path)
    yield eng
    if request.param == "rbd":
        purge(eng)


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    return tmp_path / "store"
