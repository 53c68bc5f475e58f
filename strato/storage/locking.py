"""fcntl.flock locks: one per image (by immutable id) and one for the store's namespace.

flock is released by the kernel when a process dies, so a SIGKILLed operation never
leaves a lock behind; lock files may be unlinked (image removal), so an acquirer checks
that the file it locked is still the one at the path and retries otherwise.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .errors import ImageBusy
from .qemuimg import close_held_fd, hold_fd


class FileLock:
    """A shared or exclusive flock on ``path``; re-entrant per handle, not per process."""

    def __init__(self, path: Path, exclusive: bool = True, blocking: bool = True,
                 timeout: float | None = None) -> None:
        self.path = path
        self.exclusive = exclusive
        self.blocking = blocking
        self.timeout = timeout
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        if self._fd is not None:
            self._depth += 1
            return
        mode = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        polling = not self.blocking or self.timeout is not None
        if polling:
            mode |= fcntl.LOCK_NB
        deadline = time.monotonic() + (self.timeout or 0.0)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError as exc:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                raise ImageBusy(f"{self.path.name} is locked by another operation") from exc
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                hold_fd(fd)
                self._fd = fd
                self._depth = 1
                return
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth == 0:
            close_held_fd(self._fd)
            self._fd = None

    def unlink(self) -> None:
        """Remove the lock file while holding it (waiters retry and find no image)."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
