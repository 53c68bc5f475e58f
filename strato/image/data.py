"""Image data: streamed upload (``PUT /file``) and download (``GET /file``).

An upload never holds the image in memory: the request body is read as it arrives,
gathered into ``rbd_store_chunk_size`` pieces, inspected (format, virtual size, unsafe
references), hashed (md5 and sha512) and written to the store by threads of its own
(``_Stages``); data strato makes itself (``Uploader.ingest``) takes the same way.  Any
failure — a client that goes away, content that is not what it claims,
a quota crossed — removes the partial data and puts the image back to ``queued``, as
Glance does, so the client can upload again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import mmap
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, OverLimit, StratoError
from strato.image import formats
from strato.image.api import ImageAPI
from strato.image.models import Image
from strato.image.stores.base import NotFoundInStore, StoreWriter

LOG = logging.getLogger(__name__)
# Chunk buffers per upload: enough that md5 always has the next one ready, and enough
# slack that a stage the scheduler holds back a moment does not stall the others (8
# keeps two cores ~2% busier than 4 did: 0.92 vs 0.90 of the CPU-bound ceiling, A/B).
_RING = 8


@dataclass
class Download:
    chunks: Iterator[bytes]
    size: int
    checksum: str | None


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full(exc: BaseException) -> bool:
    """The store ran out of room (the exception or one it was raised from)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Uploader:
    """One ``PUT /v2/images/{id}/file``."""

    def __init__(self, api: ImageAPI, ctx: RequestContext | None, image_id: str,
                 host: str, store: str | None = None) -> None:
        """``store``: the id of the store to write to (multi-store), else the default."""
        self.api = api
        if store is not None and store not in api.stores:
            raise BadRequest(f"Store for identifier {store} not found")
        self.target = api.stores[store] if store is not None else api.store
        self.ctx = ctx
        self.image_id = image_id
        self.host = host
        self.chunk = api.conf.glance_store.rbd_store_chunk_size << 20
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha512 = hashlib.sha512()
        self.inspector = formats.Inspector()
        self.size = 0

    def _begin(self, content_length: int | None) -> tuple[str | None, int | None]:
        """queued → saving (conditional), after policy, format fields and quota."""
        assert self.ctx is not None, "an upload from a client has a request context"
        with self.api.db.session() as session:
            image = self.api.load(session, self.ctx, self.image_id)
            self.api.require_owner(self.ctx, image, "upload_image")
            if image.disk_format is None or image.container_format is None:
                raise BadRequest("Properties disk_format, container_format must be set "
                                 "prior to saving data.")
            if image.status != "queued":
                raise Conflict(f"Image status transition from {image.status} to saving is "
                               "not allowed.")
            room = self._room(session, image.owner)
            if content_length is not None and room is not None and content_length > room:
                raise OverLimit(self._quota_message(content_length))
            disk_format = image.disk_format
        if not self.api._set_status(self.image_id, "queued", "saving",
                                    upload_host=self.host):
            raise Conflict("Image is already being uploaded.")
        return disk_format, room

    def _room(self, session: Any, owner: str | None) -> int | None:
        """Bytes this upload may still take: the size cap and the project's quota."""
        room = self.api.quotas.size_cap
        total_mb = self.api.quotas.size_total_mb
        if total_mb >= 0:
            used = session.scalar(select(func.coalesce(func.sum(Image.size), 0)).where(
                Image.owner == owner, Image.id != self.image_id)) or 0
            room = min(room, total_mb * (1 << 20) - used)
        return room

    def _quota_message(self, attempted: int) -> str:
        return (f"Image upload of {attempted} bytes exceeds the storage quota or the "
                "image size cap.")

    async def run(self, receive: Receive, content_length: int | None) -> None:
        """Take the request body straight from the ASGI ``receive`` (one call per piece
        the server read: no stream wrapper in between)."""
        disk_format, room = await run_in_threadpool(self._begin, content_length)
        writer: StoreWriter | None = None
        try:
            writer = await run_in_threadpool(self.target.writer, self.image_id,
                                             content_length)
            await self._pump(receive, writer, room)
            if content_length is not None and self.size != content_length:
                raise BadRequest(f"Upload ended after {self.size} of {content_length} "
                                 "bytes.")
            location, found = await run_in_threadpool(self._seal, writer, disk_format)
        except BaseException as exc:
            await run_in_threadpool(self._fail, writer, exc)
            if disk_full(exc):  # Glance: 413, the client may retry when there is room
                raise OverLimit(f"Image storage media is full: there is no room for the "
                                f"{self.size} bytes of image {self.image_id} in the "
                                "store.") from None
            raise
        await run_in_threadpool(self._finish, location, found)

    async def _pump(self, receive: Receive, writer: StoreWriter, room: int | None) -> None:
        """Feed the request body through the stages as it arrives."""
        stages = _Stages(self, writer)
        try:
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect
                    raise ClientDisconnect()
                piece = message.get("body", b"")
                more = message.get("more_body", False)
                if not piece:
                    continue
                self.size += len(piece)
                if room is not None and self.size > room:
                    raise OverLimit(self._quota_message(self.size))
                view = memoryview(piece)
                while view:
                    if stages.fill == 0:
                        for future in stages.before_put():
                            await asyncio.wrap_future(future)
                    view = stages.put(view)
            stages.put_rest()
            for future in stages.in_flight():
                await asyncio.wrap_future(future)
        finally:  # on failure too: no thread may still touch the ring or the writer
            await run_in_threadpool(stages.close)

    def ingest(self, chunks: Iterable[bytes], disk_format: str | None,
               expected: str = "queued") -> None:
        """Store data that strato itself produced (a volume uploaded to an image) or
        that a client staged (``expected='importing'``: an interoperable import).

        The image is ``expected``, its record made by the caller; the same hashing,
        inspection and clean-up as a client's upload apply.
        """
        if not self.api._set_status(self.image_id, expected, "saving",
                                    upload_host=self.host):
            raise Conflict(f"Image {self.image_id} is not {expected}.")
        writer: StoreWriter | None = None
        try:
            writer = self.target.writer(self.image_id, None)
            stages = _Stages(self, writer)
            try:
                for data in chunks:
                    self.size += len(data)
                    view = memoryview(data)
                    while view:
                        for future in stages.before_put():
                            future.result()
                        view = stages.put(view)
                stages.put_rest()
                for future in stages.in_flight():
                    future.result()
            finally:
                stages.close()
            location, found = self._seal(writer, disk_format)
        except BaseException as exc:
            self._fail(writer, exc)
            raise
        self._finish(location, found)

    def _seal(self, writer: StoreWriter, disk_format: str | None
              ) -> tuple[str, formats.Detected]:
        """All data is in: refuse content that is not what it claims, else commit it."""
        found = self.inspector.detect()
        try:
            formats.check(disk_format, found)
        except formats.FormatError as exc:
            raise BadRequest(str(exc)) from None
        return writer.commit(), found

    def _fail(self, writer: StoreWriter | None, exc: BaseException) -> None:
        LOG.info("image %s: upload failed (%s: %s); partial data removed", self.image_id,
                 type(exc).__name__, exc)
        if writer is not None:
            writer.abort()
        self.api._set_status(self.image_id, "saving", "queued", upload_host=None)

    def _finish(self, location: str, found: formats.Detected) -> None:
        done = self.api._set_status(
            self.image_id, "saving", "active", upload_host=None, size=self.size,
            virtual_size=found.virtual_size, checksum=self.md5.hexdigest(),
            os_hash_algo="sha512", os_hash_value=self.sha512.hexdigest(),
            store=self.target.name, location=location)
        if not done:  # deleted while uploading: the data has no owner now
            LOG.info("image %s went away during its upload; removing its data",
                     self.image_id)
            try:
                self.target.delete(location)
            except NotFoundInStore:
                pass
            raise Conflict(f"Image {self.image_id} was deleted during the upload.")


