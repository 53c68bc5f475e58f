"""The block-store image store (glance_store's RBD driver, on any block-store engine).

Image data is the block-store image ``<image_id>`` in pool ``images``, written in
``rbd_store_chunk_size`` MiB pieces, with a protected snapshot ``snap``; the
location is ``rbd://<fsid>/images/<image_id>/snap``.  Clones of ``snap`` (volumes,
instance disks) keep the data alive: delete refuses with InUseByStore until they go.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

from strato.image.stores.base import (
    ImageStore,
    InUseByStore,
    LeftBehind,
    NotFoundInStore,
    StoreWriter,
)
from strato.storage import Engine, crash, errors, parse_location
from strato.storage.refs import parent_of, release_parent

LOG = logging.getLogger(__name__)
SNAP = "snap"
_ALIGN = 512


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class _Writer(StoreWriter):
    def __init__(self, store: RbdStore, image_id: str, size_hint: int | None) -> None:
        self.store = store
        self.name = image_id
        self.known_size = size_hint
        self.offset = 0
        self.zero = bytes(store.chunk_size)
        eng = store.engine
        try:
            eng.create(store.pool, self.name, _aligned(size_hint or 0), order=store.order)
        except errors.ImageExists:
            raise FileExistsError(f"image data {image_id} already exists") from None
        self.image = eng.open(store.pool, self.name)

    def write(self, chunk: bytes) -> None:
        end = self.offset + len(chunk)
        if self.known_size is None or end > self.known_size:
            # Unknown size (chunked upload): grow as data comes, as glance_store does.
            self.image.resize(_aligned(end))
            self.known_size = None
        # A fresh image reads as zeros: skip writing zero chunks, so it stays sparse.
        if not self._is_zero(chunk):
            self.image.write(chunk, self.offset)
        self.offset = end

    def _is_zero(self, chunk: bytes) -> bool:
        """A few bytes first: data (the usual case) is told apart without a full scan."""
        view = memoryview(chunk)
        n = len(view)
        if any(view[:64]) or any(view[n // 2:n // 2 + 64]) or any(view[-64:]):
            return False
        return bytes(view) == self.zero[:n]

    def commit(self) -> str:
        if self.image.size() != _aligned(self.offset):
            self.image.resize(_aligned(self.offset))
        self.image.create_snap(SNAP)
        self.image.protect_snap(SNAP)
        self.image.close()
        return self.store.engine.location(self.store.pool, self.name, SNAP)

    def abort(self) -> None:
        self.image.close()
        try:
            self.store.remove(self.name, SNAP)
        except (NotFoundInStore, InUseByStore, LeftBehind):
            LOG.warning("could not remove partial image data %s", self.name)


class RbdStore(ImageStore):
    name = "rbd"
    kind = "rbd"

    def __init__(self, engine: Engine, pool: str = "images", chunk_size_mb: int = 8) -> None:
        self.engine = engine
        self.pool = pool
        self.chunk_size = chunk_size_mb << 20
        self.order = int(math.log2(self.chunk_size))

    def writer(self, image_id: str, size_hint: int | None) -> StoreWriter:
        return _Writer(self, image_id, size_hint)

    def read(self, location: str, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        loc = parse_location(location)
        try:
            image = self.engine.open(loc.pool, loc.image, snapshot=loc.snapshot,
                                     read_only=True)
        except errors.ImageNotFound as exc:
            raise NotFoundInStore(location) from exc
        with image:
            left = size
            for piece in image.iter_chunks(chunk):
                if left <= 0:
                    break
                yield piece[:left]  # the store pads to 512 bytes; the record has the size
                left -= len(piece)

    def discard(self, image_id: str) -> None:
        try:
            self.remove(image_id, SNAP)
        except NotFoundInStore:
            pass
        except LeftBehind as exc:
            LOG.warning("image data %s discarded; left behind: %s", image_id, exc)

    def delete(self, location: str) -> None:
        loc = parse_location(location)
        self.remove(loc.image, loc.snapshot, loc.pool)

    def remove(self, name: str, snapshot: str | None, pool: str | None = None) -> None:
        """Seed 002's order: unprotect the snapshot, remove it, remove the image, then
        release what the image held on its parent (an image made by cloning a volume or
        an instance disk holds the parent's ``*.clone_snap``).

        InUseByStore only while nothing is removed yet (clones need the snapshot).  Any
        other error may come after a step was done: a retry continues from there.
        LeftBehind: the image is gone, but its parent could not be released yet."""
        pool = pool or self.pool
        parent = parent_of(self.engine, pool, name)
        try:
            image = self.engine.open(pool, name)
        except errors.ImageNotFound as exc:
            raise NotFoundInStore(f"{pool}/{name}") from exc
        with image:
            if snapshot is not None and snapshot in {s.name for s in image.list_snaps()}:
                if image.is_protected_snap(snapshot):
                    try:
                        image.unprotect_snap(snapshot)
                    except errors.ImageBusy as exc:
                        raise InUseByStore(self._users(pool, name, snapshot)) from exc
                    crash.fault("image.delete", "after-unprotect")
                image.remove_snap(snapshot)
                crash.fault("image.delete", "after-remove-snap")
        try:
            self.engine.remove(pool, name)
        except errors.ImageNotFound:
            LOG.info("%s/%s went away meanwhile", pool, name)
        if parent is None:
            return
        try:
            crash.fault("image.delete", "release-parent")
            release_parent(self.engine, *parent)
        except Exception as exc:  # noqa: BLE001 - the data is gone: a retry releases it
            p_pool, p_name, p_snap = parent
            raise LeftBehind(f"{pool}/{name} removed; {p_pool}/{p_name}@{p_snap} not "
                             f"released yet: {type(exc).__name__}: {exc}",
                             {"pool": p_pool, "image": p_name, "snap": p_snap}) from exc

    def holds(self, location: str) -> dict[str, str] | None:
        loc = parse_location(location)
        parent = parent_of(self.engine, loc.pool, loc.image)
        if parent is None:
            return None
        return {"pool": parent[0], "image": parent[1], "snap": parent[2]}

    def release(self, garbage: dict[str, str]) -> None:
        release_parent(self.engine, garbage["pool"], garbage["image"], garbage["snap"])

    def _users(self, pool: str, name: str, snapshot: str) -> str:
        """What was cloned from ``pool/name@snapshot``, named as the services name it."""
        try:
            with self.engine.open(pool, name, snapshot=snapshot, read_only=True) as at:
                children = at.list_children()
        except errors.Error:
            children = []
        names = [describe_clone(c_pool, c_name) for c_pool, c_name in children]
        return ", ".join(names) or f"clones of {pool}/{name}@{snapshot}"


def describe_clone(pool: str, name: str) -> str:
    """A block-store image as the resource it belongs to (seed naming)."""
    base = name.removesuffix(".deleted")
    if base.startswith("volume-"):
        return f"volume {base.removeprefix('volume-')}"
    if base.endswith("_disk"):
        return f"instance {base.removesuffix('_disk')}"
    return f"{pool}/{name}"
