"""Local-engine specifics: QEMU hand-off, foreign-file refusal, locking, fsid, locations."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strato.storage import errors, open_engine, parse_location
from strato.storage.local import LocalEngine
from strato.storage.localimage import LocalImage

from .helpers import MiB, apply, check_local_store, head_sha, pattern, sha, snap_sha

SIZE = 4 * MiB


@pytest.fixture
def eng(local_root: Path) -> LocalEngine:
    engine = open_engine("local", root=local_root)
    assert isinstance(engine, LocalEngine)
    return engine


def make(eng: LocalEngine, pool: str, name: str, content: bytes) -> None:
    eng.create(pool, name, len(content))
    with eng.open(pool, name) as img:
        img.write(content, 0)


def test_fsid_is_stable_and_locations_parse(local_root: Path) -> None:
    a = LocalEngine(local_root)
    b = LocalEngine(local_root)
    assert a.fsid() == b.fsid() and len(a.fsid()) == 36
    assert LocalEngine(local_root.parent / "other").fsid() != a.fsid()
    loc = parse_location(a.location("volumes", "volume-1", "snapshot-2"))
    assert (loc.pool, loc.image, loc.snapshot) == ("volumes", "volume-1", "snapshot-2")
    assert parse_location("rbd://f/p/i").snapshot is None
    for bad in ("file:///x", "rbd://f/p", "rbd://f//i/s", "rbd://a/b/c/d/e"):
        with pytest.raises(errors.InvalidArgument):
            parse_location(bad)
    custom = LocalEngine(local_root.parent / "c", pools=("glance", "nova"))
    assert custom.pools() == ["glance", "nova"]
    with pytest.raises(errors.PoolNotFound):
        custom.list("images")


def test_blockdev_options_describe_the_chain(eng: LocalEngine) -> None:
    make(eng, "images", "p", pattern(1, SIZE))
    with eng.open("images", "p") as img:
        img.create_snap("snap")
        img.protect_snap("snap")
    eng.clone("images", "p", "snap", "vms", "d")
    with eng.open("vms", "d") as d:
        opts = d.blockdev_options()
        chain = d.qemu_chain()
    assert opts["driver"] == "qcow2" and opts["read-only"] is False
    assert opts["file"]["filename"] == str(chain[0][0])
    assert opts["backing"]["driver"] == "raw" and opts["backing"]["read-only"] is True
    assert Path(opts["backing"]["file"]["filename"]).is_absolute()
    assert [p for p, _ in chain][1] == Path(opts["backing"]["file"]["filename"])
    assert all(len(n) <= 31 for n in (opts["node-name"], opts["file"]["node-name"]))
    # what QEMU gets opens in qemu-img too, and shows the clone's data
    out = eng.tmp_path("x")
    subprocess.run(["qemu-img", "convert", "-O", "raw", "json:" + json.dumps(opts), str(out)],
                   check=True)
    assert sha(out.read_bytes()) == sha(pattern(1, SIZE))
    out.unlink()
    with eng.open("images", "p", snapshot="snap") as snap:
        assert snap.blockdev_options()["read-only"] is True


def test_live_snapshot_handoff_with_qemu_img(eng: LocalEngine) -> None:
    """QEMU's part played by qemu-img/qemu-io: create the overlay, then write into it."""
    base = pattern(2, SIZE)
    make(eng, "vms", "inst_disk", base)
    img = eng.open("vms", "inst_disk")
    assert isinstance(img, LocalImage)
    live = img.prepare_live_snapshot("snap-1")
    assert live.overlay.parent == eng.layers_dir and not live.overlay.exists()
    assert live.backing == img_top(eng, "vms", "inst_disk")
    assert live.qmp["arguments"]["snapshot-file"] == str(live.overlay)
    assert live.qmp["arguments"]["mode"] == "absolute-paths"
    with pytest.raises(errors.ImageBusy):
        img.read(0, 1)  # the handle is busy until commit/abort
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(live.backing),
                    "-F", live.backing_format, str(live.overlay), str(SIZE)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(live.overlay)],
                   check=True, capture_output=True)
    img.commit_live_snapshot("snap-1")
    assert [s.name for s in img.list_snaps()] == ["snap-1"]
    assert img.read(0, 65536) == b"\x5a" * 65536
    img.close()
    assert snap_sha(eng, "vms", "inst_disk", "snap-1") == sha(base)
    check_local_store(eng)


