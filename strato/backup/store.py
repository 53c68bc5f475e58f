"""The backup store: where backups' data lives, apart from the volumes.

INTERFACE FIXED BY THE LEAD for issue 18 (parts D1 and D2 build against it; D2
implements it, D1 calls it).  A backup store is a pool of a block-store ``Engine`` that
is not the volume's: by default a local engine rooted in its own directory
(``[backup] store_dir``), on Ceph a separate pool (``[backup] rbd_pool``, as
cinder-backup's Ceph driver does).  Each backup is one sparse image there holding the
extents it copied at their own offsets, plus the ``BackupData`` record (kept by the
caller in the database and in export records) listing them with their checksums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strato.storage import Engine, Image


@dataclass(frozen=True)
class Chunk:
    """One copied extent: where it sits in the volume, and the sha256 of its bytes."""

    offset: int
    length: int
    sha256: str


@dataclass(frozen=True)
class BackupData:
    """What a stored backup holds; JSON-able (``to_dict``/``from_dict``) for the DB row
    and the export record.  ``chunks`` are this backup's own (an incremental lists only
    what changed since its parent); ``zeroed`` are extents that became zeroes since the
    parent (discards)."""

    backup_id: str
    size: int  # the volume's size in bytes when backed up
    chunks: tuple[Chunk, ...] = ()
    zeroed: tuple[tuple[int, int], ...] = ()
    parent_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError  # D2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackupData:
        raise NotImplementedError  # D2


class BackupStore:
    """Backups' data in one pool of an engine."""

    def __init__(self, engine: Engine, pool: str) -> None:
        self.engine = engine
        self.pool = pool

    def write(self, backup_id: str, source: Image, parent: BackupData | None,
              parent_snapshot: str | None) -> BackupData:
        """Copy ``source`` (a read-only view of the volume at a snapshot) into the store
        as ``backup_id``: every extent holding data when ``parent`` is None, else only
        ``source.diff_iterate(parent_snapshot)``.  Idempotent: a rerun after a crash
        replaces a half-written object."""
        raise NotImplementedError  # D2

    def restore(self, chain: list[BackupData], target: Image) -> None:
        """Write the volume as of ``chain[-1]`` into ``target`` (its size >= the
        backup's): ``chain[0]`` the full backup, then each incremental in order; every
        chunk's checksum is verified (``BackupCorrupt`` if one does not match); ranges no
        backup holds end up zeroes."""
        raise NotImplementedError  # D2

    def delete(self, backup_id: str) -> None:
        """Remove the backup's object; no error if it is already gone."""
        raise NotImplementedError  # D2

    def exists(self, backup_id: str) -> bool:
        raise NotImplementedError  # D2


class BackupCorrupt(Exception):
    """A stored chunk no longer matches its checksum."""


def open_backup_store(conf: Any, volume_engine_name: str) -> BackupStore:
    """The store that backs up volumes of the engine named ``volume_engine_name``: a
    backend other than the volume's (see the module docstring)."""
    raise NotImplementedError  # D2
