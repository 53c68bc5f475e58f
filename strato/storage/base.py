"""The block store interface every engine implements, modelled on librbd's Python API.

``Engine`` plays ``rbd.RBD`` (with pools named by string instead of an ioctx) and
``Image`` plays ``rbd.Image``.  The rules the seeds rely on (no removal with snapshots,
protected snapshots, clone only from protected snapshots, ...) are enforced by each
engine, and tests/storage/test_contract.py holds every engine to them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .errors import FunctionNotSupported

DEFAULT_ORDER = 22  # 4 MiB objects, librbd's default
DEFAULT_POOLS = ("images", "vms", "volumes")


@dataclass(frozen=True)
class SnapInfo:
    """One snapshot, like an entry of ``rbd.Image.list_snaps()``."""

    id: int
    name: str
    size: int
    protected: bool
    timestamp: float


@dataclass(frozen=True)
class Extent:
    """A byte range of an image, like one ``rbd.Image.diff_iterate`` callback:
    ``exists`` False means it reads as zeroes now (discarded, or never written)."""

    offset: int
    length: int
    exists: bool


@dataclass(frozen=True)
class LiveSnapshot:
    """Hand-off for a snapshot QEMU takes itself (QMP ``blockdev-snapshot-sync``).

    QEMU must create ``overlay`` as a qcow2 file whose backing file is ``backing``
    (absolute path, format ``backing_format``); then the caller reports success with
    ``Image.commit_live_snapshot`` or failure with ``Image.abort_live_snapshot``.
    """

    snapshot: str
    overlay: Path
    backing: Path
    backing_format: str
    node_name: str
    qmp: dict[str, Any] = field(default_factory=dict)


class Image(abc.ABC):
    """An open image (optionally at a snapshot, then read-only); use as a context manager."""

    engine: Engine
    pool: str
    name: str

    def __enter__(self) -> Image:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources held by the handle."""

    # --- data -------------------------------------------------------------
    @abc.abstractmethod
    def id(self) -> str: ...

    @abc.abstractmethod
    def size(self) -> int: ...

    @abc.abstractmethod
    def stat(self) -> dict[str, Any]:
        """Like ``rbd.Image.stat()``: size, obj_size, num_objs, order, parent_*, clone_depth."""

    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes; short only at the end of the image."""

    @abc.abstractmethod
    def write(self, data: bytes, offset: int) -> int:
        """Write ``data`` at ``offset``; InvalidArgument beyond the end of the image."""

    def flush(self) -> None:  # noqa: B027 - engines without a cache need nothing
        """Make acknowledged writes durable (librbd ``Image.flush``); close() flushes."""

    @abc.abstractmethod
    def resize(self, size: int) -> None: ...

    @abc.abstractmethod
    def export_to(self, dest: Path | str | BinaryIO) -> int:
        """Write the whole image (raw) to a file path (sparse) or a binary stream."""

    @abc.abstractmethod
    def iter_chunks(self, chunk: int = 64 << 20) -> Iterator[bytes]:
        """Stream the raw content in pieces (for export to HTTP and the like)."""

    @abc.abstractmethod
    def location(self) -> str:
        """``rbd://<fsid>/<pool>/<image>/<snap>`` (snap omitted at the head)."""

    # --- snapshots ----------------------------------------------------------
    @abc.abstractmethod
    def create_snap(self, name: str) -> None: ...

    @abc.abstractmethod
    def remove_snap(self, name: str) -> None: ...

    @abc.abstractmethod
    def list_snaps(self) -> list[SnapInfo]: ...

    def compact(self) -> int:
        """Finish removals of snapshots whose data could not be merged at once; returns
        how many still wait.  Engines that remove snapshots at once have none."""
        return 0

    @abc.abstractmethod
    def rollback_to_snap(self, name: str) -> None:
        """Make the head's data the snapshot's again (librbd ``rollback_to_snap``)."""

    @abc.abstractmethod
    def protect_snap(self, name: str) -> None: ...

    @abc.abstractmethod
    def unprotect_snap(self, name: str) -> None: ...

    @abc.abstractmethod
    def is_protected_snap(self, name: str) -> bool: ...

    # --- clones ---------------------------------------------------------------
    @abc.abstractmethod
    def list_children(self) -> list[tuple[str, str]]:
        """(pool, image) of clones of this image's snapshot (or of any snapshot at head)."""

    @abc.abstractmethod
    def parent_info(self) -> tuple[str, str, str]:
        """(pool, image, snapshot) of the parent; ImageNotFound if not a clone."""

    @abc.abstractmethod
    def clone_depth(self) -> int:
        """0 for an independent image, 1 for a clone of one, and so on."""

    @abc.abstractmethod
    def flatten(self) -> None: ...

    @abc.abstractmethod
    def copy(self, dest_pool: str, dest_name: str) -> None:
        """Copy the head's data into a new independent image (librbd ``copy``)."""

    @abc.abstractmethod
    def deep_copy(self, dest_pool: str, dest_name: str) -> None:
        """Copy with snapshots and the parent link kept (librbd ``deep_copy``)."""

    def diff_iterate(self, from_snapshot: str | None = None,
                     granularity: int = 4 << 20) -> Iterator[Extent]:
        """The extents of this view (head, or the snapshot it was opened at) that may
        differ from ``from_snapshot`` of the same image, in offset order (librbd
        ``diff_iterate``); ``from_snapshot`` None: every extent that holds data.

        This default compares the data ``granularity`` bytes at a time, so it costs the
        whole image; engines that track changes (qcow2 layers, RBD object maps) answer
        in time that follows the changed data."""
        size = self.size()
        base = None
        if from_snapshot is not None:
            base = self._open_sibling(from_snapshot)
        base_size = base.size() if base is not None else 0
        try:
            for offset in range(0, size, granularity):
                length = min(granularity, size - offset)
                data = self.read(offset, length)
                # past the snapshot's end (the image grew since) it read as nothing
                old = base.read(offset, length) \
                    if base is not None and offset < base_size else b""
                old = old.ljust(length, b"\0")
                if data != old:
                    yield Extent(offset, length, data.count(0) != length)
        finally:
            if base is not None:
                base.close()

    def _open_sibling(self, snapshot: str) -> Image:
        """This image opened read-only at ``snapshot`` (for the default diff)."""
        return self.engine.open(self.pool, self.name, snapshot=snapshot, read_only=True)

    def data_file(self) -> Path | None:
        """A local file that holds this snapshot's data byte for byte and never changes
        (a frozen raw layer), for tools that read files (``qemu-img convert``); None when
        the engine has no such file (then read the data with ``iter_chunks``)."""
        return None

    # --- a running QEMU owns the image -----------------------------------------------------
    # Protocol for a disk in use by a guest (compute):
    #   opts = image.blockdev_options()            -> QEMU -blockdev / blockdev-add
    #   live = image.prepare_live_snapshot(name)   -> None: engine snapshots in-use
    #          images itself (rbd), just call create_snap(name);
    #          else send live.qmp (blockdev-snapshot-sync) to QEMU, then
    #   image.commit_live_snapshot(name)            (or abort_live_snapshot on failure)
    def blockdev_options(self, node_prefix: str = "strato") -> dict[str, Any]:
        """How QEMU opens this image: nested -blockdev options (absolute paths)."""
        raise FunctionNotSupported("blockdev_options")

    def prepare_live_snapshot(self, name: str, node_prefix: str = "strato") -> LiveSnapshot | None:
        """Begin a snapshot of an image whose top a running QEMU owns."""
        raise FunctionNotSupported("prepare_live_snapshot")

    def commit_live_snapshot(self, name: str) -> None:
        raise FunctionNotSupported("commit_live_snapshot")

    def abort_live_snapshot(self, name: str) -> None:
        raise FunctionNotSupported("abort_live_snapshot")


