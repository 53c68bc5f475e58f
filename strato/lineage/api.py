"""The lineage API (docs/lineage.md): validate, authorize, compute.

The start resource is looked up through its own service's API, so what the caller may
see is that service's answer (404 for another project's volume, a private image, ...).
The walk (strato.lineage.graph) then shows every node the caller's project may not see
as an opaque one and goes no further.  Delete blockers call the same predicates the
services' deletes call, so the two never disagree.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select

from strato.backup.api import delete_refusals as backup_refusals
from strato.backup.models import Backup
from strato.compute.locks import lock_refusal
from strato.compute.models import Instance
from strato.context import RequestContext
from strato.exceptions import BadRequest
from strato.image.api import ImageAPI
from strato.image.models import Image
from strato.lineage.graph import Graph, Node, Walker
from strato.storage import parse_location
from strato.volume.api import snapshot_delete_refusals, volume_delete_refusals
from strato.volume.models import Attachment, Snapshot, Volume

#: the URL's collection name -> node kind
KINDS = {"images": "image", "volumes": "volume", "snapshots": "snapshot",
         "servers": "server", "backups": "backup"}
OPAQUE_LABEL = "in use by another project"


class LineageAPI:
    def __init__(self, services: Any) -> None:
        self.services = services
        self.db = services.db
        self.policy = services.policy

    # ------------------------------------------------------------ validation
    def _start(self, ctx: RequestContext, collection: str, resource_id: str,
               rule: str) -> str:
        """The start node's key after policy and the owning service's own lookup."""
        kind = KINDS.get(collection)
        if kind is None:
            raise BadRequest(f"Unknown resource kind {collection!r}: one of "
                             f"{', '.join(KINDS)}.")
        # "" for a token without a project: never equal to its (absent) project
        self.policy.enforce(ctx, rule, {"project_id": ctx.project_id or ""})
        s = self.services
        if kind == "image":
            s.image.show(ctx, resource_id)
        elif kind == "volume":
            s.volume.show(ctx, resource_id, (3, 0))
        elif kind == "snapshot":
            s.volume.show_snapshot(ctx, resource_id, (3, 0))
        elif kind == "server":
            s.compute.show(ctx, resource_id, (2, 1))
        else:
            s.backup.show(ctx, resource_id, (3, 0))
        return f"{kind}:{resource_id}"

    # ------------------------------------------------------------ the graph
    def graph(self, ctx: RequestContext, collection: str, resource_id: str
              ) -> dict[str, Any]:
        start = self._start(ctx, collection, resource_id, "lineage:show")
        with self.db.session(readonly=True) as session:
            graph = Walker(self.services, ctx, session).walk(start)
        return render(graph)

    # ------------------------------------------------------------ delete blockers
    def blockers(self, ctx: RequestContext, collection: str, resource_id: str
                 ) -> dict[str, Any]:
        start = self._start(ctx, collection, resource_id, "lineage:delete_blockers")
        kind = start.split(":", 1)[0]
        with self.db.session(readonly=True) as session:
            walker = Walker(self.services, ctx, session)
            node = walker.node(start)
            found: list[tuple[str, str, list[str]]] = []
            deferred: list[str] = []
            if node is not None:
                check = getattr(self, f"_{kind}_blockers")
                found, deferred = check(ctx, session, walker, node)
            names = _Names(walker)
            out = [{"reason": reason, "message": message,
                    "nodes": [names.id(k) for k in keys]}
                   for reason, message, keys in found]
            return {"resource": start, "deletable": not out, "blockers": out,
                    "deferred": [names.id(k) for k in dict.fromkeys(deferred)]}

    @staticmethod
    def _clones(walker: Walker, node: Node, only_snap: str | None = None,
                skip_prefix: str | None = None) -> list[str]:
        if node.store is None:
            return []
        found = walker.children_of_store(node.store, only_snap, skip_prefix)
        return list(dict.fromkeys(walker.node_for(p, n) for p, n in found))

    def _image_blockers(self, ctx: RequestContext, session: Any, walker: Walker,
                        node: Node) -> tuple[list, list]:
        image = session.get(Image, node.resource_id)
        found = [(reason, err.message, []) for reason, err in
                 ImageAPI.delete_refusals(ctx, image)]
        snap = None
        if node.location and node.store is not None:
            snap = parse_location(node.location).snapshot
        clones = self._clones(walker, node, snap) if snap else []
        if clones:  # the store's InUseByStore: the delete answers 409
            found.append(("has_clones", f"{_count(len(clones), 'disk')} copy-on-write "
                          f"{'clone' if len(clones) == 1 else 'clones'} of its data",
                          clones))
        return found, []

    def _volume_blockers(self, ctx: RequestContext, session: Any, walker: Walker,
                         node: Node) -> tuple[list, list]:
        vol = session.get(Volume, node.resource_id)
        snaps = list(session.scalars(select(Snapshot.id).where(
            Snapshot.volume_id == vol.id)))
        found = []
        for reason, err in volume_delete_refusals(vol, len(snaps)):
            keys: list[str] = []
            if reason == "attached":
                keys = [f"server:{i}" for i in session.scalars(
                    select(Attachment.instance_uuid).where(
                        Attachment.volume_id == vol.id,
                        Attachment.attach_status == "attached")) if i]
            elif reason == "has_snapshots":
                keys = [f"snapshot:{i}" for i in snaps]
            found.append((reason, err.message, [k for k in keys if walker.node(k)]))
        # clones through <dest>.clone_snap keep it as volume-<id>.deleted: not refused
        return found, self._clones(walker, node, skip_prefix="snapshot-")

    def _snapshot_blockers(self, ctx: RequestContext, session: Any, walker: Walker,
                           node: Node) -> tuple[list, list]:
        snap = session.get(Snapshot, node.resource_id)
        found = [(reason, err.message, []) for reason, err in snapshot_delete_refusals(snap)]
        vol = session.get(Volume, snap.volume_id)
        driver = None
        if vol is not None and vol.host:
            driver = self.services.volume_drivers.get(
                self.services.volume.backend_of(vol.host))
        if driver is not None and driver.snapshot_has_clones(vol.id, snap.id):
            clones = self._clones(walker, node, node.snap)
            found.append(("has_clones", f"{_count(len(clones), 'volume')} copy-on-write "
                          f"{'clone' if len(clones) == 1 else 'clones'} of it: the delete "
                          "is accepted, then refused by the volume service (the snapshot "
                          "stays available)", clones))
        return found, []

    def _server_blockers(self, ctx: RequestContext, session: Any, walker: Walker,
                         node: Node) -> tuple[list, list]:
        inst = session.get(Instance, node.resource_id)
        refused = lock_refusal(ctx, inst)
        found = [("locked", refused.message, [])] if refused is not None else []
        # images cloned from its root disk keep it as <uuid>_disk.deleted: not refused
        return found, self._clones(walker, node)

    def _backup_blockers(self, ctx: RequestContext, session: Any, walker: Walker,
                         node: Node) -> tuple[list, list]:
        b = session.get(Backup, node.resource_id)
        has = bool(session.scalar(select(exists().where(Backup.parent_id == b.id))))
        found = []
        for reason, err in backup_refusals(b, has):
            keys = [f"backup:{i}" for i in session.scalars(select(Backup.id).where(
                Backup.parent_id == b.id))] if reason == "has_dependent_backups" else []
            found.append((reason, err.message, keys))
        return found, []


def _count(n: int, noun: str) -> str:
    """Say "1 disk is a" or "2 disks are"."""
    return f"1 {noun} is a" if n == 1 else f"{n} {noun}s are"


class _Names:
    """Node ids as the caller may see them: ``opaque:<n>`` for nodes of other projects."""

    def __init__(self, walker: Walker | None = None) -> None:
        self.walker = walker
        self.ids: dict[str, str] = {}
        self.hidden = 0

    def id(self, key: str, node: Node | None = None) -> str:
        if key not in self.ids:
            if node is None and self.walker is not None:
                node = self.walker.node(key)
            if node is None or node.visible:
                self.ids[key] = key
            else:
                self.hidden += 1
                self.ids[key] = f"opaque:{self.hidden}"
        return self.ids[key]


def render(graph: Graph) -> dict[str, Any]:
    """The documented shape; nobody's hidden node says more than its kind."""
    names = _Names()
    for key, node in graph.nodes.items():
        names.id(key, node)
    holds: dict[str, list[str]] = {}
    for parent, child in graph.holds:
        holds.setdefault(parent, []).append(names.id(child))
    nodes = []
    for key, node in graph.nodes.items():
        held = sorted(holds.get(key, []))
        if not node.visible:
            nodes.append({"id": names.id(key), "kind": node.kind, "opaque": True,
                          "label": OPAQUE_LABEL, "holds_data_for": held})
            continue
        nodes.append({"id": key, "kind": node.kind, "resource_id": node.resource_id,
                      "name": node.name, "status": node.status, "size": node.size,
                      "project_id": node.project_id, "location": node.location,
                      "engine": node.engine, "holds_data_for": held, "opaque": False})
    edges = [{"from": names.id(p), "to": names.id(c), "relation": r}
             for (p, c), r in graph.edges.items()]
    return {"root": graph.root, "nodes": nodes, "edges": edges,
            "truncated": graph.truncated}
