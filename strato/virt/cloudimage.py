"""Build a Debian cloud image (qcow2) from Debian's packages, cached by its inputs.

The image is what users upload first: an MBR disk whose first partition is an EFI
system partition (``EFI/BOOT/BOOTX64.EFI``: GRUB with an embedded config) and whose
second is the ext4 root (Debian bookworm: the cloud kernel, systemd, cloud-init with
the ConfigDrive/OpenStack datasources, openssh-server, sudo, qemu-guest-agent,
ifupdown + dhclient).  GRUB's i386-pc core image sits in the gap before the first
partition and its ``boot.img`` in the MBR, so the one disk boots under SeaBIOS and
under OVMF.  Nothing is mounted and no loop device is used: ``mmdebstrap`` fills a
directory, ``mke2fs -d`` and ``mkfs.vfat`` + ``mcopy`` make the filesystems in files,
``sfdisk`` writes the partition table into the disk file, and the pieces are copied
in at their offsets.

Images live in ``<dest>/<key>/disk.qcow2``, ``key`` a hash of every input (package
list, baked-in files, geometry, mirrors, ``BUILDER_VERSION``); a build happens in a
temporary directory renamed into place, under a lock, so concurrent callers (a
background build and a test fixture) wait for one build.  Downloaded ``.deb`` files
are kept in ``<dest>/debs`` for quick rebuilds.  Needs root (mmdebstrap's root mode;
``mke2fs -d`` keeps file ownership), mmdebstrap, grub-pc-bin, grub-efi-amd64-bin,
dosfstools, mtools, fdisk, e2fsprogs, qemu-utils.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from . import cloudimagefiles as files

#: bump when the build steps change in a way the other inputs do not show
BUILDER_VERSION = 1
SUITE = "bookworm"
MiB = 1 << 20
#: virtual disk size: fits Nova's m1.tiny (1 GB root disk); cloud-init grows the root
DISK_SIZE = 1024 * MiB
ESP_START = 1 * MiB
ESP_SIZE = 32 * MiB
ROOT_START = ESP_START + ESP_SIZE
IMAGE_FILE = "disk.qcow2"
INFO_FILE = "image.json"
#: how long a caller waits for another process's build of the same cache
LOCK_TIMEOUT = 1800.0
GRUB_DIR = Path("/usr/lib/grub")
#: boot.img: the LBA of core.img's first sector (a 64-bit field at 0x5c, default 1)
BOOT_KERNEL_SECTOR = 0x5C
MBR_CODE = 440

Log = Callable[[str], None]


@dataclass(frozen=True)
class CloudImage:
    """A built image: the qcow2 file and what went into it."""

    path: Path
    key: str
    kernel_version: str
    root_uuid: str
    root_label: str
    cmdline: str
    virtual_size: int
    build_seconds: float
    packages: dict[str, str]

    @classmethod
    def load(cls, directory: Path) -> CloudImage:
        info = json.loads((directory / INFO_FILE).read_text())
        return cls(path=directory / IMAGE_FILE, **{k: v for k, v in info.items()
                                                    if k != "path"})


def _quiet(_msg: str) -> None:
    pass


def _run(*argv: str | Path, input: str | None = None, log: Log = _quiet) -> str:
    cmd = [str(a) for a in argv]
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"{cmd[0]} not found: install it (scripts/setup.sh --test "
                           "installs the cloud image tools)")
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    res = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-25:])
        raise RuntimeError(f"{cmd[0]} failed (exit {res.returncode}):\n{tail}")
    return res.stdout


# ---------------------------------------------------------------- inputs
def host_mirrors(etc: Path = Path("/etc/apt")) -> list[str]:
    """The host's Debian sources for ``SUITE`` (and its -updates/-security) as
    one-line ``deb`` entries, so the build uses the mirror this machine is set up for;
    empty means mmdebstrap's default (deb.debian.org)."""
    entries: list[tuple[str, str, str]] = []
    for path in sorted(etc.glob("sources.list.d/*.sources")):
        for block in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", block, re.M))
            if "deb" not in fields.get("Types", "").split() or \
                    fields.get("Enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("URIs", "").split():
                for suite in fields.get("Suites", "").split():
                    entries.append((uri, suite, fields.get("Components", "main")))
    lists = [etc / "sources.list", *sorted(etc.glob("sources.list.d/*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line.strip())
            if m:
                entries.append((m.group(1), m.group(2), m.group(3).strip()))
    out = []
    for uri, suite, components in entries:
        if suite == SUITE or suite.startswith(SUITE + "-") or suite.startswith(SUITE + "/"):
            line = f"deb {uri} {suite} {components}"
            if line not in out:
                out.append(line)
    return out


def inputs(mirrors: list[str]) -> dict[str, object]:
    """Everything the image is made from (its hash is the cache key)."""
    baked = {name: getattr(files, name) for name in sorted(dir(files))
             if name.isupper()}
    return {"builder": BUILDER_VERSION, "suite": SUITE, "mirrors": mirrors,
            "disk": [DISK_SIZE, ESP_START, ESP_SIZE], "files": baked}


def cache_key(mirrors: list[str]) -> str:
    blob = json.dumps(inputs(mirrors), sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------- cache
@contextlib.contextmanager
def _locked(path: Path, timeout: float, log: Log) -> Iterator[None]:
    with open(path, "a+") as f:
        deadline = time.monotonic() + timeout
        said = False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    log(f"waiting for another build holding {path}")
                    said = True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another cloud image build held {path} for over "
                                       f"{timeout:.0f} s") from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefix):
            found.append(target)
    return found


def _remove_tree(path: Path) -> None:
    """rmtree that first detaches anything a crashed mmdebstrap left mounted inside
    (never delete through a bind mount of /dev or /proc)."""
    if not path.exists():
        return
    for target in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    if _mounts_under(path):
        raise RuntimeError(f"cannot remove {path}: something is still mounted inside")
    shutil.rmtree(path)


def cached(dest: Path, mirrors: list[str] | None = None) -> CloudImage | None:
    """The image already built for the current inputs, if any."""
    key = cache_key(host_mirrors() if mirrors is None else mirrors)
    directory = Path(dest) / key
    if (directory / INFO_FILE).exists() and (directory / IMAGE_FILE).exists():
        return CloudImage.load(directory)
    return None


def build(dest: Path | str, force: bool = False, log: Log = _quiet,
          lock_timeout: float = LOCK_TIMEOUT) -> CloudImage:
    """The image for the current inputs under ``dest``: the cached one, or built now
    (``force``: built again).  Other keys' images under ``dest`` are removed."""
    dest = Path(dest).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    mirrors = host_mirrors()
    key = cache_key(mirrors)
    final = dest / key
    with _locked(dest / ".lock", lock_timeout, log):
        if not force and (found := cached(dest, mirrors)) is not None:
            return found
        if os.geteuid() != 0:
            raise RuntimeError("building the cloud image needs root (mmdebstrap's root "
                               "mode; mke2fs -d keeps the files' owners)")
        for stale in dest.glob(".build-*"):
            _remove_tree(stale)
        work = Path(tempfile.mkdtemp(dir=dest, prefix=f".build-{key}-"))
        try:
            started = time.monotonic()
            info = _build_into(work, dest / "debs", mirrors, key, log)
            info["build_seconds"] = round(time.monotonic() - started, 1)
            (work / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True))
            if final.exists():
                _remove_tree(final)
            os.rename(work, final)
        finally:
            _remove_tree(work)
        for other in dest.iterdir():
            if other.is_dir() and re.fullmatch(r"[0-9a-f]{16}", other.name) and \
                    other.name != key:
                _remove_tree(other)
    return CloudImage.load(final)


# ---------------------------------------------------------------- build steps
def _build_into(work: Path, debs: Path, mirrors: list[str], key: str,
                log: Log) -> dict[str, object]:
    root = work / "root"
    _bootstrap(root, work, debs, mirrors, log)
    kernel_version = _configure(root)
    root_uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"strato-cloud-image:{key}"))
    packages = dict(line.split("\t", 1) for line in _run(
        "dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
        "-f=${Package}\t${Version}\n").splitlines() if "\t" in line)
    raw = work / "disk.raw"
    _assemble(raw, root, work, root_uuid, log)
    _remove_tree(root)
    _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, work / IMAGE_FILE, log=log)
    raw.unlink()
    return {"key": key, "kernel_version": kernel_version, "root_uuid": root_uuid,
            "root_label": files.ROOT_LABEL, "cmdline": files.CMDLINE,
            "virtual_size": DISK_SIZE, "packages": packages}


