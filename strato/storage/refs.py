"""Garbage rules shared by every service that clones: what a removed clone leaves behind.

A ``*.clone_snap`` snapshot exists only to carry clones; with none left it is garbage.
An image renamed ``*.deleted`` was kept only for its clones, so any snapshot of it with
no clones left is garbage; with no snapshots left the image itself is — and removing it
may free its own parent in turn.
"""

from __future__ import annotations

import logging

from . import errors
from .base import Engine, Image

LOG = logging.getLogger(__name__)
CLONE_SNAP = ".clone_snap"
DELETED = ".deleted"


def snap_has_children(engine: Engine, pool: str, name: str, snap: str) -> bool:
    with engine.open(pool, name, snapshot=snap, read_only=True) as at_snap:
        return bool(at_snap.list_children())


def parent_of(engine: Engine, pool: str, name: str) -> tuple[str, str, str] | None:
    try:
        with engine.open(pool, name, read_only=True) as image:
            return image.parent_info()
    except errors.ImageNotFound:
        return None


def release_parent(engine: Engine, pool: str, name: str, snap: str) -> None:
    """A clone of ``pool/name@snap`` went away: drop what nothing needs any more."""
    while True:
        if not (snap.endswith(CLONE_SNAP) or name.endswith(DELETED)):
            return
        try:
            image = engine.open(pool, name)
        except errors.ImageNotFound:
            return
        with image:
            if snap not in {s.name for s in image.list_snaps()}:
                return
            if snap_has_children(engine, pool, name, snap):
                return
            if image.is_protected_snap(snap):  # a retry may find it unprotected already
                image.unprotect_snap(snap)
            image.remove_snap(snap)
            LOG.info("removed %s/%s@%s: no clones left", pool, name, snap)
            if not name.endswith(DELETED) or image.list_snaps():
                return
            try:
                grandparent: tuple[str, str, str] | None = image.parent_info()
            except errors.ImageNotFound:
                grandparent = None
        engine.remove(pool, name)
        LOG.info("removed %s/%s: deleted, and its last clone is gone", pool, name)
        if grandparent is None:
            return
        pool, name, snap = grandparent


def drop_unneeded_snaps(engine: Engine, image: Image, snaps: list[str]) -> bool:
    """Remove each of ``snaps`` that no clone needs; True when some are still needed."""
    needed = False
    for snap in snaps:
        if snap_has_children(engine, image.pool, image.name, snap):
            needed = True
            continue
        if image.is_protected_snap(snap):
            image.unprotect_snap(snap)
        image.remove_snap(snap)
    return needed


def retire(engine: Engine, pool: str, name: str, needed: bool,
           parent: tuple[str, str, str] | None, kept_as: str | None = None) -> None:
    """An image whose owner deleted it: kept as ``<name>.deleted`` (or ``kept_as``) while
    clones need it, otherwise removed, and then its parent's references are released."""
    if needed:
        kept_as = kept_as or f"{name}{DELETED}"
        LOG.info("%s/%s still has clones: kept as %s until they go", pool, name, kept_as)
        engine.rename(pool, name, kept_as)
        return
    engine.remove(pool, name)
    if parent is not None:
        release_parent(engine, *parent)
