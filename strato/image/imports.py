"""Interoperable image import (Glance v2.6+): stage data, then import it.

``PUT /v2/images/{id}/stage`` keeps the client's data in a staging file on this host
(the image goes ``queued`` → ``uploading``); ``POST /v2/images/{id}/import`` with the
``glance-direct`` method moves it ``uploading`` → ``importing`` and hands the rest to
an ``image.import`` job, which sends the staged data the same way as an upload
(hashes, format inspection, the store) and ends ``active`` — or back in ``queued``
with ``os_glance_failed_import`` noted, as Glance does.  The job's record is the
import's task (``GET /v2/images/{id}/tasks``).

``web-download`` (``strato.image.webdownload``) fetches the data from a URI that passes
``[import_filtering_opts]`` into the image, from ``queued``, in the same kind of job.
``[image] enabled_import_methods`` says which of the two are offered.  ``copy-image``
needs a second store and ``glance-download`` another region's image service: strato has
neither, and answers 400 for them as Glance does for a method its deployment has not
enabled (``/v2/info/import`` lists what is enabled).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound, OverLimit
from strato.image.api import ImageAPI, iso
from strato.image.api import staged_path as api_staged_path
from strato.image.data import Uploader
from strato.image.models import Image, ImageProperty
from strato.image.stores.base import NotFoundInStore
from strato.image.webdownload import fetch, uri_allowed
from strato.jobs.models import DONE, FAILED, PENDING, RUNNING, Job
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, PermanentError, handler
from strato.storage import crash

LOG = logging.getLogger(__name__)

AVAILABLE = ("glance-direct", "web-download", "copy-image")
# Methods Glance knows that strato cannot offer, and why.
UNAVAILABLE = {
    "glance-download": "strato has no other region's image service to fetch from",
    "copy-image": "there is a single store to copy to ([glance_store] enabled_backends "
                  "names one)",
}
IMPORTING = "os_glance_importing_to_stores"
FAILED_IMPORT = "os_glance_failed_import"
_FLUSH = 8 << 20
TASK_TTL = timedelta(hours=48)  # Glance's task_time_to_live


def staged_path(api: ImageAPI, image_id: str) -> Path:
    return api_staged_path(api.conf, image_id)


# ------------------------------------------------------------------ stage
def _begin_stage(api: ImageAPI, ctx: RequestContext, image_id: str) -> int | None:
    """queued → uploading (conditional) after policy; the bytes it may take."""
    with api.db.session(readonly=True) as session:
        image = api.load(session, ctx, image_id)
        api.require_owner(ctx, image, "add_image_stage")
        if image.status != "queued":
            raise Conflict(f"Image {image_id} is not in queued state: it is "
                           f"{image.status}.")
        room = Uploader(api, ctx, image_id, "")._room(session, image.owner)
    if not api._set_status(image_id, "queued", "uploading"):
        raise Conflict(f"Image {image_id} is already being staged or uploaded.")
    return room


def _unstage(api: ImageAPI, image_id: str, status: str = "uploading") -> None:
    with contextlib.suppress(FileNotFoundError):
        staged_path(api, image_id).unlink()
    api._set_status(image_id, status, "queued")


async def stage(api: ImageAPI, ctx: RequestContext, image_id: str, receive: Receive,
                content_length: int | None) -> None:
    """Write the request body to this image's staging file as it arrives."""
    room = await run_in_threadpool(_begin_stage, api, ctx, image_id)
    if content_length is not None and room is not None and content_length > room:
        await run_in_threadpool(_unstage, api, image_id)
        raise OverLimit(f"Staging {content_length} bytes exceeds the storage quota or "
                        "the image size cap.")
    path = staged_path(api, image_id)
    size = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            pending = bytearray()
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientDisconnect()
                piece = message.get("body", b"")
                more = message.get("more_body", False)
                size += len(piece)
                if room is not None and size > room:
                    raise OverLimit(f"Staging {size} bytes exceeds the storage quota or "
                                    "the image size cap.")
                pending += piece
                if len(pending) >= _FLUSH:
                    await run_in_threadpool(out.write, bytes(pending))
                    pending.clear()
            if pending:
                await run_in_threadpool(out.write, bytes(pending))
            await run_in_threadpool(os.fsync, out.fileno())
        if content_length is not None and size != content_length:
            raise BadRequest(f"Staging ended after {size} of {content_length} bytes.")
    except BaseException:
        await run_in_threadpool(_unstage, api, image_id)
        raise


