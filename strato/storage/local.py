"""The ``local`` engine: RBD semantics on a directory of raw/qcow2 layer files.

Layout under ``root``::

    fsid                      this store's id (created once)
    pools/<pool>/<name>.json  one metadata file per image (atomic replace = commit point)
    layers/<uuid>.raw|qcow2   immutable-id layer files; qcow2 headers hold absolute paths
    journal/<id>.<op>.json    intents of running multi-step operations (flocked)
    locks/store.lock          namespace lock (create/remove/rename/clone/unprotect)
    locks/<image-id>.lock     per-image lock; always taken after the store lock
    tmp/                      scratch files of reads and writes

An image's own layers are listed bottom to top in its metadata; ``snaps[i]`` froze
``layers[i]`` and ``layers[-1]`` is the writable top.  The chain below the bottom layer
(a clone's parent) is found by following qcow2 headers, each checked to stay inside
``layers/``.  Children are not recorded in the parent: ``list_children`` scans for
images whose ``parent.image_id`` is this one, so a clone or flatten rewrites one file.
"""

from __future__ import annotations

import logging
import os
import re
import stat as stat_mod
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import crash, errors, qemuimg
from .base import DEFAULT_ORDER, DEFAULT_POOLS, Engine
from .journal import Journal, atomic_write_json, fsync_dir, read_json
from .locking import FileLock

if TYPE_CHECKING:
    from .localimage import LocalImage

LOG = logging.getLogger(__name__)
MAX_CHAIN = 512
_LAYER_RE = re.compile(r"^([0-9a-f]{32})\.(raw|qcow2)$")
Meta = dict[str, Any]


def new_id() -> str:
    return uuid.uuid4().hex


def check_name(name: str) -> None:
    if (not isinstance(name, str) or not name or "/" in name or "\0" in name
            or name.startswith(".") or len(name.encode()) > 240):
        raise errors.InvalidArgument(f"invalid image name {name!r}")


def check_size(size: int) -> None:
    if not isinstance(size, int) or size < 0 or size % 512:
        raise errors.InvalidArgument(f"size must be a non-negative multiple of 512: {size!r}")


