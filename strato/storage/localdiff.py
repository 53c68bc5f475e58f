"""Change tracking and mapped reads for the local engine's layer chains.

``snaps[i]`` froze ``layers[i]`` and nothing ever writes into a frozen layer what would
change its view (merges copy only into clusters the upper layer does not hold), so the
bytes in which a later view differs from snapshot A are exactly the clusters allocated
in the layers above A's, up to the view's layer.  ``qemu-img map`` of those layers
alone (the lowest one's backing cut off) lists them, and its cost follows their
allocation metadata (L2 tables, and SEEK_DATA for raw files), never the image size.

Maps are taken with ``-U`` (force-share): frozen layers never change under a view, and
the head's top layer may be a running QEMU's.  A map of such a head is a moment's view
that can miss writes QEMU has not flushed into its qcow2 metadata yet; a consistent
diff is taken between snapshot views, which is what backups do.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import errors, qemuimg
from .extents import Span, normalize, paint

Chain = list[tuple[Path, str]]


@dataclass(frozen=True)
class MapEntry:
    """One ``qemu-img map --output=json`` entry, clipped to the view's size."""

    start: int
    end: int
    depth: int
    present: bool  # allocated in some layer of the mapped chain
    zero: bool
    data: bool
    offset: int | None  # host offset in the layer at ``depth`` (None: compressed, zero)


def chain_map(chain: Chain, size: int) -> list[MapEntry]:
    """Map ``chain`` (top first; the last one's backing is cut off) up to ``size``."""
    if size == 0:
        return []
    out = json.loads(qemuimg.run("map", "-U", "--output=json",
                                 qemuimg.json_opts(qemuimg.image_opts(chain))))
    entries: list[MapEntry] = []
    for e in out:
        start = int(e["start"])
        if start >= size:
            break
        end = min(start + int(e["length"]), size)
        offset = int(e["offset"]) if "offset" in e and not e.get("compressed") else None
        entries.append(MapEntry(start, end, int(e["depth"]), bool(e.get("present", True)),
                                bool(e.get("zero")), bool(e.get("data")), offset))
    return entries


def allocated_spans(chain: Chain, size: int) -> list[Span]:
    """Every range of the chain's view that holds data (zero clusters and holes do not)."""
    return normalize((e.start, e.end, True) for e in chain_map(chain, size) if e.data)


def changed_spans(upper: Chain, size: int, base: Chain | None = None) -> list[Span]:
    """The ranges where the view of ``upper`` + what lies under it differs, or may
    differ, from the view below: what the layers in ``upper`` (the view's own layers
    above snapshot A's, top first) allocate; ``exists`` False where they read as zeros.

    A raw layer in ``upper`` has no backing and no allocation map: the view is that
    layer and what lies above it, so its data extents (SEEK_DATA) count as changed, and
    so do its holes where A (``base``, A's whole chain) holds data.
    """
    raw = next((i for i, (_, fmt) in enumerate(upper) if fmt == "raw"), None)
    if raw is not None:
        upper = upper[:raw + 1]
    spans: list[Span] = []
    for e in chain_map(upper, size):
        if not e.present or (e.depth == raw and not e.data):
            continue
        spans.append((e.start, e.end, e.data))
    spans = normalize(spans)
    if raw is not None:
        if base is None:
            raise errors.InvalidArgument("a raw layer above the snapshot needs its chain")
        held = [(s, e) for s, e, _ in allocated_spans(base, size)]
        spans = paint(spans, held, False)
    return spans


class ViewMap:
    """A frozen view's map, with its layers' files open: reads are ``pread`` calls.

    The descriptors keep each layer's data even if a merge drops the file later, and a
    merge never rewrites the clusters the map points at, so the map stays right for
    as long as the snapshot exists (the caller re-checks that on each read).
    """

    def __init__(self, key: Any, chain: Chain, size: int) -> None:
        self.key = key
        self.size = size
        self.fds: list[int] = []
        self.extents: list[MapEntry] | None = chain_map(chain, size)
        if any(e.data and e.offset is None for e in self.extents):
            self.extents = None  # compressed clusters: the caller reads through qemu-img
            return
        self.starts = [e.start for e in self.extents]
        try:
            for path, _ in chain:
                self.fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except BaseException:
            self.close()
            raise

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (inside the view): one ``pread`` per extent
        into one zero-filled buffer (holes and zero clusters are left as they are)."""
        assert self.extents is not None
        end = offset + length
        i = max(0, bisect_right(self.starts, offset) - 1)
        first = self.extents[i] if i < len(self.extents) else None
        if first is not None and first.start <= offset and end <= first.end and first.data \
                and first.offset is not None:  # one extent: no buffer of our own
            data = os.pread(self.fds[first.depth], length, first.offset + offset - first.start)
            return data if len(data) == length else data + bytes(length - len(data))
        out = bytearray(length)
        view = memoryview(out)
        for e in self.extents[i:]:
            if e.start >= end:
                break
            lo, hi = max(e.start, offset), min(e.end, end)
            if hi <= lo or not e.data or e.offset is None:
                continue
            # past the end of a short sparse file the buffer keeps its zeroes
            os.preadv(self.fds[e.depth], [view[lo - offset:hi - offset]],
                      e.offset + lo - e.start)
        return bytes(out)

    def close(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


__all__ = ["MapEntry", "ViewMap", "allocated_spans", "chain_map", "changed_spans"]
