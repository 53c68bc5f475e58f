"""A store's small interface, after glance_store: write, read, delete by location."""

from __future__ import annotations

import abc
from collections.abc import Iterator


class InUseByStore(Exception):  # noqa: N818 - glance_store's name
    """The data cannot be deleted: something (a clone) still depends on it."""


class NotFoundInStore(Exception):  # noqa: N818
    """The location names no data."""


class StoreWriter(abc.ABC):
    """One upload in progress.  ``abort`` removes everything written so far."""

    @abc.abstractmethod
    def write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> str:
        """Make the data permanent; returns its location."""

    @abc.abstractmethod
    def abort(self) -> None: ...


class ImageStore(abc.ABC):
    name: str

    @abc.abstractmethod
    def writer(self, image_id: str, size_hint: int | None) -> StoreWriter:
        """Start storing ``image_id``; ``size_hint`` is the size when it is known."""

    @abc.abstractmethod
    def read(self, location: str, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The first ``size`` bytes at ``location``, in pieces."""

    @abc.abstractmethod
    def discard(self, image_id: str) -> None:
        """Remove whatever an interrupted upload of ``image_id`` left (crash recovery)."""

    @abc.abstractmethod
    def delete(self, location: str) -> None:
        """Remove the data; InUseByStore when it cannot go yet, NotFoundInStore if gone."""
