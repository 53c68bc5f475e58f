"""A bridge set up by hand, for the network bench's baseline (and its own test).

The network bench compares guest-to-guest TCP throughput over strato's network with
the same two QEMU processes on a bridge made by hand: a scratch namespace holding one
Linux bridge and one tap per guest, nothing else (no nftables, no dnsmasq).  Each tap
is opened inside that namespace with the flags strato's data plane uses
(IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) and its descriptor is handed to the running QEMU over
QMP (``getfd`` with SCM_RIGHTS, ``netdev_add``, ``device_add``): a second NIC in each
guest, addressed by hand through the guest agent.

Traffic stays inside that namespace: it has no route and no link to anything else.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from strato.network.linux.netns import open_tap
from strato.virt.qemu.agent import GuestAgent

#: the hand-made network (only ever inside the two guests and the scratch namespace)
HAND_CIDR = "10.253.0.0/24"
PORT = 5001


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class RawQMP:
    """A QMP session on a unix socket that can pass a descriptor (``getfd``)."""

    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                fd: int | None = None) -> Any:
        msg = json.dumps({"execute": command, **({"arguments": arguments} if arguments
                                                 else {})}).encode() + b"\n"
        if fd is None:
            self.sock.sendall(msg)
        else:
            self.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       struct.pack("i", fd))])
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            return reply.get("return")

    def close(self) -> None:
        self.sock.close()


def guest_iface(ga: GuestAgent, mac: str) -> str:
    """The guest's interface with this MAC address (waits for the hot-plug)."""
    script = ("for d in /sys/class/net/*; do [ \"$(cat $d/address)\" = " + mac +
              " ] && echo ${d##*/}; done; true")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        name = ga.sh(script).stdout.decode().strip()
        if name:
            return name
        time.sleep(0.5)
    raise RuntimeError(f"no interface with MAC {mac} in the guest")


class HandBridge:
    """A scratch namespace with a bridge, and a second NIC of each given QEMU on it.

    ``guests`` are (QMP socket, agent socket) pairs of running guests; after
    :meth:`up` guest i has ``addresses[i]`` on that NIC.  :meth:`down` removes the
    NICs and the namespace (always call it: a ``with`` block does)."""

    def __init__(self, guests: list[tuple[Path, Path]]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = f"sbench-{tag}"
        self.guests = guests
        self.taps = [f"hb{tag}{i}" for i in range(len(guests))]
        self.macs = [f"fa:16:3e:b0:{int(tag[:2], 16):02x}:{i + 1:02x}"
                     for i in range(len(guests))]
        self.addresses = [f"10.253.0.{i + 10}" for i in range(len(guests))]
        self.plugged: list[int] = []

    def __enter__(self) -> HandBridge:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        ip("netns", "add", self.ns)
        ip("-n", self.ns, "link", "set", "lo", "up")
        ip("-n", self.ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.ns, "link", "set", "br0", "up")
        for i, (qmp_path, ga_path) in enumerate(self.guests):
            tap = self.taps[i]
            ip("-n", self.ns, "tuntap", "add", tap, "mode", "tap", "vnet_hdr")
            ip("-n", self.ns, "link", "set", tap, "master", "br0", "up")
            fd = open_tap(self.ns, tap)
            qmp = RawQMP(qmp_path)
            try:
                qmp.execute("getfd", {"fdname": "hbfd"}, fd=fd)
                qmp.execute("netdev_add", {"type": "tap", "id": "hbnet", "fd": "hbfd"})
                qmp.execute("device_add", {"driver": "virtio-net-pci", "id": "hbnic",
                                           "netdev": "hbnet", "mac": self.macs[i]})
                self.plugged.append(i)
            finally:
                qmp.close()
                os.close(fd)
            with GuestAgent(ga_path).connect(sync_timeout=10) as ga:
                dev = guest_iface(ga, self.macs[i])
                res = ga.sh(f"ip link set {dev} up && ip addr add "
                            f"{self.addresses[i]}/24 dev {dev}")
                if res.exitcode != 0:
                    raise RuntimeError(f"guest {i}: {res.stderr.decode()}")

    def down(self) -> None:
        for i in self.plugged:
            try:
                qmp = RawQMP(self.guests[i][0], timeout=10)
            except OSError:
                continue  # QEMU gone: its NIC went with it
            try:
                qmp.execute("device_del", {"id": "hbnic"})
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # the guest lets the device go
                    try:
                        qmp.execute("netdev_del", {"id": "hbnet"})
                        break
                    except RuntimeError:
                        time.sleep(0.2)
            except (RuntimeError, OSError):
                pass
            finally:
                qmp.close()
        self.plugged = []
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)


def _listening(ga: GuestAgent, port: int) -> bool:
    """A socket of the guest is in LISTEN (0A) on ``port`` (/proc/net/tcp, tcp6)."""
    text = ga.sh("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true").stdout.decode()
    for line in text.splitlines():
        f = line.split()
        if len(f) > 3 and f[1].endswith(f":{port:04X}") and f[3] == "0A":
            return True
    return False


def tcp_throughput(sender: GuestAgent, receiver: GuestAgent, address: str, mbytes: int,
                   timeout: float = 600.0) -> float:
    """MB/s of one TCP stream from ``sender`` to ``receiver`` (at ``address``): busybox
    ``dd`` from /dev/zero into ``nc``, timed inside the receiving guest from its first
    byte until the sender's close (so the sender's socket buffer is not counted as
    sent), and the byte count checked."""
    receiver.sh(f"pkill -f 'nc -l -p {PORT}' ; true")
    total = mbytes * 1024 * 1024
    # busybox nc half-closes when its stdin ends and exits when the peer half-closes:
    # the receiver's stdin is a fifo this shell keeps open, so only the sender closes
    pid = receiver.execute("guest-exec", {"path": "/bin/sh", "arg": ["-c", (
        "rm -f /tmp/nc-in; mkfifo /tmp/nc-in; exec 3<>/tmp/nc-in; "
        f"nc -l -p {PORT} </tmp/nc-in | {{ dd bs=1 count=1 of=/dev/null 2>/dev/null; "
        "read a _ < /proc/uptime; n=$(wc -c); read b _ < /proc/uptime; "
        "echo \"$a $b $n\"; }")], "capture-output": True})["pid"]
    try:
        # listening on the port before the sender connects: a probe connection would be
        # the one busybox nc -l accepts
        deadline = time.monotonic() + 30
        while not _listening(receiver, PORT):
            st = receiver.execute("guest-exec-status", {"pid": pid})
            if st.get("exited") or time.monotonic() > deadline:
                raise RuntimeError(f"the receiver does not listen: {st}")
            time.sleep(0.1)
        res = sender.sh(f"dd if=/dev/zero bs=65536 count={mbytes * 16} 2>/dev/null "
                        f"| nc {address} {PORT}", timeout=timeout)
        if res.exitcode != 0:
            raise RuntimeError(f"the sender failed: {res.stdout!r} {res.stderr!r}")
        deadline = time.monotonic() + 60
        while True:
            st = receiver.execute("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver did not see the end of the stream")
            time.sleep(0.1)
        out = base64.b64decode(st.get("out-data", "")).decode().split()
        if len(out) != 3 or int(out[2]) != total - 1:
            raise RuntimeError(f"the receiver got {out!r}, not {total} bytes")
        seconds = float(out[1]) - float(out[0])
        return mbytes / max(seconds, 0.01)
    finally:
        receiver.sh(f"pkill -f 'nc -l -p {PORT}' ; true")
