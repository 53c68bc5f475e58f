"""Block store errors, named as librbd's Python binding names them.

Callers written against ``rbd`` (Glance/Cinder/Nova-style code) catch these names, so
every engine raises exactly these classes; as in current rbd.pyx the errno-carrying ones
derive from ``OSError`` (this module's, not the builtin), which derives from ``Error``.
The snapshot-misuse classes subclass the librbd class that carries the same errno
(EBUSY → ImageBusy, EINVAL → InvalidArgument), so code catching librbd names still works.
"""

from __future__ import annotations

import errno


class Error(Exception):
    """Base of every block store error (librbd: ``rbd.Error``)."""

    errno: int = errno.EIO


class OSError(Error):  # noqa: A001 - librbd's name
    """Parent of the errno-carrying errors, as in librbd's ``rbd.OSError``."""


class PermissionError(OSError):  # noqa: A001 - librbd's name
    errno = errno.EPERM


class ObjectNotFound(OSError):
    errno = errno.ENOENT


class PoolNotFound(ObjectNotFound):
    """The pool is not configured (rados: ObjectNotFound on ioctx open)."""


class ImageNotFound(OSError):
    errno = errno.ENOENT


class SnapshotNotFound(ImageNotFound):
    """librbd reports a missing snapshot as ImageNotFound (ENOENT)."""


class ImageExists(OSError):
    errno = errno.EEXIST


class SnapshotExists(ImageExists):
    pass


class ImageBusy(OSError):
    errno = errno.EBUSY


class SnapshotProtected(ImageBusy):
    """Removing a protected snapshot, or protecting one twice (EBUSY in librbd)."""


class SnapshotHasChildren(ImageBusy):
    """Unprotecting a snapshot that still has clones (EBUSY in librbd)."""


class ImageHasSnapshots(OSError):
    errno = errno.ENOTEMPTY


class InvalidArgument(OSError):
    errno = errno.EINVAL


class SnapshotNotProtected(InvalidArgument):
    """Cloning from, or unprotecting, an unprotected snapshot (EINVAL in librbd)."""


class UnsafeLayer(InvalidArgument):
    """A layer refers to a file outside the engine's directory (backing/data file)."""


class ReadOnlyImage(OSError):
    errno = errno.EROFS


class ArgumentOutOfRange(OSError):
    errno = errno.ERANGE


class FunctionNotSupported(OSError):
    errno = errno.ENOSYS


class IOError(OSError):  # noqa: A001 - librbd's name
    errno = errno.EIO


class NoSpace(OSError):
    errno = errno.ENOSPC
