"""A volume from a qcow2 image: converted from the image's file in the store, in place."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato.image.stores.rbd import RbdStore
from strato.storage import errors, open_engine
from strato.storage.local import LocalEngine
from strato.volume.driver import DriverOptions, RBDDriver

GiB = 1 << 30


def _qcow2(tmp_path: Path, data: bytes, *extra: str) -> Path:
    raw, qcow = tmp_path / "src.raw", tmp_path / "src.qcow2"
    raw.write_bytes(data)
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", *extra, str(raw), str(qcow)],
                   check=True)
    return qcow


def _store_image(engine: LocalEngine, image_id: str, payload: bytes) -> str:
    """Upload ``payload`` as the image store does; its location."""
    writer = RbdStore(engine).writer(image_id, len(payload))
    writer.write(payload)
    return writer.commit()


def _untouched() -> Iterator[bytes]:
    raise AssertionError("the image was downloaded: it should be read in place")
    yield b""  # pragma: no cover


def test_qcow2_from_this_store_is_converted_in_place(tmp_path: Path) -> None:
    engine = open_engine("local", root=tmp_path / "blocks")
    driver = RBDDriver(engine, DriverOptions(conversion_dir=tmp_path / "conv"))
    data = os.urandom(3 << 20) + bytes(5 << 20) + b"tail" * 1024
    location = _store_image(engine, "img", _qcow2(tmp_path, data).read_bytes())
    with engine.open("images", "img", snapshot="snap", read_only=True) as image:
        assert image.data_file() is not None  # a frozen raw layer holding the qcow2
    driver.copy_image("v", 1, _untouched(), "qcow2", location)
    with engine.open("volumes", "volume-v") as vol:
        assert vol.size() == GiB
        assert vol.read(0, len(data)) == data
        assert vol.read(len(data), 4096) == bytes(4096)
    assert list((tmp_path / "conv").iterdir()) == []


def test_qcow2_with_a_backing_file_is_refused_in_place_too(tmp_path: Path) -> None:
    engine = open_engine("local", root=tmp_path / "blocks")
    driver = RBDDriver(engine, DriverOptions(conversion_dir=tmp_path / "conv"))
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"s" * 65536)
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw",
                    str(evil)], check=True)
    location = _store_image(engine, "evil", evil.read_bytes())
    with pytest.raises(errors.UnsafeLayer):
        driver.copy_image("v", 1, _untouched(), "qcow2", location)
    assert not engine.exists("volumes", "volume-v")


def test_qcow2_from_another_store_is_downloaded(tmp_path: Path) -> None:
    """Another store's location (another fsid): the chunks are fetched, then converted."""
    other = open_engine("local", root=tmp_path / "other")
    engine = open_engine("local", root=tmp_path / "blocks")
    driver = RBDDriver(engine, DriverOptions(conversion_dir=tmp_path / "conv"))
    data = os.urandom(1 << 20)
    payload = _qcow2(tmp_path, data).read_bytes()
    location = _store_image(other, "img", payload)
    fetched: list[int] = []

    def chunks() -> Iterator[bytes]:
        for off in range(0, len(payload), 1 << 20):
            fetched.append(off)
            yield payload[off:off + (1 << 20)]

    driver.copy_image("v", 1, chunks(), "qcow2", location)
    assert fetched
    with engine.open("volumes", "volume-v") as vol:
        assert vol.read(0, len(data)) == data


def test_store_converts_without_the_page_cache_where_it_can(tmp_path: Path) -> None:
    engine = open_engine("local", root=tmp_path / "blocks")
    probe = tmp_path / "blocks" / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
        direct = True
    except OSError:
        direct = False
    assert engine.convert_options() == (["-W", "-t", "none"] if direct else ["-W"])
    data = os.urandom(1 << 20)
    qcow = _qcow2(tmp_path, data)
    # As found here, then as on a file system without O_DIRECT (through the page cache).
    for name, flag in (("found", direct), ("cached", False)):
        engine._direct = flag
        engine.import_from("volumes", name, qcow, fmt="qcow2")
        with engine.open("volumes", name) as vol:
            assert vol.size() == 1 << 20 and vol.read(0, 1 << 20) == data
