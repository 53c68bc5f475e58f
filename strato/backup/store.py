"""The backup store: where backups' data lives, apart from the volumes.

A backup store is a pool of a block-store ``Engine`` that is not the volume's: by
default a local engine rooted in its own directory (``[backup] store_dir``), on Ceph a
separate pool (``[backup] rbd_pool``, as cinder-backup's Ceph driver does).  Each backup
is one sparse image there, ``backup.<id>``, the volume's size, holding the extents it
copied at their own offsets, plus the ``BackupData`` record (kept by the caller in the
database and in export records) listing them as chunks of at most 4 MiB with their
sha256.

Crash safety: a backup is written under ``backup.<id>.partial``, flushed, then renamed
to ``backup.<id>`` (the commit point); a rerun first removes whatever a dead run left
under either name, so writing is idempotent.  Restore reads every chunk back from the
store and checks its sha256 before it writes a byte of it into the volume.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strato.storage import Engine, Image, crash, errors, open_engine

CHUNK = 4 << 20  # largest chunk: librbd's default object size
PREFIX = "backup."
PARTIAL = ".partial"
FORMAT = 1  # of BackupData.to_dict
DEPTH = 3  # chunks in flight: read, hash and write overlap (hashlib and I/O drop the GIL)
HASHERS = 2  # threads hashing a mapped file beside the engine's copy of it
_ZERO = bytes(CHUNK)


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
        """Compact JSON form: chunks as ``[offset, length, sha256]`` triples."""
        return {
            "format": FORMAT, "backup_id": self.backup_id, "size": self.size,
            "parent_id": self.parent_id,
            "chunks": [[c.offset, c.length, c.sha256] for c in self.chunks],
            "zeroed": [[o, n] for o, n in self.zeroed], "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackupData:
        """The inverse of ``to_dict``; ValueError for anything that is not one (an export
        record comes from users: every field is checked)."""
        try:
            if d.get("format", FORMAT) != FORMAT:
                raise ValueError(f"unknown backup data format {d.get('format')!r}")
            size = _nat(d["size"])
            chunks = []
            for item in d.get("chunks", ()):
                offset, length, digest = item
                chunk = Chunk(_nat(offset), _nat(length), str(digest))
                if not 0 < chunk.length <= CHUNK or chunk.offset + chunk.length > size \
                        or len(chunk.sha256) != 64:
                    raise ValueError(f"bad chunk {item!r}")
                int(chunk.sha256, 16)
                chunks.append(chunk)
            zeroed = []
            for item in d.get("zeroed", ()):
                offset, length = item
                zeroed.append((_nat(offset), _nat(length)))
            parent = d.get("parent_id")
            extra = d.get("extra", {})
            if not isinstance(extra, dict):
                raise ValueError("extra must be an object")
            return cls(backup_id=str(d["backup_id"]), size=size, chunks=tuple(chunks),
                       zeroed=tuple(zeroed), parent_id=None if parent is None else str(parent),
                       extra=dict(extra))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a backup data record: {exc}") from None

    @property
    def stored_bytes(self) -> int:
        """Bytes this backup itself holds in the store."""
        return sum(c.length for c in self.chunks)


def _nat(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


class BackupCorrupt(Exception):
    """A stored chunk no longer matches its checksum."""


def object_name(backup_id: str) -> str:
    """The store image of a committed backup."""
    return f"{PREFIX}{backup_id}"


class BackupStore:
    """Backups' data in one pool of an engine."""

    def __init__(self, engine: Engine, pool: str) -> None:
        self.engine = engine
        self.pool = pool

    # --- writing ------------------------------------------------------------------------
    def write(self, backup_id: str, source: Image, parent: BackupData | None,
              parent_snapshot: str | None) -> BackupData:
        """Copy ``source`` (a read-only view of the volume at a snapshot) into the store
        as ``backup_id``: every extent holding data when ``parent`` is None, else only
        ``source.diff_iterate(parent_snapshot)``.  Idempotent: a rerun after a crash
        replaces a half-written object."""
        if (parent is None) != (parent_snapshot is None):
            raise errors.InvalidArgument("an incremental backup needs both its parent's "
                                         "data and the snapshot it was taken from")
        final = object_name(backup_id)
        partial = final + PARTIAL
        for name in (partial, final):  # what a dead run left: replaced, never reused
            self._remove(name)
        size = source.size()
        reader = _Reader(source)
        try:
            if parent is None:
                todo, zeroed = reader.data_extents(), []
            else:
                todo, zeroed = _changes(source, parent_snapshot)
            if parent is None and reader.path is not None:
                chunks, zero_chunks = self._import_full(reader, partial, _pieces(todo))
            else:
                self.engine.create(self.pool, partial, size)
                crash.point("backup_write", "after-create")
                with self.engine.open(self.pool, partial) as dest:
                    chunks, zero_chunks = _copy(reader, dest, _pieces(todo))
                    dest.flush()  # durable before it is committed
            crash.point("backup_write", "before-rename")
        finally:
            reader.close()
        if parent is not None:
            zeroed = _merge(zeroed + zero_chunks)
        self.engine.rename(self.pool, partial, final)  # the commit point
        crash.point("backup_write", "after-rename")
        return BackupData(
            backup_id=backup_id, size=size, chunks=tuple(chunks),
            zeroed=tuple(zeroed), parent_id=parent.backup_id if parent else None,
            extra={"object": final, "chunk_size": CHUNK, "engine": self.engine.name})

    def _import_full(self, reader: _Reader, partial: str, pieces: list[tuple[int, int]]
                     ) -> tuple[list[Chunk], list[tuple[int, int]]]:
        """A full backup of a frozen data file: the engine's own import copies it (on the
        local engine ``qemu-img convert``, sparse, without the page cache, in another
        process) while this thread hashes the same pages through a read-only mapping, so
        copying and hashing run side by side instead of one after the other."""
        assert reader.path is not None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-import") as pool:
            copied = pool.submit(self.engine.import_from, self.pool, partial, reader.path)
            try:
                chunks, zeros = _hash_file(reader, pieces)
            finally:
                copied.result()  # waits for the copy (and raises its error) in any case
        crash.point("backup_write", "after-create")
        with self.engine.open(self.pool, partial) as dest:
            if dest.size() != reader.size:  # a layer file padded or cut short by import
                dest.resize(reader.size)
            dest.flush()
        return chunks, zeros

    # --- restoring ------------------------------------------------------------------------
    def restore(self, chain: list[BackupData], target: Image) -> None:
        """Write the volume as of ``chain[-1]`` into ``target`` (its size >= the
        backup's): ``chain[0]`` the full backup, then each incremental in order; every
        chunk's checksum is verified (``BackupCorrupt`` if one does not match); ranges no
        backup holds end up zeroes."""
        if not chain:
            raise errors.InvalidArgument("nothing to restore: empty chain")
        if chain[0].parent_id is not None:
            raise errors.InvalidArgument(f"{chain[0].backup_id} is not a full backup")
        for prev, cur in zip(chain, chain[1:], strict=False):
            if cur.parent_id != prev.backup_id:
                raise errors.InvalidArgument(
                    f"{cur.backup_id} is not an incremental of {prev.backup_id}")
        size = chain[-1].size
        if target.size() < size:
            raise errors.InvalidArgument(
                f"target holds {target.size()} bytes, the backup {size}")
        for data in chain:
            if not self.exists(data.backup_id):
                raise BackupCorrupt(f"backup {data.backup_id} has no data in the store")
        plan = _Plan()
        for index, data in enumerate(chain):
            plan.truncate(data.size)  # a shrink cut the rest; a grown tail reads zeroes
            for offset, length in data.zeroed:
                plan.paint(offset, min(offset + length, data.size), None)
            for chunk in data.chunks:
                plan.paint(chunk.offset, chunk.offset + chunk.length, (index, chunk))
        wanted: dict[tuple[int, Chunk], list[tuple[int, int]]] = {}
        holes: list[tuple[int, int]] = []
        for start, end, src in plan.segments(size):
            if src is None:
                holes.append((start, end))
            else:
                wanted.setdefault(src, []).append((start, end))
        # zeroes go only where the target holds data now (a new volume has none)
        for start, end in _intersect(holes, _data_of(target, size)):
            for off in range(start, end, CHUNK):
                n = min(CHUNK, end - off)
                target.write(_ZERO[:n], off)
        handles: dict[int, Image] = {}
        try:
            for index in sorted({i for i, _ in wanted}):
                handles[index] = self.engine.open(
                    self.pool, object_name(chain[index].backup_id), read_only=True)

            reading, writing = threading.Lock(), threading.Lock()

            def one(item: tuple[tuple[int, Chunk], list[tuple[int, int]]]) -> None:
                (index, chunk), pieces = item
                with reading:  # handles are used by one thread at a time
                    data = handles[index].read(chunk.offset, chunk.length)
                if len(data) != chunk.length or \
                        hashlib.sha256(data).hexdigest() != chunk.sha256:
                    raise BackupCorrupt(
                        f"backup {chain[index].backup_id}: the chunk at {chunk.offset} "
                        f"({chunk.length} bytes) does not match its sha256")
                view = memoryview(data)
                with writing:
                    for start, end in pieces:
                        at = start - chunk.offset
                        whole = at == 0 and end - start == chunk.length
                        target.write(data if whole else bytes(view[at:at + end - start]),
                                     start)
                    crash.point("backup_restore", "after-chunk")

            _run_all(one, sorted(wanted.items(), key=lambda kv: kv[0][1].offset))
        finally:
            for handle in handles.values():
                handle.close()
        target.flush()

    # --- housekeeping ---------------------------------------------------------------------
    def delete(self, backup_id: str) -> None:
        """Remove the backup's object; no error if it is already gone."""
        final = object_name(backup_id)
        for name in (final + PARTIAL, final):
            self._remove(name)

    def exists(self, backup_id: str) -> bool:
        return self.engine.exists(self.pool, object_name(backup_id))

    def stored_ids(self) -> set[str]:
        """Ids of every backup with an object in the store, committed or half-written:
        what a caller compares with its records to remove orphans after a crash."""
        out = set()
        for name in self.engine.list(self.pool):
            if name.startswith(PREFIX):
                out.add(name[len(PREFIX):].removesuffix(PARTIAL))
        return out

    def _remove(self, name: str) -> None:
        try:
            self.engine.remove(self.pool, name)
        except errors.ImageNotFound:
            pass


