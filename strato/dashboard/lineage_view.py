"""Dashboard pages: the lineage view — where a disk came from, what came from it, and
what blocks deleting it.

The graph is the lineage API's answer (``GET /lineage/v1/{kind}/{id}``, see
docs/lineage.md) drawn as a nested list: every node without a parent in the answer
starts a tree, a child sits under its parent with the edge's relation. A node with two
parents (a server booted from an image and holding a volume) is drawn in full once and
referenced at its other places, so every node has exactly one ``li[data-node]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from strato.dashboard.storage_util import (
    KINDS,
    URL_KINDS,
    delete_blockers,
    lineage_url,
    page_url,
    quoted,
    volume_path,
)
from strato.dashboard.web import PageContext, page_context, redirect, render

router = APIRouter()


@dataclass
class Branch:
    """One place in the drawn tree: a node (or a reference to one drawn elsewhere)."""

    node: dict[str, Any]
    anchor: str
    relation: str | None = None
    ref: bool = False
    current: bool = False
    page: str | None = None
    lineage: str | None = None
    children: list[Branch] = field(default_factory=list)


def build_tree(graph: dict[str, Any]) -> list[Branch]:
    """The graph's nodes as nested branches, parents first (see the module's doc)."""
    nodes: dict[str, dict[str, Any]] = {}
    for node in graph.get("nodes", []):
        if isinstance(node, dict) and node.get("id"):
            nodes[str(node["id"])] = node
    anchors = {nid: f"node-{i}" for i, nid in enumerate(nodes)}
    children: dict[str, list[tuple[str, str]]] = {nid: [] for nid in nodes}
    has_parent: set[str] = set()
    for edge in graph.get("edges", []):
        parent, child = str(edge.get("from")), str(edge.get("to"))
        if parent in nodes and child in nodes and parent != child:
            children[parent].append((child, str(edge.get("relation") or "")))
            has_parent.add(child)
    root = str(graph.get("root") or "")
    drawn: set[str] = set()

    def branch(nid: str, relation: str | None) -> Branch:
        node = nodes[nid]
        kind = str(node.get("kind") or "")
        rid = str(node.get("resource_id") or "")
        opaque = bool(node.get("opaque"))
        item = Branch(node=node, anchor=anchors[nid], relation=relation,
                      current=nid == root,
                      page=None if opaque else page_url(kind, rid),
                      lineage=None if opaque else lineage_url(kind, rid))
        if nid in drawn:
            item.ref = True
            return item
        drawn.add(nid)
        if not opaque:  # the walk does not go beyond another project's node
            item.children = [branch(child, rel) for child, rel in children[nid]]
        return item

    starts = [nid for nid in nodes if nid not in has_parent]
    trees = [branch(nid, None) for nid in starts]
    for nid in nodes:  # a cycle has no parentless node: draw what is left from itself
        if nid not in drawn:
            trees.append(branch(nid, None))
    return trees


@router.get("/dashboard/lineage", include_in_schema=False)
async def picker(request: Request, kind: str = "", id: str = "") -> Response:  # noqa: A002
    """The form; with ``kind`` and ``id`` (the form is a GET) it goes to that graph."""
    ctx = await page_context(request)
    rid = id.strip()
    if kind in URL_KINDS and rid:
        return redirect(request, f"/dashboard/lineage/{kind}/{quoted(rid)}")
    return render(ctx, "lineage_pick.html", kinds=[plural for plural, _ in KINDS.values()],
                  kind=kind, resource_id=rid, recent=await _recent(ctx))


async def _recent(ctx: PageContext) -> list[tuple[str, str, str]]:
    """The project's resources, to start from with one click: (kind, id, name)."""
    found: list[tuple[str, str, str]] = []
    sources = [("images", "/image/v2/images", "images"),
               ("servers", "/compute/v2.1/servers", "servers"),
               ("volumes", volume_path(ctx, "/volumes"), "volumes"),
               ("snapshots", volume_path(ctx, "/snapshots"), "snapshots")]
    for plural, path, key in sources:
        query = {"owner": ctx.session.project_id} if plural == "images" else None
        answer = await ctx.api.request("GET", path, query=query, check=False)
        if not answer.ok:
            continue
        for item in (answer.json() or {}).get(key, [])[:20]:
            found.append((plural, str(item["id"]), str(item.get("name") or item["id"])))
    return found


@router.get("/dashboard/lineage/{kind}/{resource_id}", include_in_schema=False)
async def lineage(request: Request, kind: str, resource_id: str) -> Response:
    ctx = await page_context(request)
    if kind not in URL_KINDS:
        return render(ctx, "error.html", status=404, code=404,
                      message=f"There is no lineage of {kind!r}: choose one of "
                              f"{', '.join(URL_KINDS)}.")
    answer = await ctx.api.get(f"/lineage/v1/{kind}/{quoted(resource_id)}")
    graph = (answer or {}).get("lineage") or {}
    blockers = await delete_blockers(ctx, kind, resource_id)
    node_kind = URL_KINDS[kind]
    return render(ctx, "lineage.html", kind=kind, node_kind=node_kind,
                  resource_id=resource_id, trees=build_tree(graph),
                  count=len(graph.get("nodes", [])), blockers=blockers,
                  truncated=bool(graph.get("truncated")),
                  page=page_url(node_kind, resource_id))
