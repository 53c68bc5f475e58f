"""Network namespaces: ``ip netns`` for their life cycle, ``setns`` for sockets and taps.

Python 3.11 has no ``os.setns``, so :func:`run_in` calls libc's in a short-lived thread
of its own: a namespace switch is per thread, and a socket or tap opened there keeps
that namespace after the thread is gone.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import struct
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


class CommandError(RuntimeError):
    """A data plane command failed; the message holds its argv and stderr."""


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    """Run a command, its stdout; a failure raises CommandError with stderr."""
    res = subprocess.run(list(argv), input=input, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise CommandError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    return run(["ip", *(("-n", ns) if ns else ()), *args], check=check)


def ip_json(*args: str, ns: str | None = None) -> list[dict[str, Any]]:
    out = run(["ip", "-j", *(("-n", ns) if ns else ()), *args]).strip()
    return json.loads(out) if out else []


def exec_in(ns: str, argv: Sequence[str], *, input: str | None = None,
            check: bool = True) -> str:
    """Run a program inside ``ns`` (``ip netns exec``)."""
    return run(["ip", "netns", "exec", ns, *argv], input=input, check=check)


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def exists(ns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def create(ns: str) -> bool:
    """Create ``ns`` with its loopback up; False when it already existed."""
    if exists(ns):
        return False
    run(["ip", "netns", "add", ns])
    ip("link", "set", "lo", "up", ns=ns)
    return True


def delete(ns: str) -> None:
    if exists(ns):
        run(["ip", "netns", "delete", ns])


def run_in(ns: str, fn: Callable[[], T]) -> T:
    """``fn()`` called in a fresh thread that has entered ``ns``; its result or error."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def open_tap(ns: str, name: str) -> int:
    """A new fd on the existing persistent tap ``name`` in ``ns`` (TAP, no PI, vnet hdr)."""

    def attach() -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
        except BaseException:
            os.close(fd)
            raise
        return fd

    return run_in(ns, attach)
