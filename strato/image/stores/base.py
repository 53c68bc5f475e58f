"""A store's small interface, after glance_store: write, read, delete by location."""

from __future__ import annotations

import abc
from collections.abc import Iterator


class InUseByStore(Exception):  # noqa: N818 - glance_store's name
    """The data cannot be deleted: something (a clone) still depends on it."""


class NotFoundInStore(Exception):  # noqa: N818
    """The location names no data."""


class LeftBehind(Exception):  # noqa: N818 - a report, not a failure of the delete
    """The data is gone, but what it held elsewhere could not be released yet (the
    parent's ``*.clone_snap`` of an image made by cloning a volume or an instance disk,
    say under a running guest).  ``garbage`` names it, for ``ImageStore.release``."""

    def __init__(self, message: str, garbage: dict[str, str]) -> None:
        super().__init__(message)
        self.garbage = garbage


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
    name: str  # the store's id (its type's name, or its id in enabled_backends)
    kind: str  # "rbd" or "file"

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
        """Remove the data.  InUseByStore when clones still need it (raised before
        anything is removed), NotFoundInStore if it is gone already, LeftBehind when it
        is gone but a reference it held elsewhere is not released yet; any other error
        may come after part of the data was removed: retry until it is gone."""

    def holds(self, location: str) -> dict[str, str] | None:
        """What the data at ``location`` holds elsewhere (the ``garbage`` its delete
        would leave if the release failed), so a delete cut off after the data went can
        still release it; None when nothing."""
        return None

    @abc.abstractmethod
    def release(self, garbage: dict[str, str]) -> None:
        """Release what a delete left behind (``LeftBehind.garbage``); raises while it
        still cannot be released."""