def check_order(order: int | None) -> int:
    order = DEFAULT_ORDER if order is None else order
    if not isinstance(order, int) or not 12 <= order <= 25:
        raise errors.InvalidArgument(f"order must be in 12..25: {order!r}")
    return order


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class LocalEngine(Engine):
    name = "local"

    def __init__(self, root: Path | str, pools: Sequence[str] = DEFAULT_POOLS,
                 repair: bool = True) -> None:
        self.root = Path(root).resolve()
        self.layers_dir = self.root / "layers"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"
        self.journal = Journal(self.root / "journal")
        self._pools = list(pools)
        self._direct: bool | None = None  # O_DIRECT works here (convert_options)
        for pool in self._pools:
            check_name(pool)
        for d in (self.layers_dir, self.tmp_dir, self.locks_dir, self.journal.dir,
                  *(self.root / "pools" / p for p in self._pools)):
            d.mkdir(parents=True, exist_ok=True)
        self._fsid = self._load_fsid()
        if repair:
            self.repair()

    # --- identity -----------------------------------------------------------------
    def _load_fsid(self) -> str:
        path = self.root / "fsid"
        if not path.exists():
            tmp = self.root / f".fsid-{new_id()}"
            tmp.write_text(str(uuid.uuid4()) + "\n")
            try:
                os.link(tmp, path)  # first creator wins, atomically
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()

    def fsid(self) -> str:
        return self._fsid

    def pools(self) -> list[str]:
        return list(self._pools)

    # --- paths and metadata ---------------------------------------------------------
    def pool_dir(self, pool: str) -> Path:
        if pool not in self._pools:
            raise errors.PoolNotFound(f"no pool {pool!r}")
        return self.root / "pools" / pool

    def meta_path(self, pool: str, name: str) -> Path:
        check_name(name)
        return self.pool_dir(pool) / f"{name}.json"

    def load(self, pool: str, name: str) -> Meta:
        try:
            return read_json(self.meta_path(pool, name))
        except FileNotFoundError:
            raise errors.ImageNotFound(f"{pool}/{name}") from None

    def save(self, pool: str, name: str, meta: Meta) -> None:
        atomic_write_json(self.meta_path(pool, name), meta)

    def layer_path(self, layer: dict[str, str]) -> Path:
        return self.layers_dir / f"{layer['id']}.{layer['fmt']}"

    def all_images(self) -> Iterator[tuple[str, str, Meta]]:
        for pool in self._pools:
            for name in self.list(pool):
                try:
                    yield pool, name, self.load(pool, name)
                except errors.ImageNotFound:
                    continue

    def find_by_id(self, image_id: str) -> tuple[str, str, Meta] | None:
        for pool, name, meta in self.all_images():
            if meta["id"] == image_id:
                return pool, name, meta
        return None

    def image_lock(self, image_id: str, exclusive: bool = True, blocking: bool = True,
                   timeout: float | None = None) -> FileLock:
        return FileLock(self.locks_dir / f"{image_id}.lock", exclusive, blocking, timeout)

    def check_idle(self, paths: Iterable[Path]) -> None:
        """ImageBusy if a QEMU (or any qemu-img) has one of these layer files open."""
        for path in paths:
            if qemuimg.in_use(path):
                raise errors.ImageBusy(f"{path.name} is open by QEMU")

    def store_lock(self) -> FileLock:
        return FileLock(self.locks_dir / "store.lock")

    def tmp_path(self, what: str) -> Path:
        return self.tmp_dir / f"{os.getpid()}-{new_id()}-{what}"

    # --- the layer chain ------------------------------------------------------------
    def parse_backing(self, backing: str, fmt: str | None) -> tuple[Path, str]:
        """A backing reference must name a layer file of this store, with its format."""
        path = Path(backing)
        m = _LAYER_RE.match(path.name)
        if not path.is_absolute() or path.parent != self.layers_dir or not m:
            raise errors.UnsafeLayer(f"backing file outside the store: {backing!r}")
        if fmt != m.group(2):
            raise errors.UnsafeLayer(f"backing format {fmt!r} does not match {backing!r}")
        return path, m.group(2)

    def chain(self, top: Path, fmt: str) -> list[tuple[Path, str]]:
        """The chain QEMU would open, top first, refusing anything outside the store."""
        out: list[tuple[Path, str]] = []
        path: Path | None = top
        while path is not None:
            if len(out) >= MAX_CHAIN:
                raise errors.UnsafeLayer("layer chain too deep (loop?)")
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise errors.IOError(f"missing layer {path}") from None
            if not stat_mod.S_ISREG(st.st_mode):
                raise errors.UnsafeLayer(f"{path} is not a regular file")
            out.append((path, fmt))
            if fmt == "raw":
                break
            hdr = qemuimg.read_qcow2_header(path)
            if hdr.external_data or hdr.data_file:
                raise errors.UnsafeLayer(f"{path} has an external data file")
            if hdr.backing_file is None:
                break
            path, fmt = self.parse_backing(hdr.backing_file, hdr.backing_format)
        return out

    def image_chain(self, meta: Meta, snap_index: int | None = None) -> list[tuple[Path, str]]:
        idx = len(meta["layers"]) - 1 if snap_index is None else snap_index
        layer = meta["layers"][idx]
        return self.chain(self.layer_path(layer), layer["fmt"])

    # --- engine operations ------------------------------------------------------------
    def list(self, pool: str) -> list[str]:
        d = self.pool_dir(pool)
        return sorted(p.name[:-5] for p in d.iterdir()
                      if p.name.endswith(".json") and not p.name.startswith("."))

    def exists(self, pool: str, name: str) -> bool:
        return self.meta_path(pool, name).exists()

    def new_meta(self, size: int, order: int, layers: list[dict[str, str]],
                 image_id: str | None = None) -> Meta:
        return {"version": 1, "id": image_id or new_id(), "size": size, "order": order,
                "created": time.time(), "layers": layers, "snaps": [], "next_snap_id": 1,
                "parent": None}

    def create(self, pool: str, name: str, size: int, order: int | None = None) -> None:
        check_size(size)
        order = check_order(order)
        self.meta_path(pool, name)
        meta = self.new_meta(size, order, [{"id": new_id(), "fmt": "raw"}])
        with self.store_lock():
            if self.exists(pool, name):
                raise errors.ImageExists(f"{pool}/{name}")
            with self.journal.begin(meta["id"], {"op": "create", "layers": meta["layers"]},
                                    cleanup=[self.layer_path(meta["layers"][0])]):
                qemuimg.create_raw(self.layer_path(meta["layers"][0]), size)
                crash.point("create", "after-layer")
                self.save(pool, name, meta)

    def commit_new(self, pool: str, name: str, meta: Meta,
                   check_parent: bool = False) -> None:
        """Publish a prepared image under the store lock (import, copy, deep copy)."""
        with self.store_lock():
            if self.exists(pool, name):
                raise errors.ImageExists(f"{pool}/{name}")
            if check_parent and meta["parent"]:
                found = self.find_by_id(meta["parent"]["image_id"])
                snaps = found[2]["snaps"] if found else []
                if not any(s["id"] == meta["parent"]["snap_id"] and s["protected"]
                           for s in snaps):
                    raise errors.SnapshotNotProtected("parent snapshot went away")
            self.save(pool, name, meta)

    def import_from(self, pool: str, name: str, src: Path | str | BinaryIO,
                    fmt: str = "raw", order: int | None = None) -> None:
        order = check_order(order)
        if self.exists(pool, name):
            raise errors.ImageExists(f"{pool}/{name}")
        layer = {"id": new_id(), "fmt": "raw"}
        dest = self.layer_path(layer)
        image_id = new_id()
        with self.journal.begin(image_id, {"op": "import", "layers": [layer]},
                                cleanup=[dest]):
            if isinstance(src, str | Path):
                size = self._import_file(Path(src), fmt, dest)
            else:
                if fmt != "raw":
                    raise errors.InvalidArgument("streams are imported as raw only")
                size = _import_stream(src, dest)
            fsync_file(dest)
            crash.point("import", "after-layer")
            self.commit_new(pool, name, self.new_meta(size, order, [layer], image_id))

    def _import_file(self, src: Path, fmt: str, dest: Path) -> int:
        if fmt == "qcow2":
            hdr = qemuimg.read_qcow2_header(src)
            if hdr.backing_file or hdr.external_data or hdr.data_file:
                raise errors.UnsafeLayer(f"{src} refers to other files; refusing it")
            size = hdr.size
        elif fmt == "raw":
            size = src.stat().st_size
        else:
            raise errors.InvalidArgument(f"cannot import format {fmt!r}")
        qemuimg.run("convert", "-q", *self.convert_options(), "-f", fmt, "-O", "raw",
                    "-S", "4k", str(src), str(dest))
        padded = -(-size // 512) * 512
        if padded != os.stat(dest).st_size:
            os.truncate(dest, padded)
        return padded

    def convert_options(self) -> list[str]:
        """``qemu-img convert`` options for writing a new layer: out-of-order writes
        (``-W``) and, where the store's file system has O_DIRECT, no page cache for the
        destination (``-t none``): the data goes to the disk once, without a copy into
        the cache and a flush of it all at the end.  On this kind of machine that takes
        a 2 GiB qcow2 → raw convert from ~5 s to ~2 s."""
        if self._direct is None:
            probe = self.tmp_path("direct")
            try:
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT,
                                 0o600))
                self._direct = True
            except OSError:
                self._direct = False  # tmpfs and the like: EINVAL
            finally:
                unlink_quiet(probe)
        return ["-W", "-t", "none"] if self._direct else ["-W"]

    def remove(self, pool: str, name: str) -> None:
        with self.store_lock():
            meta = self.load(pool, name)
            with self.image_lock(meta["id"], timeout=5.0) as lock:
                self.repair_image(meta["id"])
                meta = self.load(pool, name)
                if visible_snaps(meta):
                    raise errors.ImageHasSnapshots(f"{pool}/{name} has snapshots")
                self.check_idle(self.layer_path(layer) for layer in meta["layers"])
                crash.point("remove", "after-checks")
                os.unlink(self.meta_path(pool, name))  # the commit point
                fsync_dir(self.pool_dir(pool))
                crash.point("remove", "after-metadata")
                for layer in meta["layers"]:
                    unlink_quiet(self.layer_path(layer))
                    crash.point("remove", "after-first-layer")
                lock.unlink()

    def rename(self, pool: str, src: str, dest: str) -> None:
        check_name(dest)
        with self.store_lock():
            meta = self.load(pool, src)
            if self.exists(pool, dest):
                raise errors.ImageExists(f"{pool}/{dest}")
            with self.image_lock(meta["id"]):
                os.rename(self.meta_path(pool, src), self.meta_path(pool, dest))
                fsync_dir(self.pool_dir(pool))

    def clone(self, p_pool: str, p_name: str, p_snapname: str, c_pool: str, c_name: str,
              order: int | None = None) -> None:
        self.meta_path(c_pool, c_name)
        with self.store_lock():
            if self.exists(c_pool, c_name):
                raise errors.ImageExists(f"{c_pool}/{c_name}")
            pmeta = self.load(p_pool, p_name)
            with self.image_lock(pmeta["id"]):
                self.repair_image(pmeta["id"])
                pmeta = self.load(p_pool, p_name)
                idx = snap_index(pmeta, p_snapname)
                snap = pmeta["snaps"][idx]
                if not snap["protected"]:
                    raise errors.SnapshotNotProtected(
                        f"{p_pool}/{p_name}@{p_snapname} is not protected")
                base = pmeta["layers"][idx]
                layer = {"id": new_id(), "fmt": "qcow2"}
                meta = self.new_meta(snap["size"], check_order(order or pmeta["order"]),
                                     [layer])
                meta["parent"] = {"image_id": pmeta["id"], "pool": p_pool,
                                  "snap_id": snap["id"], "snap": snap["name"]}
                with self.journal.begin(meta["id"], {"op": "clone", "layers": [layer]},
                                        cleanup=[self.layer_path(layer)]):
                    crash.point("clone", "after-journal")
                    qemuimg.create_overlay(self.layer_path(layer), self.layer_path(base),
                                           base["fmt"], snap["size"])
                    fsync_file(self.layer_path(layer))
                    crash.point("clone", "after-overlay")
                    self.save(c_pool, c_name, meta)
                    crash.point("clone", "after-metadata")

    def open(self, pool: str, name: str, snapshot: str | None = None,
             read_only: bool = False) -> LocalImage:
        from .localimage import LocalImage

        return LocalImage(self, pool, name, snapshot, read_only)

    def children_of(self, image_id: str, snap_id: int | None = None) -> list[tuple[str, str]]:
        return sorted(
            (pool, name) for pool, name, meta in self.all_images()
            if meta["parent"] and meta["parent"]["image_id"] == image_id
            and (snap_id is None or meta["parent"]["snap_id"] == snap_id)
        )

    # --- repair -------------------------------------------------------------------------
    def repair(self) -> None:
        """Finish or undo operations of dead processes, then drop orphaned files."""
        for intent in self.journal.stale():
            image_id = intent.record.get("image_id", "")
            intent.release()  # re-taken under the image lock below
            try:
                # a dying qemu-img may still hold the lock for a moment; a live
                # operation holding it longer repairs the image itself first
                with self.image_lock(image_id, timeout=5.0):
                    self.repair_image(image_id)
            except errors.ImageBusy:
                continue
        self.gc()
        self.compact()

    def compact(self) -> int:
        """Merge what removed snapshots left waiting, in every image (a guest stopped,
        a volume detached: nothing holds the layers now); returns how many still wait."""
        waiting = 0
        for pool, name, meta in list(self.all_images()):
            if not any(s.get("removed") for s in meta["snaps"]):
                continue
            try:
                with self.open(pool, name) as image:
                    waiting += image.compact()
            except errors.Error as exc:
                LOG.warning("compacting %s/%s: %s", pool, name, exc)
                waiting += 1
        return waiting

    def repair_image(self, image_id: str) -> None:
        """Under the image's exclusive lock: settle its stale intents."""
        from .localimage import recover

        for intent in self.journal.stale(image_id):
            with intent:
                recover(self, intent)

    def gc(self) -> None:
        """Delete layer files no metadata and no intent refers to, and dead scratch files.

        Order matters: list the files first, then the intents, then the metadata, so a
        layer created by a running operation is always seen referenced.
        """
        files = [p for p in self.layers_dir.iterdir() if _LAYER_RE.match(p.name)]
        keep: set[str] = set()
        journal_ids: set[str] = set()
        live_ids: set[str] = set()
        for record in self.journal.records():
            keep.update(layer["id"] for layer in record.get("layers", []))
            journal_ids.add(record.get("image_id", ""))
        for _pool, _name, meta in self.all_images():
            keep.update(layer["id"] for layer in meta["layers"])
            live_ids.add(meta["id"])
        for path in files:
            if path.name.split(".")[0] not in keep:
                unlink_quiet(path)
        for path in self.tmp_dir.iterdir():
            pid = path.name.split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                unlink_quiet(path)
        for path in self.locks_dir.glob("*.lock"):
            lid = path.name[:-5]
            if lid != "store" and lid not in live_ids and lid not in journal_ids:
                try:  # unlink only a lock nobody holds (holders re-check the inode)
                    with FileLock(path, blocking=False) as lock:
                        lock.unlink()
                except errors.ImageBusy:
                    pass
        for path in self.journal.dir.glob(".tmp-*"):
            if time.time() - path.stat().st_mtime > 60:
                unlink_quiet(path)


