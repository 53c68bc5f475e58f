"""Block store errors, named as librbd's Python binding names them.

Callers written against ``rbd`` (Glance/Cinder/Nova-style code) catch these names, so
every engine raises exactly these classes.  The snapshot-misuse classes subclass the
librbd class that carries the same errno (EBUSY → ImageBusy, EINVAL → InvalidArgument).
"""

from __future__ import annotations

import errno


class Error(Exception):
    """Base of every block store error (librbd: ``rbd.Error``)."""

    errno: int = errno.EIO


class OSError(Error):  # noqa: A001 - librbd's name
    """Unclassified I/O failure (librbd: ``rbd.OSError``)."""


class PermissionError(Error):  # noqa: A001 - librbd's name
    errno = errno.EPERM


class ObjectNotFound(Error):
    errno = errno.ENOENT


class PoolNotFound(ObjectNotFound):
    """The pool is not configured (rados: ObjectNotFound on ioctx open)."""


class ImageNotFound(Error):
    errno = errno.ENOENT


class SnapshotNotFound(ImageNotFound):
    """librbd reports a missing snapshot as ImageNotFound (ENOENT)."""


class ImageExists(Error):
    errno = errno.EEXIST


class SnapshotExists(ImageExists):
    pass


class ImageBusy(Error):
    errno = errno.EBUSY


class SnapshotProtected(ImageBusy):
    """Removing a protected snapshot, or protecting one twice (EBUSY in librbd)."""


class SnapshotHasChildren(ImageBusy):
    """Unprotecting a snapshot that still has clones (EBUSY in librbd)."""


class ImageHasSnapshots(Error):
    errno = errno.ENOTEMPTY


class InvalidArgument(Error):
    errno = errno.EINVAL


class SnapshotNotProtected(InvalidArgument):
    """Cloning from, or unprotecting, an unprotected snapshot (EINVAL in librbd)."""


class UnsafeLayer(InvalidArgument):
    """A layer refers to a file outside the engine's directory (backing/data file)."""


class ReadOnlyImage(Error):
    errno = errno.EROFS


class ArgumentOutOfRange(Error):
    errno = errno.ERANGE


class FunctionNotSupported(Error):
    errno = errno.ENOSYS


class IOError(Error):  # noqa: A001 - librbd's name
    errno = errno.EIO