class Engine(abc.ABC):
    """A block store: pools of images (``rbd.RBD`` plus the pools' ioctx)."""

    name: str

    @abc.abstractmethod
    def fsid(self) -> str: ...

    @abc.abstractmethod
    def pools(self) -> list[str]: ...

    @abc.abstractmethod
    def create(self, pool: str, name: str, size: int, order: int | None = None) -> None: ...

    @abc.abstractmethod
    def remove(self, pool: str, name: str) -> None: ...

    @abc.abstractmethod
    def rename(self, pool: str, src: str, dest: str) -> None: ...

    @abc.abstractmethod
    def list(self, pool: str) -> list[str]: ...

    @abc.abstractmethod
    def clone(
        self, p_pool: str, p_name: str, p_snapname: str, c_pool: str, c_name: str,
        order: int | None = None,
    ) -> None: ...

    @abc.abstractmethod
    def open(
        self, pool: str, name: str, snapshot: str | None = None, read_only: bool = False
    ) -> Image: ...

    @abc.abstractmethod
    def import_from(
        self, pool: str, name: str, src: Path | str | BinaryIO, fmt: str = "raw",
        order: int | None = None,
    ) -> None:
        """Create an image from a file (raw or qcow2, sparse) or a raw binary stream."""

    def exists(self, pool: str, name: str) -> bool:
        return name in self.list(pool)

    def compact(self) -> int:
        """``Image.compact`` for every image that needs it; returns how many removals
        still wait."""
        return 0

    def location(self, pool: str, name: str, snapshot: str | None = None) -> str:
        from .location import build

        return build(self.fsid(), pool, name, snapshot)
