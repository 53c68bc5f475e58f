"""Dashboard pages: images — list, upload with progress, download, delete, volume from
image.

The upload never holds the file: the browser sends it with an XHR ``PUT`` (so it can
show upload progress), and the handler hands ``request.stream()`` straight to the
in-process ``PUT /image/v2/images/{id}/file`` as an async iterator — the bytes flow
from the socket to the image store piece by piece, whatever the file's size. The
download streams the same way back.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from strato.dashboard.client import ApiError, ApiResponse
from strato.dashboard.storage_util import (
    delete_blockers,
    form_size,
    poll,
    quoted,
    volume_path,
)
from strato.dashboard.web import done, failed, form, page_context, render

router = APIRouter()
IMAGES = "/image/v2/images"
DISK_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx", "iso", "ami", "ari", "aki",
                "ploop")
FINAL = ("active", "killed", "deactivated", "deleted")
GIB = 1 << 30


@router.get("/dashboard/images", include_in_schema=False)
async def images(request: Request) -> Response:
    ctx = await page_context(request)
    listing = await ctx.api.get(IMAGES, query={"limit": 1000})
    return render(ctx, "images.html", images=listing.get("images", []),
                  disk_formats=DISK_FORMATS)


async def _create_fields(request: Request) -> dict[str, Any]:
    """The new image's fields: JSON from upload.js, or the plain form's fields."""
    if request.headers.get("content-type", "").startswith("application/json"):
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > 65536:
                raise ValueError("The request is too large.")
        data = json.loads(raw or b"{}")
        if not isinstance(data, dict):
            raise ValueError("Expected a JSON object.")
        return data
    return dict(await form(request))


@router.post("/dashboard/images", include_in_schema=False)
async def create_image(request: Request) -> Response:
    """Create the record (queued). upload.js asks with JSON and gets the id and where to
    send the file; a browser without scripts gets the record's page."""
    ctx = await page_context(request)  # CSRF: the X-CSRF-Token header or the form field
    wants_json = request.headers.get("content-type", "").startswith("application/json")
    try:
        fields = await _create_fields(request)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    name = str(fields.get("name") or "").strip()
    disk_format = str(fields.get("disk_format") or "raw")
    body = {"name": name or None, "disk_format": disk_format, "container_format": "bare",
            "visibility": "private"}
    try:
        answer = await ctx.api.post(IMAGES, body)
    except ApiError as exc:
        if wants_json:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return failed(ctx, "/dashboard/images", exc)
    image = answer.json()
    page = f"/dashboard/images/{quoted(image['id'])}"
    if wants_json:
        return JSONResponse({"id": image["id"], "page": page, "upload": page + "/file"},
                            status_code=201)
    return done(ctx, page, f"Image {name or image['id']} created; its data is not "
                "uploaded yet (the upload needs JavaScript).")


@router.put("/dashboard/images/{image_id}/file", include_in_schema=False)
async def upload_file(request: Request, image_id: str) -> Response:
    """Stream the request body into Glance's upload, never holding it whole."""
    ctx = await page_context(request)
    headers = {"content-type": "application/octet-stream"}
    length = request.headers.get("content-length")
    if length is not None:
        headers["content-length"] = length
    answer = await ctx.api.stream("PUT", f"{IMAGES}/{quoted(image_id)}/file",
                                  headers=headers, body=_body(request))
    data = b"".join([chunk async for chunk in answer.chunks])
    if answer.status >= 400:
        message = ApiResponse(answer.status, answer.headers, data).message
        return JSONResponse({"error": message}, status_code=answer.status)
    return JSONResponse({"id": image_id, "page": f"/dashboard/images/{quoted(image_id)}"})


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


@router.get("/dashboard/images/{image_id}", include_in_schema=False)
async def image_page(request: Request, image_id: str) -> Response:
    ctx = await page_context(request)
    image = await ctx.api.get(f"{IMAGES}/{quoted(image_id)}")
    blockers = await delete_blockers(ctx, "images", image_id)
    size = max(image.get("size") or 0, image.get("virtual_size") or 0)  # qcow2: virtual
    default_gib = max(1, math.ceil(size / GIB), int(image.get("min_disk") or 0))
    return render(ctx, "image.html", image=image, blockers=blockers,
                  default_gib=default_gib, final=image.get("status") in FINAL)


@router.get("/dashboard/images/{image_id}/progress", include_in_schema=False)
async def image_progress(request: Request, image_id: str) -> Response:
    ctx = await page_context(request)
    answer = await ctx.api.request("GET", f"{IMAGES}/{quoted(image_id)}", check=False)
    if answer.status == 404:
        return poll("deleted", True, "deleted")
    if not answer.ok:
        return poll("unknown", False, answer.message)
    image = answer.json()
    status = str(image.get("status"))
    text = status if status not in ("saving", "importing") else f"{status}…"
    return poll(status, status in FINAL, text)


@router.get("/dashboard/images/{image_id}/download", include_in_schema=False)
async def download(request: Request, image_id: str) -> Response:
    ctx = await page_context(request)
    image = await ctx.api.get(f"{IMAGES}/{quoted(image_id)}")
    answer = await ctx.api.stream("GET", f"{IMAGES}/{quoted(image_id)}/file")
    if answer.status >= 400:
        data = b"".join([chunk async for chunk in answer.chunks])
        raise ApiError(ApiResponse(answer.status, answer.headers, data))
    if answer.status == 204:
        async for _ in answer.chunks:
            pass
        return failed(ctx, f"/dashboard/images/{quoted(image_id)}",
                      "This image has no data to download yet.")
    name = "".join(c if c.isalnum() or c in "._-" else "_"
                   for c in str(image.get("name") or image_id))[:100] or image_id
    suffix = "." + str(image.get("disk_format") or "img")
    headers = {"content-disposition": f'attachment; filename="{name}{suffix}"',
               "cache-control": "no-store", "x-content-type-options": "nosniff"}
    for key in ("content-length", "content-md5"):
        if key in answer.headers:
            headers[key] = answer.headers[key]
    return StreamingResponse(answer.chunks, media_type="application/octet-stream",
                             headers=headers)


@router.post("/dashboard/images/{image_id}/delete", include_in_schema=False)
async def delete_image(request: Request, image_id: str) -> Response:
    ctx = await page_context(request)
    here = f"/dashboard/images/{quoted(image_id)}"
    try:
        await ctx.api.delete(f"{IMAGES}/{quoted(image_id)}")
    except ApiError as exc:
        if exc.status == 401:
            raise
        return failed(ctx, here, exc)
    return done(ctx, "/dashboard/images", f"Image {image_id} deleted.")


@router.post("/dashboard/images/{image_id}/volume", include_in_schema=False)
async def volume_from_image(request: Request, image_id: str) -> Response:
    ctx = await page_context(request)
    fields = await form(request)
    here = f"/dashboard/images/{quoted(image_id)}"
    try:
        size = form_size(fields.get("size"))
    except ValueError as exc:
        return failed(ctx, here, str(exc))
    body: dict[str, Any] = {"name": fields.get("name", "").strip() or None,
                            "imageRef": image_id}
    if size is not None:
        body["size"] = size
    try:
        answer = await ctx.api.post(volume_path(ctx, "/volumes"), {"volume": body})
    except ApiError as exc:
        if exc.status == 401:
            raise
        return failed(ctx, here, exc)
    volume = answer.json()["volume"]
    return done(ctx, f"/dashboard/volumes/{quoted(volume['id'])}",
                f"Volume {volume.get('name') or volume['id']} is being created from the "
                "image.")
