"""Shared helpers: deterministic data patterns, checksums, store consistency checks."""

from __future__ import annotations

import hashlib
import random

from strato.storage import Engine, Image
from strato.storage.local import LocalEngine

MiB = 1 << 20


def pattern(seed: int, length: int) -> bytes:
    """Deterministic, incompressible-enough bytes (never all zero)."""
    return random.Random(seed).randbytes(length)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_sha(img: Image) -> str:
    return sha(img.read(0, img.size()))


def snap_sha(engine: Engine, pool: str, name: str, snap: str) -> str:
    with engine.open(pool, name, snapshot=snap) as img:
        return image_sha(img)


def head_sha(engine: Engine, pool: str, name: str) -> str:
    with engine.open(pool, name) as img:
        return image_sha(img)


def apply(base: bytes, data: bytes, offset: int) -> bytes:
    """The expected content after writing ``data`` at ``offset`` into ``base``."""
    return base[:offset] + data + base[offset + len(data):]


def check_local_store(engine: Engine) -> None:
    """The local engine's on-disk invariants: every layer referenced and well linked."""
    if not isinstance(engine, LocalEngine):
        return
    assert not list(engine.journal.dir.glob("*.json")), "journal left behind"
    referenced: set[str] = set()
    for _pool, _name, meta in engine.all_images():
        assert len(meta["snaps"]) == len(meta["layers"]) - 1
        for i, layer in enumerate(meta["layers"]):
            referenced.add(layer["id"])
            path = engine.layer_path(layer)
            chain = engine.chain(path, layer["fmt"])
            if i > 0:
                assert chain[1][0] == engine.layer_path(meta["layers"][i - 1])
            elif meta["parent"]:
                found = engine.find_by_id(meta["parent"]["image_id"])
                assert found is not None, "parent of a clone is gone"
                pmeta = found[2]
                idx = next(k for k, s in enumerate(pmeta["snaps"])
                           if s["id"] == meta["parent"]["snap_id"])
                assert pmeta["snaps"][idx]["protected"]
                assert chain[1][0] == engine.layer_path(pmeta["layers"][idx])
            else:
                assert len(chain) == 1, "independent image with a backing file"
    on_disk = {p.name.split(".")[0] for p in engine.layers_dir.iterdir()}
    assert on_disk == referenced, f"orphans {on_disk - referenced} missing {referenced - on_disk}"
