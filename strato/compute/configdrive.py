"""The config drive: Nova's ISO 9660 image labelled ``config-2`` with the instance's
documents (``strato.compute.instance_metadata``), written into the instance directory
and attached to the guest as a read-only CD-ROM.

It is written at build from the instance's current state; :func:`write` can make it
again at any later time (a rebuild, a resize), with the admin password when there is
one to give (it is never stored: without one the drive simply has no ``admin_pass``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from strato.compute import bootinfo, ports
from strato.compute.instance_metadata import InstanceMetadata
from strato.compute.models import BlockDevice, Instance
from strato.virt.qemu import CdromSpec

LABEL = "config-2"
FILE_NAME = "disk.config"  # Nova's name for it in the instance directory
DEVICE_ID = "configdrive"
PUBLISHER = "OpenStack Compute (strato)"


def required(services: Any, inst: Instance) -> bool:
    """Nova's ``configdrive.required_by``: asked for, forced by the host's
    configuration, or made mandatory by the image (``img_config_drive``)."""
    if inst.config_drive or services.conf.compute.force_config_drive:
        return True
    if inst.image_ref:
        from strato.compute.disks import image_property

        return image_property(services, inst.image_ref, "img_config_drive") == "mandatory"
    return False


def path(services: Any, instance_id: str) -> Path:
    return Path(services.virt.paths(instance_id).dir) / FILE_NAME


def cdrom_bus(services: Any, inst: Instance) -> str:
    """The bus the config drive's CD-ROM sits on: the image's ``hw_cdrom_bus``, else
    the machine's default (IDE on pc, SATA on q35), as Nova does."""
    return bootinfo.cdrom_bus(inst.boot_meta)


def cdrom(services: Any, inst: Instance) -> CdromSpec:
    return CdromSpec(DEVICE_ID, path(services, inst.id), cdrom_bus(services, inst))


def build_iso(files: list[tuple[str, bytes]], dest: Path) -> None:
    """Write ``files`` (relative path, content) as an ISO at ``dest``, atomically, with
    the options Nova gives genisoimage (Rock Ridge and Joliet names, label config-2)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".configdrive-") as tmp:
        root = Path(tmp) / "root"
        for rel, content in files:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        out = Path(tmp) / "drive.iso"
        res = subprocess.run(
            ["genisoimage", "-o", str(out), "-ldots", "-allow-lowercase", "-allow-multidot",
             "-l", "-publisher", PUBLISHER, "-quiet", "-J", "-r", "-V", LABEL, str(root)],
            capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"genisoimage failed: {res.stderr.strip()[-500:]}")
        os.chmod(out, 0o600)  # it may hold the admin password
        os.replace(out, dest)


def write(services: Any, instance_id: str, admin_pass: str | None = None) -> Path:
    """(Re)write the instance's config drive from its current state; its path."""
    with services.db.session(readonly=True) as session:
        inst = session.get(Instance, instance_id)
        if inst is None:
            raise LookupError(f"instance {instance_id} not found")
        bdms = list(session.scalars(select(BlockDevice).where(
            BlockDevice.instance_uuid == instance_id).order_by(BlockDevice.device_name)))
        session.expunge_all()
    dest = path(services, instance_id)
    md = InstanceMetadata(inst, bdms, admin_pass=admin_pass,
                          ports_data=ports.network_data(services, inst.id))
    build_iso(list(md.config_drive_files()), dest)
    return dest
