"""The ``rbd`` engine: the block store on a Ceph cluster, through librados/librbd.

Each operation is the librbd call of the same name.  This module adds only what the
block store contract asks beyond librbd (strato's name/size/order rules, the specific
snapshot errors) and one shared, bounded connection.  ``rados``/``rbd`` are Debian's
python3-rados/python3-rbd, made importable from the venv by scripts/setup-ceph.sh.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import rados
import rbd

from . import errors, qemuimg, rbd_io
from .base import DEFAULT_POOLS, Engine
from .local import check_name, check_order, check_size
from .rbd_errors import ClusterUnavailable, translated
from .rbd_image import RbdImage

_NO_POOL = {errors.ObjectNotFound: errors.PoolNotFound}


class Cluster:
    """One librados connection (made on first use, shared by threads) and an ioctx per pool.

    Every wait is bounded: ``client_mount_timeout`` for the mon handshake, then
    ``rados_mon_op_timeout``/``rados_osd_op_timeout`` for each request, so a dead
    cluster gives ClusterUnavailable after ``retries`` attempts instead of a hang.
    A forked child never touches its parent's connection (librados is not fork-safe):
    it makes its own.
    """

    def __init__(self, conf: Path, user: str, cluster: str, connect_timeout: float,
                 retries: int, interval: float, op_timeout: float) -> None:
        self.conf, self.user, self.cluster = conf, user, cluster
        self.connect_timeout, self.retries, self.interval = connect_timeout, retries, interval
        self.op_timeout = op_timeout
        self._lock = threading.Lock()
        self._rados: rados.Rados | None = None
        self._ioctx: dict[str, rados.Ioctx] = {}
        self._pid = os.getpid()

    def handle(self) -> rados.Rados:
        with self._lock:
            if self._pid != os.getpid():  # forked: the inherited handles are the parent's
                self._rados, self._ioctx, self._pid = None, {}, os.getpid()
            if self._rados is None:
                self._rados = self._connect()
            return self._rados

    def _connect(self) -> rados.Rados:
        if not self.conf.is_file():
            raise ClusterUnavailable(f"no Ceph configuration file {self.conf}")
        op_timeout = str(max(1, math.ceil(self.op_timeout)))  # whole seconds for these two
        timeouts = {"client_mount_timeout": f"{self.connect_timeout:g}",
                    "rados_mon_op_timeout": op_timeout, "rados_osd_op_timeout": op_timeout}
        last: Exception | None = None
        for attempt in range(max(1, self.retries)):
            if attempt:
                time.sleep(self.interval)
            try:
                handle = rados.Rados(conffile=str(self.conf), rados_id=self.user,
                                     clustername=self.cluster, conf=timeouts)
            except rados.Error as exc:
                raise ClusterUnavailable(f"cannot read Ceph configuration {self.conf}: {exc}") \
                    from None
            try:
                handle.connect(timeout=int(self.connect_timeout) or 1)
                return handle
            except rados.Error as exc:
                handle.shutdown()
                last = exc
        raise ClusterUnavailable(
            f"Ceph cluster {self.cluster!r} ({self.conf}) unreachable as client.{self.user} "
            f"after {max(1, self.retries)} attempt(s) of {self.connect_timeout:g} s: {last}")

    def ioctx(self, pool: str) -> rados.Ioctx:
        cached = self._ioctx.get(pool)
        if cached is not None and self._pid == os.getpid():
            return cached
        handle = self.handle()
        with self._lock:
            if pool not in self._ioctx:
                with translated(f"open pool {pool!r}", _NO_POOL):
                    self._ioctx[pool] = handle.open_ioctx(pool)
            return self._ioctx[pool]

    def close(self) -> None:
        with self._lock:
            for ioctx in self._ioctx.values():
                ioctx.close()
            self._ioctx.clear()
            if self._rados is not None:
                self._rados.shutdown()
                self._rados = None


class RbdEngine(Engine):
    """Pools of RBD images in one Ceph cluster; clone format v1 (protect, then clone).

    ``ceph_conf`` names the cluster (its keyring for ``client.<user>`` referenced in it);
    ``connect_timeout`` bounds one connection attempt (s), ``connection_retries`` is the
    number of attempts in all and ``connection_interval`` the pause between them (as
    Cinder's rados_connect_timeout/rados_connection_retries/rados_connection_interval);
    ``op_timeout`` bounds each mon/osd request once connected.
    """

    name = "rbd"

    def __init__(self, ceph_conf: str | Path, user: str = "admin", cluster: str = "ceph",
                 pools: Sequence[str] = DEFAULT_POOLS, connect_timeout: float = 10.0,
                 connection_retries: int = 3, connection_interval: float = 1.0,
                 op_timeout: float = 60.0) -> None:
        self.conf = Path(ceph_conf).resolve()
        self.user = user
        self._pools = list(pools)
        self.cluster = Cluster(self.conf, user, cluster, connect_timeout, connection_retries,
                               connection_interval, op_timeout)
        self._rbd = rbd.RBD()
        self._fsid: str | None = None

    def close(self) -> None:
        """Drop the cluster connection (the next call reconnects)."""
        self.cluster.close()

    def ioctx(self, pool: str) -> rados.Ioctx:
        if pool not in self._pools:
            raise errors.PoolNotFound(f"pool {pool!r} is not configured")
        return self.cluster.ioctx(pool)

    def fsid(self) -> str:
        if self._fsid is None:
            with translated("get fsid"):
                self._fsid = str(self.cluster.handle().get_fsid())
        return self._fsid

    def pools(self) -> list[str]:
        return list(self._pools)

    def create(self, pool: str, name: str, size: int, order: int | None = None) -> None:
        check_name(name)
        check_size(size)
        order = check_order(order)
        ioctx = self.ioctx(pool)
        with translated(f"create {pool}/{name}"):
            self._rbd.create(ioctx, name, size, order=order, old_format=False)

    def remove(self, pool: str, name: str) -> None:
        ioctx = self.ioctx(pool)
        with translated(f"remove {pool}/{name}"):
            self._rbd.remove(ioctx, name)

    def rename(self, pool: str, src: str, dest: str) -> None:
        check_name(dest)
        ioctx = self.ioctx(pool)
        with translated(f"rename {pool}/{src} to {dest}"):
            self._rbd.rename(ioctx, src, dest)

    def list(self, pool: str) -> list[str]:
        ioctx = self.ioctx(pool)
        with translated(f"list {pool}"):
            return sorted(self._rbd.list(ioctx))

    def clone(self, p_pool: str, p_name: str, p_snapname: str, c_pool: str, c_name: str,
              order: int | None = None) -> None:
        check_name(c_name)
        if order is not None:
            check_order(order)
        p_ioctx, c_ioctx = self.ioctx(p_pool), self.ioctx(c_pool)
        what = f"clone {p_pool}/{p_name}@{p_snapname} to {c_pool}/{c_name}"
        try:
            with translated(what):
                self._rbd.clone(p_ioctx, p_name, p_snapname, c_ioctx, c_name, order=order)
        except (errors.InvalidArgument, errors.ImageNotFound) as exc:
            raise self._why_no_clone(p_pool, p_name, p_snapname, exc) from None

    def _why_no_clone(self, pool: str, name: str, snap: str, exc: errors.Error) -> errors.Error:
        """librbd says EINVAL/ENOENT for several causes: name the snapshot's when it is one."""
        try:
            with self.open(pool, name, read_only=True) as parent:
                if snap not in {s.name for s in parent.list_snaps()}:
                    return errors.SnapshotNotFound(f"no snapshot {pool}/{name}@{snap}")
                if not parent.is_protected_snap(snap):
                    return errors.SnapshotNotProtected(f"{pool}/{name}@{snap} is not protected")
        except errors.ImageNotFound:
            pass
        return exc

    def open(self, pool: str, name: str, snapshot: str | None = None,
             read_only: bool = False) -> RbdImage:
        return RbdImage(self, pool, name, snapshot, read_only)

    def import_from(self, pool: str, name: str, src: Path | str | BinaryIO, fmt: str = "raw",
                    order: int | None = None) -> None:
        """Raw files and streams are copied in by librbd writes, skipping zero runs;
        qcow2 goes through ``qemu-img convert`` straight into the image (qemu-block-extra)."""
        check_name(name)
        order = check_order(order)
        if fmt not in ("raw", "qcow2"):
            raise errors.InvalidArgument(f"cannot import format {fmt!r}")
        size = 0
        if isinstance(src, str | Path):
            if fmt == "qcow2":
                hdr = qemuimg.read_qcow2_header(Path(src))
                if hdr.backing_file or hdr.external_data or hdr.data_file:
                    raise errors.UnsafeLayer(f"{src} refers to other files; refusing it")
                size = hdr.size
            else:
                size = Path(src).stat().st_size
        elif fmt != "raw":
            raise errors.InvalidArgument("streams are imported as raw only")
        self.create(pool, name, rbd_io.pad(size), order)
        try:
            with self.open(pool, name) as img:
                if isinstance(src, str | Path) and fmt == "qcow2":
                    rbd_io.convert_in(Path(src), fmt, self.qemu_opts(pool, name), img.rbd)
                elif isinstance(src, str | Path):
                    rbd_io.import_file(img.rbd, Path(src))
                else:
                    rbd_io.import_stream(img.rbd, src)
        except BaseException:
            try:
                self.remove(pool, name)
            except errors.Error:
                pass
            raise

    def qemu_opts(self, pool: str, name: str, snapshot: str | None = None) -> dict[str, object]:
        """QEMU's rbd protocol options for an image (qemu-img and -blockdev alike)."""
        opts: dict[str, object] = {"driver": "rbd", "pool": pool, "image": name,
                                   "conf": str(self.conf), "user": self.user}
        if snapshot is not None:
            opts["snapshot"] = snapshot
        return opts


__all__ = ["Cluster", "ClusterUnavailable", "RbdEngine"]