# ------------------------------------------------------------------ import
def enabled_methods(api: ImageAPI) -> list[str]:
    """The import methods this deployment offers, in the configured order."""
    return [m for m in api.conf.image.enabled_import_methods if m in AVAILABLE
            and (m != "copy-image" or api.multi_store)]


def _check_request(api: ImageAPI, body: Any, header_store: str | None = None
                   ) -> tuple[str, list[str]]:
    """The method and the stores to import to (Glance's get_stores_from_request: the
    ``stores`` list, or every store with ``all_stores``, else the ``X-Image-Meta-Store``
    header's or the default; an unknown id is a 409 there)."""
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object naming an import method.")
    method = body.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("Import request requires a 'method' object with a 'name'.")
    if name not in enabled_methods(api):
        if name not in (*AVAILABLE, *UNAVAILABLE):
            raise BadRequest(f"Unknown import method name '{name}'.")
        why = (UNAVAILABLE.get(name) if name != "copy-image" or not api.multi_store
               else None) or "[image] enabled_import_methods leaves it out"
        raise BadRequest(f"Import method {name} is not enabled at this site ({why}); "
                         f"see /v2/info/import.")
    stores = body.get("stores")
    for flag in ("all_stores", "all_stores_must_succeed"):
        if flag in body and not isinstance(body[flag], bool):
            raise BadRequest(f"'{flag}' must be a boolean.")
    if stores is not None:
        if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores) \
                or not stores:
            raise BadRequest("'stores' must be a list of store identifiers.")
        if body.get("all_stores"):
            raise BadRequest("All_stores parameter can't be used with x-image-meta-store "
                             "header or stores parameter")
    if not api.multi_store:
        unknown = [s for s in stores or () if s != api.store.name]
        if unknown:
            raise BadRequest(f"Unknown store(s): {', '.join(unknown)}.")
        # (Glance answers 400 to all_stores_must_succeed=false without multi-store, but
        # `openstack image import` always sends it, and ignores the error: with one
        # store the flag changes nothing, so it is accepted.)
        return name, [api.store.name]
    if body.get("all_stores"):
        if header_store is not None:
            raise BadRequest("All_stores parameter can't be used with x-image-meta-store "
                             "header or stores parameter")
        return name, list(api.stores)
    stores = stores or [header_store or api.store.name]
    for store in stores:
        if store not in api.stores:
            raise Conflict(f"Store for identifier {store} not found")
    return name, list(dict.fromkeys(stores))


