"""Merging layers that a running QEMU has open (local engine).

A layer file a QEMU opened is its own: qemu-img may not rewrite it behind its back (and
QEMU's locks refuse it).  So a QEMU that opens store images offers the store a QMP
monitor of its own, on a chardev named ``MONITOR_ID`` (``monitor_args``).  The store
finds the QEMU holding a layer by its open files and has it do the merge as a block job:

* ``commit``: the active top into the layer below; QEMU pivots and writes there;
* ``stream``: a layer's data up into the layer above it (the view does not change),
  whose backing pointer then skips it.

Jobs have fixed ids (``job_id``), so a store that died mid-job finds its job again and
waits for it; a job that failed is cancelled and reported as ``MergeFailed``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strato.qmp import Monitor, QMPError

from . import crash, errors
from .locking import FileLock

LOG = logging.getLogger(__name__)

MONITOR_ID = "strato-store"
_CHARDEV_PREFIX = f"socket,id={MONITOR_ID},path="
#: a job whose progress does not move for this long is cancelled
STALL_TIMEOUT = 120.0


class MergeFailed(errors.IOError):
    """QEMU's block job failed or was cancelled; the chain is as it was."""


def monitor_args(path: Path, daemon: bool = False) -> list[str]:
    """The options that give the store its monitor in ``qemu-system-*`` (or, with
    ``daemon``, ``qemu-storage-daemon``)."""
    chardev = f"{_CHARDEV_PREFIX}{str(path).replace(',', ',,')},server=on,wait=off"
    if daemon:
        return ["--chardev", chardev, "--monitor", f"chardev={MONITOR_ID}"]
    return ["-chardev", chardev, "-mon", f"chardev={MONITOR_ID},mode=control"]


@dataclass(frozen=True)
class Holder:
    """A process with one of the layer files open; ``socket`` is its store monitor."""

    pid: int
    socket: Path | None


def holders(paths: Iterable[Path]) -> list[Holder]:
    """Every process (QEMU, qemu-img...) that has one of ``paths`` open."""
    wanted = {str(p) for p in paths}
    found: list[Holder] = []
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            hit = False
            for fd in fds:
                try:
                    if os.readlink(fd.path) in wanted:
                        hit = True
                        break
                except OSError:
                    continue
        if hit:
            found.append(Holder(int(entry.name), _monitor_of(int(entry.name))))
    return found


def _monitor_of(pid: int) -> Path | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in argv:
        text = arg.decode(errors="replace")
        if text.startswith(_CHARDEV_PREFIX):
            rest = text[len(_CHARDEV_PREFIX):]
            path, i = [], 0
            while i < len(rest):  # QEMU's option syntax: ",," is a comma
                if rest[i] == ",":
                    if rest[i + 1:i + 2] == ",":
                        path.append(",")
                        i += 2
                        continue
                    break
                path.append(rest[i])
                i += 1
            return Path("".join(path))
    return None


def holder_of(paths: Iterable[Path]) -> Holder | None:
    """The one process that can merge these layers: None when nothing holds them,
    ImageBusy when a holder cannot be asked (no store monitor: qemu-img, an older QEMU)."""
    found = holders(paths)
    if not found:
        return None
    for h in found:
        if h.socket is not None:
            return h
    raise errors.ImageBusy(f"layers held by pid {found[0].pid}, which offers no store monitor")


