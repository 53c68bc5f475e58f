"""The ``file`` store: one file per image in a directory (glance_store's filesystem)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from strato.image.stores.base import ImageStore, NotFoundInStore, StoreWriter


class _Writer(StoreWriter):
    def __init__(self, root: Path, image_id: str) -> None:
        self.final = root / image_id
        self.partial = root / f".{image_id}.partial"
        self.fh = open(self.partial, "xb")  # noqa: SIM115 - closed in commit/abort

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)

    def commit(self) -> str:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.partial, self.final)
        return self.final.as_uri()

    def abort(self) -> None:
        self.fh.close()
        self.partial.unlink(missing_ok=True)


class FileStore(ImageStore):
    name = "file"
    kind = "file"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, location: str) -> Path:
        path = Path(urlparse(location).path)
        if path.parent != self.root:
            raise NotFoundInStore(f"{location} is not in this store")
        return path

    def writer(self, image_id: str, size_hint: int | None) -> StoreWriter:
        return _Writer(self.root, image_id)

    def read(self, location: str, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        try:
            fh = open(self._path(location), "rb")  # noqa: SIM115
        except FileNotFoundError as exc:
            raise NotFoundInStore(location) from exc
        with fh:
            left = size
            while left > 0:
                data = fh.read(min(chunk, left))
                if not data:
                    break
                left -= len(data)
                yield data

    def discard(self, image_id: str) -> None:
        (self.root / f".{image_id}.partial").unlink(missing_ok=True)
        (self.root / image_id).unlink(missing_ok=True)

    def delete(self, location: str) -> None:
        try:
            self._path(location).unlink()
        except FileNotFoundError as exc:
            raise NotFoundInStore(location) from exc

    def release(self, garbage: dict[str, str]) -> None:
        """A file holds nothing elsewhere: a delete never leaves anything behind."""
