"""Dashboard pages: volumes — list, create from nothing or any source, attach/detach,
snapshot, delete (with what blocks it), live progress while the volume is busy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from strato.dashboard.client import ApiError
from strato.dashboard.storage_util import (
    delete_blockers,
    form_size,
    poll,
    quoted,
    user_messages,
    volume_path,
)
from strato.dashboard.web import PageContext, done, failed, form, page_context, render

router = APIRouter()
SOURCES = ("none", "image", "snapshot", "volume", "backup")
SOURCE_FIELD = {"image": "imageRef", "snapshot": "snapshot_id", "volume": "source_volid",
                "backup": "backup_id"}
# Statuses a volume only passes through: the page polls while the volume is in one.
BUSY = ("creating", "downloading", "attaching", "detaching", "deleting", "uploading",
        "backing-up", "restoring-backup", "extending", "reserved", "retyping",
        "maintenance", "awaiting-transfer", "migrating")


def _page(volume_id: str) -> str:
    return f"/dashboard/volumes/{quoted(volume_id)}"


@router.get("/dashboard/volumes", include_in_schema=False)
async def volumes(request: Request) -> Response:
    ctx = await page_context(request)
    listing = await ctx.api.get(volume_path(ctx, "/volumes/detail"))
    return render(ctx, "volumes.html", volumes=listing.get("volumes", []))


async def _list(ctx: PageContext, path: str, key: str,
                query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A list for a select; a service that refuses (e.g. no backup service) gives none."""
    answer = await ctx.api.request("GET", path, query=query, check=False)
    if not answer.ok:
        if answer.status == 401:
            raise ApiError(answer)
        return []
    return list((answer.json() or {}).get(key, []))


@router.get("/dashboard/volumes/new", include_in_schema=False)
async def new_volume(request: Request, source: str = "none",
                     source_id: str = "") -> Response:
    ctx = await page_context(request)
    choices = {
        "image": [i for i in await _list(ctx, "/image/v2/images", "images",
                                         {"limit": 1000})
                  if i.get("status") == "active"],
        "snapshot": await _list(ctx, volume_path(ctx, "/snapshots/detail"), "snapshots"),
        "volume": await _list(ctx, volume_path(ctx, "/volumes/detail"), "volumes"),
        "backup": await _list(ctx, volume_path(ctx, "/backups/detail"), "backups"),
    }
    return render(ctx, "volume_new.html", sources=SOURCES, choices=choices,
                  source=source if source in SOURCES else "none", source_id=source_id)


@router.post("/dashboard/volumes", include_in_schema=False)
async def create_volume(request: Request) -> Response:
    ctx = await page_context(request)
    fields = await form(request)
    back = "/dashboard/volumes/new"
    source = fields.get("source", "none")
    source_id = fields.get("source_id", "").strip()
    if source not in SOURCES:
        return failed(ctx, back, f"Unknown source {source!r}.")
    try:
        size = form_size(fields.get("size"))
    except ValueError as exc:
        return failed(ctx, back, str(exc))
    body: dict[str, Any] = {"name": fields.get("name", "").strip() or None}
    if size is not None:
        body["size"] = size
    if source != "none":
        if not source_id:
            return failed(ctx, back, f"Choose the {source} to create the volume from.")
        body[SOURCE_FIELD[source]] = source_id
    elif size is None:
        return failed(ctx, back, "An empty volume needs a size.")
    return await create_and_show(ctx, body, back)


async def create_and_show(ctx: PageContext, body: dict[str, Any], back: str) -> Response:
    """POST the volume; its page (with live progress) on success, the API's words on
    the page the form was on otherwise."""
    try:
        answer = await ctx.api.post(volume_path(ctx, "/volumes"), {"volume": body})
    except ApiError as exc:
        if exc.status == 401:
            raise
        return failed(ctx, back, exc)
    volume = answer.json()["volume"]
    return done(ctx, _page(volume["id"]),
                f"Volume {volume.get('name') or volume['id']} is being created.")