# --- reading the source ---------------------------------------------------------------------
class _Reader:
    """Reads a backup's source: straight from its frozen data file when the engine has
    one (pread, holes found with SEEK_DATA), else through ``Image.read``."""

    def __init__(self, source: Image) -> None:
        self.source = source
        self.size = source.size()
        path: Path | None = source.data_file()
        self.fd: int | None = os.open(path, os.O_RDONLY) if path is not None else None
        if self.fd is not None and os.fstat(self.fd).st_size != self.size:
            path = None  # not the view byte for byte: read through the image
            os.close(self.fd)
            self.fd = None
        self.path = path

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def read(self, offset: int, length: int) -> bytes:
        if self.fd is None:
            return self.source.read(offset, length)
        data = os.pread(self.fd, length, offset)
        return data if len(data) == length else data.ljust(length, b"\0")

    def data_extents(self) -> list[tuple[int, int]]:
        """(offset, length) of every extent that may hold data."""
        if self.fd is None:
            return _merge([(e.offset, e.length) for e in self.source.diff_iterate(None)
                           if e.exists])
        out: list[tuple[int, int]] = []
        pos = 0
        while pos < self.size:
            try:
                start = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            if start >= self.size:
                break
            end = min(os.lseek(self.fd, start, os.SEEK_HOLE), self.size)
            out.append((start, end - start))
            pos = end
        return out


