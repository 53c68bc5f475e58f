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
from strato.image.models import Image
from strato.image.webdownload import DownloadFailed, fetch, uri_allowed
from strato.jobs.models import DONE, FAILED, PENDING, RUNNING, Job
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler

LOG = logging.getLogger(__name__)

AVAILABLE = ("glance-direct", "web-download")
# Methods Glance knows that strato cannot offer, and why.
UNAVAILABLE = {
    "glance-download": "strato has no other region's image service to fetch from",
    "copy-image": "there is a single store to copy to",
}
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
    return [m for m in api.conf.image.enabled_import_methods if m in AVAILABLE]


def _check_request(api: ImageAPI, body: Any) -> str:
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object naming an import method.")
    method = body.get("method")
    name = method.get("name") if isinstance(method, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("Import request requires a 'method' object with a 'name'.")
    if name not in enabled_methods(api):
        if name not in (*AVAILABLE, *UNAVAILABLE):
            raise BadRequest(f"Unknown import method name '{name}'.")
        why = UNAVAILABLE.get(name, "[image] enabled_import_methods leaves it out")
        raise BadRequest(f"Import method {name} is not enabled at this site ({why}); "
                         f"see /v2/info/import.")
    stores = body.get("stores")
    if stores is not None:
        if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores):
            raise BadRequest("'stores' must be a list of store identifiers.")
        unknown = [s for s in stores if s != api.store.name]
        if unknown:
            raise BadRequest(f"Unknown store(s): {', '.join(unknown)}.")
        if body.get("all_stores"):
            raise BadRequest("'stores' and 'all_stores' cannot both be given.")
    for flag in ("all_stores", "all_stores_must_succeed"):
        if flag in body and not isinstance(body[flag], bool):
            raise BadRequest(f"'{flag}' must be a boolean.")
    return name


def start_import(api: ImageAPI, ctx: RequestContext, image_id: str, body: Any) -> None:
    """The image to ``importing`` and the job that finishes it, in one transaction:
    from ``uploading`` (staged) for glance-direct, from ``queued`` for web-download,
    whose URI must pass the import filter (400, after the state checks, as Glance)."""
    method = _check_request(api, body)
    with api.db.session() as session:
        image = api.load(session, ctx, image_id)
        api.require_owner(ctx, image, "import_image")
        if image.status == "active":
            raise Conflict("Image with status active cannot be target for import")
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
        if method == "web-download":
            uri = body["method"].get("uri")
            if not uri_allowed(api.conf, uri):
                raise BadRequest(f"URI for web-download does not pass filtering: {uri}")
        image.status = "importing"
        image.properties = [p for p in image.properties
                            if p.name != "os_glance_failed_import"]
        image.updated_at = datetime.now(UTC)
        enqueue(session, "image.import", {
            "task_id": str(uuid.uuid4()), "image_id": image_id,
            "request_id": ctx.request_id, "user_id": ctx.user_id, "owner": image.owner,
            "import_req": body, "backend": [api.store.name],
        }, max_attempts=1)


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(_FLUSH):
            yield piece


def _capped(chunks: Iterator[bytes], room: int | None) -> Iterator[bytes]:
    """Downloaded data, refused once it crosses the quota or the size cap."""
    size = 0
    for piece in chunks:
        size += len(piece)
        if room is not None and size > room:
            raise OverLimit(f"The download exceeds the storage quota or the image size "
                            f"cap after {size} bytes.")
        yield piece


@handler("image.import")
def run_import(ctx: JobContext) -> dict[str, Any]:
    """The staged or downloaded data into the store (``importing`` → ``saving`` →
    ``active``); on failure the image goes back to ``queued`` with
    ``os_glance_failed_import`` and the task ends ``failure`` with the reason."""
    api: ImageAPI = ctx.services.image
    image_id = ctx.payload["image_id"]
    method = (ctx.payload.get("import_req") or {}).get("method") or {}
    path = staged_path(api, image_id)
    with api.db.session(readonly=True) as session:
        image = session.get(Image, image_id)
        if image is None or image.status != "importing":
            return {"skipped": image.status if image else "gone"}
        disk_format = image.disk_format
        room = Uploader(api, None, image_id, "")._room(session, image.owner)
    host = api.conf.DEFAULT.host
    try:
        if method.get("name") == "web-download":
            chunks: Iterator[bytes] = _capped(fetch(api.conf, method.get("uri"))[0], room)
        else:
            chunks = _chunks(path)
        Uploader(api, None, image_id, host).ingest(chunks, disk_format,
                                                     expected="importing")
    except Exception as exc:
        LOG.info("image %s: import failed: %s", image_id, exc)
        api._set_status(image_id, "importing", "queued")
        api.set_failed_import(image_id, api.store.name)
        if isinstance(exc, DownloadFailed):
            raise DownloadFailed(str(exc)) from None  # the reason, not a traceback
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return {"image_id": image_id}


# ------------------------------------------------------------------ tasks
_STATUS = {PENDING: "pending", RUNNING: "processing", DONE: "success", FAILED: "failure"}


def _reason(error: str | None) -> str:
    """The failure as Glance's task message says it: the text, not the exception type
    the worker prefixes (``DownloadFailed: ...``)."""
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
    """``DELETE /v2/stores/{store}/{image}``: strato keeps an image's data in one store,
    and Glance refuses to remove an image's last location (403)."""
    with api.db.session(readonly=True) as session:
        image = api.load(session, ctx, image_id)
        api.require_owner(ctx, image, "delete_image_location")
        if store != api.store.name or image.store != store:
            raise NotFound(f"Image {image_id} has no data in store {store}.")
    raise Forbidden(f"Cannot delete the last location of image {image_id}: store {store} "
                    "is the only one holding its data (delete the image instead).")


def image_tasks(api: ImageAPI, ctx: RequestContext, image_id: str) -> dict[str, Any]:
    with api.db.session(readonly=True) as session:
        image = api.load(session, ctx, image_id)
        api.policy.enforce(ctx, "get_image", {"project_id": image.owner})
        jobs = session.scalars(select(Job).where(
            Job.name == "image.import",
            Job.payload["image_id"].as_string() == image_id).order_by(Job.id))
        return {"tasks": [task_view(j) for j in jobs]}
