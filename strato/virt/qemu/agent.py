"""QEMU guest agent client over the host side of the ``org.qemu.guest_agent.0`` port.

The agent speaks QMP-shaped JSON but sends no greeting, so ``qemu.qmp`` cannot drive
it.  Every connection starts with ``guest-sync-delimited``: the agent answers with a
0xFF byte and our random id, which discards whatever stale requests or replies an
earlier client left in the channel.  While the guest is frozen the agent refuses all
but ping/sync/``guest-fsfreeze-status``/``guest-fsfreeze-thaw``.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AgentError, AgentUnavailable

READ_CHUNK = 48 * 1024  # guest-file-read count; the agent caps a read at 48 MiB


@dataclass(frozen=True)
class ExecResult:
    """Outcome of ``guest-exec``: exit code (None if killed by a signal) and output."""

    exitcode: int | None
    stdout: bytes
    stderr: bytes
    signal: int | None = None


class GuestAgent:
    """A synchronous connection to one guest's agent; use as a context manager."""

    def __init__(self, path: Path | str, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    # --- connection -------------------------------------------------------------------
    def connect(self, sync_timeout: float | None = None) -> GuestAgent:
        """Open the socket and synchronise; AgentUnavailable if the agent is silent."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise AgentUnavailable(f"cannot connect to {self.path}: {exc}") from exc
        self._sock = sock
        try:
            self._sync(self.timeout if sync_timeout is None else sync_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def __enter__(self) -> GuestAgent:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sync(self, timeout: float) -> None:
        sync_id = random.randrange(1, 2**31)
        assert self._sock is not None
        try:
            # 0xFF makes the agent's JSON parser drop any half-written request
            self._sock.sendall(b"\xff" + _encode("guest-sync-delimited", {"id": sync_id}))
            deadline = time.monotonic() + timeout
            while True:  # skip to the delimiter, then to the reply carrying our id
                i = self._buf.find(b"\xff")
                if i >= 0:
                    self._buf = self._buf[i + 1:]
                    break
                self._buf = b""
                self._recv(deadline)
            while True:
                msg = self._read_message(deadline)
                if msg.get("return") == sync_id:
                    return
        except (TimeoutError, OSError) as exc:
            raise AgentUnavailable(f"guest agent at {self.path} did not answer: {exc}") from exc

    def _recv(self, deadline: float) -> None:
        assert self._sock is not None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("guest agent timed out")
        self._sock.settimeout(left)
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionResetError("guest agent channel closed")
        self._buf += data

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while True:
            line, sep, rest = self._buf.partition(b"\n")
            if sep:
                self._buf = rest
                line = line.replace(b"\xff", b"").strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue  # garbage from an interrupted earlier exchange
                if isinstance(msg, dict):
                    return msg
                continue
            self._recv(deadline)

    # --- commands ---------------------------------------------------------------------
    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """Run one agent command and return its ``return`` value (AgentError on error)."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            self._sock.sendall(_encode(command, arguments))
            msg = self._read_message(deadline)
        except (TimeoutError, OSError) as exc:
            self.close()  # the reply may still come: never reuse this stream
            raise AgentUnavailable(f"{command}: guest agent did not answer: {exc}") from exc
        if "error" in msg:
            err = msg["error"]
            raise AgentError(command, err.get("class", "GenericError"), err.get("desc", ""))
        return msg.get("return")

    def ping(self) -> None:
        self.execute("guest-ping")

    def info(self) -> dict[str, Any]:
        return dict(self.execute("guest-info"))

    # freezing
    def fsfreeze_freeze(self) -> int:
        """Freeze every guest filesystem; returns how many were frozen."""
        return int(self.execute("guest-fsfreeze-freeze", timeout=max(self.timeout, 30.0)))

    def fsfreeze_status(self) -> str:
        """``thawed`` or ``frozen``."""
        return str(self.execute("guest-fsfreeze-status"))

    def fsfreeze_thaw(self) -> int:
        return int(self.execute("guest-fsfreeze-thaw", timeout=max(self.timeout, 30.0)))

    # processes
    def exec(self, path: str, args: list[str] | None = None, input: bytes | None = None,
             timeout: float = 30.0, env: list[str] | None = None) -> ExecResult:
        """Run a program in the guest, wait for it and return its output."""
        arguments: dict[str, Any] = {"path": path, "arg": list(args or []),
                                     "capture-output": True}
        if input is not None:
            arguments["input-data"] = base64.b64encode(input).decode()
        if env is not None:
            arguments["env"] = env
        pid = self.execute("guest-exec", arguments)["pid"]
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            st = self.execute("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                return ExecResult(
                    exitcode=st.get("exitcode"), signal=st.get("signal"),
                    stdout=base64.b64decode(st.get("out-data", "")),
                    stderr=base64.b64decode(st.get("err-data", "")),
                )
            if time.monotonic() > deadline:
                raise AgentError("guest-exec", "Timeout", f"{path} still running after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def sh(self, script: str, timeout: float = 30.0) -> ExecResult:
        """Run a shell snippet (``/bin/sh -c``)."""
        return self.exec("/bin/sh", ["-c", script], timeout=timeout)

    # files
    def read_file(self, path: str) -> bytes:
        handle = self.execute("guest-file-open", {"path": path, "mode": "r"})
        try:
            out = bytearray()
            while True:
                r = self.execute("guest-file-read", {"handle": handle, "count": READ_CHUNK})
                out += base64.b64decode(r.get("buf-b64", ""))
                if r.get("eof") or not r.get("count"):
                    return bytes(out)
        finally:
            self.execute("guest-file-close", {"handle": handle})

    def write_file(self, path: str, data: bytes, mode: str = "w") -> None:
        """Write ``data`` to a guest file (``mode`` as fopen: ``w`` truncates, ``a`` appends)."""
        handle = self.execute("guest-file-open", {"path": path, "mode": mode})
        try:
            for off in range(0, max(len(data), 1), READ_CHUNK):
                chunk = data[off:off + READ_CHUNK]
                if chunk:
                    self.execute("guest-file-write",
                                 {"handle": handle, "buf-b64": base64.b64encode(chunk).decode()})
            self.execute("guest-file-flush", {"handle": handle})
        finally:
            self.execute("guest-file-close", {"handle": handle})

    def shutdown(self, mode: str = "powerdown") -> None:
        """``guest-shutdown``: powerdown, halt or reboot.  The agent may not reply."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        # on success the agent sends nothing back; an error comes back quickly
        self._sock.sendall(_encode("guest-shutdown", {"mode": mode}))
        try:
            msg = self._read_message(time.monotonic() + 1.0)
        except (TimeoutError, OSError):
            return
        if "error" in msg:
            err = msg["error"]
            raise AgentError("guest-shutdown", err.get("class", "GenericError"),
                             err.get("desc", ""))


def _encode(command: str, arguments: dict[str, Any] | None) -> bytes:
    msg: dict[str, Any] = {"execute": command}
    if arguments:
        msg["arguments"] = arguments
    return json.dumps(msg).encode() + b"\n"


def wait_for_agent(path: Path | str, timeout: float = 60.0, interval: float = 0.5) -> None:
    """Block until the agent answers a ping (it starts a little after the guest boots)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with GuestAgent(path, timeout=min(2.0, max(deadline - time.monotonic(), 0.1))) as ga:
                ga.ping()
                return
        except AgentUnavailable as exc:
            last = exc
            time.sleep(interval)
    raise AgentUnavailable(f"guest agent at {path} not ready after {timeout}s: {last}")
