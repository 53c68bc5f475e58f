"""``strato cloud-image``: reuses the cached build and registers it as a public qcow2
image through the real image upload path (checked with the openstack client)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from strato.virt.cloudimage import CloudImage
from tests.support import Server, free_port, strato


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def test_cli_reuses_the_cache_and_registers_the_image(tmp_path: Path,
                                                      cloud_image: CloudImage) -> None:
    srv = Server(tmp_path / "srv", free_port())
    srv.setup()
    dest = str(cloud_image.path.parent.parent)
    before = cloud_image.path.stat().st_mtime_ns
    first = strato("cloud-image", "--config", str(srv.conf), "--dest", dest, "--register",
                   timeout=600)
    assert str(cloud_image.path) in first.stdout  # the cached image, not a new build
    assert cloud_image.path.stat().st_mtime_ns == before
    line = next(x for x in first.stdout.splitlines() if x.startswith("image strato-cloud: "))
    image_id = line.split(": ", 1)[1].strip()
    again = strato("cloud-image", "--config", str(srv.conf), "--dest", dest, "--register")
    assert f"image strato-cloud: {image_id} (already registered)" in again.stdout
    srv.start()
    try:
        shown = srv.openstack_json("image", "show", "strato-cloud")
    finally:
        srv.stop()
    assert isinstance(shown, dict)
    assert shown["id"] == image_id
    assert (shown["disk_format"], shown["container_format"]) == ("qcow2", "bare")
    assert (shown["visibility"], shown["status"]) == ("public", "active")
    assert shown["size"] == cloud_image.path.stat().st_size
    assert shown["checksum"] == _md5(cloud_image.path)
    props = shown["properties"]
    assert props["hw_qemu_guest_agent"] == "yes"
    assert (props["os_distro"], props["os_version"]) == ("debian", "12")
    assert props["strato_cloud_image_key"] == cloud_image.key


def test_cli_with_dest_needs_no_config(tmp_path: Path,
                                                  cloud_image: CloudImage) -> None:
    """--dest alone needs no configuration file (and no database)."""
    out = strato("cloud-image", "--dest", str(cloud_image.path.parent.parent))
    assert str(cloud_image.path) in out.stdout
    assert f"key {cloud_image.key}" in out.stdout