def start_import(api: ImageAPI, ctx: RequestContext, image_id: str, body: Any,
                 header_store: str | None = None) -> None:
    """The import's job, after Glance's checks, in one transaction with the image's
    change: to ``importing`` from ``uploading`` (staged) for glance-direct, from
    ``queued`` for web-download (whose URI must pass the filter: 400); copy-image leaves
    the image ``active`` and notes the stores in ``os_glance_importing_to_stores``."""
    method, stores = _check_request(api, body, header_store)
    with api.db.session() as session:
        image = api.load(session, ctx, image_id)
        if method == "copy-image":
            api.policy.enforce(ctx, "copy_image", {"project_id": image.owner,
                                                   "owner": image.owner})
        else:
            api.require_owner(ctx, image, "import_image")
        if image.status == "active" and method != "copy-image":
            raise Conflict("Image with status active cannot be target for import")
        if method == "copy-image" and image.status != "active":
            raise Conflict("Only images with status active can be targeted for copying")
        if method == "glance-direct" and (image.status != "uploading"
                                          or not staged_path(api, image_id).exists()):
            raise Conflict(f"Image {image_id} needs to be staged before '{method}' can "
                           "be used (its status is " f"{image.status}).")
        if method == "web-download" and image.status != "queued":
            raise Conflict(f"Image needs to be in 'queued' state to use '{method}' "
                           f"method (its status is {image.status}).")
        if image.disk_format is None or image.container_format is None:
            raise BadRequest("Properties disk_format, container_format must be set "
                             "prior to importing data.")
        if method == "copy-image":
            held = [image.store, *(image.extra_locations or {})]
            if body.get("all_stores"):
                stores = [s for s in stores if s not in held]
                if not stores:
                    return  # Glance: already in every store, nothing to do
            elif present := [s for s in stores if s in held]:
                raise BadRequest(f"Image is already present at store '{present[0]}'")
            busy = _prop(image, IMPORTING)
            if busy:
                raise Conflict(f"Image {image_id} is being copied to {busy} already.")
        if method == "web-download":
            uri = body["method"].get("uri")
            if not uri_allowed(api.conf, uri):
                raise BadRequest(f"URI for web-download does not pass filtering: {uri}")
        if method != "copy-image":
            image.status = "importing"
        if api.multi_store:  # Glance's bookkeeping: both lists kept, as strings
            _set_prop(image, IMPORTING, ",".join(stores))
            failed = (_prop(image, FAILED_IMPORT) or "").split(",")
            _set_prop(image, FAILED_IMPORT, ",".join(s for s in failed
                                                      if s and s not in stores))
        else:
            _set_prop(image, FAILED_IMPORT, None)
        image.updated_at = datetime.now(UTC)
        enqueue(session, "image.import", {
            "task_id": str(uuid.uuid4()), "image_id": image_id,
            "request_id": ctx.request_id, "user_id": ctx.user_id, "owner": image.owner,
            "import_req": body, "backend": stores,
        }, max_attempts=3 if method == "copy-image" else 2)


def _prop(image: Image, key: str) -> str | None:
    return next((p.value for p in image.properties if p.name == key), None)


def _set_prop(image: Image, key: str, value: str | None) -> None:
    """A reserved property strato keeps (None: removed)."""
    prop = next((p for p in image.properties if p.name == key), None)
    if value is None:
        if prop is not None:
            image.properties.remove(prop)
    elif prop is None:
        image.properties.append(ImageProperty(name=key, value=value))
    else:
        prop.value = value


def _done_with(api: ImageAPI, image_id: str, store: str, ok: bool) -> None:
    """``store`` leaves ``os_glance_importing_to_stores``; a failure joins
    ``os_glance_failed_import`` (Glance's bookkeeping of a multi-store import)."""
    with api.db.session() as session:
        image = session.get(Image, image_id)
        if image is None:
            return
        if api.multi_store:
            left = [s for s in (_prop(image, IMPORTING) or "").split(",") if s and s != store]
            _set_prop(image, IMPORTING, ",".join(left))
        if not ok:
            failed = [s for s in (_prop(image, FAILED_IMPORT) or "").split(",") if s]
            _set_prop(image, FAILED_IMPORT, ",".join(dict.fromkeys([*failed, store])))


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(_FLUSH):
            yield piece


def _capped(chunks: Iterator[bytes], room: int | None) -> Iterator[bytes]:
    """Downloaded data, refused once it crosses the quota or the size cap."""
    size = 0
    for piece in chunks:
        crash.point("image.import", "downloading")
        size += len(piece)
        if room is not None and size > room:
            raise OverLimit(f"The download exceeds the storage quota or the image size "
                            f"cap after {size} bytes.")
        yield piece