def _changes(source: Image, since: str | None) -> tuple[list[tuple[int, int]],
                                                        list[tuple[int, int]]]:
    """(extents to copy, extents now reading zeroes) since snapshot ``since``."""
    todo: list[tuple[int, int]] = []
    zeroed: list[tuple[int, int]] = []
    size = source.size()
    for e in source.diff_iterate(since):
        end = min(e.offset + e.length, size)
        if end > e.offset:
            (todo if e.exists else zeroed).append((e.offset, end - e.offset))
    return _merge(todo), _merge(zeroed)


def _pieces(extents: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Extents cut at every CHUNK boundary of the volume: chunks of at most CHUNK that
    never straddle an object."""
    out: list[tuple[int, int]] = []
    for offset, length in extents:
        end = offset + length
        while offset < end:
            stop = min(end, (offset // CHUNK + 1) * CHUNK)
            out.append((offset, stop - offset))
            offset = stop
    return out


def _copy(reader: _Reader, dest: Image, pieces: list[tuple[int, int]]
          ) -> tuple[list[Chunk], list[tuple[int, int]]]:
    """Copy ``pieces`` into ``dest`` at their offsets; all-zero ones are not stored but
    returned apart (an incremental records them as zeroed, a full one skips them)."""
    first = threading.Event()
    reading, writing = threading.Lock(), threading.Lock()

    def one(piece: tuple[int, int]) -> Chunk | None:
        offset, length = piece
        with reading:  # one call at a time on each handle: a pipeline, not a race
            data = reader.read(offset, length)
        if data == _ZERO[:length]:
            return None
        digest = hashlib.sha256(data).hexdigest()
        with writing:
            dest.write(data, offset)
        if not first.is_set():
            first.set()
            crash.point("backup_write", "after-first-chunk")
        return Chunk(offset, length, digest)

    results = _run_all(one, pieces)
    chunks = [c for c in results if c is not None]
    zeros = [p for p, c in zip(pieces, results, strict=True) if c is None]
    return chunks, zeros


def _hash_file(reader: _Reader, pieces: list[tuple[int, int]]
               ) -> tuple[list[Chunk], list[tuple[int, int]]]:
    """The chunks of ``pieces`` of the reader's data file, hashed in place (mmap: no
    copy); all-zero ones are told by their digest and returned apart."""
    assert reader.fd is not None
    if not pieces:
        return [], []
    with mmap.mmap(reader.fd, 0, prot=mmap.PROT_READ) as mapped:
        view = memoryview(mapped)
        try:
            def one(piece: tuple[int, int]) -> str:
                offset, length = piece
                part = view[offset:offset + length]
                try:
                    return hashlib.sha256(part).hexdigest()
                finally:
                    part.release()

            digests = _run_all(one, pieces, HASHERS)
        finally:
            view.release()
    chunks = [Chunk(o, n, d) for (o, n), d in zip(pieces, digests, strict=True)
              if d != _zero_digest(n)]
    zeros = [(o, n) for (o, n), d in zip(pieces, digests, strict=True) if d == _zero_digest(n)]
    return chunks, zeros


@functools.cache
def _zero_digest(length: int) -> str:
    return hashlib.sha256(bytes(length)).hexdigest()


def _run_all(fn: Callable[[Any], Any], items: list[Any], depth: int = DEPTH) -> list[Any]:
    """``[fn(x) for x in items]`` with up to ``depth`` running at once, in order; the
    first failure stops the rest and is raised."""
    if len(items) <= 1 or depth <= 1:
        return [fn(x) for x in items]
    results: list[Any] = [None] * len(items)
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="backup") as pool:
        running: list[tuple[int, Future[Any]]] = []
        it = iter(enumerate(items))
        try:
            for i, item in it:
                running.append((i, pool.submit(fn, item)))
                if len(running) >= depth * 2:
                    j, fut = running.pop(0)
                    results[j] = fut.result()
            for j, fut in running:
                results[j] = fut.result()
        except BaseException:
            for _, fut in running:
                fut.cancel()
            raise
    return results


# --- extent arithmetic ----------------------------------------------------------------------
def _merge(extents: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with touching and overlapping extents joined."""
    out: list[tuple[int, int]] = []
    for offset, length in sorted(e for e in extents if e[1] > 0):
        if out and out[-1][0] + out[-1][1] >= offset:
            last = out[-1]
            out[-1] = (last[0], max(last[0] + last[1], offset + length) - last[0])
        else:
            out.append((offset, length))
    return out


