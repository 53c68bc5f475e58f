"""The lineage walker: the block store's parent links joined with the records' links.

The store knows which data is a copy-on-write clone of which (``parent_info``, and
``list_children`` of each snapshot); the records know what the store cannot show (a
volume copied from an image, a server's boot volume, a backup's volume, a volume-backed
server snapshot's Cinder snapshots).  Store names map back to records by the seeds'
naming (:func:`Walker.node_for`); a name no record owns (``*.deleted``) is a ``store``
node.  Only the block-store interface (``strato.storage.base``) is used, so the answer
is the same on the ``local`` and ``rbd`` engines.

This module reads the other services' tables (read-only, one session): a cross-service
view, computed where every link is visible at once.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato.backup.models import Backup
from strato.compute import states
from strato.compute.models import BlockDevice, Instance
from strato.context import RequestContext
from strato.image.models import Image, ImageMember, ImageProperty
from strato.storage import Engine, errors, parse_location
from strato.volume.models import Snapshot, Volume

GiB = 1 << 30
MAX_NODES = 300  # a walk stops adding nodes here (``truncated``)
MAX_DEPTH = 64  # and never follows a chain longer than this
KINDS = ("image", "volume", "snapshot", "server", "backup")
_UUID = r"[0-9a-fA-F-]{36}"
_DISK = re.compile(rf"^({_UUID})_disk(\.rescue)?$")
_ANY_DISK = re.compile(rf"^({_UUID})_disk")
_VOLUME = re.compile(rf"^volume-({_UUID})$")
_ANY_VOLUME = re.compile(rf"^volume-({_UUID})")
_SNAPSHOT = re.compile(rf"^snapshot-({_UUID})$")

Store = tuple[str, str]  # (pool, image name)


@dataclass
class Node:
    """One vertex.  ``key`` is ``<kind>:<resource id>`` (``store:<pool>/<name>``)."""

    key: str
    kind: str
    resource_id: str | None
    name: str | None = None
    status: str | None = None
    size: int | None = None
    project_id: str | None = None
    location: str | None = None
    engine: str | None = None
    visible: bool = True
    #: the block-store image holding its data, and the snapshot of it (snapshots)
    store: Store | None = None
    snap: str | None = None


@dataclass
class Graph:
    root: str
    nodes: dict[str, Node] = field(default_factory=dict)
    #: (parent, child) -> relation
    edges: dict[tuple[str, str], str] = field(default_factory=dict)
    #: (parent, child) pairs where the child's data is a clone of the parent's
    holds: set[tuple[str, str]] = field(default_factory=set)
    truncated: bool = False


def store_relation(parent: str, child: str, parent_store: str = "") -> str:
    """The relation of a copy-on-write parent link, by the kinds it joins."""
    p_kind, c_kind = parent.split(":", 1)[0], child.split(":", 1)[0]
    if c_kind == "server":
        return "boot"
    if c_kind == "image" and (p_kind == "server" or (p_kind == "store"
                                                      and _ANY_DISK.match(parent_store))):
        return "snapshot"
    return "clone"


class Walker:
    """One walk for one caller: records read through ``session``, the store through
    the engines of the pools the services use."""

    def __init__(self, services: Any, ctx: RequestContext, session: Session) -> None:
        self.services = services
        self.ctx = ctx
        self.session = session
        stores = services.stores
        self.engines: dict[str, Engine] = dict(stores.by_pool)
        self.roles: dict[str, str] = {stores.vms_pool: "vms"}
        for store in services.image.stores.values():  # every image store's pool
            if getattr(store, "kind", "") == "rbd":
                self.engines.setdefault(store.pool, store.engine)
                self.roles[store.pool] = "images"
        self.roles.setdefault(stores.images_pool, "images")
        self.backend_pools: dict[str, str] = {}
        for name, backend in services.volume.backends.items():
            self.roles[backend.pool] = "volumes"
            self.backend_pools[name] = backend.pool
        self._nodes: dict[str, Node | None] = {}
        self._owner: dict[str, str | None] = {}
        self._listed: dict[str, set[str]] = {}

    # ------------------------------------------------------------ names <-> records
    def node_for(self, pool: str, name: str, snap: str | None = None) -> str:
        """The node a block-store image (at ``snap``) belongs to, by the seeds' names:
        ``images/<image_id>``, ``vms/<uuid>_disk``, ``volumes/volume-<id>`` (at
        ``snapshot-<id>``: the Cinder snapshot); a ``*.deleted`` name or one no record
        owns is a ``store`` node."""
        role = self.roles.get(pool)
        store_key = f"store:{pool}/{name}"
        if name.endswith(".deleted"):
            return store_key
        if role == "images":
            image = self.session.get(Image, name)
            return f"image:{name}" if image is not None else store_key
        if role == "vms":
            m = _DISK.match(name)
            if m:
                inst = self.session.get(Instance, m.group(1))
                if inst is not None and not inst.deleted:
                    return f"server:{inst.id}"
            return store_key
        if role == "volumes":
            if snap:
                s = _SNAPSHOT.match(snap)
                if s and self.session.get(Snapshot, s.group(1)) is not None:
                    return f"snapshot:{s.group(1)}"
            m = _VOLUME.match(name)
            if m and self.session.get(Volume, m.group(1)) is not None:
                return f"volume:{m.group(1)}"
        return store_key

    def node(self, key: str) -> Node | None:
        """The node for ``key`` (None when no record or store image backs it)."""
        if key not in self._nodes:
            self._nodes[key] = self._load(key)
        return self._nodes[key]

    def _load(self, key: str) -> Node | None:
        kind, rid = key.split(":", 1)
        admin = self.ctx.is_admin
        project = self.ctx.project_id
        s = self.session
        if kind == "image":
            image = s.get(Image, rid)
            if image is None:
                return None
            # a block-store location only: a file store's path is the host's business
            location = image.location if (image.location or "").startswith("rbd://") \
                else None
            node = Node(key, kind, rid, image.name, image.status, image.size, image.owner,
                        location, visible=self._image_visible(image))
            node.store = self._store_of_location(image.location)
            node.engine = self._engine_name(node.store) or (
                image.store and self._kind_of_store(image.store))
            return node
        if kind == "volume":
            vol = s.get(Volume, rid)
            if vol is None:
                return None
            node = Node(key, kind, rid, vol.name, vol.status, vol.size * GiB, vol.project_id,
                        visible=admin or vol.project_id == project)
            node.store = self._volume_store(vol)
            self._locate(node)
            return node
        if kind == "snapshot":
            snap = s.get(Snapshot, rid)
            if snap is None:
                return None
            node = Node(key, kind, rid, snap.name, snap.status, snap.size * GiB,
                        snap.project_id, visible=admin or snap.project_id == project)
            vol = s.get(Volume, snap.volume_id)
            node.store = self._volume_store(vol) if vol is not None else None
            node.snap = f"snapshot-{rid}"
            self._locate(node)
            return node
        if kind == "server":
            inst = s.get(Instance, rid)
            if inst is None or inst.deleted:
                return None
            node = Node(key, kind, rid, inst.name, states.status(inst.vm_state,
                                                                 inst.task_state),
                        int((inst.flavor or {}).get("root_gb") or 0) * GiB, inst.project_id,
                        visible=admin or inst.project_id == project)
            disk = (self.services.stores.vms_pool, f"{rid}_disk")
            if self._exists(disk):
                node.store = disk
                self._locate(node)
            return node
        if kind == "backup":
            b = s.get(Backup, rid)
            if b is None:
                return None
            return Node(key, kind, rid, b.name, b.status, b.size * GiB, b.project_id,
                        visible=admin or b.project_id == project)
        if kind == "store":
            pool, _, name = rid.partition("/")
            if not self._exists((pool, name)):
                return None
            owner = self.owner_of_store(pool, name)
            node = Node(key, kind, None, name, "deleted-kept", None, owner,
                        visible=admin or (owner is not None and owner == project))
            node.store = (pool, name)
            self._locate(node)
            return node
        return None

    def _image_visible(self, image: Image) -> bool:
        if self.ctx.is_admin or image.owner == self.ctx.project_id:
            return True
        if image.visibility in ("public", "community"):
            return True
        if image.visibility == "shared":
            return self.session.get(ImageMember, (image.id, self.ctx.project_id)) is not None
        return False

    def owner_of_store(self, pool: str, name: str) -> str | None:
        """Whose a store-only image is: the (deleted) server its disk was, else the
        project of the first record that is a clone of it; None: nobody's known."""
        key = f"{pool}/{name}"
        if key in self._owner:
            return self._owner[key]
        owner: str | None = None
        m = _ANY_DISK.match(name)
        if m:
            inst = self.session.get(Instance, m.group(1))
            owner = inst.project_id if inst is not None else None
        if owner is None:
            m = _ANY_VOLUME.match(name)
            vol = self.session.get(Volume, m.group(1)) if m else None
            owner = vol.project_id if vol is not None else None
        if owner is None:
            for c_pool, c_name in self.children_of_store((pool, name), None):
                child = self.node_for(c_pool, c_name)
                if child.startswith("store:"):
                    continue
                found = self.node(child)
                if found is not None and found.project_id:
                    owner = found.project_id
                    break
        self._owner[key] = owner
        return owner

    # ------------------------------------------------------------ the store
    def _engine(self, pool: str) -> Engine | None:
        return self.engines.get(pool)

    def _engine_name(self, store: Store | None) -> str | None:
        engine = self._engine(store[0]) if store else None
        return engine.name if engine is not None else None

    def _kind_of_store(self, store_id: str) -> str:
        found = self.services.image.stores.get(store_id)
        return getattr(found, "kind", store_id)

    def _exists(self, store: Store) -> bool:
        """Whether the store has the image: each pool listed once per walk (on rbd an
        existence check is a listing)."""
        pool, name = store
        if pool not in self._listed:
            engine = self._engine(pool)
            try:
                self._listed[pool] = set(engine.list(pool)) if engine is not None else set()
            except errors.Error:
                self._listed[pool] = set()
        return name in self._listed[pool]

    def _locate(self, node: Node) -> None:
        if node.store is None:
            return
        engine = self._engine(node.store[0])
        if engine is None:
            return
        node.location = engine.location(node.store[0], node.store[1], node.snap)
        node.engine = engine.name
        if node.kind == "store":
            try:
                with engine.open(*node.store, read_only=True) as image:
                    node.size = image.size()
            except errors.Error:
                node.size = None

    def _store_of_location(self, location: str | None) -> Store | None:
        if not location or not location.startswith("rbd://"):
            return None
        try:
            loc = parse_location(location)
        except errors.InvalidArgument:
            return None
        engine = self._engine(loc.pool)
        if engine is None or engine.fsid() != loc.fsid:
            return None
        return loc.pool, loc.image

    def _volume_store(self, vol: Volume) -> Store | None:
        if not vol.host:
            return None
        try:
            backend = self.services.volume.backend_of(vol.host)
        except IndexError:
            return None
        pool = self.backend_pools.get(backend)
        return (pool, f"volume-{vol.id}") if pool else None

    def store_parent(self, node: Node) -> tuple[str, str] | None:
        """(parent node key, parent's store name) of a node whose data is a clone."""
        if node.store is None or node.kind in ("snapshot", "backup"):
            return None
        engine = self._engine(node.store[0])
        if engine is None:
            return None
        try:
            with engine.open(*node.store, read_only=True) as image:
                p_pool, p_name, p_snap = image.parent_info()
        except errors.Error:  # not a clone, or gone meanwhile
            return None
        return self.node_for(p_pool, p_name, p_snap), p_name

    def children_of_store(self, store: Store, only_snap: str | None,
                          skip_prefix: str | None = None) -> list[Store]:
        """Clones of ``store``'s snapshots (of ``only_snap`` alone when given; none of
        the snapshots named ``skip_prefix*``)."""
        engine = self._engine(store[0])
        if engine is None:
            return []
        try:
            with engine.open(*store, read_only=True) as image:
                snaps = [s.name for s in image.list_snaps()]
        except errors.Error:
            return []
        out: list[Store] = []
        for snap in snaps:
            if (only_snap is not None and snap != only_snap) or (
                    skip_prefix is not None and snap.startswith(skip_prefix)):
                continue
            try:
                with engine.open(*store, snapshot=snap, read_only=True) as at:
                    out.extend(at.list_children())
            except errors.Error:
                continue
        return out

    def store_children(self, node: Node) -> list[str]:
        """Node keys whose data is a clone of this node's data (a volume's Cinder
        snapshots carry their own clones: those are the snapshot nodes' children)."""
        if node.store is None or node.kind == "backup":
            return []
        found = self.children_of_store(
            node.store, node.snap if node.kind == "snapshot" else None,
            "snapshot-" if node.kind == "volume" else None)
        return [self.node_for(pool, name) for pool, name in found]

    # ------------------------------------------------------------ the records
    def _exists_key(self, key: str) -> bool:
        return self.node(key) is not None

    def db_parents(self, node: Node) -> list[tuple[str, str]]:
        s, rid = self.session, node.resource_id
        out: list[tuple[str, str]] = []
        if node.kind == "volume":
            vol = s.get(Volume, rid)
            if vol.snapshot_id:
                out.append((f"snapshot:{vol.snapshot_id}", "copy"))
            if vol.source_volid:
                out.append((f"volume:{vol.source_volid}", "copy"))
            image_id = vol.image_id
            if not (image_id or vol.snapshot_id or vol.source_volid):
                image_id = (vol.image_metadata or {}).get("image_id")
            if image_id:
                out.append((f"image:{image_id}", "copy"))
        elif node.kind == "snapshot":
            snap = s.get(Snapshot, rid)
            out.append((f"volume:{snap.volume_id}", "snapshot"))
        elif node.kind == "server":
            inst = s.get(Instance, rid)
            if inst.image_ref:
                out.append((f"image:{inst.image_ref}", "boot"))
            for b in s.scalars(select(BlockDevice).where(
                    BlockDevice.instance_uuid == rid, BlockDevice.boot_index == 0,
                    BlockDevice.volume_id.is_not(None))):
                out.append((f"volume:{b.volume_id}", "boot"))
        elif node.kind == "image":
            props = {p.name: p.value for p in s.scalars(select(ImageProperty).where(
                ImageProperty.image_id == rid))}
            if props.get("instance_uuid") and props.get("image_type") in ("snapshot",
                                                                           "backup"):
                out.append((f"server:{props['instance_uuid']}", "snapshot"))
            out.extend((f"snapshot:{sid}", "snapshot")
                       for sid in _mapping_snapshots(props.get("block_device_mapping")))
        elif node.kind == "backup":
            b = s.get(Backup, rid)
            out.append((f"backup:{b.parent_id}" if b.parent_id else f"volume:{b.volume_id}",
                        "backup"))
        return [(k, r) for k, r in out if self._exists_key(k)]

    def db_children(self, node: Node) -> list[tuple[str, str]]:
        s, rid = self.session, node.resource_id
        out: list[tuple[str, str]] = []
        if node.kind == "image":
            out += [(f"volume:{v}", "copy") for v in s.scalars(
                select(Volume.id).where(Volume.image_id == rid))]
            out += [(f"server:{i}", "boot") for i in s.scalars(select(Instance.id).where(
                Instance.image_ref == rid, Instance.deleted.is_(False)))]
        elif node.kind == "volume":
            out += [(f"snapshot:{i}", "snapshot") for i in s.scalars(
                select(Snapshot.id).where(Snapshot.volume_id == rid))]
            out += [(f"volume:{i}", "copy") for i in s.scalars(
                select(Volume.id).where(Volume.source_volid == rid))]
            out += [(f"backup:{i}", "backup") for i in s.scalars(select(Backup.id).where(
                Backup.volume_id == rid, Backup.parent_id.is_(None)))]
            out += [(f"server:{i}", "boot") for i in s.scalars(
                select(BlockDevice.instance_uuid).join(
                    Instance, Instance.id == BlockDevice.instance_uuid).where(
                    BlockDevice.volume_id == rid, BlockDevice.boot_index == 0,
                    Instance.deleted.is_(False)))]
        elif node.kind == "snapshot":
            out += [(f"volume:{v}", "copy") for v in s.scalars(
                select(Volume.id).where(Volume.snapshot_id == rid))]
            for prop in s.scalars(select(ImageProperty).where(
                    ImageProperty.name == "block_device_mapping",
                    ImageProperty.value.contains(rid))):
                if rid in _mapping_snapshots(prop.value):
                    out.append((f"image:{prop.image_id}", "snapshot"))
        elif node.kind == "server":
            for prop in s.scalars(select(ImageProperty).where(
                    ImageProperty.name == "instance_uuid", ImageProperty.value == rid)):
                kind = s.get(ImageProperty, (prop.image_id, "image_type"))
                if kind is not None and kind.value in ("snapshot", "backup"):
                    out.append((f"image:{prop.image_id}", "snapshot"))
        elif node.kind == "backup":
            out += [(f"backup:{i}", "backup") for i in s.scalars(
                select(Backup.id).where(Backup.parent_id == rid))]
        return [(k, r) for k, r in dict.fromkeys(out) if self._exists_key(k)]

    # ------------------------------------------------------------ the walk
    def walk(self, start: str) -> Graph:
        """Ancestors (up) and descendants (down) of ``start``; each ancestor's other
        children too, as leaves, so what an ancestor holds data for is complete.  A
        node the caller may not see is not expanded.  Bounded by MAX_NODES/MAX_DEPTH."""
        graph = Graph(root=start)
        root = self.node(start)
        if root is None:
            return graph
        graph.nodes[start] = root
        done: dict[str, set[str]] = {}
        queue: deque[tuple[str, str, int]] = deque([(start, "up", 0), (start, "down", 0)])
        while queue:
            key, mode, depth = queue.popleft()
            if mode in done.setdefault(key, set()):
                continue
            done[key].add(mode)
            node = graph.nodes[key]
            if mode == "leaf" or not node.visible or depth >= MAX_DEPTH:
                graph.truncated |= depth >= MAX_DEPTH and node.visible and mode != "leaf"
                continue
            if mode == "up":
                for parent, relation, held in self._parents(node):
                    if self._add(graph, parent):
                        self._edge(graph, parent, key, relation, held)
                        queue.append((parent, "up", depth + 1))
            for child, relation, held in self._children(node):
                if self._add(graph, child):
                    self._edge(graph, key, child, relation, held)
                    queue.append((child, "down" if mode == "down" else "leaf", depth + 1))
        return graph

    def _add(self, graph: Graph, key: str) -> bool:
        if key in graph.nodes:
            return True
        if len(graph.nodes) >= MAX_NODES:
            graph.truncated = True
            return False
        node = self.node(key)
        if node is None:
            return False
        graph.nodes[key] = node
        return True

    @staticmethod
    def _edge(graph: Graph, parent: str, child: str, relation: str, held: bool) -> None:
        if held:
            graph.edges[(parent, child)] = relation
            graph.holds.add((parent, child))
        else:
            graph.edges.setdefault((parent, child), relation)

    def _parents(self, node: Node) -> list[tuple[str, str, bool]]:
        out: list[tuple[str, str, bool]] = []
        found = self.store_parent(node)
        if found is not None and self.node(found[0]) is not None:
            out.append((found[0], store_relation(found[0], node.key, found[1]), True))
        out += [(k, r, False) for k, r in self.db_parents(node)
                if found is None or k != found[0]]
        return out

    def _children(self, node: Node) -> list[tuple[str, str, bool]]:
        stored = [k for k in dict.fromkeys(self.store_children(node))
                  if self.node(k) is not None]
        store_name = node.store[1] if node.store else ""
        out = [(k, store_relation(node.key, k, store_name), True) for k in stored]
        out += [(k, r, False) for k, r in self.db_children(node) if k not in stored]
        return out


def _mapping_snapshots(raw: str | None) -> list[str]:
    """The Cinder snapshot ids a volume-backed server snapshot's mapping names."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    return [str(i["snapshot_id"]) for i in items
            if isinstance(i, dict) and i.get("snapshot_id")]
