"""A server's page, its live progress, and the actions its forms post.

The page reads the server, its volume attachments, its console log and its instance
action history (with each action's events) through the compute API. Each action is
one API call; its refusal (409 for a stop of a stopped server, 404 for a server of
another project, 403 from policy) returns to the page as the service's message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from strato.dashboard.client import ApiClient, ApiError
from strato.dashboard.web import PageContext, done, failed, form, page_context, render

router = APIRouter()
NOVA = "/compute/v2.1"

#: statuses a server rests in: no poll, the page shows them as they are
FINAL = frozenset({"ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED", "ERROR", "SHELVED",
                   "SHELVED_OFFLOADED", "RESCUE", "VERIFY_RESIZE", "DELETED",
                   "SOFT_DELETED"})
#: statuses whose progress Nova's ``progress`` field measures (for the others it says
#: nothing about the running task: ACTIVE while snapshotting shows 100)
MEASURED = frozenset({"BUILD", "REBUILD", "RESIZE", "MIGRATING"})
#: how many actions the history shows with their events (newest first)
HISTORY = 20
CONSOLE_LINES = 50
MAX_CONSOLE_LINES = 5000
#: Nova's power_state numbers, for people
POWER_NAMES = {0: "no state", 1: "running", 3: "paused", 4: "shut down", 6: "crashed",
               7: "suspended"}
#: the form's action -> (the API's action, what the flash says)
POWER = {"start": ("os-start", "is starting"), "stop": ("os-stop", "is stopping"),
         "reboot": ("reboot", "is rebooting"), "pause": ("pause", "is pausing"),
         "unpause": ("unpause", "is unpausing"), "suspend": ("suspend", "is suspending"),
         "resume": ("resume", "is resuming"), "shelve": ("shelve", "is being shelved"),
         "unshelve": ("unshelve", "is being unshelved")}
#: the state actions offered beside start/stop/reboot/delete, by status
MORE = {"ACTIVE": ("pause", "suspend", "shelve"), "SHUTOFF": ("shelve",),
        "PAUSED": ("unpause",), "SUSPENDED": ("resume",), "SHELVED": ("unshelve",),
        "SHELVED_OFFLOADED": ("unshelve",)}


def progress_of(server: dict[str, Any]) -> dict[str, Any]:
    """The contract's progress answer: status and task state as text, a percent only
    when the API measures this status, done when no task runs and the status rests."""
    status = str(server.get("status", "UNKNOWN"))
    task = server.get("OS-EXT-STS:task_state")
    finished = task is None and status in FINAL
    percent = server.get("progress") if status in MEASURED else None
    if not isinstance(percent, int) or isinstance(percent, bool):
        percent = None
    return {"status": status, "task_state": task, "percent": percent, "done": finished,
            "text": f"{status} ({task})" if task else status}


async def _get(api: ApiClient, path: str) -> Any:
    """A read the page can live without: None when it is refused or gone."""
    answer = await api.request("GET", path, check=False)
    if answer.status == 401:
        raise ApiError(answer)
    return answer.json() if answer.ok else None


async def _console(api: ApiClient, server_id: str, lines: int) -> tuple[str, str | None]:
    try:
        answer = await api.post(f"{NOVA}/servers/{server_id}/action",
                                {"os-getConsoleOutput": {"length": lines}})
    except ApiError as exc:
        if exc.status == 401:
            raise
        return "", exc.message
    return str((answer.json() or {}).get("output", "")), None


async def _history(api: ApiClient, server_id: str) -> tuple[list[dict[str, Any]],
                                                            str | None]:
    """The newest actions, each with its events (one call per action, in parallel)."""
    try:
        listing = await api.get(f"{NOVA}/servers/{server_id}/os-instance-actions")
    except ApiError as exc:
        if exc.status == 401:
            raise
        return [], exc.message
    actions = list(listing.get("instanceActions") or [])[:HISTORY]
    shown = await asyncio.gather(*[
        _get(api, f"{NOVA}/servers/{server_id}/os-instance-actions/{a['request_id']}")
        for a in actions])
    for action, detail in zip(actions, shown, strict=True):
        action["events"] = list(((detail or {}).get("instanceAction") or {})
                                .get("events") or [])
    return actions, None


async def _volumes(ctx: PageContext, server_id: str) -> tuple[list[dict[str, Any]],
                                                              str | None]:
    """The attachments, each with its volume's name, size and status when readable."""
    try:
        listing = await ctx.api.get(f"{NOVA}/servers/{server_id}/os-volume_attachments")
    except ApiError as exc:
        if exc.status == 401:
            raise
        return [], exc.message
    attachments = list(listing.get("volumeAttachments") or [])
    volumes = await asyncio.gather(*[
        _get(ctx.api, f"/volume/v3/{ctx.session.project_id}/volumes/{a['volumeId']}")
        for a in attachments])
    for attachment, volume in zip(attachments, volumes, strict=True):
        attachment["volume"] = (volume or {}).get("volume") or {}
    attachments.sort(key=lambda a: str(a.get("device", "")))
    return attachments, None


def _lines(request: Request) -> int:
    try:
        lines = int(request.query_params.get("lines", CONSOLE_LINES))
    except ValueError:
        return CONSOLE_LINES
    return max(1, min(lines, MAX_CONSOLE_LINES))