def test_live_snapshot_abort_and_refusals(eng: LocalEngine) -> None:
    make(eng, "vms", "d", pattern(3, SIZE))
    with eng.open("vms", "d") as img:
        live = img.prepare_live_snapshot("a")
        live.overlay.write_bytes(b"half-made by QEMU")
        img.abort_live_snapshot("a")
        assert not live.overlay.exists() and img.list_snaps() == []
        with pytest.raises(errors.InvalidArgument):
            img.commit_live_snapshot("a")
        # an overlay that points somewhere else is refused
        live = img.prepare_live_snapshot("b")
        foreign = eng.root.parent / "foreign.raw"
        foreign.write_bytes(bytes(SIZE))
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(foreign), "-F",
                        "raw", str(live.overlay), str(SIZE)], check=True)
        with pytest.raises(errors.InvalidArgument):
            img.commit_live_snapshot("b")
        assert img.list_snaps() == []
    check_local_store(eng)


def img_top(eng: LocalEngine, pool: str, name: str) -> Path:
    meta = eng.load(pool, name)
    return eng.layer_path(meta["layers"][-1])


class QMP:
    """Just enough QMP over a unix socket for the test."""

    def __init__(self, path: Path) -> None:
        # The socket file appears at bind(), a moment before QEMU listens on it.
        deadline = time.monotonic() + 20
        while True:
            self.sock = socket.socket(socket.AF_UNIX)
            try:
                self.sock.connect(str(path))
                break
            except ConnectionRefusedError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.sock.makefile("rwb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            msg = json.loads(self.f.readline())
            if "event" not in msg:
                return msg

    def cmd(self, execute: str, **arguments: Any) -> Any:
        self.f.write(json.dumps({"execute": execute, "arguments": arguments}).encode() + b"\n")
        self.f.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["return"]

    def qemu_io(self, node: str, command: str) -> None:
        out = self.cmd("human-monitor-command", **{"command-line": f'qemu-io {node} "{command}"'})
        assert "error" not in out.lower() and "failed" not in out.lower(), out


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[Any]:
    binary = shutil.which("qemu-system-x86_64")
    if binary is None:
        pytest.skip("qemu-system-x86_64 not installed")
    procs: list[subprocess.Popen[bytes]] = []

    def start(blockdev: dict[str, Any]) -> QMP:
        sock = tmp_path / f"qmp{len(procs)}.sock"
        proc = subprocess.Popen(
            [binary, "-machine", "none", "-nodefaults", "-display", "none", "-S",
             "-qmp", f"unix:{sock},server=on,wait=off", "-blockdev", json.dumps(blockdev)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        deadline = time.monotonic() + 20
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "qemu died")
            time.sleep(0.02)
        return QMP(sock)

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_live_snapshot_with_real_qemu(eng: LocalEngine, qemu: Any, tmp_path: Path) -> None:
    """A running QEMU owns the top: snapshot through QMP blockdev-snapshot-sync.

    The "guest" is an NBD export of the disk node (a device needs a machine); like a
    virtio-blk device it is a user of the node that QEMU moves onto the new overlay.
    """
    base = pattern(4, SIZE)
    make(eng, "images", "glance", base)
    with eng.open("images", "glance") as g:
        g.create_snap("snap")
        g.protect_snap("snap")
    eng.clone("images", "glance", "snap", "vms", "uuid_disk")
    with eng.open("vms", "uuid_disk") as disk:
        opts = disk.blockdev_options()
    qmp = qemu(opts)
    nbd = tmp_path / "nbd.sock"
    qmp.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(nbd)}})
    qmp.cmd("block-export-add", type="nbd", id="guest", **{"node-name": opts["node-name"]},
            writable=True, name="disk")

    def guest_write(cmd: str) -> None:
        subprocess.run(["qemu-io", "-f", "raw", "-c", cmd, f"nbd+unix:///disk?socket={nbd}"],
                       check=True, capture_output=True)

    guest_write("write -P 0x11 0 64k")
    with pytest.raises(errors.ImageBusy):
        eng.remove("vms", "uuid_disk")  # in use by a running QEMU
    with eng.open("vms", "uuid_disk") as disk:
        with pytest.raises(errors.ImageBusy):
            disk.write(b"x", 0)  # QEMU holds the write lock on the top layer
        with pytest.raises(errors.ImageBusy):
            disk.flatten()
        with pytest.raises(errors.ImageBusy):
            disk.resize(2 * SIZE)
        with pytest.raises(errors.ImageBusy):
            disk.create_snap("offline")  # would freeze a layer QEMU still writes
        with pytest.raises(errors.ImageBusy):
            disk.deep_copy("vms", "copy")
        live = disk.prepare_live_snapshot("snapshot-1")
        qmp.cmd(live.qmp["execute"], **live.qmp["arguments"])
        disk.commit_live_snapshot("snapshot-1")
    nodes = [n["node-name"] for n in qmp.cmd("query-named-block-nodes")]
    assert live.node_name in nodes
    guest_write("write -P 0x22 0 4k")  # the guest goes on writing, into the overlay
    first = apply(base, b"\x11" * 65536, 0)
    # the frozen layer is readable while QEMU runs (what an image upload does)
    assert snap_sha(eng, "vms", "uuid_disk", "snapshot-1") == sha(first)
    with eng.open("vms", "uuid_disk") as disk:
        disk.protect_snap("snapshot-1")
        assert disk.blockdev_options()["node-name"] == live.node_name
    eng.clone("vms", "uuid_disk", "snapshot-1", "images", "new-image")
    assert head_sha(eng, "images", "new-image") == sha(first)
    qmp.cmd("quit")
    time.sleep(0.3)
    assert head_sha(eng, "vms", "uuid_disk") == sha(apply(first, b"\x22" * 4096, 0))
    check_local_store(eng)


