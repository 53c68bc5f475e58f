"""``rbd.Image`` for the local engine, and the repair of interrupted operations.

Crash safety: every multi-step operation records an intent first, and the metadata
file's atomic replace is its commit point.  Steps before the commit either leave every
view unchanged (new overlay, flatten's view-preserving rebase) or are idempotent and
rolled forward by ``recover`` (snapshot removal merges, resize).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from . import crash, errors, localdiff, online, qemuimg
from .base import Extent, Image, LiveSnapshot, SnapInfo
from .extents import check_granularity, to_extents
from .journal import Intent
from .local import LocalEngine, Meta, check_size, fsync_file, new_id, snap_index, visible_snaps
from .local import unlink_quiet as _unlink
from .location import build as build_location
from .locking import FileLock

CHUNK = 64 << 20
LOG = logging.getLogger(__name__)


class LocalImage(Image):
    def __init__(self, engine: LocalEngine, pool: str, name: str,
                 snapshot: str | None = None, read_only: bool = False) -> None:
        self.engine = engine
        self.pool = pool
        self.name = name
        self.snapshot = snapshot
        self.read_only = read_only or snapshot is not None
        self._live: tuple[FileLock, Intent, str, dict[str, str]] | None = None
        self._dirty = False  # written since the last flush
        self._view: localdiff.ViewMap | None = None  # a snapshot view's map (read)
        meta = engine.load(pool, name)
        self._id: str = meta["id"]
        with self._locked() as meta:  # repairs a crashed operation first
            if snapshot is not None:
                snap_index(meta, snapshot)

    # --- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _locked(self, exclusive: bool = False) -> Iterator[Meta]:
        """Hold the image lock and yield fresh metadata (repairing stale intents first)."""
        eng = self.engine
        if self._live is not None:
            raise errors.ImageBusy("a live snapshot is pending on this handle")
        if not exclusive and any(eng.journal.dir.glob(f"{self._id}.*.json")):
            with self._locked(exclusive=True):
                pass
        with eng.image_lock(self._id, exclusive):
            if exclusive:
                eng.repair_image(self._id)
            meta = eng.load(self.pool, self.name)
            if meta["id"] != self._id:
                raise errors.ImageNotFound(f"{self.pool}/{self.name} was replaced")
            yield meta

    def _writable(self) -> None:
        if self.read_only:
            raise errors.ReadOnlyImage(f"{self.pool}/{self.name} is open read-only")

    def _snap_idx(self, meta: Meta) -> int | None:
        return None if self.snapshot is None else snap_index(meta, self.snapshot)

    def _size(self, meta: Meta) -> int:
        idx = self._snap_idx(meta)
        return meta["size"] if idx is None else meta["snaps"][idx]["size"]

    def _chain(self, meta: Meta) -> list[tuple[Path, str]]:
        return self.engine.image_chain(meta, self._snap_idx(meta))

    def _save(self, meta: Meta) -> None:
        self.engine.save(self.pool, self.name, meta)

    # --- data ---------------------------------------------------------------------------
    def id(self) -> str:
        return self._id

    def size(self) -> int:
        with self._locked() as meta:
            return self._size(meta)

    def stat(self) -> dict[str, Any]:
        with self._locked() as meta:
            size = self._size(meta)
            parent = meta["parent"]
        obj = 1 << meta["order"]
        return {
            "size": size, "obj_size": obj, "num_objs": -(-size // obj),
            "order": meta["order"], "block_name_prefix": f"rbd_data.{self._id}",
            "parent_pool": parent["pool"] if parent else None,
            "parent_name": self._parent_name(parent) if parent else None,
            "clone_depth": self.clone_depth(),
        }

    def location(self) -> str:
        return build_location(self.engine.fsid(), self.pool, self.name, self.snapshot)

    def read(self, offset: int, length: int) -> bytes:
        with self._locked() as meta:
            try:
                size = self._size(meta)
            except errors.SnapshotNotFound:
                if self._view is not None:  # let go of the merged layers' files
                    self._view.close()
                    self._view = None
                raise
            if offset < 0 or length < 0 or offset > size:
                raise errors.InvalidArgument(f"read {offset}+{length} outside image of {size}")
            length = min(length, size - offset)
            if length == 0:
                return b""
            view = self._view_map(meta, size)
            if view is not None:
                return view.read(offset, length)
            chain = self._chain(meta)
            if len(chain) == 1 and chain[0][1] == "raw":
                with open(chain[0][0], "rb") as f:
                    return os.pread(f.fileno(), length, offset)
            return self._read_chain(chain, offset, length)

    def _view_map(self, meta: Meta, size: int) -> localdiff.ViewMap | None:
        """The cached map of this snapshot view's chain, made on its first read: a
        backup reads many extents of one snapshot, and one ``qemu-img`` run per read
        would cost more than the data.  None for the head (it changes under writes),
        a lone raw layer (read in place) and compressed data (read through qemu-img)."""
        idx = self._snap_idx(meta)
        if idx is None:
            return None
        key = ([layer["id"] for layer in meta["layers"][:idx + 1]], meta["parent"])
        if self._view is None or self._view.key != key:
            if self._view is not None:
                self._view.close()
                self._view = None
            chain = self._chain(meta)
            if len(chain) == 1 and chain[0][1] == "raw":
                return None
            self._view = localdiff.ViewMap(key, chain, size)
        return self._view if self._view.extents is not None else None

    def _read_chain(self, chain: list[tuple[Path, str]], offset: int, length: int) -> bytes:
        """Read through qemu-img: a raw ``offset``/``size`` window over the chain.

        The window must be 512-aligned, so read the aligned cover and slice it.
        """
        start = offset - offset % 512
        end = -(-(offset + length) // 512) * 512
        tmp = self.engine.tmp_path("read")
        try:
            src = {"driver": "raw", "offset": start, "size": end - start,
                   "file": qemuimg.image_opts(chain)}
            qemuimg.run("convert", "-q", "-O", "raw", qemuimg.json_opts(src), str(tmp))
            with open(tmp, "rb") as f:
                f.seek(offset - start)
                data = f.read(length)
            return data + bytes(length - len(data))
        finally:
            _unlink(tmp)

    def write(self, data: bytes, offset: int) -> int:
        self._writable()
        with self._locked(exclusive=True) as meta:
            size = meta["size"]
            if offset < 0 or offset + len(data) > size:
                raise errors.InvalidArgument(f"write {offset}+{len(data)} beyond {size}")
            if not data:
                return 0
            chain = self._chain(meta)
            if len(chain) == 1 and chain[0][1] == "raw":
                self.engine.check_idle([chain[0][0]])  # qemu-img would see QEMU's locks
                _pwrite(chain[0][0], data, offset)
                self._dirty = True
                return len(data)
            start = offset - offset % 512
            end = -(-(offset + len(data)) // 512) * 512
            if (start, end) != (offset, offset + len(data)):  # read-modify-write the edges
                head = self._read_chain(chain, start, offset - start) if offset > start else b""
                tail_at = offset + len(data)
                tail = self._read_chain(chain, tail_at, end - tail_at) if end > tail_at else b""
                payload = head + bytes(data) + tail
            else:
                payload = bytes(data)
            tmp = self.engine.tmp_path("write")
            try:
                tmp.write_bytes(payload)
                dst = {"driver": "raw", "offset": start, "size": end - start,
                       "file": qemuimg.image_opts(chain, read_only=False)}
                qemuimg.run("convert", "-q", "-n", "-f", "raw", str(tmp),
                            qemuimg.json_opts(dst))
                self._dirty = True
            finally:
                _unlink(tmp)
            return len(data)

    def flush(self) -> None:
        """Make acknowledged writes durable (librbd: ``Image.flush``; close does it too).

        Writes reach the page cache at once, so a crashed process loses nothing; this is
        for power loss, and costs one fsync instead of one per write.
        """
        if not self._dirty:
            return
        with self._locked() as meta:
            fsync_file(self.engine.layer_path(meta["layers"][-1]))
        self._dirty = False

    def resize(self, size: int) -> None:
        self._writable()
        check_size(size)
        with self._locked(exclusive=True) as meta:
            self.engine.check_idle([self.engine.layer_path(meta["layers"][-1])])
            with self.engine.journal.begin(self._id, {"op": "resize", "size": size},
                                           keep_on_error=True):
                crash.point("resize", "after-journal")
                _do_resize(self.engine, self.pool, self.name, meta, size)

    def export_to(self, dest: Path | str | BinaryIO) -> int:
        if not isinstance(dest, str | Path):
            n = 0
            for piece in self.iter_chunks():
                dest.write(piece)
                n += len(piece)
            return n
        with self._locked() as meta:
            chain = self._chain(meta)
            if len(chain) == 1 and chain[0][1] == "raw":
                copy_sparse(chain[0][0], Path(dest), self._size(meta))
            else:
                src = qemuimg.json_opts(qemuimg.image_opts(chain))
                qemuimg.run("convert", "-q", "-O", "raw", "-S", "4k", src, str(dest))
            return self._size(meta)

    def iter_chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        """Stream the raw content with one lock, no per-chunk process and no copy.

        A single raw layer is read in place.  A chain is mapped once (``qemu-img map``:
        which layer holds each extent, at which file offset) and read straight from the
        layers' files; only compressed clusters (no file offset) make it convert the
        chain into an unlinked temp file first.  The descriptors are opened under the
        lock: layers are never rewritten under a view (merges copy into clusters the
        map did not point at, and a dropped layer's open descriptor keeps its data).
        """
        with self._locked() as meta:
            chain = self._chain(meta)
            size = self._size(meta)
            if len(chain) == 1 and chain[0][1] == "raw":
                fd = os.open(chain[0][0], os.O_RDONLY)
                extents: list[tuple[int, int, int | None, int]] = [(0, size, 0, 0)]
                fds = [fd]
            else:
                extents, fds = _mapped(chain, size), []
                if extents is not None:
                    fds = [os.open(path, os.O_RDONLY) for path, _ in chain]
                else:
                    tmp = self.engine.tmp_path("stream")
                    try:
                        src = qemuimg.json_opts(qemuimg.image_opts(chain))
                        qemuimg.run("convert", "-q", "-O", "raw", "-S", "4k", src, str(tmp))
                        fds = [os.open(tmp, os.O_RDONLY)]
                    finally:
                        _unlink(tmp)
                    extents = [(0, size, 0, 0)]
        try:
            yield from _read_extents(fds, extents, size, chunk)
        finally:
            for fd in fds:
                os.close(fd)

    # --- snapshots ----------------------------------------------------------------------
    def list_snaps(self) -> list[SnapInfo]:
        with self._locked() as meta:
            return [SnapInfo(s["id"], s["name"], s["size"], s["protected"], s["ts"])
                    for s in visible_snaps(meta)]

    def create_snap(self, name: str) -> None:
        self._writable()
        _check_snap_name(name)
        with self._locked(exclusive=True) as meta:
            if any(s["name"] == name for s in visible_snaps(meta)):
                raise errors.SnapshotExists(f"snapshot {name!r} exists")
            top = meta["layers"][-1]
            self.engine.image_chain(meta)  # refuse to build on an unsafe chain
            # QEMU would go on writing into the layer we freeze: it must take the
            # snapshot itself (prepare_live_snapshot)
            self.engine.check_idle([self.engine.layer_path(top)])
            fsync_file(self.engine.layer_path(top))  # the frozen data must be durable
            layer = {"id": new_id(), "fmt": "qcow2"}
            with self.engine.journal.begin(self._id, {"op": "snapshot", "layers": [layer]},
                                           cleanup=[self.engine.layer_path(layer)]):
                crash.point("snapshot", "after-journal")
                qemuimg.create_overlay(self.engine.layer_path(layer),
                                       self.engine.layer_path(top), top["fmt"], meta["size"])
                fsync_file(self.engine.layer_path(layer))
                crash.point("snapshot", "after-overlay")
                _add_snap(meta, name, layer)
                self._save(meta)
                crash.point("snapshot", "after-metadata")

    def rollback_to_snap(self, name: str) -> None:
        """The head becomes the snapshot's data again (librbd ``rollback_to_snap``).

        The writable top is dropped and a fresh overlay put over the snapshot's frozen
        layer: nothing is copied.  Only the newest snapshot can be rolled back to here
        (what Cinder's revert allows); older ones raise InvalidArgument.
        """
        self._writable()
        with self._locked(exclusive=True) as meta:
            if any(s.get("removed") for s in meta["snaps"]):  # merge those layers first
                self._compact(meta)
                meta = self.engine.load(self.pool, self.name)
            idx = snap_index(meta, name)
            snap = meta["snaps"][idx]
            if meta["layers"][-2]["id"] != snap["layer"]:
                raise errors.InvalidArgument(
                    f"rollback to {name!r}: only the newest snapshot can be rolled back to")
            old_top = meta["layers"][-1]
            self.engine.check_idle([self.engine.layer_path(old_top)])
            frozen = meta["layers"][-2]
            layer = {"id": new_id(), "fmt": "qcow2"}
            with self.engine.journal.begin(self._id, {"op": "rollback", "layers": [layer]},
                                           cleanup=[self.engine.layer_path(layer)]):
                qemuimg.create_overlay(self.engine.layer_path(layer),
                                       self.engine.layer_path(frozen), frozen["fmt"],
                                       snap["size"])
                fsync_file(self.engine.layer_path(layer))
                crash.point("rollback", "after-overlay")
                meta["layers"][-1] = layer
                meta["size"] = snap["size"]
                self._save(meta)
                crash.point("rollback", "after-metadata")
            _unlink(self.engine.layer_path(old_top))

    def remove_snap(self, name: str) -> None:
        """Remove a snapshot, whether or not a QEMU has the image open.

        The snapshot is gone for every caller at once; its layer is merged now (by the
        QEMU holding the image, or qemu-img), or later by ``compact`` when nothing that
        can merge it holds the layers now.
        """
        self._writable()
        with self._locked(exclusive=True) as meta:
            snap = meta["snaps"][snap_index(meta, name)]
            if snap["protected"]:
                raise errors.SnapshotProtected(f"snapshot {name!r} is protected")
            self._remove_snap(meta, snap["id"])
            self._compact(meta)

    def _remove_snap(self, meta: Meta, snap_id: int) -> bool:
        with self.engine.journal.begin(self._id, {"op": "remove_snap", "snap_id": snap_id},
                                       keep_on_error=True):
            crash.point("remove_snap", "after-journal")
            return _do_remove_snap(self.engine, self.pool, self.name, meta, snap_id)

    def compact(self) -> int:
        """Merge the layers of removed snapshots that had to wait (the QEMU holding them
        could not be asked then); returns how many are still waiting."""
        self._writable()
        with self._locked(exclusive=True) as meta:
            return self._compact(meta)

    def _compact(self, meta: Meta) -> int:
        for snap_id in [s["id"] for s in meta["snaps"] if s.get("removed")]:
            meta = self.engine.load(self.pool, self.name)
            if not self._remove_snap(meta, snap_id):
                break  # the same holder blocks the rest too
        return sum(1 for s in self.engine.load(self.pool, self.name)["snaps"]
                   if s.get("removed"))

    def protect_snap(self, name: str) -> None:
        with self._locked(exclusive=True) as meta:
            snap = meta["snaps"][snap_index(meta, name)]
            if snap["protected"]:
                raise errors.SnapshotProtected(f"snapshot {name!r} is already protected")
            snap["protected"] = True
            self._save(meta)

    def unprotect_snap(self, name: str) -> None:
        with self.engine.store_lock(), self._locked(exclusive=True) as meta:
            snap = meta["snaps"][snap_index(meta, name)]
            if not snap["protected"]:
                raise errors.SnapshotNotProtected(f"snapshot {name!r} is not protected")
            kids = self.engine.children_of(self._id, snap["id"])
            if kids:
                raise errors.SnapshotHasChildren(f"snapshot {name!r} has clones: {kids}")
            snap["protected"] = False
            self._save(meta)

    def is_protected_snap(self, name: str) -> bool:
        with self._locked() as meta:
            return bool(meta["snaps"][snap_index(meta, name)]["protected"])

    # --- clones -------------------------------------------------------------------------
    def list_children(self) -> list[tuple[str, str]]:
        with self._locked() as meta:
            idx = self._snap_idx(meta)
            snap_id = None if idx is None else meta["snaps"][idx]["id"]
        return self.engine.children_of(self._id, snap_id)

    def _parent_name(self, parent: dict[str, Any]) -> str:
        found = self.engine.find_by_id(parent["image_id"])
        if found is None:
            raise errors.ImageNotFound("parent image is gone")
        return found[1]

    def parent_info(self) -> tuple[str, str, str]:
        with self._locked() as meta:
            parent = meta["parent"]
        if not parent:
            raise errors.ImageNotFound(f"{self.pool}/{self.name} has no parent")
        found = self.engine.find_by_id(parent["image_id"])
        if found is None:
            raise errors.ImageNotFound("parent image is gone")
        return found[0], found[1], parent["snap"]

    def parent_id(self) -> str:
        with self._locked() as meta:
            if not meta["parent"]:
                raise errors.ImageNotFound(f"{self.pool}/{self.name} has no parent")
            return str(meta["parent"]["image_id"])

    def clone_depth(self) -> int:
        with self._locked() as meta:
            parent = meta["parent"]
        depth = 0
        while parent:
            depth += 1
            found = self.engine.find_by_id(parent["image_id"])
            if found is None or depth > 256:
                break
            parent = found[2]["parent"]
        return depth

    def flatten(self) -> None:
        self._writable()
        with self._locked(exclusive=True) as meta:
            if not meta["parent"]:
                raise errors.InvalidArgument(f"{self.pool}/{self.name} is not a clone")
            self.engine.image_chain(meta)
            self.engine.check_idle([self.engine.layer_path(meta["layers"][0])])
            with self.engine.journal.begin(self._id, {"op": "flatten"}, keep_on_error=True):
                crash.point("flatten", "after-journal")
                _do_flatten(self.engine, self.pool, self.name, meta)

    def copy(self, dest_pool: str, dest_name: str) -> None:
        eng = self.engine
        eng.meta_path(dest_pool, dest_name)
        if eng.exists(dest_pool, dest_name):
            raise errors.ImageExists(f"{dest_pool}/{dest_name}")
        layer = {"id": new_id(), "fmt": "raw"}
        image_id = new_id()
        with eng.journal.begin(image_id, {"op": "copy", "layers": [layer]},
                               cleanup=[eng.layer_path(layer)]):
            with self._locked() as meta:
                src = qemuimg.json_opts(qemuimg.image_opts(self._chain(meta)))
                qemuimg.run("convert", "-q", "-O", "raw", "-S", "4k", src,
                            str(eng.layer_path(layer)))
                size, order = self._size(meta), meta["order"]
            fsync_file(eng.layer_path(layer))
            crash.point("copy", "after-layer")
            eng.commit_new(dest_pool, dest_name, eng.new_meta(size, order, [layer], image_id))

    def deep_copy(self, dest_pool: str, dest_name: str) -> None:
        """Copy every layer (sparse) and re-point the copies at each other."""
        eng = self.engine
        eng.meta_path(dest_pool, dest_name)
        if self.snapshot is not None:
            raise errors.InvalidArgument("deep_copy works on the image head")
        if eng.exists(dest_pool, dest_name):
            raise errors.ImageExists(f"{dest_pool}/{dest_name}")
        image_id = new_id()
        intent: Intent | None = None
        try:
            with self._locked() as meta:
                eng.check_idle([eng.layer_path(meta["layers"][-1])])
                layers = [{"id": new_id(), "fmt": layer["fmt"]} for layer in meta["layers"]]
                intent = eng.journal.begin(image_id, {"op": "deep_copy", "layers": layers})
                for i, (old, new) in enumerate(zip(meta["layers"], layers, strict=True)):
                    src, dst = eng.layer_path(old), eng.layer_path(new)
                    cp = qemuimg.spawn(["cp", "--sparse=always", "--reflink=auto", str(src),
                                        str(dst)], stderr=subprocess.PIPE)
                    _, err = cp.communicate()
                    if cp.returncode != 0:
                        raise errors.IOError(f"copying {src} failed: {err.decode()}")
                    if i > 0:
                        lower = eng.layer_path(layers[i - 1])
                        qemuimg.run("rebase", "-q", "-u", "-f", "qcow2", "-b", str(lower),
                                    "-F", layers[i - 1]["fmt"], str(dst))
                    fsync_file(dst)
                copy = dict(meta, id=image_id, created=time.time(), layers=layers,
                            snaps=[dict(s, layer=layers[i]["id"], protected=False)
                                   for i, s in enumerate(meta["snaps"])])
            crash.point("deep_copy", "after-layers")
            # the parent snapshot is re-checked under the store lock (it could have gone)
            eng.commit_new(dest_pool, dest_name, copy, check_parent=True)
        except BaseException:
            for layer in layers if intent is not None else []:
                _unlink(eng.layer_path(layer))
            raise
        finally:
            if intent is not None:
                intent.finish()

    def diff_iterate(self, from_snapshot: str | None = None,
                     granularity: int = 4 << 20) -> Iterator[Extent]:
        """librbd's ``diff_iterate`` from the layers' allocation maps (see localdiff):
        the clusters written above ``from_snapshot``'s layer up to this view's, or with
        None every range holding data (the clone parent's too).  One ``qemu-img map`` of
        those layers; computed at the call, under the lock, and returned as a list."""
        check_granularity(granularity)
        with self._locked() as meta:
            size = self._size(meta)
            view = self._snap_idx(meta)
            view = len(meta["layers"]) - 1 if view is None else view
            if from_snapshot is None:
                spans = localdiff.allocated_spans(self._chain(meta), size)
            else:
                base = snap_index(meta, from_snapshot)
                if base > view:
                    raise errors.InvalidArgument(
                        f"diff from {from_snapshot!r}: it is newer than this view")
                spans = []
                if base < view:
                    chain = self._chain(meta)
                    upper = chain[:view - base]
                    expect = [self.engine.layer_path(layer)
                              for layer in reversed(meta["layers"][base + 1:view + 1])]
                    if [path for path, _ in upper] != expect[:len(upper)]:
                        raise errors.UnsafeLayer(f"{self.pool}/{self.name}: chain and "
                                                 "metadata disagree")
                    lower = None
                    if any(fmt == "raw" for _, fmt in upper):
                        lower = self.engine.image_chain(meta, base)
                    spans = localdiff.changed_spans(upper, size, lower)
        return iter(list(to_extents(spans, granularity, size)))

    def data_file(self) -> Path | None:
        """A snapshot whose chain is one raw layer (an uploaded image's ``snap``) is that
        file: frozen, so it can be read in place."""
        if self.snapshot is None:
            return None
        with self._locked() as meta:
            chain = self._chain(meta)
        if len(chain) == 1 and chain[0][1] == "raw":
            return chain[0][0]
        return None

    # --- QEMU hand-off --------------------------------------------------------------------
    def qemu_chain(self) -> list[tuple[Path, str]]:
        """The layer files QEMU opens, top first (absolute paths, explicit formats)."""
        with self._locked() as meta:
            return self._chain(meta)

    def blockdev_options(self, node_prefix: str = "strato") -> dict[str, Any]:
        """Nested QMP/-blockdev options for this image (top writable unless read-only).

        Every node gets a node-name ``<prefix>-<layer-id>``; pass the result as one
        ``-blockdev`` JSON argument or to ``blockdev-add``.
        """
        chain = self.qemu_chain()
        node: dict[str, Any] | None = None
        for path, fmt in reversed(chain):
            name = node_name(node_prefix, path.name.split(".")[0])
            cur: dict[str, Any] = {
                "driver": fmt, "node-name": name,
                "file": {"driver": "file", "filename": str(path), "node-name": f"{name}-file"},
            }
            if fmt == "qcow2":
                cur["backing"] = node
            cur["read-only"] = True  # every node below the top is frozen
            node = cur
        assert node is not None
        node["read-only"] = self.read_only
        return node

    def prepare_live_snapshot(self, name: str, node_prefix: str = "strato") -> LiveSnapshot:
        """Start a snapshot that a running QEMU takes (``blockdev-snapshot-sync``).

        Holds the image lock until ``commit_live_snapshot``/``abort_live_snapshot``.
        If this process dies in between, the next open keeps the snapshot when QEMU
        created the overlay on the current top, and forgets it otherwise.
        """
        self._writable()
        _check_snap_name(name)
        eng = self.engine
        lock = eng.image_lock(self._id)
        lock.acquire()
        try:
            eng.repair_image(self._id)
            meta = eng.load(self.pool, self.name)
            if any(s["name"] == name for s in visible_snaps(meta)):
                raise errors.SnapshotExists(f"snapshot {name!r} exists")
            chain = eng.image_chain(meta)
            top = meta["layers"][-1]
            layer = {"id": new_id(), "fmt": "qcow2"}
            intent = eng.journal.begin(self._id, {"op": "live_snapshot", "snap": name,
                                                  "layers": [layer], "base": top})
        except BaseException:
            lock.release()
            raise
        self._live = (lock, intent, name, layer)
        overlay = eng.layer_path(layer)
        node = node_name(node_prefix, layer["id"])
        return LiveSnapshot(
            snapshot=name, overlay=overlay, backing=chain[0][0], backing_format=top["fmt"],
            node_name=node,
            qmp={"execute": "blockdev-snapshot-sync",
                 "arguments": {"node-name": node_name(node_prefix, top["id"]),
                               "snapshot-file": str(overlay), "snapshot-node-name": node,
                               "format": "qcow2", "mode": "absolute-paths"}},
        )

    def commit_live_snapshot(self, name: str) -> None:
        """QEMU now writes to the new overlay: record the old top as snapshot ``name``."""
        if self._live is None or self._live[2] != name:
            raise errors.InvalidArgument(f"no live snapshot {name!r} pending")
        lock, intent, _, layer = self._live
        try:
            meta = self.engine.load(self.pool, self.name)
            try:
                _finish_live(self.engine, self.pool, self.name, meta, intent.record,
                             strict=True)
            except errors.Error:
                _unlink(self.engine.layer_path(layer))  # refused: never part of the image
                raise
            finally:
                intent.finish()
        finally:
            self._live = None
            lock.release()

    def abort_live_snapshot(self, name: str) -> None:
        """QEMU did not take the snapshot: drop the overlay file if it was created."""
        if self._live is None or self._live[2] != name:
            raise errors.InvalidArgument(f"no live snapshot {name!r} pending")
        lock, intent, _, layer = self._live
        if qemuimg.in_use(self.engine.layer_path(layer)):
            raise errors.ImageBusy("QEMU is using the new overlay: commit the snapshot")
        try:
            _unlink(self.engine.layer_path(layer))
            intent.finish()
        finally:
            self._live = None
            lock.release()

    def close(self) -> None:
        """Flush writes; settle a pending live snapshot as repair would (kept if QEMU
        made the overlay, dropped otherwise)."""
        if self._view is not None:
            self._view.close()
            self._view = None
        if self._live is None:
            try:
                self.flush()
            except errors.ImageNotFound:
                pass  # removed or renamed meanwhile: nothing left to flush
            return
        lock, intent, _, _layer = self._live
        self._live = None
        try:
            with intent:
                recover(self.engine, intent)
        finally:
            lock.release()


def copy_sparse(src: Path, dest: Path, size: int) -> None:
    """Copy a raw file's data extents in the kernel (copy_file_range); holes stay holes."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        sfd, dfd = fin.fileno(), fout.fileno()
        pos = 0
        while pos < size:
            try:
                start = os.lseek(sfd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = min(os.lseek(sfd, start, os.SEEK_HOLE), size)
            off = start
            while off < end:
                n = os.copy_file_range(sfd, dfd, min(end - off, 1 << 30), off, off)
                if n == 0:
                    break
                off += n
            pos = end
        os.ftruncate(dfd, size)


# --- the steps shared by operations and their recovery ------------------------------------
def node_name(prefix: str, layer_id: str) -> str:
    """QEMU node-name of a layer: ``<prefix>-<16 hex>`` (+ ``-file``) within QEMU's 31."""
    if not prefix or len(prefix) > 9 or not prefix[0].isalpha() or not all(
            c.isalnum() or c in "-_." for c in prefix):
        raise errors.InvalidArgument(f"node prefix must be 1-9 characters: {prefix!r}")
    return f"{prefix}-{layer_id[:16]}"


def _mapped(chain: list[tuple[Path, str]], size: int
            ) -> list[tuple[int, int, int | None, int]] | None:
    """``(start, length, layer index or None for zeros, file offset)`` of the chain's
    view, from ``qemu-img map``; None when some data has no plain file offset."""
    out = json.loads(qemuimg.run("map", "--output=json",
                                 qemuimg.json_opts(qemuimg.image_opts(chain))))
    extents: list[tuple[int, int, int | None, int]] = []
    for e in out:
        start, length = int(e["start"]), int(e["length"])
        if start >= size:
            break
        length = min(length, size - start)
        if not e.get("data"):
            extents.append((start, length, None, 0))
        elif "offset" in e and not e.get("compressed"):
            extents.append((start, length, int(e["depth"]), int(e["offset"])))
        else:
            return None
    return extents


def _read_extents(fds: list[int], extents: list[tuple[int, int, int | None, int]],
                  size: int, chunk: int) -> Iterator[bytes]:
    """The view's bytes in ``chunk`` pieces (the last one shorter), read with pread;
    a piece that lies in one extent is yielded as read, without another copy."""
    buf = bytearray()
    covered = 0
    for _start, length, layer, offset in extents:
        covered += length
        done = 0
        while done < length:
            want = min(chunk - len(buf), length - done)
            if layer is None:
                data = bytes(want)
            else:
                data = os.pread(fds[layer], want, offset + done)
                if len(data) < want:  # past the end of a short sparse file: zeros
                    data += bytes(want - len(data))
            done += want
            if not buf and want == chunk:
                yield data
                continue
            buf += data
            if len(buf) == chunk:
                yield bytes(buf)
                buf.clear()
    if covered < size:  # the map stops short of the end: the rest reads as zeros
        buf += bytes(size - covered)
    while len(buf) > chunk:
        yield bytes(buf[:chunk])
        del buf[:chunk]
    if buf:
        yield bytes(buf)


# Writes at least this large, at this alignment, skip the page cache.
_DIRECT_MIN = 1 << 20
_DIRECT_ALIGN = 4096


def _pwrite(path: Path, data: bytes, offset: int) -> None:
    """Write into a raw layer; large aligned writes skip the page cache (O_DIRECT).

    Copying into the page cache costs as much CPU as md5 on these machines, and an
    image upload computes md5 and sha512 as well; O_DIRECT hands the caller's buffer to
    the disk without that copy.  What O_DIRECT refuses (EINVAL: an unaligned buffer, a
    filesystem without it) goes through the page cache.
    """
    view = memoryview(data)
    if len(view) >= _DIRECT_MIN and offset % _DIRECT_ALIGN == 0 \
            and len(view) % _DIRECT_ALIGN == 0:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        else:
            try:
                _pwrite_all(fd, view, offset)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
            finally:
                os.close(fd)
    fd = os.open(path, os.O_WRONLY)
    try:
        _pwrite_all(fd, view, offset)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _check_snap_name(name: str) -> None:
    if not isinstance(name, str) or not name or "\0" in name or "/" in name:
        raise errors.InvalidArgument(f"invalid snapshot name {name!r}")


def _add_snap(meta: Meta, name: str, layer: dict[str, str]) -> None:
    top = meta["layers"][-1]
    meta["snaps"].append({"id": meta["next_snap_id"], "name": name, "layer": top["id"],
                          "size": meta["size"], "protected": False, "ts": time.time()})
    meta["next_snap_id"] += 1
    meta["layers"].append(layer)


def _resize_layer(path: Path, fmt: str, size: int) -> None:
    if fmt == "raw":
        os.truncate(path, size)
        return
    current = qemuimg.read_qcow2_header(path).size
    if current != size:
        args = ["resize", "-q", "-f", "qcow2"]
        if size < current:
            args.append("--shrink")
        qemuimg.run(*args, str(path), str(size))


def _do_resize(eng: LocalEngine, pool: str, name: str, meta: Meta, size: int) -> None:
    top = meta["layers"][-1]
    _resize_layer(eng.layer_path(top), top["fmt"], size)
    fsync_file(eng.layer_path(top))
    crash.point("resize", "after-layer")
    meta["size"] = size
    eng.save(pool, name, meta)


def _do_remove_snap(eng: LocalEngine, pool: str, name: str, meta: Meta, snap_id: int) -> bool:
    """Remove a snapshot: mark it removed (the commit point), then merge its frozen
    layer with the one above it.  Every step is idempotent; returns False when the merge
    must wait (the snapshot then stays hidden, and ``compact`` finishes it later).

    Above it is the top: commit the top down into the frozen layer (copies only what was
    written since), which becomes the top.  Above it is another snapshot's layer (maybe
    with clones backed by it): stream the frozen layer up into that one, so that layer
    keeps its id and its clones stay valid.  A QEMU holding the layers does either as a
    block job (``online``); otherwise qemu-img does.
    """
    j = next(i for i, s in enumerate(meta["snaps"]) if s["id"] == snap_id)
    snap = meta["snaps"][j]
    if not snap.get("removed"):
        snap["removed"] = True
        eng.save(pool, name, meta)
        crash.point("remove_snap", "after-mark")
    lower, upper = meta["layers"][j], meta["layers"][j + 1]
    try:
        if j + 1 == len(meta["layers"]) - 1:
            _merge_top(eng, pool, name, meta, snap, lower, upper)
            drop = upper
            meta["layers"].pop(j + 1)
        else:
            _merge_up(eng, lower, upper)
            drop = lower
            meta["layers"].pop(j)
    except (errors.ImageBusy, online.MergeFailed) as exc:
        LOG.info("%s/%s: merge of removed snapshot %s deferred: %s", pool, name,
                 snap["name"], exc)
        return False
    crash.point("remove_snap", "after-merge")
    meta["snaps"].pop(j)
    eng.save(pool, name, meta)
    crash.point("remove_snap", "after-metadata")
    _unlink(eng.layer_path(drop))
    return True


def _merge_top(eng: LocalEngine, pool: str, name: str, meta: Meta, snap: dict[str, Any],
               lower: dict[str, str], upper: dict[str, str]) -> None:
    """Make ``lower`` the top with the top's data: QEMU's active commit while a guest
    writes the top, ``qemu-img commit`` otherwise."""
    lower_p, upper_p = eng.layer_path(lower), eng.layer_path(upper)
    holder = online.holder_of([upper_p, lower_p])
    if holder is None:
        if snap.get("pivot"):
            # a QEMU was told to switch to ``lower`` and is gone: it may have written
            # there since, so ``lower`` is the newer truth; the top is stale
            return
        _resize_layer(lower_p, lower["fmt"], meta["size"])
        crash.point("remove_snap", "after-resize")
        qemuimg.run("commit", "-q", "-d", "-f", "qcow2", str(upper_p))
        fsync_file(lower_p)
        return

    def mark(pivot: bool) -> None:
        if snap.get("pivot", False) != pivot:
            snap["pivot"] = pivot
            eng.save(pool, name, meta)

    def before_pivot() -> None:
        mark(True)
        crash.point("remove_snap", "before-pivot")

    with online.session(holder, eng.locks_dir) as sess:
        job = online.job_id(upper["id"])
        if sess.job(job) is None:
            if snap.get("pivot"):
                # no job, a switch recorded: it was made (a failure is recorded before
                # its job goes) unless the top is still in use (a QEMU started since
                # from the old chain): then the top is the truth again
                sess.drop_node(upper_p)
                if not online.holders([upper_p]):
                    return
            mark(False)
            crash.point("remove_snap", "before-job")
        sess.commit(job, upper_p, lower_p, before_pivot, lambda: mark(False))
        crash.point("remove_snap", "after-job")
    fsync_file(lower_p)  # what the job copied must be durable before the top goes


def _merge_up(eng: LocalEngine, lower: dict[str, str], upper: dict[str, str]) -> None:
    """Stream ``lower`` into ``upper`` (view-preserving); ``upper``'s backing then
    points below ``lower``.  Done already when its header says so."""
    lower_p, upper_p = eng.layer_path(lower), eng.layer_path(upper)
    below = eng.chain(lower_p, lower["fmt"])[1:2]
    base = below[0] if below else None
    holder = online.holder_of([upper_p, lower_p])
    if holder is None:
        if qemuimg.read_qcow2_header(upper_p).backing_file != (str(base[0]) if base else None):
            _safe_rebase(upper_p, base)
        fsync_file(upper_p)
        return
    with online.session(holder, eng.locks_dir) as sess:
        job = online.job_id(lower["id"])
        sess.settle(job)  # one a dead store left running
        if qemuimg.read_qcow2_header(upper_p).backing_file != (
                str(base[0]) if base else None):
            crash.point("remove_snap", "before-job")
            sess.stream(job, upper_p, base[0] if base else None, lower_p)
        else:
            sess.drop_node(lower_p)
        crash.point("remove_snap", "after-job")
    fsync_file(upper_p)


def _safe_rebase(path: Path, backing: tuple[Path, str] | None) -> None:
    """View-preserving rebase of ``path`` onto ``backing`` (None: no backing at all).

    ``writethrough`` matters: with the default writeback cache qemu-img rewrites the
    header's backing pointer before its cached L2 tables reach the file, so a SIGKILL
    in between loses copied clusters while the old backing is already detached.
    """
    args = ["-b", str(backing[0]), "-F", backing[1]] if backing else ["-b", ""]
    qemuimg.run("rebase", "-q", "-t", "writethrough", "-f", "qcow2", *args, str(path))


def _do_flatten(eng: LocalEngine, pool: str, name: str, meta: Meta) -> None:
    """Copy the parent's data into the bottom layer, in place: the view never changes."""
    bottom = eng.layer_path(meta["layers"][0])
    if qemuimg.read_qcow2_header(bottom).backing_file is not None:
        _safe_rebase(bottom, None)
        fsync_file(bottom)
    crash.point("flatten", "after-rebase")
    meta["parent"] = None
    eng.save(pool, name, meta)
    crash.point("flatten", "after-metadata")


def _finish_live(eng: LocalEngine, pool: str, name: str, meta: Meta, record: dict[str, Any],
                 strict: bool) -> bool:
    """Record a QEMU-made overlay as the new top if it is sound; return whether it was."""
    layer, base = record["layers"][0], record["base"]
    path = eng.layer_path(layer)
    if meta["layers"][-1]["id"] != base["id"]:
        if any(lyr["id"] == layer["id"] for lyr in meta["layers"]):
            return True  # already recorded
        raise errors.InvalidArgument("image changed under a pending live snapshot")
    try:
        hdr = qemuimg.read_qcow2_header(path)
        bpath, bfmt = eng.parse_backing(hdr.backing_file or "", hdr.backing_format)
        ok = (bpath == eng.layer_path(base) and bfmt == base["fmt"]
              and not hdr.external_data and not hdr.data_file and hdr.size == meta["size"])
    except (FileNotFoundError, errors.Error):
        ok = False
    if not ok:
        if strict:
            raise errors.UnsafeLayer(f"{path} is not an overlay of the image's top")
        return False
    _add_snap(meta, record["snap"], layer)
    eng.save(pool, name, meta)
    return True


def recover(eng: LocalEngine, intent: Intent) -> None:
    """Settle one dead operation on an image (caller holds its exclusive lock)."""
    rec = intent.record
    op = rec.get("op")
    found = eng.find_by_id(rec.get("image_id", ""))
    if found is None:
        return  # never committed (create/clone/import/copy) or removed: gc cleans up
    pool, name, meta = found
    if op == "remove_snap" and any(s["id"] == rec["snap_id"] for s in meta["snaps"]):
        _do_remove_snap(eng, pool, name, meta, rec["snap_id"])
    elif op == "flatten" and meta["parent"]:
        _do_flatten(eng, pool, name, meta)
    elif op == "resize":
        _do_resize(eng, pool, name, meta, rec["size"])
    elif op == "live_snapshot":
        if not _finish_live(eng, pool, name, meta, rec, strict=False):
            _unlink(eng.layer_path(rec["layers"][0]))
    # snapshot/clone/create/import/copy: the metadata write was the commit point; an
    # uncommitted new layer is an orphan that gc removes.


__all__ = ["LocalImage", "recover"]