@handler("image.import")
def run_import(ctx: JobContext) -> dict[str, Any]:
    """The staged or downloaded data into the first store (``importing`` → ``saving`` →
    ``active``), then copies into the others; copy-image: copies only.  A failed
    import puts the image back to ``queued`` with ``os_glance_failed_import``; the task
    ends ``failure`` with the reason (also when a copy failed and
    ``all_stores_must_succeed``, Glance's default, holds)."""
    api: ImageAPI = ctx.services.image
    image_id = ctx.payload["image_id"]
    request = ctx.payload.get("import_req") or {}
    method = request.get("method") or {}
    stores: list[str] = list(ctx.payload.get("backend") or [api.store.name])
    if method.get("name") != "copy-image":
        _ingest(api, image_id, method, stores[0], ctx.attempt)
        stores = stores[1:]
    failures = []
    for store in stores:
        try:
            copy_to_store(api, image_id, store)
        except Exception as exc:  # noqa: BLE001 - noted per store, reported below
            LOG.info("image %s: copy to store %s failed: %s", image_id, store, exc)
            _done_with(api, image_id, store, ok=False)
            failures.append(f"{store}: {exc}")
        else:
            _done_with(api, image_id, store, ok=True)
    if failures and request.get("all_stores_must_succeed", True):
        raise CopyFailed(f"copying image {image_id} failed: {'; '.join(failures)}")
    return {"image_id": image_id, **({"failed": failures} if failures else {})}


class CopyFailed(PermanentError):
    """The data did not reach a store (the reason is the task's message).  Not retried,
    as Glance does not retry an import; only a killed server's job runs again."""


def _ingest(api: ImageAPI, image_id: str, method: dict[str, Any], store: str,
            attempt: int) -> None:
    """The data into ``store``.  A later attempt (the server was killed during the
    first) finds the image ``importing``, or ``queued``/``uploading`` where the restart
    put back an upload cut off in ``saving`` (its partial data removed): it starts over,
    from the staged file (kept until the import ends) or a new download."""
    path = staged_path(api, image_id)
    with api.db.session(readonly=True) as session:
        image = session.get(Image, image_id)
        status = image.status if image is not None else "deleted"
        disk_format = image.disk_format if image is not None else None
        owner = image.owner if image is not None else None
        room = Uploader(api, None, image_id, "")._room(session, owner)
    if status != "importing" and not (
            attempt > 1 and status in ("queued", "uploading")
            and api._set_status(image_id, status, "importing")):
        raise CopyFailed(f"image {image_id} is no longer importing ({status})")
    host = api.conf.DEFAULT.host
    try:
        if method.get("name") == "web-download":
            chunks: Iterator[bytes] = _capped(fetch(api.conf, method.get("uri"))[0], room)
        else:
            chunks = _chunks(path)
        Uploader(api, None, image_id, host, store if api.multi_store else None).ingest(
            chunks, disk_format, expected="importing")
    except Exception as exc:
        LOG.info("image %s: import failed: %s", image_id, exc)
        api._set_status(image_id, "importing", "queued")
        api.set_failed_import(image_id, store)
        with api.db.session() as session:
            image = session.get(Image, image_id)
            if image is not None and api.multi_store:
                _set_prop(image, IMPORTING, None)
        raise CopyFailed(str(exc)) from None  # the reason, not a traceback
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    _done_with(api, image_id, store, ok=True)


