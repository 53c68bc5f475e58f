"""Image (Glance v2) routes beyond images and members: discovery documents, the
interoperable import (stage, import, the image's tasks, the tasks API), deleting an
image's data from one store (multi-store), and Glance's answer to an empty id (404).

Not routed, so 404 as in a Glance without them: the cache API (no cache here) and the
locations API (2.17; strato serves up to 2.16)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from strato.api.common import context, json_body, services
from strato.exceptions import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
)
from strato.image import imports, info
from strato.image.api import ImageAPI

router = APIRouter(prefix="/v2")  # included by strato.api.image (under /image)


def _api(request: Request) -> ImageAPI:
    return services(request).image


# ------------------------------------------------------------------ empty ids
@router.api_route("/images/", methods=["GET", "DELETE", "PATCH", "PUT", "POST"])
def empty_image_id(request: Request) -> Response:
    """``/v2/images/`` names no image: Glance answers 404 (not a list, not a 405)."""
    raise NotFound("No image found with an empty ID.")


# ------------------------------------------------------------------ discovery
@router.get("/info/import")
def info_import(request: Request) -> dict:
    return info.import_info(_api(request))


@router.get("/info/stores")
def info_stores(request: Request) -> dict:
    return info.stores(_api(request), context(request))


@router.get("/info/stores/detail")
def info_stores_detail(request: Request) -> dict:
    return info.stores(_api(request), context(request), detail=True)


@router.get("/info/usage")
def info_usage(request: Request) -> dict:
    return info.usage(_api(request), context(request))


@router.get("/schemas/{name:path}")
def show_schema(request: Request, name: str) -> dict:
    return info.schema(name)


# ------------------------------------------------------------------ import
@router.put("/images/{image_id}/stage", status_code=204)
async def stage(request: Request, image_id: str) -> Response:
    ctype = request.headers.get("content-type", "application/octet-stream").split(";")[0]
    if ctype.strip() not in ("application/octet-stream", ""):
        raise UnsupportedMediaType(f"Unsupported Content-Type {ctype!r}: use "
                                   "application/octet-stream.")
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise BadRequest("Invalid Content-Length.")
    await imports.stage(_api(request), context(request), image_id, request.receive,
                        int(length) if length is not None else None)
    return Response(status_code=204)


@router.post("/images/{image_id}/import", status_code=202)
async def import_image(request: Request, image_id: str) -> Response:
    body = await json_body(request)
    await run_in_threadpool(imports.start_import, _api(request), context(request),
                            image_id, body, request.headers.get("x-image-meta-store"))
    return Response(status_code=202)


@router.get("/images/{image_id}/tasks")
def image_tasks(request: Request, image_id: str) -> dict:
    return imports.image_tasks(_api(request), context(request), image_id)


@router.get("/tasks")
def list_tasks(request: Request) -> dict:
    return imports.list_tasks(_api(request), context(request))


@router.post("/tasks", status_code=201)
async def create_task(request: Request) -> Response:
    body = await json_body(request)
    await run_in_threadpool(imports.create_task, _api(request), context(request), body)
    return Response(status_code=201)  # never reached: strato refuses every import task


@router.get("/tasks/{task_id}")
def show_task(request: Request, task_id: str) -> dict:
    return imports.show_task(_api(request), context(request), task_id)


@router.api_route("/tasks/{task_id}", methods=["DELETE", "PUT", "PATCH", "POST"])
def task_other(request: Request, task_id: str) -> Response:
    raise MethodNotAllowed("Tasks cannot be changed or deleted.",
                           headers={"Allow": "GET"})


@router.delete("/stores/{store_id}/{image_id}")
def delete_from_store(request: Request, store_id: str, image_id: str) -> Response:
    imports.delete_from_store(_api(request), context(request), store_id, image_id)
    return Response(status_code=204)
