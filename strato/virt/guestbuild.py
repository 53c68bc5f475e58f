"""Build a tiny bootable test guest from the machine's Debian packages (no internet).

The guest is Debian's kernel booted directly by QEMU (uncompressed ``vmlinux``, PVH),
an initramfs with busybox, a handful of virtio/ext4 modules and ``qemu-ga``, and a
64 MiB raw ext4 root disk.  Its ``/init`` (see ``guestscripts.INIT``) mounts the disk
at ``/mnt/root``, bumps ``/bootcount`` there, starts the guest agent, prints
``STRATO-GUEST-READY bootcount=N`` on the serial console and stays up (meanwhile the
first NIC asks for an address by DHCP -- option 121 routes included -- and
``STRATO-NET-UP eth0 <ip>/<len>`` is printed once it has one); it powers off
on the ACPI power button and reboots/halts on ``guest-shutdown``.  A getty on the
serial port lets root log in with the password :data:`ROOT_PASSWORD` -- a test image
with a known password, never one to expose.

Downloads and the unpacked kernel are cached (default ``~/.cache/strato/guest``), so a
warm build only rewrites the initramfs and the disk.  Needs: apt-get, dpkg-deb,
depmod/modprobe (kmod), ldd, mke2fs (e2fsprogs), busybox-static.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import guestscripts

#: Modules the guest needs (their dependencies come along); missing ones are skipped
#: only when optional.
MODULES = ("crc32c_generic", "virtio_pci", "virtio_blk", "ext4", "virtio_console",
           "virtio_net")
OPTIONAL_MODULES = ("button", "evdev", "pvpanic-mmio")
DISK_SIZE = 64 << 20
DISK_UUID = "5a7a70e5-0000-4000-8000-000000000001"
READY_MARKER = "STRATO-GUEST-READY"
BUSYBOX = Path("/bin/busybox")
FAKE_TIME = 1700000000
#: root's password on the serial console login (a test image: the password is public).
ROOT_PASSWORD = "strato"
ROOT_SALT = "stratoguest"  # fixed, so the initramfs is the same on every build
#: Kernel command line the guest expects (the driver's default). Not ``quiet``: the
#: kernel's boot messages go to the serial console, so a server's console log is a
#: real boot log, as clients (and Tempest's ``length=N`` checks) expect.
CMDLINE = "console=ttyS0"


@dataclass(frozen=True)
class GuestFiles:
    """What QEMU needs to boot the guest: ``-kernel``, ``-initrd`` and the root disk."""

    kernel: Path
    initramfs: Path
    disk: Path
    kernel_version: str
    cmdline: str = CMDLINE


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "strato" / "guest"


def _run(*argv: str | Path, cwd: str | Path | None = None,
         env: dict[str, str] | None = None) -> str:
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd,
                         env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {res.stderr.strip()}")
    return res.stdout


def _candidate(pkg: str) -> tuple[str, str] | None:
    """(package, version) apt would download now, or None if apt knows nothing."""
    try:
        out = _run("apt-cache", "show", "--no-all-versions", pkg)
    except (RuntimeError, FileNotFoundError):
        return None
    m = re.search(r"^Version: (\S+)", out, re.M)
    return (pkg, m.group(1)) if m else None


def _kernel_package() -> str:
    """The versioned image package ``linux-image-amd64`` currently depends on ("" if
    apt does not know; as root, package lists are fetched once first)."""
    for attempt in range(2):
        try:
            out = _run("apt-cache", "depends", "linux-image-amd64")
        except (RuntimeError, FileNotFoundError):
            out = ""
        m = re.search(r"Depends: (linux-image-\S+)", out)
        if m:
            return m.group(1)
        if attempt or os.geteuid() != 0:
            break
        try:  # a fresh machine or container may have no package lists at all
            _run("apt-get", "update", "-qq")
        except (RuntimeError, FileNotFoundError):
            break
    return ""


def _fetch(pkg: str, debs: Path) -> Path:
    """The cached .deb of ``pkg`` at apt's candidate version, downloaded if missing."""
    debs.mkdir(parents=True, exist_ok=True)
    cand = _candidate(pkg)
    if cand is not None:
        fname = f"{pkg}_{cand[1].replace(':', '%3a')}_"
        hits = sorted(debs.glob(f"{fname}*.deb"))
        if hits:
            return hits[-1]
        with tempfile.TemporaryDirectory(dir=debs) as tmp:
            _run("apt-get", "download", "-q", pkg, cwd=tmp)
            got = sorted(Path(tmp).glob(f"{pkg}_*.deb"))
            if not got:
                raise RuntimeError(f"apt-get download {pkg} produced no .deb")
            dest = debs / got[0].name
            os.replace(got[0], dest)
            return dest
    hits = sorted(debs.glob(f"{pkg}_*.deb"))  # offline: whatever we have
    if not hits:
        raise RuntimeError(f"cannot find package {pkg} (run apt-get update?)")
    return hits[-1]


