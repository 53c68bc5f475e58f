"""librbd/librados exceptions re-raised as strato.storage.errors.

librbd reports snapshot misuse with generic classes (EBUSY for a protected snapshot
and for one with clones alike); callers of the block store expect the specific strato
subclasses, so each call site names the ones its operation means (``overrides``).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import rados
import rbd

from . import errors


class ClusterUnavailable(errors.IOError):
    """The Ceph cluster did not answer within the configured timeouts and retries."""

    errno = errno.ETIMEDOUT


Overrides = Mapping[type[errors.Error], type[errors.Error]]

_BY_CLASS: tuple[tuple[type[BaseException], type[errors.Error]], ...] = (
    (rbd.ImageNotFound, errors.ImageNotFound),
    (rbd.ImageExists, errors.ImageExists),
    (rbd.ImageBusy, errors.ImageBusy),
    (rbd.ImageHasSnapshots, errors.ImageHasSnapshots),
    (rbd.InvalidArgument, errors.InvalidArgument),
    (rbd.ArgumentOutOfRange, errors.InvalidArgument),
    (rbd.ReadOnlyImage, errors.ReadOnlyImage),
    (rbd.FunctionNotSupported, errors.FunctionNotSupported),
    (rbd.OperationNotSupported, errors.FunctionNotSupported),
    (rbd.PermissionError, errors.PermissionError),
    (rbd.NoSpace, errors.NoSpace),
    (rbd.DiskQuotaExceeded, errors.NoSpace),
    (rbd.Timeout, ClusterUnavailable),
    (rbd.ConnectionShutdown, ClusterUnavailable),
    (rbd.IOError, errors.IOError),
    (rbd.IncompleteWriteError, errors.IOError),
    (rados.TimedOut, ClusterUnavailable),
    (rados.ObjectNotFound, errors.ObjectNotFound),
    (rados.PermissionDeniedError, errors.PermissionError),
    (rados.PermissionError, errors.PermissionError),
    (rados.NoSpace, errors.NoSpace),
)

_BY_ERRNO: dict[int, type[errors.Error]] = {
    errno.ENOENT: errors.ObjectNotFound,
    errno.EEXIST: errors.ImageExists,
    errno.EBUSY: errors.ImageBusy,
    errno.ENOTEMPTY: errors.ImageHasSnapshots,
    errno.EINVAL: errors.InvalidArgument,
    errno.EROFS: errors.ReadOnlyImage,
    errno.ERANGE: errors.ArgumentOutOfRange,
    errno.ENOSYS: errors.FunctionNotSupported,
    errno.EPERM: errors.PermissionError,
    errno.EACCES: errors.PermissionError,
    errno.ENOSPC: errors.NoSpace,
    errno.ETIMEDOUT: ClusterUnavailable,
}


def strato_class(exc: BaseException) -> type[errors.Error]:
    for theirs, ours in _BY_CLASS:
        if isinstance(exc, theirs):
            return ours
    code = getattr(exc, "errno", None)
    return _BY_ERRNO.get(abs(code), errors.OSError) if isinstance(code, int) else errors.OSError


@contextmanager
def translated(what: str, overrides: Overrides | None = None) -> Iterator[None]:
    """Run librbd/librados calls; their errors come out as strato's (``what`` says where)."""
    try:
        yield
    except (rbd.Error, rados.Error) as exc:
        cls = strato_class(exc)
        if overrides:
            cls = overrides.get(cls, cls)
        raise cls(f"{what}: {exc}") from None


SNAP = {errors.ImageNotFound: errors.SnapshotNotFound}
