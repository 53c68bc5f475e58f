"""``strato cloud-image --register``: the Debian cloud image as public image
``strato-cloud`` (qcow2, boots by BIOS or UEFI, cloud-init reads the config drive or the
metadata service), uploaded the way ``strato guest`` uploads the tiny guest."""

from __future__ import annotations

from typing import Any

from strato.virt.cloudimage import CloudImage

from .guestimage import _admin_ctx, _upload, existing

#: image properties: the guest agent runs in it (quiesced snapshots), it is Debian 12
PROPERTIES = {"hw_qemu_guest_agent": "yes", "os_distro": "debian", "os_version": "12",
              "os_type": "linux"}


def register(services: Any, image: CloudImage, name: str = "strato-cloud",
             force: bool = False) -> tuple[str, bool]:
    """(image id, whether it was uploaded now): an active image ``name`` is reused
    unless ``force``."""
    if not force and (found := existing(services, name)):
        return found, False
    ctx = _admin_ctx(services)
    props = {**PROPERTIES, "strato_cloud_image_key": image.key}
    return _upload(services, ctx, name, image.path, "qcow2", "bare", props), True
