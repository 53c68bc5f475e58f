"""The block store: RBD-shaped pools of images, with interchangeable engines.

``open_engine("local", root=Path(...))`` gives the embedded engine;
``open_engine("rbd", ceph_conf=...)`` the Ceph one (librbd), under the same contract tests.
"""

from __future__ import annotations

from typing import Any

from . import errors
from .base import DEFAULT_POOLS, Engine, Extent, Image, LiveSnapshot, SnapInfo
from .location import Location
from .location import build as build_location
from .location import parse as parse_location


def open_engine(name: str, **options: Any) -> Engine:
    """Open a block store engine by name (``local`` or ``rbd``)."""
    if name == "local":
        from .local import LocalEngine

        return LocalEngine(**options)
    if name == "rbd":
        from .rbd import RbdEngine  # imports librbd: only when asked for

        return RbdEngine(**options)
    raise errors.InvalidArgument(f"unknown block store engine {name!r}")


def same_cluster(a: Engine | None, b: Engine | None) -> bool:
    """Whether data in ``a`` can be cloned into ``b`` (seed 002's ``_is_cloneable``: the
    same fsid), else it must be copied."""
    if a is None or b is None:
        return False
    return a is b or a.fsid() == b.fsid()


__all__ = [
    "DEFAULT_POOLS", "Engine", "Extent", "Image", "LiveSnapshot", "Location", "SnapInfo",
    "build_location", "errors", "open_engine", "parse_location", "same_cluster",
]
