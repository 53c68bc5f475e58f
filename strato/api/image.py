"""Image (Glance v2) routes under /image: parse HTTP, call strato.image, render."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from strato.api.common import base_url, context, json_body, services
from strato.exceptions import BadRequest, UnsupportedMediaType
from strato.image import data, imports, listing, schemas
from strato.image.api import ImageAPI
from strato.image.data import Uploader

LOG = logging.getLogger(__name__)
router = APIRouter(prefix="/image")

# Glance lists every minor version it serves; the newest is CURRENT.
MINORS = (16, 15, 9, 7, 6, 5, 4, 3, 2, 1, 0)


def versions_doc(request: Request) -> dict:
    href = f"{base_url(request)}/image/v2/"
    return {"versions": [
        {"id": f"v2.{minor}", "status": "CURRENT" if i == 0 else "SUPPORTED",
         "links": [{"rel": "self", "href": href}]}
        for i, minor in enumerate(MINORS)
    ]}


@router.get("")
@router.get("/")
@router.get("/v2")
@router.get("/v2/")
def versions(request: Request) -> JSONResponse:
    return JSONResponse(versions_doc(request), status_code=300)


@router.get("/versions")
def versions_ok(request: Request) -> dict:
    return versions_doc(request)


# ------------------------------------------------------------------ images
def _api(request: Request) -> ImageAPI:
    return services(request).image


PATCH_TYPES = ("application/openstack-images-v2.1-json-patch",
               "application/openstack-images-v2.0-json-patch")


@router.get("/v2/images")
def list_images(request: Request) -> dict:
    return listing.list_images(_api(request), context(request),
                               list(request.query_params.multi_items()))


@router.post("/v2/images", status_code=201)
async def create_image(request: Request) -> JSONResponse:
    body = await json_body(request, schemas.CREATE_IMAGE)
    api = _api(request)
    view = await run_in_threadpool(api.create, context(request), body)
    headers = {"Location": f"{base_url(request)}/image/v2/images/{view['id']}"}
    # Glance's hints to clients (openstacksdk's create --import reads the methods)
    methods = imports.enabled_methods(api)
    if methods:
        headers["OpenStack-image-import-methods"] = ",".join(methods)
    if api.multi_store:
        headers["OpenStack-image-store-ids"] = ",".join(api.stores)
    return JSONResponse(view, status_code=201, headers=headers)


@router.get("/v2/images/{image_id}")
def show_image(request: Request, image_id: str) -> dict:
    return _api(request).show(context(request), image_id)


@router.patch("/v2/images/{image_id}")
async def update_image(request: Request, image_id: str) -> dict:
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype not in PATCH_TYPES:
        raise UnsupportedMediaType(f"Unsupported Content-Type {ctype!r}: use "
                                   f"{PATCH_TYPES[0]}.")
    if ctype == PATCH_TYPES[1]:
        body = schemas.patch_v20(await json_body(request, schemas.UPDATE_IMAGE_V20))
    else:
        body = await json_body(request, schemas.UPDATE_IMAGE)
    return await run_in_threadpool(_api(request).update, context(request), image_id, body)


@router.delete("/v2/images/{image_id}", status_code=204)
def delete_image(request: Request, image_id: str) -> Response:
    _api(request).delete(context(request), image_id)
    return Response(status_code=204)


@router.put("/v2/images/{image_id}/file", status_code=204)
async def upload(request: Request, image_id: str) -> Response:
    ctype = request.headers.get("content-type", "application/octet-stream").split(";")[0]
    if ctype.strip() not in ("application/octet-stream", ""):
        raise UnsupportedMediaType(f"Unsupported Content-Type {ctype!r}: use "
                                   "application/octet-stream.")
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise BadRequest("Invalid Content-Length.")
    conf = services(request).conf
    store = request.headers.get("x-image-meta-store")  # multi-store: where it goes
    store = store if _api(request).multi_store else None  # ignored by a single store
    uploader = Uploader(_api(request), context(request), image_id, conf.DEFAULT.host,
                        store)
    try:
        await uploader.run(request.receive, int(length) if length is not None else None)
    except ClientDisconnect:  # the client's doing, not a bug: no traceback in the log
        LOG.info("image %s: the client went away during the upload; image queued again",
                 image_id)
        return Response(status_code=400)  # nobody reads it
    return Response(status_code=204)


@router.get("/v2/images/{image_id}/file")
def download(request: Request, image_id: str) -> Response:
    found = data.download(_api(request), context(request), image_id)
    if found is None:
        return Response(status_code=204)
    headers = {"Content-Length": str(found.size)}
    if found.checksum:
        headers["Content-MD5"] = found.checksum
    return StreamingResponse(found.chunks, media_type="application/octet-stream",
                             headers=headers)


@router.post("/v2/images/{image_id}/actions/deactivate", status_code=204)
def deactivate(request: Request, image_id: str) -> Response:
    _api(request).deactivate(context(request), image_id)
    return Response(status_code=204)


@router.post("/v2/images/{image_id}/actions/reactivate", status_code=204)
def reactivate(request: Request, image_id: str) -> Response:
    _api(request).reactivate(context(request), image_id)
    return Response(status_code=204)


@router.put("/v2/images/{image_id}/tags/{tag}", status_code=204)
def add_tag(request: Request, image_id: str, tag: str) -> Response:
    _api(request).add_tag(context(request), image_id, tag)
    return Response(status_code=204)


@router.delete("/v2/images/{image_id}/tags/{tag}", status_code=204)
def delete_tag(request: Request, image_id: str, tag: str) -> Response:
    _api(request).delete_tag(context(request), image_id, tag)
    return Response(status_code=204)


# ------------------------------------------------------------------ members
@router.get("/v2/images/{image_id}/members")
def list_members(request: Request, image_id: str) -> dict:
    return {"members": _api(request).list_members(context(request), image_id),
            "schema": "/v2/schemas/members"}


@router.post("/v2/images/{image_id}/members")
async def add_member(request: Request, image_id: str) -> dict:
    body = await json_body(request, schemas.ADD_MEMBER)
    return await run_in_threadpool(_api(request).add_member, context(request), image_id, body)


@router.get("/v2/images/{image_id}/members/{member_id}")
def get_member(request: Request, image_id: str, member_id: str) -> dict:
    return _api(request).get_member(context(request), image_id, member_id)


@router.put("/v2/images/{image_id}/members/{member_id}")
async def update_member(request: Request, image_id: str, member_id: str) -> dict:
    body = await json_body(request, schemas.UPDATE_MEMBER)
    return await run_in_threadpool(_api(request).update_member, context(request), image_id,
                                   member_id, body)


@router.delete("/v2/images/{image_id}/members/{member_id}", status_code=204)
def delete_member(request: Request, image_id: str, member_id: str) -> Response:
    _api(request).delete_member(context(request), image_id, member_id)
    return Response(status_code=204)


# Discovery, import, tasks and the metadefs catalog: routes of their own modules, served
# under the same /image prefix (after the routes above).
from strato.api import image_extras, image_metadefs  # noqa: E402

router.include_router(image_extras.router)
router.include_router(image_metadefs.router)
