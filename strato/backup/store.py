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

import hashlib
from dataclasses import dataclass, field
from typing import Any

from strato.storage import Engine, Image, errors, open_engine

PIECE = 4 << 20  # TEMP store (D1's tests): the unit copied and checksummed


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
        return {"backup_id": self.backup_id, "size": self.size,
                "chunks": [[c.offset, c.length, c.sha256] for c in self.chunks],
                "zeroed": [list(z) for z in self.zeroed], "parent_id": self.parent_id,
                "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackupData:
        return cls(backup_id=d["backup_id"], size=int(d["size"]),
                   chunks=tuple(Chunk(int(o), int(n), str(h)) for o, n, h in d["chunks"]),
                   zeroed=tuple((int(o), int(n)) for o, n in d["zeroed"]),
                   parent_id=d.get("parent_id"), extra=dict(d.get("extra") or {}))


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
        if self.engine.exists(self.pool, backup_id):
            self.engine.remove(self.pool, backup_id)
        size = source.size()
        self.engine.create(self.pool, backup_id, max(size, PIECE))
        chunks: list[Chunk] = []
        zeroed: list[tuple[int, int]] = []
        since = parent_snapshot if parent is not None else None
        with self.engine.open(self.pool, backup_id) as dest:
            for ext in source.diff_iterate(since):
                if not ext.exists:
                    zeroed.append((ext.offset, ext.length))
                    continue
                for off in range(ext.offset, ext.offset + ext.length, PIECE):
                    n = min(PIECE, ext.offset + ext.length - off)
                    data = source.read(off, n)
                    if data.count(0) == len(data):
                        if parent is not None:
                            zeroed.append((off, n))
                        continue
                    dest.write(data, off)
                    chunks.append(Chunk(off, len(data), hashlib.sha256(data).hexdigest()))
            dest.flush()
        return BackupData(backup_id, size, tuple(chunks), tuple(zeroed),
                          parent.backup_id if parent is not None else None)

    def restore(self, chain: list[BackupData], target: Image) -> None:
        """Write the volume as of ``chain[-1]`` into ``target`` (its size >= the
        backup's): ``chain[0]`` the full backup, then each incremental in order; every
        chunk's checksum is verified (``BackupCorrupt`` if one does not match); ranges no
        backup holds end up zeroes."""
        covered = sorted((c.offset, c.offset + c.length) for c in chain[0].chunks)
        for ext in list(target.diff_iterate(None)):
            if ext.exists:
                for start, end in _gaps(ext.offset, ext.offset + ext.length, covered):
                    _zero(target, start, end - start)
        for data in chain:
            for off, n in data.zeroed:
                _zero(target, off, min(n, target.size() - off))
            with self.engine.open(self.pool, data.backup_id, read_only=True) as src:
                for c in data.chunks:
                    piece = src.read(c.offset, c.length)
                    if hashlib.sha256(piece).hexdigest() != c.sha256:
                        raise BackupCorrupt(f"backup {data.backup_id}: chunk at "
                                            f"{c.offset} does not match its checksum")
                    target.write(piece, c.offset)
        target.flush()

    def delete(self, backup_id: str) -> None:
        """Remove the backup's object; no error if it is already gone."""
        try:
            self.engine.remove(self.pool, backup_id)
        except errors.ImageNotFound:
            pass

    def exists(self, backup_id: str) -> bool:
        return self.engine.exists(self.pool, backup_id)


class BackupCorrupt(Exception):
    """A stored chunk no longer matches its checksum."""


def open_backup_store(conf: Any, volume_engine_name: str) -> BackupStore:
    """The store that backs up volumes of the engine named ``volume_engine_name``: a
    backend other than the volume's (see the module docstring)."""
    from pathlib import Path

    root = Path(conf.DEFAULT.state_path) / "backups"
    return BackupStore(open_engine("local", root=root, pools=("backups",)), "backups")


def _gaps(start: int, end: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, pos = [], start
    for s, e in covered:
        if e <= pos or s >= end:
            continue
        if s > pos:
            out.append((pos, s))
        pos = max(pos, e)
    if pos < end:
        out.append((pos, end))
    return out


def _zero(target: Image, offset: int, length: int) -> None:
    for off in range(offset, offset + length, PIECE):
        target.write(bytes(min(PIECE, offset + length - off)), off)