class _Stages:
    """The ordered threads an upload's data goes through — md5, sha512 and the store
    write — fed from a ring of chunk-sized buffers.

    md5 is the slowest stage and cannot be split, so it must never wait on the network,
    the other hash or the disk: each stage takes the next full buffer as soon as it is
    done with the last one.  The buffers are reused (a fresh 8 MiB object costs a page
    fault per 4 KiB) and page-aligned (mmap), so the local engine writes them with
    O_DIRECT, without a copy into the page cache.  Callers wait on ``before_put`` and
    ``in_flight`` in their own way (the API in its event loop, ``ingest`` blocking).
    """

    def __init__(self, uploader: Uploader, writer: StoreWriter) -> None:
        self.up = uploader
        self.writer = writer
        self.threads = [ThreadPoolExecutor(1, thread_name_prefix=f"image-{what}")
                        for what in ("md5", "sha512", "write")]
        self.ring = [mmap.mmap(-1, uploader.chunk) for _ in range(_RING)]
        self.busy: list[list[Future[Any]]] = [[] for _ in range(_RING)]
        self.slot = self.fill = 0

    def before_put(self) -> list[Future[Any]]:
        """What must be done with the current buffer before ``put`` may fill it."""
        return self.busy[self.slot] if self.fill == 0 else []

    def put(self, view: memoryview) -> memoryview:
        """Copy what fits of ``view`` into the current buffer, start the stages on it
        once full, and return the rest."""
        if self.fill == 0:
            self.busy[self.slot] = []  # the caller waited for them (before_put)
        buf, chunk = self.ring[self.slot], len(self.ring[self.slot])
        n = min(len(view), chunk - self.fill)
        buf[self.fill:self.fill + n] = view[:n]
        self.fill += n
        if self.fill == chunk:
            self._start(buf)
            self.slot, self.fill = (self.slot + 1) % _RING, 0
        return view[n:]

    def put_rest(self) -> None:
        """The last, partial buffer (its stages have finished with it: see ``put``)."""
        if self.fill:
            self._start(bytes(self.ring[self.slot][:self.fill]))
            self.slot, self.fill = (self.slot + 1) % _RING, 0

    def _start(self, data: mmap.mmap | bytes) -> None:
        self.up.inspector.feed(data)
        self.busy[self.slot] = [
            self.threads[0].submit(self.up.md5.update, data),
            self.threads[1].submit(self.up.sha512.update, data),
            self.threads[2].submit(self.writer.write, data)]

    def in_flight(self) -> list[Future[Any]]:
        return [f for futures in self.busy for f in futures]

    def close(self) -> None:
        """Wait for every stage (after a failure too), then free the threads and buffers."""
        wait(self.in_flight())
        for thread in self.threads:
            thread.shutdown(wait=False)
        for buf in self.ring:
            with contextlib.suppress(BufferError):  # a traceback may still view it
                buf.close()