class Session:
    """A connection to a holder's store monitor (one client at a time per QEMU, so the
    engine serialises sessions with ``lock``)."""

    def __init__(self, holder: Holder, timeout: float = 10.0) -> None:
        assert holder.socket is not None
        self.holder = holder
        self.mon = Monitor(holder.socket, timeout)

    def __enter__(self) -> Session:
        try:
            self.mon.connect()
        except QMPError as exc:
            raise errors.ImageBusy(f"store monitor of pid {self.holder.pid}: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self.mon.close()

    def execute(self, command: str, args: dict[str, Any] | None = None) -> Any:
        try:
            return self.mon.execute(command, args)
        except QMPError as exc:
            raise MergeFailed(str(exc)) from exc

    # --- what QEMU has open ------------------------------------------------------------
    def node_of(self, path: Path) -> str | None:
        """The format node (qcow2/raw, not the file protocol node) reading ``path``."""
        for node in self.execute("query-named-block-nodes", {"flat": True}):
            if node.get("file") == str(path) and node.get("drv") != "file":
                return str(node["node-name"])
        return None

    def job(self, job_id: str) -> dict[str, Any] | None:
        return next((j for j in self.execute("query-jobs") if j.get("id") == job_id), None)

    # --- block jobs --------------------------------------------------------------------
    def commit(self, job_id: str, top: Path, base: Path,
               before_pivot: Callable[[], None], on_failure: Callable[[], None]) -> None:
        """Active commit of ``top`` into ``base`` (or wait for the one running):
        ``before_pivot`` runs (to record it) right before QEMU is told to switch the
        drive to ``base``, ``on_failure`` when the job failed, before it is dismissed;
        so a job that is gone was either switched or its failure recorded.  Once
        switched, the old top's node is closed."""
        if self.job(job_id) is None:
            top_node, base_node = self.node_of(top), self.node_of(base)
            if top_node is None or base_node is None:
                raise MergeFailed(f"pid {self.holder.pid} does not have {top} over {base}")
            self.execute("block-commit", {"job-id": job_id, "device": top_node,
                                          "base-node": base_node, "auto-dismiss": False})
            crash.point("remove_snap", "job-started")
        job = self._wait(job_id, {"ready", "concluded"})
        if job["status"] == "ready":
            before_pivot()
            self.execute("block-job-complete", {"device": job_id})
            job = self._wait(job_id, {"concluded"})
        if job.get("error"):
            on_failure()
        else:
            crash.point("remove_snap", "job-concluded")
        self._conclude(job)
        self.drop_node(top)

    def stream(self, job_id: str, path: Path, base: Path | None, dropped: Path) -> None:
        """Copy into ``path`` what it reads from layers above ``base`` (None: all), or
        wait for the job doing it; then close the node of ``dropped``, the layer it
        made unneeded."""
        if self.job(job_id) is None:
            node = self.node_of(path)
            if node is None:
                raise MergeFailed(f"pid {self.holder.pid} does not have {path} open")
            args: dict[str, Any] = {"job-id": job_id, "device": node, "auto-dismiss": False}
            if base is not None:
                base_node = self.node_of(base)
                if base_node is None:
                    raise MergeFailed(f"pid {self.holder.pid} does not have {base} open")
                args["base-node"] = base_node
            self.execute("block-stream", args)
            crash.point("remove_snap", "job-started")
        self.settle(job_id)
        self.drop_node(dropped)

    def settle(self, job_id: str) -> None:
        """Wait for the job (if there is one) to end and dismiss it; QEMU 7.2 must not
        be asked about its nodes while a finished stream job is still listed."""
        if self.job(job_id) is not None:
            job = self._wait(job_id, {"concluded"})
            if not job.get("error"):
                crash.point("remove_snap", "job-concluded")
            self._conclude(job)

    def _wait(self, job_id: str, statuses: set[str]) -> dict[str, Any]:
        """Follow the job's progress until it reaches one of ``statuses``; a job that
        stops making progress is cancelled."""
        last, moved = -1, time.monotonic()
        while True:
            job = self.job(job_id)
            if job is None:
                raise MergeFailed(f"block job {job_id} vanished")
            if job["status"] in statuses:
                return job
            progress = int(job.get("current-progress", 0))
            if progress != last:
                last, moved = progress, time.monotonic()
            elif time.monotonic() - moved > STALL_TIMEOUT:
                self.cancel(job_id)
                raise MergeFailed(f"block job {job_id} made no progress for {STALL_TIMEOUT}s")
            time.sleep(0.02)

    def _conclude(self, job: dict[str, Any]) -> None:
        self.execute("job-dismiss", {"id": job["id"]})
        if job.get("error"):
            raise MergeFailed(f"block job {job['id']}: {job['error']}")

    def cancel(self, job_id: str) -> None:
        """Cancel (an active commit then stays on its top) and dismiss, quietly."""
        try:
            self.execute("block-job-cancel", {"device": job_id, "force": True})
            self._wait(job_id, {"concluded"})
            self.execute("job-dismiss", {"id": job_id})
        except errors.Error as exc:
            LOG.warning("cancelling block job %s: %s", job_id, exc)

    def drop_node(self, path: Path) -> None:
        """Close the node of a layer the chain no longer uses, if the monitor owns it
        (a node given to QEMU at start or hot-plug stays open until deleted)."""
        try:
            node = self.node_of(path)
            if node is not None:
                self.mon.execute("blockdev-del", {"node-name": node})
        except (QMPError, errors.Error) as exc:
            LOG.debug("blockdev-del of %s: %s", path, exc)


@contextmanager
def session(holder: Holder, locks_dir: Path) -> Iterator[Session]:
    """A session with the holder's monitor, serialised across the store's processes."""
    with FileLock(locks_dir / f"qemu-{holder.pid}.lock", timeout=60.0), Session(holder) as s:
        yield s


def job_id(layer_id: str) -> str:
    """The block job id of a merge that removes ``layer_id`` (stable across restarts)."""
    return f"strato-merge-{layer_id[:16]}"
