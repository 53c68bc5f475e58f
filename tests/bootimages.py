"""Tiny bootable disk images built on the spot (no downloads) for the boot tests.

``mbr_disk``: a raw disk whose MBR boot sector is hand-assembled 16-bit code that
writes a marker to COM1 and halts (SeaBIOS boots it from any bus).  ``uefi_disk``: a
GPT disk with a FAT EFI system partition holding ``EFI/BOOT/BOOTX64.EFI``, a GRUB
built by ``grub-mkstandalone`` whose embedded grub.cfg prints a marker on the serial
port (OVMF boots it).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

MBR_MARKER = "STRATO-MBR-BOOT-OK"
UEFI_MARKER = "STRATO-UEFI-BOOT-OK"

_ORG = 0x7C00
_CODE = bytes([
    0xFA,              # cli
    0x31, 0xC0,        # xor ax, ax
    0x8E, 0xD8,        # mov ds, ax
    0xFC,              # cld
    0xBE, 0, 0,        # mov si, msg (patched below)
    0xBA, 0xF8, 0x03,  # mov dx, 0x3f8 (COM1)
    0xAC,              # next: lodsb
    0x84, 0xC0,        # test al, al
    0x74, 0x03,        # jz done
    0xEE,              # out dx, al
    0xEB, 0xF8,        # jmp next
    0xF4,              # done: hlt
    0xEB, 0xFD,        # jmp done
])


def boot_sector(marker: str = MBR_MARKER, partition_type: int = 0) -> bytes:
    """512 bytes: the code, the message, an optional partition entry, 0x55AA."""
    msg_at = _ORG + len(_CODE)
    code = bytearray(_CODE)
    code[7:9] = msg_at.to_bytes(2, "little")
    sector = bytearray(512)
    body = bytes(code) + marker.encode() + b"\r\n\0"
    sector[:len(body)] = body
    if partition_type:  # one partition from LBA 1 to 2047
        entry = bytes([0x80, 0, 2, 0, partition_type, 0, 0, 0]) + (1).to_bytes(4, "little") \
            + (2047).to_bytes(4, "little")
        sector[446:462] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def mbr_bytes(size: int, marker: str = MBR_MARKER) -> bytes:
    """``size`` bytes of disk starting with ``boot_sector``: an image the API accepts."""
    return boot_sector(marker) + bytes(size - 512)


def mbr_disk(path: Path, marker: str = MBR_MARKER, size: int = 1 << 20) -> Path:
    path.write_bytes(boot_sector(marker) + bytes(size - 512))
    return path


def boot_iso(path: Path, marker: str) -> Path:
    """An El Torito ISO (no-emulation boot) whose boot image is ``boot_sector``: the
    BIOS loads it at 0x7c00, as it does an MBR."""
    with tempfile.TemporaryDirectory(prefix="strato-iso-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        (root / "boot.bin").write_bytes(boot_sector(marker) + bytes(1536))
        subprocess.run(["genisoimage", "-quiet", "-o", str(path), "-V", "STRATOBOOT",
                        "-b", "boot.bin", "-no-emul-boot", "-boot-load-size", "4",
                        str(root)], check=True, capture_output=True)
    return path


def blank_disk(path: Path, size: int = 1 << 20) -> Path:
    """A disk with no boot code at all (it must be refused)."""
    path.write_bytes(bytes(size))
    return path


def to_qcow2(raw: Path, out: Path) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
                   check=True, capture_output=True)
    return out


def uefi_disk(path: Path, marker: str = UEFI_MARKER) -> Path:
    """34 MiB: a GPT whose one partition (EF00, from 1 MiB) is a FAT ESP with GRUB."""
    with tempfile.TemporaryDirectory(prefix="strato-esp-") as tmp:
        t = Path(tmp)
        cfg = t / "grub.cfg"
        cfg.write_text("serial --unit=0 --speed=115200\nterminal_input serial\n"
                       f"terminal_output serial\necho {marker}\nsleep 3600\n")
        efi = t / "BOOTX64.EFI"
        subprocess.run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(efi),
                        "--modules=serial terminal echo sleep", "--locales=", "--fonts=",
                        "--themes=", f"boot/grub/grub.cfg={cfg}"],
                       check=True, capture_output=True)
        esp = t / "esp.img"
        subprocess.run(["mkfs.vfat", "-C", str(esp), str(32 << 10)], check=True,
                       capture_output=True)
        subprocess.run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], check=True,
                       capture_output=True)
        subprocess.run(["mcopy", "-i", str(esp), str(efi), "::/EFI/BOOT/BOOTX64.EFI"],
                       check=True, capture_output=True)
        with path.open("wb") as f:
            f.truncate(34 << 20)
        subprocess.run(["sfdisk", "--quiet", str(path)], check=True, capture_output=True,
                       input=b"label: gpt\nstart=2048, size=65536, type=U\n")
        subprocess.run(["dd", f"if={esp}", f"of={path}", "bs=1M", "seek=1", "conv=notrunc",
                        "status=none"], check=True)
    return path