def checksums(chunks: Iterable[bytes]) -> tuple[str, str]:
    """md5 and sha512 of data strato placed without reading it (a clone), read back."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    for chunk in chunks:
        md5.update(chunk)
        sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def file_chunks(path: Path, size: int = 8 << 20) -> Iterator[bytes]:
    """A file's data in ``size`` pieces, for ``Uploader.ingest``."""
    with open(path, "rb") as f:
        while data := f.read(size):
            yield data


def download(api: ImageAPI, ctx: RequestContext, image_id: str) -> Download | None:
    """The data of an active image; None (204) for one that has none yet."""
    with api.db.session(readonly=True) as session:
        image = api.load(session, ctx, image_id)
        api.policy.enforce(ctx, "download_image", {"project_id": image.owner})
        if image.status == "deactivated" and not ctx.is_admin:
            raise Forbidden("The requested image has been deactivated. Image data download "
                            "is forbidden.")
        if image.status not in ("active", "deactivated") or image.location is None:
            return None
        location, size, checksum = image.location, image.size or 0, image.checksum
    try:
        chunks = api.store.read(location, size, chunk=8 << 20)
    except NotFoundInStore:
        raise StratoError(f"The data of image {image_id} is missing from the store.") \
            from None
    return Download(chunks=chunks, size=size, checksum=checksum)


def recover(api: ImageAPI, host: str) -> int:
    """After a crash: finish what uploads and deletes on ``host`` left half done.

    An image still ``saving`` for this host had its upload cut off with the process:
    its partial data is removed and it goes back to ``queued``.  An image left in
    ``pending_delete`` gets a job that finishes its delete if it has none (the job,
    not this start, retries until the data is gone; clones that still need the data
    send the image back to the status it had).
    """
    fixed = 0
    with api.db.session(readonly=True) as session:
        saving = list(session.scalars(select(Image.id).where(
            Image.status == "saving", Image.upload_host == host)))
    for image_id in saving:
        api.store.discard(image_id)
        fixed += api._set_status(image_id, "saving", "queued", upload_host=None)
    fixed += api.ensure_delete_jobs()
    if fixed:
        LOG.info("image recovery: %d image(s) put right at %s", fixed,
                 datetime.now(UTC).isoformat())
    return fixed