def test_refuses_layers_pointing_outside(eng: LocalEngine, tmp_path: Path) -> None:
    make(eng, "vms", "d", pattern(5, SIZE))
    with eng.open("vms", "d") as img:
        img.create_snap("s")
    top = img_top(eng, "vms", "d")
    secret = tmp_path / "host-secret.raw"
    secret.write_bytes(b"secret" * 1000 + bytes(SIZE - 6000))
    top.unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw",
                    str(top), str(SIZE)], check=True)
    with pytest.raises(errors.InvalidArgument):
        eng.open("vms", "d").read(0, 6)
    top.unlink()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={secret}", str(top), str(SIZE)], check=True)
    with pytest.raises(errors.InvalidArgument):
        eng.open("vms", "d").read(0, 6)
    top.unlink()
    os.symlink(secret, top)
    with pytest.raises(errors.InvalidArgument):
        eng.open("vms", "d").read(0, 6)


def test_guest_data_looking_like_qcow2_is_not_probed(eng: LocalEngine, tmp_path: Path) -> None:
    """A raw image whose content is a qcow2 header pointing at a host file stays raw."""
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
                    str(evil), "1M"], check=True)
    data = evil.read_bytes()
    data += bytes(-len(data) % 512)
    eng.import_from("images", "evil", evil)  # imported as raw bytes
    with eng.open("images", "evil") as img:
        assert img.read(0, len(data)) == data
        img.create_snap("s")
        img.write(b"x", 0)
        assert img.read(1, 100) == data[1:101]
    check_local_store(eng)


WORKER = """
import sys
from strato.storage.local import LocalEngine
from strato.storage import errors
eng = LocalEngine(sys.argv[1])
tag, off = sys.argv[2], int(sys.argv[3])
made = 0
for i in range(8):
    with eng.open("volumes", "shared") as img:
        img.write(bytes([65 + i]) * 4096 + tag.encode() * 4, off)
        img.create_snap(f"{tag}{i}")
        try:
            img.create_snap("same")
            made += 1
        except errors.ImageExists:
            pass
print(made)
"""