def _intersect(spans: list[tuple[int, int]], extents: list[tuple[int, int]]
               ) -> Iterator[tuple[int, int]]:
    """(start, end) pieces of the sorted ``spans`` (start, end) covered by the sorted
    ``extents`` (offset, length)."""
    i = 0
    for offset, length in extents:
        end = offset + length
        while i < len(spans) and spans[i][1] <= offset:
            i += 1
        j = i
        while j < len(spans) and spans[j][0] < end:
            lo, hi = max(spans[j][0], offset), min(spans[j][1], end)
            if lo < hi:
                yield lo, hi
            j += 1


def _data_of(image: Image, size: int) -> list[tuple[int, int]]:
    """Where ``image`` (a volume's head) holds data below ``size``."""
    return _merge([(e.offset, min(e.length, size - e.offset))
                   for e in image.diff_iterate(None) if e.exists and e.offset < size])


class _Plan:
    """Which backup's chunk (or zeroes: None) each byte of the restored volume comes
    from: non-overlapping segments, later paints winning."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.segs: list[tuple[int, int, Any]] = []  # (start, end, source)

    def paint(self, start: int, end: int, src: Any) -> None:
        if end <= start:
            return
        i = bisect.bisect_right(self.starts, start) - 1
        if i < 0 or self.segs[i][1] <= start:
            i += 1
        keep: list[tuple[int, int, Any]] = []
        j = i
        while j < len(self.segs) and self.segs[j][0] < end:
            s, e, v = self.segs[j]
            if s < start:
                keep.append((s, start, v))
            if e > end:
                keep.append((end, e, v))
            j += 1
        new = sorted([*keep, (start, end, src)])
        self.segs[i:j] = new
        self.starts[i:j] = [s for s, _, _ in new]

    def truncate(self, size: int) -> None:
        i = bisect.bisect_left(self.starts, size)
        del self.segs[i:], self.starts[i:]
        if self.segs and self.segs[-1][1] > size:
            s, _, v = self.segs[-1]
            self.segs[-1] = (s, size, v)

    def segments(self, size: int) -> Iterator[tuple[int, int, Any]]:
        """Every byte of [0, size) once: painted segments, gaps as zeroes (None)."""
        pos = 0
        for s, e, v in self.segs:
            if s > pos:
                yield pos, s, None
            yield s, e, v
            pos = e
        if pos < size:
            yield pos, size, None


# --- opening ----------------------------------------------------------------------------------
_OPEN: dict[tuple[Any, ...], BackupStore] = {}
_OPEN_LOCK = threading.Lock()
DEFAULT_CEPH_CONF = "/etc/ceph/ceph.conf"


class BackupStoreConfigError(errors.InvalidArgument):
    """The configured backup store would share the volumes' own pool or directory."""