def copy_to_store(api: ImageAPI, image_id: str, store_id: str) -> None:
    """The active image's data read from where it is and written into ``store_id``,
    checked against the image's checksum and hash before it counts.

    Crash-safe: data in the target that the record does not name is a leftover of an
    earlier attempt and is removed first; the location is recorded only while the image
    is still there (a copy that finds it deleted removes itself)."""
    target = api.stores[store_id]
    with api.db.session(readonly=True) as session:
        image = session.get(Image, image_id)
        if image is None or image.status not in ("active", "deactivated"):
            raise CopyFailed(f"image {image_id} is not active")
        if store_id == image.store or store_id in (image.extra_locations or {}):
            return  # there already (an attempt that ended after recording it)
        source, size = image.location, image.size or 0
        checksum, hash_value = image.checksum, image.os_hash_value
    if source is None:
        raise CopyFailed(f"image {image_id} has no data to copy")
    target.discard(image_id)
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    writer = target.writer(image_id, size)
    try:
        for piece in api.store.read(source, size, chunk=_FLUSH):
            md5.update(piece)
            sha512.update(piece)
            writer.write(piece)
        if checksum is not None and md5.hexdigest() != checksum or \
                hash_value is not None and sha512.hexdigest() != hash_value:
            raise CopyFailed(f"the data read for store {store_id} does not match the "
                             "image's checksum")
        location = writer.commit()
    except BaseException:
        writer.abort()
        raise
    crash.point("image.copy", "after-write")
    with api.db.session() as session:
        image = session.scalars(select(Image).where(Image.id == image_id)
                                .with_for_update()).first()
        kept = image is not None and image.status in ("active", "deactivated")
        if kept:
            image.extra_locations = {**(image.extra_locations or {}), store_id: location}
            image.updated_at = datetime.now(UTC)
    if not kept:
        with contextlib.suppress(NotFoundInStore):
            target.delete(location)
        raise CopyFailed(f"image {image_id} was deleted during its copy to {store_id}")


# ------------------------------------------------------------------ tasks
_STATUS = {PENDING: "pending", RUNNING: "processing", DONE: "success", FAILED: "failure"}


def _reason(error: str | None) -> str:
    """The failure as Glance's task message says it: the text, not the exception type
    the worker prefixes (``CopyFailed: ...``)."""
    if not error:
        return ""
    kind, sep, text = error.partition(": ")
    return text if sep and kind.isidentifier() else error


def task_view(job: Job) -> dict[str, Any]:
    """A Glance task (``api_image_import``) from the job that runs it."""
    p = job.payload
    finished = job.finished_at
    return {
        "id": p.get("task_id"), "type": "api_image_import",
        "status": _STATUS.get(job.state, "processing"), "owner": p.get("owner"),
        "input": {"image_id": p.get("image_id"), "import_req": p.get("import_req"),
                  "backend": p.get("backend")},
        "result": {"image_id": p.get("image_id")} if job.state == DONE else None,
        "message": _reason(job.error),
        "expires_at": iso(finished + TASK_TTL) if finished else None,
        "created_at": iso(job.created_at), "updated_at": iso(job.updated_at),
        "deleted_at": None, "deleted": False,
        "image_id": p.get("image_id"), "request_id": p.get("request_id"),
        "user_id": p.get("user_id"),
    }


def _task_doc(job: Job, full: bool) -> dict[str, Any]:
    """A task as ``/v2/tasks`` shows it (Glance's task view; the list's stub leaves
    out input, result and message)."""
    whole = task_view(job)
    keys = ["id", "type", "status", "owner", "created_at", "updated_at"]
    if full:
        keys += ["input", "result", "message"]
    doc = {k: whole[k] for k in keys}
    if whole["expires_at"] is not None:
        doc["expires_at"] = whole["expires_at"]
    doc["self"] = f"/v2/tasks/{whole['id']}"
    doc["schema"] = "/v2/schemas/task"
    return doc


def list_tasks(api: ImageAPI, ctx: RequestContext) -> dict[str, Any]:
    """``GET /v2/tasks`` (admin by Glance's default policy): the import tasks."""
    api.policy.enforce(ctx, "get_tasks", {"project_id": ctx.project_id})
    with api.db.session(readonly=True) as session:
        jobs = session.scalars(select(Job).where(Job.name == "image.import")
                               .order_by(Job.id.desc()))
        return {"tasks": [_task_doc(j, full=False) for j in jobs],
                "first": "/v2/tasks", "schema": "/v2/schemas/tasks"}