def test_concurrent_processes_serialize(eng: LocalEngine) -> None:
    eng.create("volumes", "shared", SIZE)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(eng.root), tag, str(off)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for tag, off in (("a", 0), ("b", MiB), ("c", 2 * MiB))]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-2000:] for o in outs]
    assert sum(int(o[0]) for o in outs) == 1  # exactly one process made "same"
    with eng.open("volumes", "shared") as img:
        names = [s.name for s in img.list_snaps()]
        assert sorted(names) == sorted([f"{t}{i}" for t in "abc" for i in range(8)] + ["same"])
        for tag, off in (("a", 0), ("b", MiB), ("c", 2 * MiB)):
            assert img.read(off, 4100) == b"H" * 4096 + tag.encode() * 4
    for tag, off in (("a", 0), ("b", MiB), ("c", 2 * MiB)):
        with eng.open("volumes", "shared", snapshot=f"{tag}3") as snap:
            assert snap.read(off, 4100) == b"D" * 4096 + tag.encode() * 4
    check_local_store(eng)


def test_imports_are_sparse(eng: LocalEngine, tmp_path: Path) -> None:
    """Zero runs of an import (file or stream) take no space in the layer."""
    import io

    data = pattern(9, MiB) + bytes(30 * MiB) + pattern(10, 4096) + bytes(MiB)
    src = tmp_path / "s.raw"
    src.write_bytes(data)
    eng.import_from("images", "f", src)
    eng.import_from("images", "s", io.BytesIO(data))
    for name in ("f", "s"):
        layer = eng.layer_path(eng.load("images", name)["layers"][0])
        assert os.stat(layer).st_size == len(data)
        assert os.stat(layer).st_blocks * 512 <= MiB + 64 * 1024
        assert head_sha(eng, "images", name) == sha(data)


@pytest.mark.parametrize("chunk", [512, 3 * 512 * 7, MiB, 3 * MiB + 512, 8 * MiB])
def test_iter_chunks_of_a_chain_reads_the_view(eng: LocalEngine, tmp_path: Path,
                                               chunk: int) -> None:
    """A chain is read from its layers' files by ``qemu-img map``: every byte, holes
    as zeros, newest layer winning, in exactly ``chunk`` pieces, same as an export."""
    eng.create("images", "chain", SIZE)
    with eng.open("images", "chain") as img:
        img.write(pattern(MiB, 1), 0)
        img.write(pattern(512, 2), 2 * MiB + 512)
        img.create_snap("s1")
        img.write(pattern(64 << 10, 3), MiB - (32 << 10))  # straddles the first write
        img.write(pattern(512, 4), SIZE - 512)
        img.create_snap("s2")
        img.protect_snap("s2")
    eng.clone("images", "chain", "s2", "vms", "kid")
    with eng.open("vms", "kid") as kid:
        kid.write(pattern(4096, 5), 3 * MiB)
    for pool, name, snap in (("images", "chain", "s1"), ("images", "chain", None),
                             ("vms", "kid", None)):
        with eng.open(pool, name, snapshot=snap, read_only=True) as img:
            pieces = list(img.iter_chunks(chunk))
            out = tmp_path / f"{name}-{snap}.raw"
            img.export_to(out)
        assert all(len(p) == chunk for p in pieces[:-1]) and 0 < len(pieces[-1]) <= chunk
        assert b"".join(pieces) == out.read_bytes()


def test_large_aligned_writes_skip_the_page_cache(eng: LocalEngine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An aligned buffer of 1 MiB or more is written with O_DIRECT; an unaligned buffer
    (refused by O_DIRECT with EINVAL) and a small write go through the page cache.  The
    data reads back the same every way."""
    import mmap

    eng.create("images", "d", 16 * MiB)
    opened: list[int] = []
    real_open = os.open

    def spying_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        opened.append(flags)
        return real_open(path, flags, *args, **kw)

    aligned = mmap.mmap(-1, 2 * MiB)
    aligned[:] = pattern(1, 2 * MiB)
    unaligned = memoryview(b"\0" + pattern(2, 2 * MiB))[1:]
    with eng.open("images", "d") as img:
        monkeypatch.setattr(os, "open", spying_open)
        img.write(aligned, 0)
        monkeypatch.undo()
        img.write(unaligned, 4 * MiB)
        img.write(pattern(3, 4096), 8 * MiB)
    assert any(flags & os.O_DIRECT for flags in opened)
    with eng.open("images", "d") as img:
        assert img.read(0, 2 * MiB) == pattern(1, 2 * MiB)
        assert img.read(4 * MiB, 2 * MiB) == pattern(2, 2 * MiB)
        assert img.read(8 * MiB, 4096) == pattern(3, 4096)
        assert img.read(2 * MiB, 2 * MiB) == bytes(2 * MiB)
