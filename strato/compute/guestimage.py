"""``strato guest``: build the tiny test guest and register it as AMI-style images.

Three images: the kernel (``aki``), the ramdisk (``ari``) and the raw root disk whose
``kernel_id``/``ramdisk_id`` properties name the other two, so
``openstack server create --image strato-guest`` boots it by direct kernel boot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from strato.context import RequestContext
from strato.identity.models import Project
from strato.image.data import Uploader, file_chunks
from strato.image.models import Image
from strato.virt.guestbuild import CMDLINE, build_guest


def _admin_ctx(services: Any) -> RequestContext:
    with services.db.session(readonly=True) as session:
        project = session.scalars(select(Project).where(Project.name == "admin")).first()
        if project is None:
            raise RuntimeError("no admin project: run `strato bootstrap` first")
        return RequestContext(user_id="strato-guest", project_id=project.id,
                              roles=["admin", "member", "reader"])


def _upload(services: Any, ctx: RequestContext, name: str, path: Path, disk_format: str,
            container_format: str, props: dict[str, str]) -> str:
    image = services.image.create(ctx, {"name": name, "disk_format": disk_format,
                                        "container_format": container_format,
                                        "visibility": "public", **props})
    try:
        Uploader(services.image, ctx, image["id"], services.conf.DEFAULT.host).ingest(
            file_chunks(path), disk_format)
    except BaseException:
        services.image.delete(ctx, image["id"])
        raise
    return str(image["id"])


def existing(services: Any, name: str) -> str | None:
    with services.db.session(readonly=True) as session:
        row = session.scalars(select(Image).where(Image.name == name,
                                                  Image.status == "active")).first()
        return row.id if row else None


def register(services: Any, name: str = "strato-guest", dest: Path | None = None,
             force: bool = False) -> str:
    """The id of image ``name`` (built and registered when missing, or when ``force``)."""
    if not force and (found := existing(services, name)):
        return found
    ctx = _admin_ctx(services)
    dest = dest or Path(services.conf.DEFAULT.state_path) / "guest-build"
    g = build_guest(dest)
    kernel = _upload(services, ctx, f"{name}-kernel", g.kernel, "aki", "aki", {})
    ramdisk = _upload(services, ctx, f"{name}-ramdisk", g.initramfs, "ari", "ari", {})
    return _upload(services, ctx, name, g.disk, "raw", "bare", {
        "kernel_id": kernel, "ramdisk_id": ramdisk, "os_command_line": CMDLINE,
        "hw_disk_bus": "virtio", "hw_qemu_guest_agent": "yes"})