def snap_index(meta: Meta, name: str) -> int:
    for i, snap in enumerate(meta["snaps"]):
        if snap["name"] == name and not snap.get("removed"):
            return i
    raise errors.SnapshotNotFound(f"no snapshot {name!r}")


def visible_snaps(meta: Meta) -> list[dict[str, Any]]:
    """The snapshots callers see: a removed one whose layer still waits to be merged
    (see ``LocalImage.compact``) is gone for them."""
    return [s for s in meta["snaps"] if not s.get("removed")]


def _import_stream(src: BinaryIO, dest: Path, block: int = 4 << 20) -> int:
    """Copy a stream into a sparse raw file: all-zero 4 KiB runs become holes."""
    zero = bytes(block)
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        while True:
            buf = src.read(block)
            if not buf:
                break
            n = len(buf)
            if buf != zero[:n]:
                view = memoryview(buf)
                start = None
                for off in range(0, n, 4096):
                    piece = view[off:off + 4096]
                    is_zero = piece == zero[:len(piece)]
                    if not is_zero and start is None:
                        start = off
                    elif is_zero and start is not None:
                        os.pwrite(fd, view[start:off], size + start)
                        start = None
                if start is not None:
                    os.pwrite(fd, view[start:n], size + start)
            size += n
        padded = -(-size // 512) * 512
        os.ftruncate(fd, padded)
        return padded
    finally:
        os.close(fd)
