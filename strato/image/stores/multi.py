"""Several stores at once (Glance's ``enabled_backends``): ``fast:rbd, cheap:file``.

``MultiStore`` is what ``ImageAPI.store`` is then: it writes to the default store (as
the single store did, so everything that uploads or clones works unchanged) and reads,
deletes and releases at any location by the store that owns it (``file://`` locations
are the file store's, others the block store's — hence at most one store of each
type).  ``by_id`` names each store by its id, which is also its ``name``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from strato.image.stores.base import ImageStore, StoreWriter


class StoreConfigError(ValueError):
    """``enabled_backends`` / ``default_backend`` do not describe usable stores."""


def parse_backends(pairs: list[str], default: str) -> tuple[dict[str, str], str]:
    """``['fast:rbd', 'cheap:file']`` → ({'fast': 'rbd', 'cheap': 'file'}, default id)."""
    backends: dict[str, str] = {}
    for pair in pairs:
        store_id, sep, kind = (p.strip() for p in pair.partition(":"))
        if not sep or not store_id or kind not in ("rbd", "file"):
            raise StoreConfigError(f"[glance_store] enabled_backends: {pair!r} is not "
                                   "'<id>:rbd' or '<id>:file'")
        if store_id in backends:
            raise StoreConfigError(f"[glance_store] enabled_backends: store id "
                                   f"{store_id!r} given twice")
        if kind in backends.values():
            raise StoreConfigError(f"[glance_store] enabled_backends: more than one "
                                   f"{kind} store (strato has one store of each type)")
        backends[store_id] = kind
    default = default or next(iter(backends))
    if default not in backends:
        raise StoreConfigError(f"[glance_store] default_backend {default!r} is not one of "
                               f"enabled_backends ({', '.join(backends)})")
    return backends, default


class MultiStore(ImageStore):
    def __init__(self, stores: dict[str, ImageStore], default: str) -> None:
        self.by_id = stores
        self.default = stores[default]
        self.name = default

    def __getattr__(self, item: str) -> Any:
        """The default store's own attributes (``engine``, ``pool`` of the block store),
        for code that clones into it directly (instance snapshots)."""
        if item in ("by_id", "default"):
            raise AttributeError(item)
        return getattr(self.default, item)

    def owner_of(self, location: str) -> ImageStore:
        kind = "file" if location.startswith("file:") else "rbd"
        for store in self.by_id.values():
            if store.kind == kind:  # type: ignore[attr-defined]
                return store
        raise StoreConfigError(f"no store holds {location}")

    def writer(self, image_id: str, size_hint: int | None) -> StoreWriter:
        return self.default.writer(image_id, size_hint)

    def read(self, location: str, size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        return self.owner_of(location).read(location, size, chunk)

    def discard(self, image_id: str) -> None:
        """Only data of an image that holds none yet is discarded: in any store."""
        for store in self.by_id.values():
            store.discard(image_id)

    def delete(self, location: str) -> None:
        self.owner_of(location).delete(location)

    def holds(self, location: str) -> dict[str, str] | None:
        return self.owner_of(location).holds(location)

    def release(self, garbage: dict[str, str]) -> None:
        next(s for s in self.by_id.values() if s.kind == "rbd").release(  # type: ignore
            garbage)
