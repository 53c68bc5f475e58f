"""A real QEMU process holding an image open, as a running guest does.

``qemu-storage-daemon`` opens the image's ``blockdev_options`` writable, exports it over
NBD on a unix socket (the tests read and write through it like a guest would) and offers
the block store its monitor (``strato.storage.online.monitor_args``).  Live snapshots go
through the same monitor, the way the hypervisor sends them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import TracebackType

from strato.qmp import Monitor
from strato.storage import Engine
from strato.storage.online import monitor_args


class Holder:
    def __init__(self, engine: Engine, pool: str, name: str, workdir: Path) -> None:
        self.engine, self.pool, self.name = engine, pool, name
        workdir.mkdir(parents=True, exist_ok=True)
        self.nbd = workdir / "nbd.sock"
        self.qmp = workdir / "store.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        with engine.open(pool, name) as img:
            #: what the image must read as: the content at open plus every ``fill``
            self.expect = bytearray(img.read(0, img.size()))

    def __enter__(self) -> Holder:
        with self.engine.open(self.pool, self.name) as img:
            opts = img.blockdev_options("h")
        argv = ["qemu-storage-daemon", "--blockdev", json.dumps(opts),
                "--nbd-server", f"addr.type=unix,addr.path={self.nbd}",
                "--export",
                f"type=nbd,id=disk,name=disk,node-name={opts['node-name']},writable=on",
                *monitor_args(self.qmp, daemon=True)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not (self.nbd.exists() and self.qmp.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"qemu-storage-daemon did not start: {err}")
            time.sleep(0.02)
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def uri(self) -> str:
        return f"nbd+unix:///disk?socket={self.nbd}"

    def io(self, *commands: str) -> str:
        args = ["qemu-io", "-f", "raw"]
        for c in commands:
            args += ["-c", c]
        res = subprocess.run([*args, self.uri], capture_output=True, text=True, timeout=60)
        out = res.stdout + res.stderr
        if res.returncode != 0 or "Pattern verification failed" in out or "error" in out:
            raise AssertionError(f"qemu-io {commands}: {out}")
        return out

    def fill(self, byte: int, offset: int, length: int) -> None:
        """Write ``length`` bytes of ``byte`` at ``offset``, as the guest would."""
        self.io(f"write -P {byte:#x} {offset} {length}")
        self.expect[offset:offset + length] = bytes([byte]) * length

    def read_all(self) -> bytes:
        out = self.nbd.with_name("read.raw")
        res = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", self.uri,
                              str(out)], capture_output=True, text=True)
        if res.returncode != 0:
            state = "running"
            if self.proc and self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                state = f"gone: {self.proc.returncode} {err}"
            raise AssertionError(f"reading the export failed (holder {state}): {res.stderr}")
        try:
            return out.read_bytes()
        finally:
            out.unlink()

    def snapshot(self, snap: str) -> None:
        """A live snapshot, as the hypervisor takes one (QEMU makes the overlay)."""
        with self.engine.open(self.pool, self.name) as img:
            live = img.prepare_live_snapshot(snap, "h")
            if live is None:  # the engine snapshots in-use images itself
                img.create_snap(snap)
                return
            try:
                with Monitor(self.qmp) as mon:
                    mon.execute(live.qmp["execute"], live.qmp["arguments"])
            except BaseException:
                img.abort_live_snapshot(snap)
                raise
            img.commit_live_snapshot(snap)