def open_backup_store(conf: Any, volume_engine_name: str) -> BackupStore:
    """The store that backs up volumes of the engine named ``volume_engine_name``: a
    backend other than the volume's (see the module docstring)."""
    b = conf.backup
    backend = b.backend or volume_engine_name
    if backend == "local":
        root = Path(b.store_dir).expanduser().resolve()
        if root == Path(conf.storage.local_path).expanduser().resolve():
            raise BackupStoreConfigError(
                f"[backup] store_dir {root} is the volumes' own block store "
                "([storage] local_path): give backups a directory of their own")
        key: tuple[Any, ...] = ("local", str(root))
    elif backend == "rbd":
        v = conf.volume
        ceph = {"ceph_conf": v.rbd_ceph_conf or DEFAULT_CEPH_CONF,
                "user": v.rbd_user or "admin", "cluster": v.rbd_cluster_name}
        volume_pools = _volume_pools(conf)
        if b.rbd_pool in volume_pools:
            raise BackupStoreConfigError(
                f"[backup] rbd_pool {b.rbd_pool!r} is a pool of volumes or images: "
                "backups need a pool of their own")
        key = ("rbd", ceph["ceph_conf"], ceph["user"], ceph["cluster"], b.rbd_pool)
    else:
        raise BackupStoreConfigError(f"unknown backup store backend {backend!r}")
    with _OPEN_LOCK:
        store = _OPEN.get(key)
        if store is None:
            if backend == "local":
                engine = open_engine("local", root=key[1], pools=(LOCAL_POOL,))
                store = BackupStore(engine, LOCAL_POOL)
            else:
                v = conf.volume
                timeout = float(v.rados_connect_timeout) if v.rados_connect_timeout > 0 \
                    else 30.0
                engine = open_engine(
                    "rbd", pools=(b.rbd_pool,), connect_timeout=timeout,
                    connection_retries=v.rados_connection_retries,
                    connection_interval=float(v.rados_connection_interval), **ceph)
                try:
                    engine.list(b.rbd_pool)
                except errors.PoolNotFound:
                    raise errors.PoolNotFound(
                        f"the backup pool {b.rbd_pool!r} does not exist in the Ceph "
                        f"cluster of {ceph['ceph_conf']}: create it (ceph osd pool create "
                        f"{b.rbd_pool}; rbd pool init {b.rbd_pool})") from None
                store = BackupStore(engine, b.rbd_pool)
            _OPEN[key] = store
        return store


LOCAL_POOL = "backups"


def _volume_pools(conf: Any) -> set[str]:
    """Every pool of the block store the other services use (volumes, images, disks)."""
    from strato.volume.scheduler import parse_backends

    pools = {be.pool for be in parse_backends(conf.volume.enabled_backends,
                                              conf.storage.local_path,
                                              conf.volume.storage_availability_zone)}
    pools.update({conf.glance_store.rbd_store_pool, conf.compute.images_rbd_pool})
    return pools


__all__ = ["BackupCorrupt", "BackupData", "BackupStore", "Chunk", "open_backup_store"]
