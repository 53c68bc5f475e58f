"""Look at an image's bytes as they stream in: what format is it, how big is its disk,
and does it point at files outside itself (a known way to read host files).

Only the first MiB and the last 512 bytes are kept, so inspection costs no memory
however large the upload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEAD = 1 << 20
QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_EXT_DATA_FILE = 0x44415441
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "iso", "ami", "ari", "aki")
CONTAINER_FORMATS = ("bare", "ovf", "aki", "ari", "ami", "ova", "docker", "compressed")
# Declared formats whose content is taken as it is (no header of their own).
_RAW_LIKE = ("raw", "ami", "ari", "aki")
_SAFE_VMDK_TYPES = ("monolithicSparse", "streamOptimized")


class FormatError(ValueError):
    """The content is not what it claims, or is unsafe; the message says which."""


@dataclass(frozen=True)
class Detected:
    format: str
    virtual_size: int | None
    unsafe: str | None = None  # why the content must be refused


def _qcow2(head: bytes) -> Detected:
    if len(head) < 72:
        return Detected("qcow2", None, "truncated qcow2 header")
    version, bf_off, bf_size, _bits, size = struct.unpack(">IQIIQ", head[4:32])
    if bf_off or bf_size:
        return Detected("qcow2", size, "a qcow2 image with a backing file")
    if version >= 3 and len(head) >= 104:
        incompat = struct.unpack(">Q", head[72:80])[0]
        if incompat & _QCOW2_INCOMPAT_DATA_FILE:
            return Detected("qcow2", size, "a qcow2 image with an external data file")
        pos = struct.unpack(">I", head[100:104])[0]
        while pos + 8 <= len(head):
            etype, elen = struct.unpack(">II", head[pos:pos + 8])
            if etype == 0:
                break
            if etype == _QCOW2_EXT_DATA_FILE:
                return Detected("qcow2", size, "a qcow2 image with an external data file")
            pos += 8 + ((elen + 7) & ~7)
    return Detected("qcow2", size)


def _vmdk(head: bytes) -> Detected:
    capacity, _grain, desc_off, desc_size = struct.unpack("<QQQQ", head[12:44])
    text = head[desc_off * 512:(desc_off + desc_size) * 512].split(b"\0", 1)[0]
    kind = None
    for line in text.decode("latin-1").splitlines():
        if line.strip().startswith("createType"):
            kind = line.split("=", 1)[1].strip().strip('"')
    if kind not in _SAFE_VMDK_TYPES:
        return Detected("vmdk", capacity * 512, f"a vmdk of type {kind} (it may refer to "
                                                "other files)")
    return Detected("vmdk", capacity * 512)


class Inspector:
    """Feed it every chunk; then ``detect()``."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = b""
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < HEAD:
            self.head += chunk[:HEAD - len(self.head)]
        self.tail = (self.tail + chunk[-512:])[-512:]
        self.size += len(chunk)

    def detect(self) -> Detected:
        head = bytes(self.head)
        if head[:4] == QCOW2_MAGIC:
            return _qcow2(head)
        if head[:4] == b"KDMV":
            return _vmdk(head)
        if head.startswith(b"# Disk DescriptorFile"):
            return Detected("vmdk", None, "a vmdk descriptor (it refers to other files)")
        if head[:8] == b"vhdxfile":
            return Detected("vhdx", None)
        if self.tail[:8] == b"conectix" and len(self.tail) == 512:
            return Detected("vhd", struct.unpack(">Q", self.tail[48:56])[0])
        if head[0x8001:0x8006] == b"CD001":
            return Detected("iso", self.size)
        return Detected("raw", self.size)


def check(declared: str | None, found: Detected) -> None:
    """Refuse content that is unsafe or is not the declared ``disk_format``."""
    if found.unsafe:
        raise FormatError(f"Image content refused: {found.unsafe}.")
    if declared is None:
        return
    if declared in _RAW_LIKE:
        ok = found.format in ("raw", "iso")
    else:
        ok = found.format == declared
    if not ok:
        raise FormatError(f"Image disk_format is {declared} but its content is "
                          f"{found.format}.")
