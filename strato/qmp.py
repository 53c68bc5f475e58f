"""A synchronous QMP connection built on ``qemu.qmp``'s asyncio client.

Shared by the two drivers that talk to QEMU: the hypervisor (``strato.virt``) and the
block store, which merges layers under a running guest (``strato.storage.online``).
Driver calls come from worker threads (and could come from inside an event loop), so
every connection runs on one private event-loop thread and callers block on futures:
this works from any thread, with or without a running loop of its own.  QEMU's QMP
socket serves one client at a time; connections are short-lived (one per driver
operation) and the driver serialises them per instance.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecuteError, QMPClient


class QMPError(Exception):
    """A QMP command failed (``klass`` is QEMU's error class) or QMP is unreachable."""

    def __init__(self, message: str, klass: str | None = None) -> None:
        super().__init__(message)
        self.klass = klass

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="strato-qmp", daemon=True).start()
            _loop = loop
        return _loop


def _run(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), _event_loop())
    try:
        return fut.result(timeout + 1)
    except TimeoutError as exc:
        fut.cancel()
        raise QMPError(f"QMP timed out after {timeout}s") from exc


class Monitor:
    """One QMP session; events are buffered from connect on, for ``wait_event``.

    ``error`` is the class raised on failure (a driver's own subclass of QMPError)."""

    error: type[QMPError] = QMPError

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._client = QMPClient(f"strato:{Path(path).parent.name}")
        self._events = EventListener()
        self._client.register_listener(self._events)
        self._connected = False

    def _own(self, exc: QMPError) -> QMPError:
        return exc if isinstance(exc, self.error) else self.error(str(exc), exc.klass)

    def connect(self) -> Monitor:
        try:
            _run(self._client.connect(self.path), self.timeout)
        except QMPError as exc:
            raise self._own(exc) from exc
        except Exception as exc:  # ConnectError, OSError...
            raise self.error(f"cannot connect to QMP at {self.path}: {exc}") from exc
        self._connected = True
        return self

    def close(self) -> None:
        if self._connected:
            self._connected = False
            try:
                _run(self._client.disconnect(), self.timeout)
            except Exception:  # noqa: BLE001 - closing a dead connection is fine
                pass

    def __enter__(self) -> Monitor:
        if not self._connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """Run a command; QMPError carries QEMU's error description."""
        try:
            return _run(self._client.execute(command, arguments),
                        self.timeout if timeout is None else timeout)
        except ExecuteError as exc:
            raise self.error(f"{command}: {exc}", exc.error_class) from exc
        except QMPError as exc:
            raise self._own(exc) from exc
        except Exception as exc:  # disconnects, protocol errors
            raise self.error(f"{command}: {type(exc).__name__}: {exc}") from exc

    def wait_event(self, names: Iterable[str], timeout: float,
                   match: dict[str, Any] | None = None) -> dict[str, Any]:
        """The next buffered or arriving event among ``names`` whose data has ``match``."""
        wanted = set(names)
        deadline = time.monotonic() + timeout

        async def pull() -> dict[str, Any]:
            while True:
                ev = await self._events.get()
                data: Any = ev.get("data") or {}
                if ev["event"] in wanted and all(
                    data.get(k) == v for k, v in (match or {}).items()
                ):
                    return dict(ev)

        left = max(deadline - time.monotonic(), 0.01)
        try:
            return _run(pull(), left)
        except QMPError as exc:
            raise self.error(f"no {sorted(wanted)} event within {timeout}s") from exc