def show_task(api: ImageAPI, ctx: RequestContext, task_id: str) -> dict[str, Any]:
    api.policy.enforce(ctx, "get_task", {"project_id": ctx.project_id})
    with api.db.session(readonly=True) as session:
        job = session.scalars(select(Job).where(
            Job.name == "image.import",
            Job.payload["task_id"].as_string() == task_id)).first()
        if job is None:
            raise NotFound(f"Task with the given id {task_id} was not found.")
        return _task_doc(job, full=True)


def create_task(api: ImageAPI, ctx: RequestContext, body: Any) -> None:
    """``POST /v2/tasks``: Glance's legacy ``import`` task (deprecated for the
    interoperable import) is not offered — refused (400) once the body is checked, as
    there; web-download does what it did."""
    api.policy.enforce(ctx, "add_task", {"project_id": ctx.project_id})
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object with 'type' and 'input'.")
    if body.get("type") != "import":
        raise BadRequest(f"Invalid type value: {body.get('type')!r}: 'import' is the only "
                         "task type.")
    task_input = body.get("input")
    if not isinstance(task_input, dict):
        raise BadRequest("Task 'input' must be an object.")
    for key in ("import_from", "import_from_format", "image_properties"):
        if key not in task_input:
            raise BadRequest(f"Input does not contain '{key}' field.")
    uri = task_input["import_from"]
    raise BadRequest(f"URI {uri} is not imported by a legacy 'import' task here: create "
                     "the image and import it with the web-download method (POST "
                     "/v2/images/{id}/import) instead.")


def delete_from_store(api: ImageAPI, ctx: RequestContext, store: str, image_id: str
                      ) -> None:
    """``DELETE /v2/stores/{store}/{image}`` (Glance's order of answers): 404 without
    multi-store; 409 for an unknown store or an image not active; 403 for the only store
    holding the data (delete the image instead); 404 if it is not there.  The first store
    (the one volumes and servers clone) is refused with 409 while copies exist: strato
    removes copies, it does not move an image's primary data."""
    if not api.multi_store:
        raise NotFound("The stores API needs multiple stores ([glance_store] "
                       "enabled_backends).")
    if store not in api.stores:
        raise Conflict(f"The selected store {store} is not available on this node.")
    with api.db.session(readonly=True) as session:
        image = api.load(session, ctx, image_id)
        api.require_owner(ctx, image, "delete_image_location")
        if image.status != "active":
            raise Conflict("It's not allowed to remove image data from store if image "
                           "status is not 'active'")
        extras = dict(image.extra_locations or {})
        if not extras:
            raise Forbidden("Cannot delete image data from the only store containing it. "
                            "Consider deleting the image instead.")
        if store == image.store:
            raise Conflict(f"Store {store} holds the data volumes and servers clone from "
                           f"(the copies in {', '.join(sorted(extras))} can be removed).")
        if store not in extras:
            raise NotFound(f"Image {image_id} is not stored in store {store}.")
    with contextlib.suppress(NotFoundInStore):
        api.stores[store].delete(extras[store])
    with api.db.session() as session:
        row = session.scalars(select(Image).where(Image.id == image_id)
                              .with_for_update()).first()
        if row is not None:
            row.extra_locations = {k: v for k, v in (row.extra_locations or {}).items()
                                   if k != store}
            row.updated_at = datetime.now(UTC)


def image_tasks(api: ImageAPI, ctx: RequestContext, image_id: str) -> dict[str, Any]:
    with api.db.session(readonly=True) as session:
        image = api.load(session, ctx, image_id)
        api.policy.enforce(ctx, "get_image", {"project_id": image.owner})
        jobs = session.scalars(select(Job).where(
            Job.name == "image.import",
            Job.payload["image_id"].as_string() == image_id).order_by(Job.id))
        return {"tasks": [task_view(j) for j in jobs]}
