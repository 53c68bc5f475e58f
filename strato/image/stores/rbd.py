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

from strato.image.stores.base import ImageStore, InUseByStore, NotFoundInStore, StoreWriter
from strato.storage import Engine, errors, parse_location
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
        except (NotFoundInStore, InUseByStore):
            LOG.warning("could not remove partial image data %s", self.name)


class RbdStore(ImageStore):
    name = "rbd"

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

    def delete(self, location: str) -> None:
        loc = parse_location(location)
        self.remove(loc.image, loc.snapshot, loc.pool)

    def remove(self, name: str, snapshot: str | None, pool: str | None = None) -> None:
        """Seed 002's order: unprotect the snapshot, remove it, remove the image."""
        pool = pool or self.pool
        parent = parent_of(self.engine, pool, name)
        try:
            if snapshot is not None:
                with self.engine.open(pool, name) as image:
                    if snapshot in {s.name for s in image.list_snaps()}:
                        if image.is_protected_snap(snapshot):
                            try:
                                image.unprotect_snap(snapshot)
                            except errors.ImageBusy as exc:
                                raise InUseByStore(f"{pool}/{name}@{snapshot} has clones"
                                                   ) from exc
                        image.remove_snap(snapshot)
            self.engine.remove(pool, name)
        except errors.ImageNotFound as exc:
            raise NotFoundInStore(f"{pool}/{name}") from exc
        except errors.ImageBusy as exc:
            raise InUseByStore(f"{pool}/{name} is in use") from exc
        if parent is not None:  # an image made by cloning a volume: free what it held
            release_parent(self.engine, *parent)
