"""``rbd.Image`` for the local engine, and the repair of interrupted operations.

Crash safety: every multi-step operation records an intent first, and the metadata
file's atomic replace is its commit point.  Steps before the commit either leave every
view unchanged (new overlay, flatten's view-preserving rebase) or are idempotent and
rolled forward by ``recover`` (snapshot removal merges, resize).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from . import crash, errors, qemuimg
from .base import Image, LiveSnapshot, SnapInfo
from .journal import Intent
from .local import LocalEngine, Meta, check_size, fsync_file, new_id, snap_index
from .local import unlink_quiet as _unlink
from .location import build as build_location
from .locking import FileLock

CHUNK = 64 << 20


class LocalImage(Image):
    def __init__(self, engine: LocalEngine, pool: str, name: str,
                 snapshot: str | None = None, read_only: bool = False) -> None:
        self.engine = engine
        self.pool = pool
        self.name = name
        self.snapshot = snapshot
        self.read_only = read_only or snapshot is not None
        self._live: tuple[FileLock, Intent, str, dict[str, str]] | None = None
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
            size = self._size(meta)
            if offset < 0 or length < 0 or offset > size:
                raise errors.InvalidArgument(f"read {offset}+{length} outside image of {size}")
            length = min(length, size - offset)
            if length == 0:
                return b""
            chain = self._chain(meta)
            if len(chain) == 1 and chain[0][1] == "raw":
                with open(chain[0][0], "rb") as f:
                    return os.pread(f.fileno(), length, offset)
            return self._read_chain(chain, offset, length)

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
        data = bytes(data)
        with self._locked(exclusive=True) as meta:
            size = meta["size"]
            if offset < 0 or offset + len(data) > size:
                raise errors.InvalidArgument(f"write {offset}+{len(data)} beyond {size}")
            if not data:
                return 0
            chain = self._chain(meta)
            if len(chain) == 1 and chain[0][1] == "raw":
                fd = os.open(chain[0][0], os.O_WRONLY)
                try:
                    os.pwrite(fd, data, offset)
                finally:
                    os.close(fd)
                return len(data)
            start = offset - offset % 512
            end = -(-(offset + len(data)) // 512) * 512
            if (start, end) != (offset, offset + len(data)):  # read-modify-write the edges
                head = self._read_chain(chain, start, offset - start) if offset > start else b""
                tail_at = offset + len(data)
                tail = self._read_chain(chain, tail_at, end - tail_at) if end > tail_at else b""
                payload = head + data + tail
            else:
                payload = data
            tmp = self.engine.tmp_path("write")
            try:
                tmp.write_bytes(payload)
                dst = {"driver": "raw", "offset": start, "size": end - start,
                       "file": qemuimg.image_opts(chain, read_only=False)}
                qemuimg.run("convert", "-q", "-n", "-f", "raw", str(tmp),
                            qemuimg.json_opts(dst))
            finally:
                _unlink(tmp)
            return len(data)

    def resize(self, size: int) -> None:
        self._writable()
        check_size(size)
        with self._locked(exclusive=True) as meta:
            with self.engine.journal.begin(self._id, {"op": "resize", "size": size}):
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
            src = qemuimg.json_opts(qemuimg.image_opts(self._chain(meta)))
            qemuimg.run("convert", "-q", "-O", "raw", "-S", "4k", "-W", src, str(dest))
            return self._size(meta)

    def iter_chunks(self, chunk: int = CHUNK) -> Iterator[bytes]:
        size = self.size()
        for off in range(0, size, chunk):
            yield self.read(off, min(chunk, size - off))

    # --- snapshots ----------------------------------------------------------------------
    def list_snaps(self) -> list[SnapInfo]:
        with self._locked() as meta:
            return [SnapInfo(s["id"], s["name"], s["size"], s["protected"], s["ts"])
                    for s in meta["snaps"]]

    def create_snap(self, name: str) -> None:
        self._writable()
        _check_snap_name(name)
        with self._locked(exclusive=True) as meta:
            if any(s["name"] == name for s in meta["snaps"]):
                raise errors.SnapshotExists(f"snapshot {name!r} exists")
            top = meta["layers"][-1]
            self.engine.image_chain(meta)  # refuse to build on an unsafe chain
            layer = {"id": new_id(), "fmt": "qcow2"}
            with self.engine.journal.begin(self._id, {"op": "snapshot", "layers": [layer]}):
                crash.point("snapshot", "after-journal")
                qemuimg.create_overlay(self.engine.layer_path(layer),
                                       self.engine.layer_path(top), top["fmt"], meta["size"])
                crash.point("snapshot", "after-overlay")
                _add_snap(meta, name, layer)
                self._save(meta)
                crash.point("snapshot", "after-metadata")

    def remove_snap(self, name: str) -> None:
        self._writable()
        with self._locked(exclusive=True) as meta:
            snap = meta["snaps"][snap_index(meta, name)]
            if snap["protected"]:
                raise errors.SnapshotProtected(f"snapshot {name!r} is protected")
            with self.engine.journal.begin(self._id,
                                           {"op": "remove_snap", "snap_id": snap["id"]}):
                crash.point("remove_snap", "after-journal")
                _do_remove_snap(self.engine, self.pool, self.name, meta, snap["id"])

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
            with self.engine.journal.begin(self._id, {"op": "flatten"}):
                crash.point("flatten", "after-journal")
                _do_flatten(self.engine, self.pool, self.name, meta)

    def copy(self, dest_pool: str, dest_name: str) -> None:
        eng = self.engine
        eng.meta_path(dest_pool, dest_name)
        if eng.exists(dest_pool, dest_name):
            raise errors.ImageExists(f"{dest_pool}/{dest_name}")
        layer = {"id": new_id(), "fmt": "raw"}
        image_id = new_id()
        with eng.journal.begin(image_id, {"op": "copy", "layers": [layer]}):
            with self._locked() as meta:
                src = qemuimg.json_opts(qemuimg.image_opts(self._chain(meta)))
                qemuimg.run("convert", "-q", "-O", "raw", "-S", "4k", "-W", src,
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
                layers = [{"id": new_id(), "fmt": layer["fmt"]} for layer in meta["layers"]]
                intent = eng.journal.begin(image_id, {"op": "deep_copy", "layers": layers})
                for i, (old, new) in enumerate(zip(meta["layers"], layers, strict=True)):
                    src, dst = eng.layer_path(old), eng.layer_path(new)
                    subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(src),
                                    str(dst)], check=True, capture_output=True)
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
        finally:
            if intent is not None:
                intent.finish()

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
            lid = path.name.split(".")[0][:16]
            cur: dict[str, Any] = {
                "driver": fmt, "node-name": f"{node_prefix}-{lid}",
                "file": {"driver": "file", "filename": str(path),
                         "node-name": f"{node_prefix}-{lid}-file"},
            }
            if fmt == "qcow2":
                cur["backing"] = node
            if node is not None or self.read_only:
                cur["read-only"] = True
            node = cur
        assert node is not None
        node["read-only"] = self.read_only
        return node

    def prepare_live_snapshot(self, name: str) -> LiveSnapshot:
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
            if any(s["name"] == name for s in meta["snaps"]):
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
        node = f"strato-{layer['id'][:16]}"
        return LiveSnapshot(
            snapshot=name, overlay=overlay, backing=chain[0][0], backing_format=top["fmt"],
            node_name=node,
            qmp={"execute": "blockdev-snapshot-sync",
                 "arguments": {"node-name": f"strato-{top['id'][:16]}",
                               "snapshot-file": str(overlay), "snapshot-node-name": node,
                               "format": "qcow2", "mode": "absolute-paths"}},
        )

    def commit_live_snapshot(self, name: str) -> None:
        """QEMU now writes to the new overlay: record the old top as snapshot ``name``."""
        if self._live is None or self._live[2] != name:
            raise errors.InvalidArgument(f"no live snapshot {name!r} pending")
        lock, intent, _, _layer = self._live
        try:
            meta = self.engine.load(self.pool, self.name)
            _finish_live(self.engine, self.pool, self.name, meta, intent.record, strict=True)
            intent.finish()
        finally:
            self._live = None
            lock.release()

    def abort_live_snapshot(self, name: str) -> None:
        """QEMU did not take the snapshot: drop the overlay file if it was created."""
        if self._live is None or self._live[2] != name:
            raise errors.InvalidArgument(f"no live snapshot {name!r} pending")
        lock, intent, _, layer = self._live
        try:
            _unlink(self.engine.layer_path(layer))
            intent.finish()
        finally:
            self._live = None
            lock.release()

    def close(self) -> None:
        if self._live is not None:
            self.abort_live_snapshot(self._live[2])


# --- the steps shared by operations and their recovery ------------------------------------
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
    crash.point("resize", "after-layer")
    meta["size"] = size
    eng.save(pool, name, meta)


def _do_remove_snap(eng: LocalEngine, pool: str, name: str, meta: Meta, snap_id: int) -> None:
    """Merge the snapshot's frozen layer with the one above it (idempotent steps).

    Above it is the top: commit the top down into the frozen layer (copies only what was
    written since), which becomes the top.  Above it is another snapshot's layer (maybe
    with clones backed by it): stream the frozen layer up into that one with a
    view-preserving rebase, so that layer keeps its id and its clones stay valid.
    """
    j = next(i for i, s in enumerate(meta["snaps"]) if s["id"] == snap_id)
    lower, upper = meta["layers"][j], meta["layers"][j + 1]
    lower_p, upper_p = eng.layer_path(lower), eng.layer_path(upper)
    if j + 1 == len(meta["layers"]) - 1:
        _resize_layer(lower_p, lower["fmt"], meta["size"])
        crash.point("remove_snap", "after-resize")
        qemuimg.run("commit", "-q", "-d", "-f", "qcow2", str(upper_p))
        fsync_file(lower_p)
        drop = upper
        meta["layers"].pop(j + 1)
    else:
        below = eng.chain(lower_p, lower["fmt"])[1:2]
        _safe_rebase(upper_p, below[0] if below else None)
        fsync_file(upper_p)
        drop = lower
        meta["layers"].pop(j)
    crash.point("remove_snap", "after-merge")
    meta["snaps"].pop(j)
    eng.save(pool, name, meta)
    crash.point("remove_snap", "after-metadata")
    _unlink(eng.layer_path(drop))


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