def _bootstrap(root: Path, work: Path, debs: Path, mirrors: list[str], log: Log) -> None:
    """mmdebstrap the root directory, reusing and refilling the .deb cache."""
    debs.mkdir(parents=True, exist_ok=True)
    stage = work / "stage"
    stage.mkdir()
    (stage / "initramfs.conf").write_text(files.INITRAMFS_CONF)
    (stage / "modules").write_text("\n".join(files.INITRAMFS_MODULES) + "\n")
    q = shlex.quote
    # before the kernel's postinst makes the initramfs: only the listed modules
    essential = (
        'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"'
        f' && cp {q(str(stage / "initramfs.conf"))} "$1/etc/initramfs-tools/conf.d/strato"'
        f' && cp {q(str(stage / "modules"))} '
        '"$1/usr/share/initramfs-tools/modules.d/strato"')
    argv: list[str] = [
        "mmdebstrap", "--mode=root", "--variant=apt", "--format=directory",
        "--skip=essential/unlink", "--skip=download/empty",
        "--include=" + ",".join(files.PACKAGES),
        "--aptopt=APT::Install-Recommends \"false\"",
        *(f"--dpkgopt={f}" for f in files.DPKG_FILTERS),
        "--setup-hook=mkdir -p \"$1/var/cache/apt/archives\"",
        f"--setup-hook=sync-in {q(str(debs))} /var/cache/apt/archives/",
        f"--essential-hook={essential}",
        f"--customize-hook=sync-out /var/cache/apt/archives {q(str(debs))}",
        SUITE, str(root), *mirrors,
    ]
    _run(*argv, log=log)


