"""``rbd.Image`` for the rbd engine: librbd's own image handle, with strato's errors.

Bounds are checked before librbd sees a request: librbd fails a read at the end with
EINVAL and a write across the end only after writing part of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import rbd

from . import errors, rbd_io
from .base import Extent, Image, LiveSnapshot, SnapInfo
from .extents import Span, check_granularity, normalize, to_extents
from .local import check_name, check_size
from .localimage import node_name
from .location import build as build_location
from .rbd_errors import SNAP, Overrides, translated

if TYPE_CHECKING:
    from .rbd import RbdEngine

CHUNK = 64 << 20
_USER_SNAP = 0  # rbd.RBD_SNAP_NAMESPACE_TYPE_USER


def _check_snap_name(name: str) -> None:
    if not isinstance(name, str) or not name or "\0" in name or "/" in name:
        raise errors.InvalidArgument(f"invalid snapshot name {name!r}")


class RbdImage(Image):
    def __init__(self, engine: RbdEngine, pool: str, name: str,
                 snapshot: str | None = None, read_only: bool = False) -> None:
        self.engine = engine
        self.pool = pool
        self.name = name
        self.snapshot = snapshot
        self.read_only = read_only or snapshot is not None
        ioctx = engine.ioctx(pool)
        with translated(self._what("open")):
            self.rbd = rbd.Image(ioctx, name, snapshot=snapshot, read_only=self.read_only)
        self._closed = False

    def _what(self, op: str, snap: str | None = None) -> str:
        at = f"@{snap}" if snap else f"@{self.snapshot}" if self.snapshot else ""
        return f"{op} {self.pool}/{self.name}{at}"

    def _call(self, op: str, fn: Any, *args: Any, overrides: Overrides | None = None,
              snap: str | None = None) -> Any:
        with translated(self._what(op, snap), overrides):
            return fn(*args)

    def _writable(self) -> None:
        if self.read_only:
            raise errors.ReadOnlyImage(f"{self._what('write')}: open read-only")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._call("close", self.rbd.close)

    # --- data -----------------------------------------------------------------------------
    def id(self) -> str:
        return str(self._call("id", self.rbd.id))

    def size(self) -> int:
        return int(self._call("size", self.rbd.size))

    def stat(self) -> dict[str, Any]:
        st = dict(self._call("stat", self.rbd.stat))
        try:  # librbd leaves the parent fields of rbd_image_info_t empty nowadays
            p_pool, p_name, _ = self.parent_info()
        except errors.ImageNotFound:
            p_pool = p_name = None
        st.update(parent_pool=p_pool, parent_name=p_name, clone_depth=self.clone_depth())
        return st

    def location(self) -> str:
        return build_location(self.engine.fsid(), self.pool, self.name, self.snapshot)

    def read(self, offset: int, length: int) -> bytes:
        size = self.size()
        if offset < 0 or length < 0 or offset > size:
            raise errors.InvalidArgument(f"read {offset}+{length} outside image of {size}")
        length = min(length, size - offset)
        if length == 0:
            return b""
        return bytes(self._call("read", self.rbd.read, offset, length))

    def write(self, data: bytes, offset: int) -> int:
        self._writable()
        size = self.size()
        if offset < 0 or offset + len(data) > size:
            raise errors.InvalidArgument(f"write {offset}+{len(data)} beyond {size}")
        if not data:
            return 0
        return int(self._call("write", self.rbd.write, bytes(data), offset))

    def flush(self) -> None:
        self._call("flush", self.rbd.flush)

    def resize(self, size: int) -> None:
        self._writable()
        check_size(size)
        self._call("resize", self.rbd.resize, size)

    def export_to(self, dest: Path | str | BinaryIO) -> int:
        if isinstance(dest, str | Path):
            with translated(self._what("export")):
                return rbd_io.export_file(self.rbd, Path(dest))
        n = 0
        for piece in self.iter_chunks(rbd_io.BLOCK):
            dest.write(piece)
            n += len(piece)
        return n

    def iter_chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        size = self.size()
        for off in range(0, size, chunk):
            yield self.read(off, min(chunk, size - off))

    def diff_iterate(self, from_snapshot: str | None = None,
                     granularity: int = 4 << 20) -> Iterator[Extent]:
        """librbd's ``diff_iterate`` (parents included), byte-exact, in time that follows
        the changed objects: with fast-diff, the object maps name the objects that
        changed (``whole_object``), then the exact diff runs over those objects only
        (on its own it visits every object of the image).  Computed at the call."""
        check_granularity(granularity)
        size = self.size()
        spans: list[Span] = []

        def note(offset: int, length: int, exists: bool) -> int:
            spans.append((offset, offset + length, bool(exists)))
            return 0

        what = self._what("diff", from_snapshot)
        with translated(what, SNAP if from_snapshot is not None else None):
            if size and self.rbd.features() & rbd.RBD_FEATURE_FAST_DIFF:
                self.rbd.diff_iterate(0, size, from_snapshot, note, include_parent=True,
                                      whole_object=True)
                objects, spans = normalize(spans), []
                for start, end, _ in objects:
                    self.rbd.diff_iterate(start, end - start, from_snapshot, note,
                                          include_parent=True, whole_object=False)
            elif size:
                self.rbd.diff_iterate(0, size, from_snapshot, note, include_parent=True,
                                      whole_object=False)
        return iter(list(to_extents(normalize(spans), granularity, size)))

    # --- snapshots ----------------------------------------------------------------------
    def create_snap(self, name: str) -> None:
        self._writable()
        _check_snap_name(name)
        self._call("snapshot", self.rbd.create_snap, name, snap=name,
                   overrides={errors.ImageExists: errors.SnapshotExists})

    def remove_snap(self, name: str) -> None:
        self._call("remove snapshot", self.rbd.remove_snap, name, snap=name,
                   overrides={**SNAP, errors.ImageBusy: errors.SnapshotProtected})

    def list_snaps(self) -> list[SnapInfo]:
        with translated(self._what("list snapshots")):
            snaps = [s for s in self.rbd.list_snaps() if s.get("namespace", 0) == _USER_SNAP]
            return sorted(
                (SnapInfo(s["id"], s["name"], s["size"], self.rbd.is_protected_snap(s["name"]),
                          self.rbd.get_snap_timestamp(s["id"]).replace(tzinfo=UTC).timestamp())
                 for s in snaps), key=lambda s: s.id)

    def rollback_to_snap(self, name: str) -> None:
        self._writable()
        self._call("rollback", self.rbd.rollback_to_snap, name, snap=name, overrides=SNAP)

    def protect_snap(self, name: str) -> None:
        self._call("protect", self.rbd.protect_snap, name, snap=name,
                   overrides={**SNAP, errors.ImageBusy: errors.SnapshotProtected})

    def unprotect_snap(self, name: str) -> None:
        self._call("unprotect", self.rbd.unprotect_snap, name, snap=name,
                   overrides={**SNAP, errors.ImageBusy: errors.SnapshotHasChildren,
                              errors.InvalidArgument: errors.SnapshotNotProtected})

    def is_protected_snap(self, name: str) -> bool:
        return bool(self._call("is protected", self.rbd.is_protected_snap, name, snap=name,
                               overrides=SNAP))

    # --- clones -------------------------------------------------------------------------
    def list_children(self) -> list[tuple[str, str]]:
        return sorted(set(self._call("list children", self.rbd.list_children)))

    def parent_info(self) -> tuple[str, str, str]:
        pool, name, snap = self._call("parent info", self.rbd.parent_info)
        return str(pool), str(name), str(snap)

    def clone_depth(self) -> int:
        depth = 0
        try:
            parent = self.parent_info()
        except errors.ImageNotFound:
            return 0
        while True:
            depth += 1
            try:
                with self.engine.open(parent[0], parent[1], snapshot=parent[2]) as img:
                    parent = img.parent_info()
            except errors.ImageNotFound:
                return depth

    def flatten(self) -> None:
        self._writable()
        self._call("flatten", self.rbd.flatten)

    def copy(self, dest_pool: str, dest_name: str) -> None:
        check_name(dest_name)
        ioctx = self.engine.ioctx(dest_pool)
        self._call(f"copy to {dest_pool}/{dest_name} from", self.rbd.copy, ioctx, dest_name)

    def deep_copy(self, dest_pool: str, dest_name: str) -> None:
        check_name(dest_name)
        ioctx = self.engine.ioctx(dest_pool)
        self._call(f"deep copy to {dest_pool}/{dest_name} from", self.rbd.deep_copy, ioctx,
                   dest_name)

    # --- QEMU -----------------------------------------------------------------------------
    def blockdev_options(self, node_prefix: str = "strato") -> dict[str, Any]:
        """QEMU's native rbd driver opens the image itself (librbd in QEMU): no file."""
        opts: dict[str, Any] = self.engine.qemu_opts(self.pool, self.name, self.snapshot)
        opts["node-name"] = node_name(node_prefix, self.id())
        opts["read-only"] = self.read_only
        return opts

    def prepare_live_snapshot(self, name: str, node_prefix: str = "strato") -> LiveSnapshot | None:
        """None: librbd snapshots an image QEMU has open itself (the lock owner obliges)."""
        self._writable()
        _check_snap_name(name)
        return None
