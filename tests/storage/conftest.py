"""Engine fixtures for the block store tests.

``engine`` is parametrized by engine name; an ``rbd`` entry joins ``ENGINES`` when the
Ceph engine lands (it would create pools on a test cluster and skip without one).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from strato.storage import Engine, open_engine

ENGINES = ["local"]


def _local(tmp_path: Path) -> Engine:
    return open_engine("local", root=tmp_path / "store")


FACTORIES: dict[str, Callable[[Path], Engine]] = {"local": _local}


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "local" and shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    yield FACTORIES[request.param](tmp_path)


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    return tmp_path / "store"