def _configure(root: Path) -> str:
    """Baked-in configuration and first-boot clean-up; returns the kernel version."""
    def put(rel: str, text: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    put("etc/fstab", files.FSTAB)
    put("etc/hostname", files.HOSTNAME)
    put("etc/hosts", files.HOSTS)
    put("etc/default/locale", files.LOCALE)
    put("etc/network/interfaces", files.INTERFACES)
    (root / "etc/network/interfaces.d").mkdir(parents=True, exist_ok=True)
    put("etc/cloud/cloud.cfg.d/90_strato.cfg", files.CLOUD_CFG)
    put("boot/grub/grub.cfg", files.GRUB_CFG)
    put("etc/systemd/system/ssh.service.d/strato-keygen.conf", files.SSH_KEYGEN_DROPIN)
    for key in (root / "etc/ssh").glob("ssh_host_*"):  # cloud-init makes new ones
        key.unlink()
    put("etc/machine-id", "")  # systemd makes one on first boot
    for rel in ("var/lib/dbus/machine-id", "vmlinuz.old", "initrd.img.old"):
        (root / rel).unlink(missing_ok=True)
    for unit in files.DISABLED_UNITS:
        (root / "etc/systemd/system" / unit).unlink(missing_ok=True)
    leftovers = list((root / "var/cache/apt/archives").glob("*.deb"))
    for deb in leftovers:
        deb.unlink()
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1 or not (root / "initrd.img").exists():
        raise RuntimeError(f"expected one kernel and an initramfs in {root}/boot")
    return kernels[0].name.removeprefix("vmlinuz-")


def _grub_images(work: Path, log: Log) -> tuple[bytes, bytes, Path]:
    """(boot.img, i386-pc core.img, BOOTX64.EFI): GRUB with the early config and every
    module it needs built in."""
    early = work / "grub-early.cfg"
    early.write_text(files.GRUB_EARLY_CFG)
    core = work / "core.img"
    _run("grub-mkimage", "-O", "i386-pc", "-o", core, "-c", early, "-p", "/boot/grub",
         *files.GRUB_MODULES_BIOS, log=log)
    efi = work / "BOOTX64.EFI"
    _run("grub-mkimage", "-O", "x86_64-efi", "-o", efi, "-c", early, "-p", "/boot/grub",
         *files.GRUB_MODULES_EFI, log=log)
    boot = (GRUB_DIR / "i386-pc" / "boot.img").read_bytes()
    if len(boot) != 512 or \
            int.from_bytes(boot[BOOT_KERNEL_SECTOR:BOOT_KERNEL_SECTOR + 8], "little") != 1:
        raise RuntimeError("unexpected GRUB boot.img: its core image sector is not 1")
    return boot, core.read_bytes(), efi


def _assemble(raw: Path, root: Path, work: Path, root_uuid: str, log: Log) -> None:
    """Partition table, GRUB for BIOS and UEFI, the ESP and the root filesystem."""
    boot, core, efi = _grub_images(work, log)
    if 512 + len(core) > ESP_START:
        raise RuntimeError(f"GRUB core.img ({len(core)} bytes) does not fit before "
                           f"the first partition")
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    sector = 512
    _run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw, input=(
        "label: dos\nlabel-id: 0x5747a70a\nunit: sectors\n\n"
        f"start={ESP_START // sector}, size={ESP_SIZE // sector}, type=ef\n"
        f"start={ROOT_START // sector}, type=83, bootable\n"), log=log)
    esp = work / "esp.img"
    _run("mkfs.vfat", "-n", files.ESP_LABEL, "-i", "5747a70a", "-C", esp,
         str(ESP_SIZE // 1024), log=log)
    _run("mmd", "-i", esp, "::/EFI", "::/EFI/BOOT", log=log)
    _run("mcopy", "-i", esp, efi, "::/EFI/BOOT/BOOTX64.EFI", log=log)
    rootfs = work / "root.ext4"
    _run("mke2fs", "-q", "-F", "-t", "ext4", "-L", files.ROOT_LABEL, "-U", root_uuid,
         "-d", root, rootfs, f"{(DISK_SIZE - ROOT_START) // 1024}k", log=log)
    with open(raw, "r+b") as disk:
        disk.seek(0)
        mbr = bytearray(disk.read(512))
        mbr[:MBR_CODE] = boot[:MBR_CODE]  # keeps the disk signature and partitions
        disk.seek(0)
        disk.write(mbr)
        disk.write(core)  # sector 1 onwards; boot.img loads it from there
        _copy_sparse(esp, disk, ESP_START)
        _copy_sparse(rootfs, disk, ROOT_START)
    esp.unlink()
    rootfs.unlink()


def _copy_sparse(src: Path, disk: object, offset: int, chunk: int = MiB) -> None:
    """Write ``src`` into ``disk`` at ``offset``, skipping all-zero chunks (the disk
    file is sparse and reads zeros there already)."""
    zero = bytes(chunk)
    with open(src, "rb") as f:
        pos = offset
        while block := f.read(chunk):
            if block != zero[:len(block)]:
                disk.seek(pos)  # type: ignore[attr-defined]
                disk.write(block)  # type: ignore[attr-defined]
            pos += len(block)


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m strato.virt.cloudimage",
                                 description="Build the Debian cloud image (cached).")
    ap.add_argument("dest", type=Path, help="cache directory")
    ap.add_argument("--force", action="store_true", help="build even if cached")
    ap.add_argument("--verbose", "-v", action="store_true", help="print each command")
    args = ap.parse_args(argv)
    log: Log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else _quiet
    img = build(args.dest, force=args.force, log=log)
    describe(img)
    return 0


def describe(img: CloudImage) -> None:
    size = img.path.stat().st_size
    print(f"image   {img.path} ({size / MiB:.0f} MiB qcow2, "
          f"{img.virtual_size / MiB:.0f} MiB virtual)")
    print(f"kernel  {img.kernel_version}  root LABEL={img.root_label} UUID={img.root_uuid}")
    print(f"built in {img.build_seconds:.0f} s (key {img.key})")


def as_dict(img: CloudImage) -> dict[str, object]:
    d = asdict(img)
    d["path"] = str(img.path)
    return d


if __name__ == "__main__":
    sys.exit(main())