@router.get("/dashboard/volumes/{volume_id}", include_in_schema=False)
async def volume_page(request: Request, volume_id: str) -> Response:
    ctx = await page_context(request)
    volume = (await ctx.api.get(volume_path(ctx, f"/volumes/{quoted(volume_id)}")))["volume"]
    servers = await _list(ctx, "/compute/v2.1/servers", "servers")
    names = {s["id"]: s.get("name") or s["id"] for s in servers}
    snapshots = [s for s in await _list(
        ctx, volume_path(ctx, "/snapshots/detail"), "snapshots")
        if s.get("volume_id") == volume["id"]]
    blockers = await delete_blockers(ctx, "volumes", volume_id)
    attached = {a.get("server_id") for a in volume.get("attachments", [])}
    return render(ctx, "volume.html", volume=volume, servers=servers, server_names=names,
                  attachable=[s for s in servers if s["id"] not in attached],
                  snapshots=snapshots, blockers=blockers,
                  busy=volume.get("status") in BUSY,
                  messages=await user_messages(ctx, volume["id"]),
                  image=(volume.get("volume_image_metadata") or {}).get("image_id"))


@router.get("/dashboard/volumes/{volume_id}/progress", include_in_schema=False)
async def volume_progress(request: Request, volume_id: str) -> Response:
    ctx = await page_context(request)
    answer = await ctx.api.request(
        "GET", volume_path(ctx, f"/volumes/{quoted(volume_id)}"), check=False)
    if answer.status == 404:
        return poll("deleted", True, "deleted")
    if not answer.ok:
        return poll("unknown", False, answer.message)
    status = str(answer.json()["volume"].get("status"))
    busy = status in BUSY
    return poll(status, not busy, f"{status}…" if busy else status)


@router.post("/dashboard/volumes/{volume_id}/attach", include_in_schema=False)
async def attach(request: Request, volume_id: str) -> Response:
    ctx = await page_context(request)
    server_id = (await form(request)).get("server_id", "").strip()
    if not server_id:
        return failed(ctx, _page(volume_id), "Choose a server to attach the volume to.")
    try:
        await ctx.api.post(f"/compute/v2.1/servers/{quoted(server_id)}/os-volume_attachments",
                           {"volumeAttachment": {"volumeId": volume_id}})
    except ApiError as exc:
        if exc.status == 401:
            raise
        return failed(ctx, _page(volume_id), exc)
    return done(ctx, _page(volume_id), "The volume is being attached.")


@router.post("/dashboard/volumes/{volume_id}/detach", include_in_schema=False)
async def detach(request: Request, volume_id: str) -> Response:
    """Detach from the server named in the form, or from every server it is on."""
    ctx = await page_context(request)
    wanted = (await form(request)).get("server_id", "").strip()
    try:
        volume = (await ctx.api.get(
            volume_path(ctx, f"/volumes/{quoted(volume_id)}")))["volume"]
        servers = [a["server_id"] for a in volume.get("attachments", [])
                   if a.get("server_id") and (not wanted or a["server_id"] == wanted)]
        if not servers:
            return failed(ctx, _page(volume_id), "The volume is not attached.")
        for server_id in servers:
            await ctx.api.delete(f"/compute/v2.1/servers/{quoted(server_id)}"
                                 f"/os-volume_attachments/{quoted(volume_id)}")
    except ApiError as exc:
        if exc.status == 401:
            raise
        return failed(ctx, _page(volume_id), exc)
    return done(ctx, _page(volume_id), "The volume is being detached.")


@router.post("/dashboard/volumes/{volume_id}/snapshot", include_in_schema=False)
async def snapshot(request: Request, volume_id: str) -> Response:
    ctx = await page_context(request)
    fields = await form(request)
    try:
        volume = (await ctx.api.get(
            volume_path(ctx, f"/volumes/{quoted(volume_id)}")))["volume"]
        answer = await ctx.api.post(volume_path(ctx, "/snapshots"), {"snapshot": {
            "volume_id": volume_id, "name": fields.get("name", "").strip() or None,
            "force": volume.get("status") == "in-use"}})
    except ApiError as exc:
        if exc.status == 401:
            raise
        return failed(ctx, _page(volume_id), exc)
    snap = answer.json()["snapshot"]
    return done(ctx, f"/dashboard/snapshots/{quoted(snap['id'])}",
                f"Snapshot {snap.get('name') or snap['id']} is being created.")


@router.post("/dashboard/volumes/{volume_id}/delete", include_in_schema=False)
async def delete_volume(request: Request, volume_id: str) -> Response:
    ctx = await page_context(request)
    try:
        await ctx.api.delete(volume_path(ctx, f"/volumes/{quoted(volume_id)}"))
    except ApiError as exc:
        if exc.status == 401:
            raise
        return failed(ctx, _page(volume_id), exc)
    return done(ctx, "/dashboard/volumes", f"Volume {volume_id} is being deleted.")
