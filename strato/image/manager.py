"""Image jobs: the hash pass of images whose data strato placed without reading it."""

from __future__ import annotations

import logging
from typing import Any

from strato.image import imports  # noqa: F401 - registers the image.import handler
from strato.image.data import checksums
from strato.image.models import Image
from strato.image.stores.base import InUseByStore, NotFoundInStore
from strato.jobs.worker import JobContext, handler

LOG = logging.getLogger(__name__)


@handler("image.hash")
def hash_image(ctx: JobContext) -> dict[str, Any]:
    """md5 and sha512 of an active image made by cloning (an instance snapshot): the
    image is usable at once, its checksums follow when this pass has read the data."""
    services, image_id = ctx.services, ctx.payload["image_id"]
    with services.db.session(readonly=True) as session:
        image = session.get(Image, image_id)
        if image is None or image.location is None or image.checksum is not None:
            return {"skipped": "gone or hashed"}
        location, size = image.location, image.size or 0
    try:
        md5, sha512 = checksums(services.image.store.read(location, size, chunk=8 << 20))
    except NotFoundInStore:
        return {"skipped": "data gone"}
    done = services.image.set_hashes(image_id, location, md5, sha512)
    return {"hashed": image_id, "stored": done}


@handler("image.delete")
def delete_image(ctx: JobContext) -> dict[str, Any]:
    """Finish a delete the request could not: data, then record (retried until the
    data is gone; clones that need it put the image back as it was)."""
    try:
        return ctx.services.image.finish_delete(ctx.payload["image_id"])
    except InUseByStore as exc:
        return {"in_use": str(exc)}


@handler("image.release")
def release(ctx: JobContext) -> dict[str, Any]:
    """What a deleted image held on its parent (a ``*.clone_snap``), released once
    nothing stops it (a running guest writing above it, say)."""
    ctx.services.image.store.release(ctx.payload)
    return {"released": ctx.payload}
