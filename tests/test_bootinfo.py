"""``strato.compute.bootinfo`` without a server: the guest's first sectors read through
real qcow2 files (every layout ``qemu-img`` makes), the boot checks, the defaults."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from strato.compute import bootinfo
from tests.bootimages import blank_disk, boot_sector, mbr_disk, uefi_disk


@pytest.mark.parametrize("opts", ["cluster_size=512", "cluster_size=65536",
                                  "cluster_size=2M", "extended_l2=on,cluster_size=65536",
                                  "compat=0.10"])
def test_qcow2_head_is_what_the_guest_sees(tmp_path: Path, opts: str) -> None:
    for src in (mbr_disk(tmp_path / "m.raw"), uefi_disk(tmp_path / "u.raw"),
                blank_disk(tmp_path / "b.raw")):
        out = tmp_path / "t.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", opts,
                        str(src), str(out)], check=True)
        data = out.read_bytes()
        head = bootinfo.disk_head(lambda n, d=data: d[:n], "qcow2", len(data))
        assert head == src.read_bytes()[:bootinfo.HEAD]


def test_compressed_qcow2_is_not_guessed(tmp_path: Path) -> None:
    out = tmp_path / "c.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2",
                    str(mbr_disk(tmp_path / "m.raw")), str(out)], check=True)
    data = out.read_bytes()
    assert bootinfo.disk_head(lambda n: data[:n], "qcow2", len(data)) is None


def test_boot_problem(tmp_path: Path) -> None:
    mbr = boot_sector().ljust(4096, b"\0")
    esp = boot_sector(partition_type=0xEF).ljust(4096, b"\0")
    gpt = uefi_disk(tmp_path / "u.raw").read_bytes()[:4096]
    blank = bytes(4096)
    assert bootinfo.boot_problem(mbr, "bios") is None
    assert bootinfo.boot_problem(gpt, "bios") is None
    assert "no MBR boot signature" in str(bootinfo.boot_problem(blank, "bios"))
    assert bootinfo.boot_problem(gpt, "uefi") is None
    assert bootinfo.boot_problem(esp, "uefi") is None
    assert "0xEF" in str(bootinfo.boot_problem(mbr, "uefi"))


def test_config_defaults_and_ovmf_missing() -> None:
    """Defaults as Nova (CD-ROMs on IDE for pc, SATA for q35), the attach bus, and
    UEFI refused when the firmware is not installed."""
    from strato.compute import bootinfo
    from strato.exceptions import BadRequest

    assert bootinfo.cdrom_bus({}) == "ide"
    assert bootinfo.cdrom_bus({"hw_machine_type": "q35"}) == "sata"
    assert bootinfo.cdrom_bus({"hw_machine_type": "q35", "hw_cdrom_bus": "scsi"}) == "scsi"
    assert bootinfo.attach_bus({"hw_disk_bus": "ide"}) == "virtio"
    assert bootinfo.attach_bus({"hw_disk_bus": "scsi"}) == "scsi"
    from strato.virt.qemu import devices

    versioned = next(m for m in sorted(devices.machine_types()) if m.startswith("pc-i440fx-"))
    assert bootinfo.boot_meta({"hw_disk_bus": "SCSI", "hw_machine_type": versioned,
                               "other": "x"}) == {"hw_disk_bus": "scsi",
                                                  "hw_machine_type": versioned}
    with pytest.raises(BadRequest, match="UEFI is not supported"):
        bootinfo.boot_meta({"hw_firmware_type": "uefi"}, ovmf=Path("/nonexistent/OVMF.fd"))
