"""Crash-safe metadata: atomic JSON files and an intent journal for multi-step operations.

An operation that creates or rewrites layer files first records its intent (which image,
which new layer ids, what it is about to do) in ``journal/<image-id>.<op-id>.json`` and
holds an flock on that record while it runs.  A record whose lock can be taken belongs to
a dead process: the next open rolls it forward or back.  Layer files named in a live
record are never garbage-collected.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .qemuimg import close_held_fd, hold_fd


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write temp + fsync + rename + fsync(dir): readers see the old or the new file."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Intent:
    """A journal record held (flocked) by the running operation."""

    def __init__(self, path: Path, fd: int, record: dict[str, Any], keep_on_error: bool = False,
                 cleanup: Sequence[Path] = ()) -> None:
        self.path = path
        self._fd = fd
        self.record = record
        self.keep_on_error = keep_on_error
        self.cleanup = list(cleanup)
        hold_fd(fd)

    def finish(self) -> None:
        """Drop the record: unlink while still locked, then release."""
        if self._fd < 0:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.release()

    def release(self) -> None:
        """Let go of the record without settling it (another holder will)."""
        if self._fd >= 0:
            close_held_fd(self._fd)
            self._fd = -1

    def __enter__(self) -> Intent:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Done: drop the record.  Failed: keep it (stale) if a repair must roll forward;
        otherwise delete the files the operation was creating and drop it."""
        if exc_type is not None and self.keep_on_error:
            self.release()
            return
        if exc_type is not None:
            for path in self.cleanup:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self.finish()


class Journal:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def begin(self, image_id: str, record: dict[str, Any], keep_on_error: bool = False,
              cleanup: Sequence[Path] = ()) -> Intent:
        """Publish a locked intent record; locked before it becomes visible.

        ``keep_on_error``: the operation changes existing layers, so a failure leaves the
        record for repair to roll forward.  ``cleanup``: files to delete on failure.
        """
        op_id = uuid.uuid4().hex
        record = dict(record, image_id=image_id, op_id=op_id)
        final = self.dir / f"{image_id}.{op_id}.json"
        tmp = self.dir / f".tmp-{op_id}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps(record, sort_keys=True).encode())
        os.fsync(fd)
        os.rename(tmp, final)
        fsync_dir(self.dir)
        return Intent(final, fd, record, keep_on_error, cleanup)

    def records(self) -> list[dict[str, Any]]:
        """Every record, live or stale (for the garbage collector's keep-list)."""
        out = []
        for path in self.dir.glob("*.json"):
            try:
                out.append(json.loads(path.read_bytes() or b"{}"))
            except (FileNotFoundError, ValueError):
                continue
        return out

    def stale(self, image_id: str | None = None) -> Iterator[Intent]:
        """Records whose owner is dead, each handed over locked to the caller."""
        pattern = f"{image_id}.*.json" if image_id else "*.json"
        for path in sorted(self.dir.glob(pattern)):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise FileNotFoundError(path)
                data = os.pread(fd, 1 << 20, 0)
                record = json.loads(data) if data else {}
            except (BlockingIOError, FileNotFoundError, ValueError):
                os.close(fd)
                continue
            yield Intent(path, fd, record)
