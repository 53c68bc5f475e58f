"""The volume driver: Cinder's RBD driver behaviour (seed 002) on any block-store engine.

Volumes are ``volume-<id>`` in the volumes pool; a snapshot is the block-store
snapshot ``snapshot-<id>`` (protected, so it can be cloned); a volume cloned from a
volume hangs off ``<dest>.clone_snap`` on the source.  A volume that clones still
need is renamed ``<name>.deleted`` and removed when its last child goes.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strato.storage import Engine, Image, crash, errors, parse_location
from strato.storage.refs import drop_unneeded_snaps, release_parent, retire

LOG = logging.getLogger(__name__)
GiB = 1 << 30


class VolumeIsBusy(Exception):  # noqa: N818 - Cinder's name
    """The volume has snapshots of its own: it cannot be deleted yet."""


class SnapshotIsBusy(Exception):  # noqa: N818
    """Volumes were cloned from this snapshot and still need it."""


class ParentNotReleased(Exception):  # noqa: N818 - a report: the delete itself is done
    """The volume is gone (or kept as ``.deleted`` for its clones), but what it held on
    its parent (``pool``, ``image``, ``snap``) could not be released yet."""

    def __init__(self, message: str, parent: tuple[str, str, str]) -> None:
        super().__init__(message)
        self.parent = parent


# Disk formats whose data is the disk itself, byte for byte.
RAW_LIKE = ("raw", "iso", "ami", "ari", "aki")


class _ChunkStream(io.RawIOBase):
    """Chunks (an image download) read as a stream: what the engines' import takes."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = memoryview(chunk)
        n = min(len(buf), len(self._left))
        buf[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def volume_name(volume_id: str) -> str:
    return f"volume-{volume_id}"


def snapshot_name(snapshot_id: str) -> str:
    return f"snapshot-{snapshot_id}"


@dataclass(frozen=True)
class DriverOptions:
    pool: str = "volumes"
    max_clone_depth: int = 5
    flatten_volume_from_snapshot: bool = False
    conversion_dir: Path = Path("/var/tmp")
    order: int | None = None  # object size of new volumes, 2**order (rbd_store_chunk_size)


class RBDDriver:
    def __init__(self, engine: Engine, options: DriverOptions) -> None:
        self.engine = engine
        self.opt = options

    # ------------------------------------------------------------ create
    def create_volume(self, volume_id: str, size_gb: int) -> None:
        """A blank volume (``rbd create``)."""
        self.engine.create(self.opt.pool, volume_name(volume_id), size_gb * GiB,
                           order=self.opt.order)

    def _resize_to(self, name: str, size_gb: int) -> None:
        with self.engine.open(self.opt.pool, name) as image:
            if image.size() < size_gb * GiB:
                image.resize(size_gb * GiB)

    def create_from_snapshot(self, volume_id: str, size_gb: int, src_volume_id: str,
                             snapshot_id: str) -> None:
        """Clone the snapshot; flatten when configured; grow when bigger."""
        name = volume_name(volume_id)
        self.engine.clone(self.opt.pool, volume_name(src_volume_id), snapshot_name(snapshot_id),
                          self.opt.pool, name)
        try:
            if self.opt.flatten_volume_from_snapshot:
                with self.engine.open(self.opt.pool, name) as image:
                    image.flatten()
            self._resize_to(name, size_gb)
        except BaseException:
            self.engine.remove(self.opt.pool, name)
            raise

    def create_cloned_volume(self, volume_id: str, size_gb: int, src_volume_id: str) -> None:
        """Clone through ``<dest>.clone_snap``; flatten the source first when it is already
        ``max_clone_depth`` deep; a full copy when cloning is off (depth 0)."""
        src, dest = volume_name(src_volume_id), volume_name(volume_id)
        pool = self.opt.pool
        if self.opt.max_clone_depth <= 0:
            with self.engine.open(pool, src) as image:
                image.copy(pool, dest)
            self._resize_to(dest, size_gb)
            return
        clone_snap = f"{dest}.clone_snap"
        with self.engine.open(pool, src) as image:
            if image.clone_depth() >= self.opt.max_clone_depth:
                _p_pool, parent, parent_snap = image.parent_info()
                LOG.info("%s is %d clones deep: flattening it first", src,
                         image.clone_depth())
                image.flatten()
                release_parent(self.engine, _p_pool, parent, parent_snap)
            image.create_snap(clone_snap)
            image.protect_snap(clone_snap)
        try:
            self.engine.clone(pool, src, clone_snap, pool, dest)
            self._resize_to(dest, size_gb)
        except BaseException:
            if self.engine.exists(pool, dest):
                self.engine.remove(pool, dest)
            with self.engine.open(pool, src) as image:
                image.unprotect_snap(clone_snap)
                image.remove_snap(clone_snap)
            raise

    def cloneable(self, location: str | None, disk_format: str | None) -> bool:
        """Seed 002's ``_is_cloneable``: our fsid, raw, and the snapshot is readable."""
        if not location or disk_format != "raw":
            return False
        try:
            loc = parse_location(location)
        except errors.InvalidArgument:
            return False
        if loc.fsid != self.engine.fsid() or loc.snapshot is None:
            return False
        try:
            with self.engine.open(loc.pool, loc.image, snapshot=loc.snapshot, read_only=True):
                return True
        except errors.Error:
            return False

    def clone_image(self, volume_id: str, size_gb: int, location: str) -> None:
        """The image's data becomes the volume's parent: nothing is copied."""
        loc = parse_location(location)
        name = volume_name(volume_id)
        self.engine.clone(loc.pool, loc.image, loc.snapshot or "snap", self.opt.pool, name)
        try:
            self._resize_to(name, size_gb)
        except BaseException:
            self.engine.remove(self.opt.pool, name)
            raise

    def copy_image(self, volume_id: str, size_gb: int, chunks: Iterator[bytes],
                   disk_format: str, location: str | None = None) -> None:
        """Copy an image's data in: raw-like formats stream straight into the store;
        qcow2 is converted into the store in one pass; other formats are converted to
        raw first.  A qcow2 whose data is a file of this store (``location``: a local
        engine's frozen raw layer) is converted from that file in place; otherwise the
        data (``chunks``) is fetched to a temp file first.  Temp files go
        whatever happens."""
        name = volume_name(volume_id)
        if disk_format in RAW_LIKE:
            stream = io.BufferedReader(_ChunkStream(chunks), buffer_size=8 << 20)
            self.engine.import_from(self.opt.pool, name, stream, order=self.opt.order)
        else:
            with tempfile.TemporaryDirectory(dir=self._conversion_dir()) as tmp:
                # In place for qcow2 only: the store pads data to 512 bytes, which
                # a qcow2 (its header says where everything is) does not mind, but a
                # format with a footer (vpc) would.
                src = self._stored_file(location) if disk_format == "qcow2" else None
                if src is None:
                    src = Path(tmp) / "fetched"
                    with open(src, "wb") as fh:
                        for chunk in chunks:
                            fh.write(chunk)
                fmt = "qcow2"
                if disk_format != "qcow2":
                    fmt, converted = "raw", Path(tmp) / "converted.raw"
                    subprocess.run(["qemu-img", "convert", "-q", "-f", disk_format, "-O",
                                    "raw", "-S", "4k", str(src), str(converted)],
                                   check=True, capture_output=True)
                    src = converted
                    size = os.stat(src).st_size
                    if size % 512:
                        os.truncate(src, size + 512 - size % 512)
                self.engine.import_from(self.opt.pool, name, src, fmt=fmt,
                                        order=self.opt.order)
        try:
            with self.engine.open(self.opt.pool, name) as image:
                if image.size() > size_gb * GiB:
                    raise ValueError(f"image of {image.size()} bytes does not fit a "
                                     f"{size_gb} GiB volume")
            self._resize_to(name, size_gb)
        except BaseException:
            self.engine.remove(self.opt.pool, name)
            raise

    def _stored_file(self, location: str | None) -> Path | None:
        """The file holding an image's data in this store, read in place (no download),
        or None: another store, or an engine without such a file (rbd)."""
        if not location:
            return None
        try:
            loc = parse_location(location)
        except errors.InvalidArgument:
            return None
        if loc.fsid != self.engine.fsid() or loc.snapshot is None:
            return None
        try:
            with self.engine.open(loc.pool, loc.image, snapshot=loc.snapshot,
                                  read_only=True) as image:
                return image.data_file()
        except errors.Error:
            return None

    # ------------------------------------------------------------ delete
    def delete_volume(self, volume_id: str) -> None:
        """Seed 002's delete: refuse with snapshots; keep as ``.deleted`` while clones
        need it; clean the parent's references when this was a clone.

        VolumeIsBusy comes before the volume's data is touched; any other error before
        the volume is removed (or renamed) leaves its data whole (only garbage
        ``*.clone_snap`` snapshots may have gone), so a retry is possible.
        ParentNotReleased: the volume is gone, only its parent's release is left."""
        pool, name = self.opt.pool, volume_name(volume_id)
        try:
            image = self.engine.open(pool, name)
        except errors.ImageNotFound:
            LOG.info("volume %s is already gone from the store", name)
            return
        with image:
            for snap in image.list_snaps():
                if snap.name.startswith("backup."):
                    if image.is_protected_snap(snap.name):
                        image.unprotect_snap(snap.name)
                    image.remove_snap(snap.name)
            snaps = [s.name for s in image.list_snaps()]
            others = [s for s in snaps if not s.endswith(".clone_snap")]
            if others:
                raise VolumeIsBusy(f"volume {volume_id} has snapshots: {', '.join(others)}")
            parent = self._parent(image)
            needed = drop_unneeded_snaps(self.engine, image, snaps)
        crash.fault("volume.delete", "before-remove")
        retire(self.engine, pool, name, needed, None)
        if parent is None or needed:  # kept as .deleted: it still holds its parent
            return
        try:
            crash.fault("volume.delete", "release-parent")
            release_parent(self.engine, *parent)
        except Exception as exc:  # noqa: BLE001 - the volume is gone; a retry releases it
            raise ParentNotReleased(f"{pool}/{name} removed; {'/'.join(parent[:2])}@"
                                    f"{parent[2]} not released yet: {exc}", parent) from exc

    def parent_of(self, volume_id: str) -> tuple[str, str, str] | None:
        """(pool, image, snap) the volume is a clone of (or its ``.deleted`` self is)."""
        for name in (volume_name(volume_id), f"{volume_name(volume_id)}.deleted"):
            try:
                with self.engine.open(self.opt.pool, name, read_only=True) as image:
                    return self._parent(image)
            except errors.ImageNotFound:
                continue
        return None

    def _parent(self, image: Image) -> tuple[str, str, str] | None:
        try:
            return image.parent_info()
        except errors.ImageNotFound:
            return None

    # ------------------------------------------------------------ snapshots
    def create_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        """Snapshot and protect; idempotent, so a retried job finishes the work."""
        name = snapshot_name(snapshot_id)
        with self.engine.open(self.opt.pool, volume_name(volume_id)) as image:
            if name not in {s.name for s in image.list_snaps()}:
                image.create_snap(name)
            if not image.is_protected_snap(name):
                image.protect_snap(name)

    def delete_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        name, snap = volume_name(volume_id), snapshot_name(snapshot_id)
        for candidate in (name, f"{name}.deleted"):
            try:
                image = self.engine.open(self.opt.pool, candidate)
                break
            except errors.ImageNotFound:
                continue
        else:
            return
        with image:
            if snap not in {s.name for s in image.list_snaps()}:
                return
            if image.is_protected_snap(snap):
                try:
                    image.unprotect_snap(snap)
                except errors.ImageBusy as exc:
                    raise SnapshotIsBusy(f"snapshot {snapshot_id} has dependent volumes"
                                         ) from exc
                crash.fault("snapshot.delete", "after-unprotect")
            image.remove_snap(snap)

    def snapshot_has_clones(self, volume_id: str, snapshot_id: str) -> bool:
        """Whether clones (volumes, or a deleted clone kept as ``.deleted`` for its own
        clones) still need the snapshot: what makes its delete refused (SnapshotIsBusy),
        asked before anything is touched."""
        name, snap = volume_name(volume_id), snapshot_name(snapshot_id)
        for candidate in (name, f"{name}.deleted"):
            try:
                with self.engine.open(self.opt.pool, candidate, snapshot=snap,
                                      read_only=True) as image:
                    return bool(image.list_children())
            except errors.ImageNotFound:  # SnapshotNotFound too: nothing needs it
                continue
        return False

    def snapshot_exists(self, volume_id: str, snapshot_id: str) -> bool:
        """The snapshot's data is in the store (on the volume or its ``.deleted`` self)."""
        for name in (volume_name(volume_id), f"{volume_name(volume_id)}.deleted"):
            try:
                with self.engine.open(self.opt.pool, name, read_only=True) as image:
                    return snapshot_name(snapshot_id) in {s.name for s in image.list_snaps()}
            except errors.ImageNotFound:
                continue
        return False

    def release(self, parent: tuple[str, str, str]) -> None:
        """Release what a deleted volume held on its parent (idempotent)."""
        release_parent(self.engine, *parent)

    def revert_to_snapshot(self, volume_id: str, snapshot_id: str) -> None:
        with self.engine.open(self.opt.pool, volume_name(volume_id)) as image:
            image.rollback_to_snap(snapshot_name(snapshot_id))

    def clone_to_image(self, volume_id: str, image_id: str, images_pool: str
                       ) -> tuple[str, int]:
        """The volume's data becomes an image without copying: a protected
        ``<image_id>.clone_snap`` of the volume, cloned into the images pool with the
        image store's protected ``snap``.  Returns the image's location and size."""
        src, clone_snap = volume_name(volume_id), f"{image_id}.clone_snap"
        with self.engine.open(self.opt.pool, src) as image:
            if clone_snap not in {s.name for s in image.list_snaps()}:
                image.create_snap(clone_snap)
            if not image.is_protected_snap(clone_snap):
                image.protect_snap(clone_snap)
            size = image.size()
        try:
            if self.engine.exists(images_pool, image_id):
                self.engine.remove(images_pool, image_id)  # a half-made one from a crash
            self.engine.clone(self.opt.pool, src, clone_snap, images_pool, image_id)
            with self.engine.open(images_pool, image_id) as img:
                img.create_snap("snap")
                img.protect_snap("snap")
        except BaseException:
            if self.engine.exists(images_pool, image_id):
                self.engine.remove(images_pool, image_id)
            release_parent(self.engine, self.opt.pool, src, clone_snap)
            raise
        return self.engine.location(images_pool, image_id, "snap"), size

    def export_chunks(self, volume_id: str, disk_format: str) -> Iterator[bytes]:
        """The volume's data in ``disk_format``: raw-like formats streamed straight from
        the store, others converted in ``image_conversion_dir`` first."""
        from strato.image.data import file_chunks

        name = volume_name(volume_id)
        if disk_format in RAW_LIKE:
            with self.engine.open(self.opt.pool, name, read_only=True) as image:
                yield from image.iter_chunks(8 << 20)
            return
        with tempfile.TemporaryDirectory(dir=self._conversion_dir()) as tmp:
            raw, out = Path(tmp) / "volume.raw", Path(tmp) / f"volume.{disk_format}"
            with self.engine.open(self.opt.pool, name, read_only=True) as image:
                image.export_to(raw)
            subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", disk_format,
                            str(raw), str(out)], check=True, capture_output=True)
            raw.unlink()
            yield from file_chunks(out)

    def _conversion_dir(self) -> Path:
        self.opt.conversion_dir.mkdir(parents=True, exist_ok=True)
        return self.opt.conversion_dir

    def extend(self, volume_id: str, size_gb: int) -> None:
        self._resize_to(volume_name(volume_id), size_gb)

    def exists(self, volume_id: str) -> bool:
        return self.engine.exists(self.opt.pool, volume_name(volume_id))
