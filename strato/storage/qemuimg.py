"""Thin wrapper around the ``qemu-img`` binary, plus a qcow2 header reader.

Every call names the format of every file (``-f``/``-F``): probing a raw layer whose
guest-written content looks like qcow2 would let a guest point us at host files.
Children get PR_SET_PDEATHSIG (via setpriv) so a SIGKILLed engine process never leaves
a qemu-img writing behind the back of the repair that runs on the next open.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import crash, errors

QEMU_IMG = os.environ.get("STRATO_QEMU_IMG", "qemu-img")
QCOW2_MAGIC = b"QFI\xfb"
_EXT_BACKING_FORMAT = 0xE2792ACA
_EXT_DATA_FILE = 0x44415441
_INCOMPAT_DATA_FILE = 1 << 2
# setpriv sets PR_SET_PDEATHSIG and execs the command: no preexec_fn (unsafe with threads)
_SETPRIV = shutil.which("setpriv")

# Lock and intent fds held by this process.  Children inherit them, so an operation's
# image lock and intent stay held until its qemu-img is gone too: repair after a crash
# never races a dying child still writing a layer.  _FDS_LOCK keeps a held fd from being
# closed (and its number reused) while a child is being forked.
HELD_FDS: set[int] = set()
_FDS_LOCK = threading.Lock()


def hold_fd(fd: int) -> None:
    with _FDS_LOCK:
        HELD_FDS.add(fd)


def close_held_fd(fd: int) -> None:
    with _FDS_LOCK:
        HELD_FDS.discard(fd)
        os.close(fd)


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a helper that dies with us and inherits our held lock fds."""
    argv = [_SETPRIV, "--pdeathsig", "KILL", *cmd] if _SETPRIV else cmd
    with _FDS_LOCK:
        return subprocess.Popen(argv, pass_fds=tuple(HELD_FDS), **kwargs)


def run(*args: str) -> str:
    """Run ``qemu-img args``; map its failures onto block store errors."""
    cmd = [QEMU_IMG, *args]
    delay = crash.during(args[0])
    if delay is not None:  # tests only: die while this qemu-img is at work
        spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        crash.die()
    try:
        proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as exc:  # no setpriv fallback reaches here without qemu-img
        raise errors.FunctionNotSupported(f"{QEMU_IMG} not installed") from exc
    out, err = proc.communicate()
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip()
        if proc.returncode == 127 and "failed to execute" in msg:
            raise errors.FunctionNotSupported(f"{QEMU_IMG} not installed: {msg}")
        if "lock" in msg.lower() and "get" in msg.lower():
            raise errors.ImageBusy(f"layer in use (by QEMU?): {msg}")
        if "No space left" in msg:
            raise errors.NoSpace(msg)
        raise errors.OSError(f"{' '.join(cmd)} failed ({proc.returncode}): {msg}")
    return out.decode(errors="replace")


_QEMU_LOCK_START, _QEMU_LOCK_LEN = 100, 200  # QEMU's permission lock bytes
_FLOCK = "hhqqi4x"


def in_use(path: Path) -> bool:
    """Whether a QEMU process (or qemu-img) has the file open, from its OFD byte locks.

    QEMU takes shared OFD locks on bytes 100-299 for the permissions it holds; asking
    whether a write lock over them would conflict reveals any opener, without taking
    anything.  Our own direct I/O on a raw top checks this so it never writes behind a
    running guest's back.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _QEMU_LOCK_START,
                            _QEMU_LOCK_LEN, 0)
        reply = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, query)
        return struct.unpack(_FLOCK, reply)[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def create_raw(path: Path, size: int) -> None:
    """A sparse raw file: no qemu-img needed, just a hole of the right size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def create_overlay(path: Path, backing: Path, backing_fmt: str, size: int) -> None:
    """A qcow2 overlay with an absolute backing path and an explicit backing format."""
    run("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536",
        "-b", str(backing), "-F", backing_fmt, str(path), str(size))


def info(path: Path, fmt: str) -> dict[str, Any]:
    return json.loads(run("info", "-U", "--output=json", "-f", fmt, str(path)))


def image_opts(chain: list[tuple[Path, str]], read_only: bool = True) -> dict[str, Any]:
    """Nested -blockdev/--image-opts options for a chain given top first."""
    node: dict[str, Any] | None = None
    for path, fmt in reversed(chain):
        cur: dict[str, Any] = {
            "driver": fmt, "file": {"driver": "file", "filename": str(path)},
        }
        if fmt == "qcow2":
            cur["backing"] = node
        node = cur
    assert node is not None
    if read_only:
        node["read-only"] = True
    return node


def flatten_opts(opts: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted key=value form of nested options (for --image-opts)."""
    out: list[str] = []
    for key, val in opts.items():
        name = f"{prefix}{key}"
        if isinstance(val, dict):
            out.extend(flatten_opts(val, name + "."))
        elif val is None:
            out.append(f"{name}=null")
        elif isinstance(val, bool):
            out.append(f"{name}={'on' if val else 'off'}")
        else:
            out.append(f"{name}={str(val).replace(',', ',,')}")
    return out


def json_opts(opts: dict[str, Any]) -> str:
    return "json:" + json.dumps(opts)


@dataclass(frozen=True)
class Qcow2Header:
    version: int
    size: int
    backing_file: str | None
    backing_format: str | None
    data_file: str | None
    external_data: bool


def read_qcow2_header(path: Path) -> Qcow2Header:
    """Parse just enough of a qcow2 header to see what the file points at."""
    with open(path, "rb") as f:
        head = f.read(65536)
    if head[:4] != QCOW2_MAGIC:
        raise errors.UnsafeLayer(f"{path} is not qcow2")
    version, bf_off, bf_size, _cbits, size = struct.unpack(">IQIIQ", head[4:32])
    incompat = 0
    hdr_len = 72
    if version >= 3:
        incompat = struct.unpack(">Q", head[72:80])[0]
        hdr_len = struct.unpack(">I", head[100:104])[0]
    backing = head[bf_off:bf_off + bf_size].decode() if bf_off else None
    bfmt = data_file = None
    pos = hdr_len
    while pos + 8 <= len(head):
        etype, elen = struct.unpack(">II", head[pos:pos + 8])
        if etype == 0:
            break
        body = head[pos + 8:pos + 8 + elen]
        if etype == _EXT_BACKING_FORMAT:
            bfmt = body.decode()
        elif etype == _EXT_DATA_FILE:
            data_file = body.decode()
        pos += 8 + ((elen + 7) & ~7)
    return Qcow2Header(version, size, backing, bfmt, data_file,
                       bool(incompat & _INCOMPAT_DATA_FILE))