@router.get("/dashboard/servers/{server_id}", include_in_schema=False)
async def server(request: Request, server_id: str) -> Response:
    ctx = await page_context(request)
    # the server first: a server this user may not see is the error page (404)
    body = (await ctx.api.get(f"{NOVA}/servers/{server_id}"))["server"]
    lines = _lines(request)
    (console, console_err), (actions, actions_err), (attachments, volumes_err) = \
        await asyncio.gather(_console(ctx.api, server_id, lines),
                             _history(ctx.api, server_id), _volumes(ctx, server_id))
    image = body.get("image") if isinstance(body.get("image"), dict) else None
    image_body = await _get(ctx.api, f"/image/v2/images/{image['id']}") if image else None
    boot_volume = None
    if not image and attachments:  # booted from a volume: the one at the first disk
        boot_volume = next((a for a in attachments
                            if str(a.get("device", "")).endswith("da")), attachments[0])
    return render(ctx, "server.html", server=body, progress=progress_of(body),
                  image=image, image_body=image_body, boot_volume=boot_volume,
                  console=console, console_err=console_err, lines=lines,
                  actions=actions, actions_err=actions_err,
                  attachments=attachments, volumes_err=volumes_err,
                  power_names=POWER_NAMES,
                  more=MORE.get(body.get("status", "")
                                if body.get("OS-EXT-STS:task_state") is None else "", ()))


@router.get("/dashboard/servers/{server_id}/progress", include_in_schema=False)
async def progress(request: Request, server_id: str) -> Response:
    """JSON for ``data-poll``: a server gone (deleted) is done."""
    ctx = await page_context(request)
    try:
        body = (await ctx.api.get(f"{NOVA}/servers/{server_id}"))["server"]
    except ApiError as exc:
        if exc.status == 404:
            return JSONResponse({"status": "DELETED", "task_state": None, "percent": None,
                                 "done": True, "text": "DELETED (gone)"},
                                headers={"cache-control": "no-store"})
        if exc.status == 401:
            raise
        return JSONResponse({"error": exc.message}, status_code=exc.status,
                            headers={"cache-control": "no-store"})
    return JSONResponse(progress_of(body), headers={"cache-control": "no-store"})


def _refused(ctx: PageContext, url: str, exc: ApiError) -> Response:
    if exc.status == 401:
        raise exc
    return failed(ctx, url, exc)


@router.post("/dashboard/servers/{server_id}/delete", include_in_schema=False)
async def delete(request: Request, server_id: str) -> Response:
    ctx = await page_context(request)
    page = f"/dashboard/servers/{server_id}"
    try:
        await ctx.api.delete(f"{NOVA}/servers/{server_id}")
    except ApiError as exc:
        return _refused(ctx, page, exc)
    return done(ctx, "/dashboard/servers", f"Server {server_id} is being deleted.")


@router.post("/dashboard/servers/{server_id}/snapshot", include_in_schema=False)
async def snapshot(request: Request, server_id: str) -> Response:
    """createImage; on to the new image's page, where its upload shows."""
    ctx = await page_context(request)
    fields = await form(request)
    page = f"/dashboard/servers/{server_id}"
    name = fields.get("name", "").strip()
    try:
        answer = await ctx.api.post(f"{NOVA}/servers/{server_id}/action",
                                    {"createImage": {"name": name}})
    except ApiError as exc:
        return _refused(ctx, page, exc)
    image_id = _image_id(answer.json(), answer.headers)
    if not image_id:
        return done(ctx, page, f"Snapshot {name} is being created.")
    return done(ctx, f"/dashboard/images/{image_id}",
                f"Snapshot {name} of the server is being created.")


def _image_id(body: Any, headers: dict[str, str]) -> str | None:
    """2.45+: ``image_id`` in the body; before: the Location header's last part."""
    if isinstance(body, dict) and body.get("image_id"):
        return str(body["image_id"])
    location = headers.get("location", "")
    return location.rstrip("/").rsplit("/", 1)[-1] or None


@router.post("/dashboard/servers/{server_id}/backup", include_in_schema=False)
async def backup(request: Request, server_id: str) -> Response:
    """createBackup; back to the server, whose page shows the backup task's progress."""
    ctx = await page_context(request)
    fields = await form(request)
    page = f"/dashboard/servers/{server_id}"
    rotation: Any = fields.get("rotation", "").strip()
    if rotation.isdigit():
        rotation = int(rotation)
    name = fields.get("name", "").strip()
    try:
        answer = await ctx.api.post(f"{NOVA}/servers/{server_id}/action", {"createBackup": {
            "name": name, "backup_type": fields.get("backup_type", "").strip(),
            "rotation": rotation}})
    except ApiError as exc:
        return _refused(ctx, page, exc)
    image_id = _image_id(answer.json(), answer.headers)
    return done(ctx, page, f"Backup {name} is being made"
                + (f" as image {image_id}." if image_id else "."))


@router.post("/dashboard/servers/{server_id}/{action}", include_in_schema=False)
async def power(request: Request, server_id: str, action: str) -> Response:
    """start, stop, reboot (soft, or hard with ``type=HARD``), pause/unpause,
    suspend/resume, shelve/unshelve."""
    ctx = await page_context(request)
    fields = await form(request)
    page = f"/dashboard/servers/{server_id}"
    if action not in POWER:
        return failed(ctx, page, f"There is no server action {action!r}.")
    name, doing = POWER[action]
    args: Any = None
    if action == "reboot":
        args = {"type": "HARD" if fields.get("type", "").upper() == "HARD" else "SOFT"}
    try:
        await ctx.api.post(f"{NOVA}/servers/{server_id}/action", {name: args})
    except ApiError as exc:
        return _refused(ctx, page, exc)
    return done(ctx, page, f"The server {doing}.")
