"""Instance disks in the block store: the root clone, its removal, kernel/ramdisk files."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from strato.image.models import Image as ImageRow
from strato.storage import errors
from strato.storage.location import parse as parse_location
from strato.storage.refs import drop_unneeded_snaps, retire

LOG = logging.getLogger(__name__)


def root_name(instance_id: str) -> str:
    return f"{instance_id}_disk"


def _image_row(services: Any, image_id: str) -> tuple[str, str, int]:
    with services.db.session(readonly=True) as session:
        image = session.get(ImageRow, image_id)
        if image is None or image.status != "active" or not image.location:
            raise RuntimeError(f"image {image_id} is not active or has no data")
        return image.location, image.disk_format or "raw", image.size or 0


def image_format(services: Any, image_id: str) -> str | None:
    with services.db.session(readonly=True) as session:
        image = session.get(ImageRow, image_id)
        return None if image is None else image.disk_format


def image_property(services: Any, image_id: str, key: str) -> str | None:
    with services.db.session(readonly=True) as session:
        image = session.get(ImageRow, image_id)
        if image is None:
            return None
        return next((p.value for p in image.properties if p.name == key), None)


def rescue_name(instance_id: str) -> str:
    """The rescue disk a rescued guest boots from (Nova's ``disk.rescue``)."""
    return f"{instance_id}_disk.rescue"


def create_root(services: Any, instance_id: str, image_id: str, size_gb: int,
                name: str | None = None) -> None:
    """``vms/<uuid>_disk`` (or ``name``): a copy-on-write clone of the image when the
    store can (same fsid, raw, a snapshot), else a copy; grown to the flavor's disk.  An
    iso image is a CD-ROM, not a disk: its root disk starts blank (at least 1 GiB).
    Idempotent."""
    engine, pool = services.stores.vms, services.stores.vms_pool
    name = name or root_name(instance_id)
    if not engine.exists(pool, name):
        location, disk_format, size = _image_row(services, image_id)
        if disk_format == "iso":
            engine.create(pool, name, max(size_gb, 1) << 30)
            return
        loc = None
        try:
            loc = parse_location(location)
        except errors.InvalidArgument:
            pass
        if loc is not None and loc.fsid == engine.fsid() and loc.snapshot \
                and disk_format == "raw":
            engine.clone(loc.pool, loc.image, loc.snapshot, pool, name)
        else:
            _copy_in(services, location, size, disk_format, pool, name)
    if size_gb:
        with engine.open(pool, name) as image:
            if image.size() < size_gb << 30:
                image.resize(size_gb << 30)


def _copy_in(services: Any, location: str, size: int, disk_format: str, pool: str,
             name: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix="strato-root-", dir=services.conf.compute.instances_path)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in services.image.store.read(location, size, chunk=8 << 20):
                f.write(chunk)
        services.stores.vms.import_from(pool, name, tmp,
                                    fmt="qcow2" if disk_format == "qcow2" else "raw")
    finally:
        os.unlink(tmp)


def remove_root(services: Any, instance_id: str, name: str | None = None,
                kept_as: str | None = None) -> None:
    """Seed 002's rules: a disk whose snapshots still have clones is kept as
    ``<name>.deleted`` until they go; otherwise it is removed with its snapshots and
    its parent's clone snapshot is released.  ``name``: another disk of the instance
    (the rescue disk); ``kept_as``: the name it is kept under instead."""
    engine, pool = services.stores.vms, services.stores.vms_pool
    name = name or root_name(instance_id)
    try:
        image = engine.open(pool, name)
    except errors.ImageNotFound:
        return
    with image:
        try:
            parent: tuple[str, str, str] | None = image.parent_info()
        except errors.ImageNotFound:
            parent = None
        needed = drop_unneeded_snaps(engine, image, [s.name for s in image.list_snaps()])
    retire(engine, pool, name, needed, parent, kept_as)


def cached_image_file(services: Any, image_id: str) -> Path:
    """A kernel or ramdisk image as a file under ``<instances_path>/_base`` (Nova's
    image cache), read from the image store once."""
    base = Path(services.conf.compute.instances_path).absolute() / "_base"
    base.mkdir(parents=True, exist_ok=True)
    path = base / image_id
    if path.exists():
        return path
    location, _, size = _image_row(services, image_id)
    fd, tmp = tempfile.mkstemp(prefix=f".{image_id}-", dir=base)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in services.image.store.read(location, size, chunk=8 << 20):
                f.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
