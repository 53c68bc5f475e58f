"""Thin wrapper around the ``qemu-img`` binary, plus a qcow2 header reader.

Every call names the format of every file (``-f``/``-F``): probing a raw layer whose
guest-written content looks like qcow2 would let a guest point us at host files.
Children get PR_SET_PDEATHSIG so a SIGKILLed engine process never leaves a qemu-img
writing behind the back of the repair that runs on the next open.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors

QEMU_IMG = os.environ.get("STRATO_QEMU_IMG", "qemu-img")
QCOW2_MAGIC = b"QFI\xfb"
_EXT_BACKING_FORMAT = 0xE2792ACA
_EXT_DATA_FILE = 0x44415441
_INCOMPAT_DATA_FILE = 1 << 2
_PR_SET_PDEATHSIG = 1

# Lock and intent fds held by this process.  qemu-img children inherit them, so an
# operation's image lock and intent stay held until its qemu-img is gone too: repair
# after a crash can never race a dying child still writing a layer.
HELD_FDS: set[int] = set()


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:  # pragma: no cover - non-Linux
        pass


def run(*args: str, input_: bytes | None = None) -> str:
    """Run ``qemu-img args``; map its failures onto block store errors."""
    cmd = [QEMU_IMG, *args]
    try:
        proc = subprocess.run(
            cmd, input=input_, capture_output=True, preexec_fn=_die_with_parent, check=False,
            pass_fds=tuple(HELD_FDS),
        )
    except FileNotFoundError as exc:
        raise errors.FunctionNotSupported(f"{QEMU_IMG} not installed") from exc
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip()
        if "lock" in msg.lower() and "get" in msg.lower():
            raise errors.ImageBusy(f"layer in use (by QEMU?): {msg}")
        raise errors.OSError(f"{' '.join(cmd)} failed ({proc.returncode}): {msg}")
    return proc.stdout.decode(errors="replace")


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
