"""Helpers shared by the storage pages and the lineage view.

Every value still comes from the REST API as the logged-in user; these only shape it
for the templates (links between resource pages, the lineage API's delete blockers,
the JSON a ``data-poll`` element reads).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.responses import JSONResponse

from strato.dashboard.client import ApiError
from strato.dashboard.web import PageContext

# Lineage node kind → (the lineage API's kind in a URL, the resource page's prefix).
KINDS: dict[str, tuple[str, str | None]] = {
    "image": ("images", "/dashboard/images/"),
    "volume": ("volumes", "/dashboard/volumes/"),
    "snapshot": ("snapshots", "/dashboard/snapshots/"),
    "server": ("servers", "/dashboard/servers/"),
    "backup": ("backups", None),
}
URL_KINDS = {plural: kind for kind, (plural, _) in KINDS.items()}


def volume_path(ctx: PageContext, rest: str = "") -> str:
    """Cinder's path for the session's project."""
    return f"/volume/v3/{ctx.session.project_id}{rest}"


def quoted(value: str) -> str:
    """An id from a URL or form, safe as one path segment of an API call."""
    return quote(value, safe="")


def split_node(node_id: str) -> tuple[str, str]:
    kind, _, rid = node_id.partition(":")
    return kind, rid


def page_url(kind: str, resource_id: str) -> str | None:
    """The dashboard page of a lineage node's resource (None: it has none)."""
    entry = KINDS.get(kind)
    if entry is None or entry[1] is None or not resource_id:
        return None
    return entry[1] + quoted(resource_id)


def lineage_url(kind: str, resource_id: str) -> str | None:
    entry = KINDS.get(kind)
    if entry is None or not resource_id:
        return None
    return f"/dashboard/lineage/{entry[0]}/{quoted(resource_id)}"


def poll(status: str, done: bool, text: str, percent: float | None = None) -> JSONResponse:
    """The answer a ``data-poll`` element reads (see static/dashboard.js)."""
    return JSONResponse({"status": status, "percent": percent, "done": done, "text": text},
                        headers={"cache-control": "no-store"})


def percent_of(value: Any) -> float | None:
    """"45%" → 45.0; None when the API gives none."""
    if value is None:
        return None
    text = str(value).strip().rstrip("%")
    try:
        number = float(text)
    except ValueError:
        return None
    return max(0.0, min(100.0, number))


async def delete_blockers(ctx: PageContext, plural: str, resource_id: str) -> dict[str, Any]:
    """The lineage API's answer to "what blocks deleting this", shaped for
    ``lineage_blockers.html``: each blocker's nodes as labelled links (named from the
    lineage graph when there is something to name). An answer the API refused is shown
    as its message instead (the page stays usable)."""
    base = f"/lineage/v1/{plural}/{quoted(resource_id)}"
    try:
        answer = await ctx.api.get(base + "/delete-blockers")
    except ApiError as exc:
        if exc.status == 401:
            raise
        return {"error": exc.message, "blockers": [], "deferred": []}
    data = (answer or {}).get("delete_blockers") or {}
    names: dict[str, dict[str, Any]] = {}
    if data.get("blockers") or data.get("deferred"):
        graph = await ctx.api.request("GET", base, check=False)
        if graph.ok:
            names = {str(n.get("id")): n for n in
                     ((graph.json() or {}).get("lineage") or {}).get("nodes", [])}
    return {
        "error": None,
        "deletable": bool(data.get("deletable")),
        "blockers": [{"reason": b.get("reason", ""), "message": b.get("message", ""),
                      "nodes": [node_ref(n, names.get(str(n))) for n in b.get("nodes", [])]}
                     for b in data.get("blockers", [])],
        "deferred": [node_ref(n, names.get(str(n))) for n in data.get("deferred", [])],
    }


def node_ref(node_id: str, node: dict[str, Any] | None = None) -> dict[str, str | None]:
    """A node the blockers name by id: a label (its name and status when the graph
    holds it) and links to its page and its lineage."""
    kind, rid = split_node(str(node_id))
    if kind == "opaque" or (node or {}).get("opaque"):
        return {"label": "in use by another project", "url": None, "lineage": None}
    label = f"{kind} {(node or {}).get('name') or rid}"
    if node and node.get("status"):
        label += f" ({node['status']})"
    if kind == "store":
        return {"label": f"kept data {rid}", "url": None, "lineage": None}
    return {"label": label, "url": page_url(kind, rid), "lineage": lineage_url(kind, rid)}


async def user_messages(ctx: PageContext, resource_id: str) -> list[dict[str, Any]]:
    """The volume service's user messages about this resource, newest first (why a
    volume went to error, why a snapshot's delete was refused)."""
    answer = await ctx.api.request("GET", volume_path(ctx, "/messages"), query={
        "resource_uuid": resource_id, "sort": "created_at:desc", "limit": 10},
        check=False)
    if not answer.ok:
        if answer.status == 401:
            raise ApiError(answer)
        return []
    return list((answer.json() or {}).get("messages", []))


def form_size(text: str | None) -> int | None:
    """A size in GiB from a form (None: not given); ValueError for anything else."""
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"Size must be a whole number of GiB above 0, not {text!r}.")
    return int(text)
