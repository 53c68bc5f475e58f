"""Dashboard pages: volume snapshots — list, detail (live progress while creating),
volume from snapshot, delete with what blocks it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from strato.dashboard.client import ApiError
from strato.dashboard.storage_util import (
    delete_blockers,
    form_size,
    percent_of,
    poll,
    quoted,
    user_messages,
    volume_path,
)
from strato.dashboard.volumes import create_and_show
from strato.dashboard.web import done, failed, form, page_context, render

router = APIRouter()
BUSY = ("creating", "deleting", "backing-up", "restoring", "unmanaging")
PROGRESS = "os-extended-snapshot-attributes:progress"


def _page(snapshot_id: str) -> str:
    return f"/dashboard/snapshots/{quoted(snapshot_id)}"


@router.get("/dashboard/snapshots", include_in_schema=False)
async def snapshots(request: Request) -> Response:
    ctx = await page_context(request)
    listing = await ctx.api.get(volume_path(ctx, "/snapshots/detail"))
    return render(ctx, "snapshots.html", snapshots=listing.get("snapshots", []))


@router.get("/dashboard/snapshots/{snapshot_id}", include_in_schema=False)
async def snapshot_page(request: Request, snapshot_id: str) -> Response:
    ctx = await page_context(request)
    snap = (await ctx.api.get(
        volume_path(ctx, f"/snapshots/{quoted(snapshot_id)}")))["snapshot"]
    blockers = await delete_blockers(ctx, "snapshots", snapshot_id)
    return render(ctx, "snapshot.html", snapshot=snap, blockers=blockers,
                  busy=snap.get("status") in BUSY, progress=snap.get(PROGRESS),
                  messages=await user_messages(ctx, snap["id"]))


@router.get("/dashboard/snapshots/{snapshot_id}/progress", include_in_schema=False)
async def snapshot_progress(request: Request, snapshot_id: str) -> Response:
    ctx = await page_context(request)
    answer = await ctx.api.request(
        "GET", volume_path(ctx, f"/snapshots/{quoted(snapshot_id)}"), check=False)
    if answer.status == 404:
        return poll("deleted", True, "deleted")
    if not answer.ok:
        return poll("unknown", False, answer.message)
    snap = answer.json()["snapshot"]
    status = str(snap.get("status"))
    busy = status in BUSY
    percent = percent_of(snap.get(PROGRESS)) if busy else None
    text = status + (f" {percent:.0f}%" if percent is not None else "…" if busy else "")
    return poll(status, not busy, text, percent)


@router.post("/dashboard/snapshots/{snapshot_id}/volume", include_in_schema=False)
async def volume_from_snapshot(request: Request, snapshot_id: str) -> Response:
    ctx = await page_context(request)
    fields = await form(request)
    try:
        size = form_size(fields.get("size"))
    except ValueError as exc:
        return failed(ctx, _page(snapshot_id), str(exc))
    body: dict[str, Any] = {"name": fields.get("name", "").strip() or None,
                            "snapshot_id": snapshot_id}
    if size is not None:
        body["size"] = size
    return await create_and_show(ctx, body, _page(snapshot_id))


@router.post("/dashboard/snapshots/{snapshot_id}/delete", include_in_schema=False)
async def delete_snapshot(request: Request, snapshot_id: str) -> Response:
    """Cinder accepts the delete of a snapshot with clones (202) and refuses it later
    (the snapshot goes back to available, with a user message): then the page of the
    snapshot, with its blockers, is where the user learns why."""
    ctx = await page_context(request)
    blockers = await delete_blockers(ctx, "snapshots", snapshot_id)
    try:
        await ctx.api.delete(volume_path(ctx, f"/snapshots/{quoted(snapshot_id)}"))
    except ApiError as exc:
        if exc.status == 401:
            raise
        return failed(ctx, _page(snapshot_id), exc)
    clones = [b for b in blockers["blockers"] if b["reason"] == "has_clones"]
    if clones:
        return failed(ctx, _page(snapshot_id), f"The delete was accepted, but the volume "
                      f"service will refuse it: {clones[0]['message'].rstrip('.')}.")
    return done(ctx, "/dashboard/snapshots", f"Snapshot {snapshot_id} is being deleted.")
