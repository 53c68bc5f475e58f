"""Bulk data in and out of RBD images, sparse both ways.

Zero 4 KiB pages are never written: not into the cluster on import (RBD objects stay
unallocated, as ``rbd import`` leaves them), not into files on export (holes).  Export
reads only the extents librbd reports allocated (``diff_iterate``, parents included).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import rbd

from . import errors, qemuimg

PAGE = 4096
BLOCK = 4 << 20
_ZERO = bytes(BLOCK)


def pad(size: int) -> int:
    """Image sizes are multiples of 512 (a sector), as the local engine's are."""
    return -(-size // 512) * 512


def data_runs(buf: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """(start, end) of the runs of non-zero pages in ``buf`` (at most BLOCK long)."""
    n = len(buf)
    if buf == _ZERO[:n]:
        return
    view = memoryview(buf)
    start = None
    for off in range(0, n, PAGE):
        piece = view[off:off + PAGE]
        if piece == _ZERO[:len(piece)]:
            if start is not None:
                yield start, off
                start = None
        elif start is None:
            start = off
    if start is not None:
        yield start, n


def write_sparse(img: rbd.Image, buf: bytes, offset: int) -> None:
    view = memoryview(buf)
    for start, end in data_runs(buf):
        img.write(bytes(view[start:end]), offset + start)


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The file's data extents (SEEK_DATA/SEEK_HOLE); the whole file if unsupported."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        pos = end


def import_file(img: rbd.Image, path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, end in _data_extents(fd, os.fstat(fd).st_size):
            for off in range(start, end, BLOCK):
                write_sparse(img, os.pread(fd, min(BLOCK, end - off), off), off)
    finally:
        os.close(fd)
    img.flush()


def import_stream(img: rbd.Image, src: BinaryIO) -> None:
    """Copy a stream of unknown length: the image grows ahead of it, then is trimmed."""
    size = img.size()
    offset = 0
    while True:
        buf = src.read(BLOCK)
        if not buf:
            break
        if offset + len(buf) > size:
            size = pad(max(offset + len(buf), 2 * size, 64 << 20))
            img.resize(size)
        write_sparse(img, buf, offset)
        offset += len(buf)
    if size != pad(offset):
        img.resize(pad(offset))
    img.flush()


def allocated(img: rbd.Image, size: int) -> list[tuple[int, int]]:
    """Merged (offset, length) extents holding data at the handle's snapshot or head."""
    out: list[tuple[int, int]] = []

    def note(offset: int, length: int, exists: bool) -> int:
        if exists:
            if out and out[-1][0] + out[-1][1] == offset:
                out[-1] = (out[-1][0], out[-1][1] + length)
            else:
                out.append((offset, length))
        return 0

    if size:
        img.diff_iterate(0, size, None, note, include_parent=True)
    out.sort()
    return out


def export_file(img: rbd.Image, dest: Path) -> int:
    size = img.size()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for start, length in allocated(img, size):
            end = min(start + length, size)
            for off in range(start, end, BLOCK):
                buf = img.read(off, min(BLOCK, end - off))
                view = memoryview(buf)
                for s, e in data_runs(buf):
                    os.pwrite(fd, view[s:e], off + s)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return size


def convert_in(src: Path, fmt: str, rbd_opts: dict[str, Any], img: rbd.Image) -> None:
    """``qemu-img convert`` into the new (zeroed) image ``img`` through QEMU's rbd driver;
    without that driver (qemu-block-extra), through a sparse raw temp file."""
    dest = {"driver": "raw", "file": rbd_opts}
    try:
        qemuimg.run("convert", "-q", "-n", "--target-is-zero", "-f", fmt, "-O", "raw",
                    str(src), qemuimg.json_opts(dest))
        return
    except errors.OSError as exc:
        if "Unknown driver 'rbd'" not in str(exc) and "Unknown protocol" not in str(exc):
            raise
    with tempfile.TemporaryDirectory(prefix="strato-rbd-", dir="/var/tmp") as tmp:
        raw = Path(tmp) / "image.raw"
        qemuimg.run("convert", "-q", "-f", fmt, "-O", "raw", "-S", "4k", str(src), str(raw))
        import_file(img, raw)