def extract_vmlinux(vmlinuz: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage with an xz payload (None if not)."""
    start = vmlinuz.find(b"\xfd7zXZ\x00")
    while start >= 0:
        try:
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
        except lzma.LZMAError:
            out = b""
        if out[:4] == b"\x7fELF":
            return out
        start = vmlinuz.find(b"\xfd7zXZ\x00", start + 1)
    return None


def _prepare_kernel(cache: Path) -> tuple[Path, Path, str]:
    """Cached (kernel, module tree root, version) of the current Debian kernel."""
    pkg = _kernel_package()
    if pkg:
        deb = _fetch(pkg, cache / "debs")
    else:
        hits = sorted((cache / "debs").glob("linux-image-*.deb"))
        if not hits:
            raise RuntimeError("cannot resolve linux-image-amd64 (run apt-get update?)")
        deb = hits[-1]
    # the unpacked tree keeps only the listed modules: a new list needs a new tree
    mods = hashlib.sha1(" ".join(MODULES + OPTIONAL_MODULES).encode()).hexdigest()[:8]
    key = f"{deb.name.removesuffix('.deb')}-{mods}"
    kdir = cache / "kernels" / key
    done = kdir / ".complete"
    if not done.exists():
        kdir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=kdir.parent, prefix=".unpack-"))
        try:
            _run("dpkg-deb", "-x", deb, tmp)
            (vmlinuz,) = (tmp / "boot").glob("vmlinuz-*")
            version = vmlinuz.name.removeprefix("vmlinuz-")
            elf = extract_vmlinux(vmlinuz.read_bytes())
            if elf is not None:
                (tmp / "vmlinux").write_bytes(elf)
            else:
                shutil.copy(vmlinuz, tmp / "vmlinuz")
            _run("depmod", "-b", tmp, version)
            (tmp / "version").write_text(version)
            # keep only what the initramfs takes (~2 of 400 MB) and the module indexes
            keep = {p.resolve() for p in _module_files(tmp, version)}
            for ko in (tmp / "lib" / "modules" / version / "kernel").rglob("*.ko*"):
                if ko.resolve() not in keep:
                    ko.unlink()
            for sub in ("boot", "usr", "etc"):
                shutil.rmtree(tmp / sub, ignore_errors=True)
            done_tmp = tmp / ".complete"
            done_tmp.write_text(key)
            try:
                os.replace(tmp, kdir)
            except OSError:
                if not done.exists():  # else a concurrent build got there first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    version = (kdir / "version").read_text().strip()
    kernel = kdir / "vmlinux" if (kdir / "vmlinux").exists() else kdir / "vmlinuz"
    return kernel, kdir, version


def _module_files(root: Path, version: str) -> list[Path]:
    """Module files to insmod, in dependency order, without duplicates."""
    order: list[Path] = []
    for mod in MODULES + OPTIONAL_MODULES:
        try:
            out = _run("modprobe", "-d", root, "-S", version, "--show-depends", mod)
        except RuntimeError:
            if mod in OPTIONAL_MODULES:
                continue
            raise
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                p = Path(parts[1])
                if p not in order:
                    order.append(p)
    return order


def _qemu_ga(cache: Path) -> tuple[Path, list[Path]]:
    """The cached qemu-ga binary and the host libraries it loads (same Debian release)."""
    deb = _fetch("qemu-guest-agent", cache / "debs")
    gdir = cache / "qemu-ga" / deb.name.removesuffix(".deb")
    if not (gdir / "qemu-ga").exists():
        gdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=gdir) as tmp:
            _run("dpkg-deb", "-x", deb, tmp)
            os.replace(Path(tmp) / "usr/sbin/qemu-ga", gdir / "qemu-ga")
    binary = gdir / "qemu-ga"
    libs: list[Path] = []
    for line in _run("ldd", binary).splitlines():
        if "not found" in line:
            raise RuntimeError(f"qemu-ga needs a library missing here: {line.strip()}")
        m = re.search(r"(/\S+)", line.split("=>")[-1])
        if m:
            libs.append(Path(m.group(1)))
    return binary, libs


class _Cpio:
    """A deterministic newc archive (all files root-owned, mtime 0)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.seen: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               ) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]
        self.ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.buf.write(hdr + name.encode() + b"\0")
        self.buf.write(b"\0" * (-(len(hdr) + len(name) + 1) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))

    def dirs(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.seen:
                self.seen.add(d)
                self._entry(d, 0o040755)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self.dirs(os.path.dirname(path))
        if path not in self.seen:
            self.seen.add(path)
            self._entry(path, 0o100000 | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self.dirs(os.path.dirname(path))
        if path not in self.seen:
            self.seen.add(path)
            self._entry(path, 0o120777, target.encode())

    def chardev(self, path: str, major: int, minor: int) -> None:
        self.dirs(os.path.dirname(path))
        self.seen.add(path.strip("/"))
        self._entry(path.strip("/"), 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _initramfs(dest: Path, kroot: Path, version: str, cache: Path) -> None:
    cpio = _Cpio()
    for d in ("dev", "proc", "sys", "run", "tmp", "mnt/root", "sbin", "usr/bin", "usr/sbin"):
        cpio.dirs(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("init", guestscripts.INIT.encode(), 0o755)
    busybox = BUSYBOX.read_bytes()
    if b"ld-linux" in busybox[:4096]:
        raise RuntimeError(f"{BUSYBOX} is dynamically linked: install busybox-static")
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("sbin/shutdown", guestscripts.SHUTDOWN.encode(), 0o755)
    cpio.file("usr/sbin/chpasswd", guestscripts.CHPASSWD.encode(), 0o755)  # qemu-ga's
    cpio.file("etc/udhcpc.sh", guestscripts.UDHCPC.encode(), 0o755)
    _login_files(cpio)
    mods: list[str] = []
    for path in _module_files(kroot, version):
        rel = path.relative_to(kroot)
        cpio.file(str(rel), path.read_bytes())
        mods.append("/" + str(rel))
    cpio.file("etc/strato-modules", ("\n".join(mods) + "\n").encode())
    binary, libs = _qemu_ga(cache)
    cpio.file("usr/sbin/qemu-ga", binary.read_bytes(), 0o755)
    for lib in libs:
        cpio.file(str(lib), lib.resolve().read_bytes(), 0o755)
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as gz:
            gz.write(cpio.finish())
    os.replace(tmp, dest)


def _login_files(cpio: _Cpio) -> None:
    """root's account for busybox getty/login on ttyS0 (SHA-512 crypt, fixed salt)."""
    hashed = _run(BUSYBOX, "mkpasswd", "-m", "sha512", ROOT_PASSWORD, ROOT_SALT).strip()
    if not hashed.startswith("$6$"):
        raise RuntimeError(f"busybox mkpasswd gave no SHA-512 hash: {hashed!r}")
    cpio.dirs("root")
    cpio.file("etc/passwd", guestscripts.PASSWD.encode())
    cpio.file("etc/group", guestscripts.GROUP.encode())
    cpio.file("etc/shadow", guestscripts.SHADOW.format(hash=hashed).encode(), 0o600)
    cpio.file("etc/profile", guestscripts.PROFILE.encode())


def _disk(dest: Path) -> None:
    """A raw ext4 root disk made from a directory (no mounting, so no root needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "README").write_text("strato test guest root disk\n")
        (root / "bootcount").write_text("0\n")
        for p in (*root.iterdir(), root):  # same bytes on every build
            os.utime(p, (FAKE_TIME, FAKE_TIME))
        dest.unlink(missing_ok=True)
        env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(FAKE_TIME))
        _run("mke2fs", "-q", "-F", "-t", "ext4", "-L", "strato-root", "-U", DISK_UUID,
             "-E", f"root_owner=0:0,hash_seed={DISK_UUID}", "-d", root, dest,
             f"{DISK_SIZE >> 20}M", env=env)


def build_guest(dest: Path, cache: Path | None = None) -> GuestFiles:
    """Write ``kernel``/``initramfs.gz``/``disk.raw`` under ``dest``; reuse the cache."""
    dest = Path(dest).absolute()
    cache = Path(cache or default_cache()).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    kernel_src, kroot, version = _prepare_kernel(cache)
    kernel = dest / kernel_src.name
    if not kernel.exists() or _stamp(kernel) != _stamp(kernel_src):
        shutil.copy2(kernel_src, kernel)
    initramfs = dest / "initramfs.gz"
    _initramfs(initramfs, kroot, version, cache)
    disk = dest / "disk.raw"
    _disk(disk)
    return GuestFiles(kernel=kernel, initramfs=initramfs, disk=disk, kernel_version=version)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m strato.virt.guestbuild",
                                 description="Build strato's tiny test guest.")
    ap.add_argument("dest", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)
    g = build_guest(args.dest, args.cache)
    print(f"kernel    {g.kernel} ({g.kernel_version})")
    print(f"initramfs {g.initramfs}")
    print(f"disk      {g.disk}")
    print(f"cmdline   {g.cmdline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
