"""Byte-range bookkeeping shared by the engines' ``diff_iterate``.

Engines find changed ranges in their own units (qcow2 clusters, RBD objects, librbd's
byte-exact extents, in whatever order and overlap their source gives); callers want
them one way: sorted, disjoint, neighbours with the same ``exists`` merged, and never
crossing a multiple of ``granularity``, so that reading one extent at once costs at
most ``granularity`` bytes of memory.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator

from . import errors
from .base import Extent

Span = tuple[int, int, bool]  # (start, end, exists): half-open byte range


def check_granularity(granularity: int) -> int:
    if not isinstance(granularity, int) or isinstance(granularity, bool) or granularity <= 0:
        raise errors.InvalidArgument(f"granularity must be a positive integer: {granularity!r}")
    return granularity


def normalize(spans: Iterable[Span]) -> list[Span]:
    """Sorted disjoint spans; where inputs overlap, ``exists`` is True if any says so
    (the caller then reads the bytes: a zero range reported as data costs a read, the
    reverse would lose data)."""
    points: dict[int, list[int]] = {}
    for start, end, exists in spans:
        if end <= start:
            continue
        points.setdefault(start, [0, 0])
        points.setdefault(end, [0, 0])
        points[start][exists] += 1
        points[end][exists] -= 1
    out: list[Span] = []
    depth = [0, 0]  # open spans with exists False / True
    prev: int | None = None
    for pos in sorted(points):
        if prev is not None and (depth[0] or depth[1]):
            exists = depth[1] > 0
            if out and out[-1][1] == prev and out[-1][2] == exists:
                out[-1] = (out[-1][0], pos, exists)
            else:
                out.append((prev, pos, exists))
        depth[0] += points[pos][0]
        depth[1] += points[pos][1]
        prev = pos
    return out


def paint(base: list[Span], under: Iterable[tuple[int, int]], exists: bool) -> list[Span]:
    """``base`` (sorted, disjoint) plus the parts of ``under`` it does not cover, those
    marked ``exists``."""
    starts = [s for s, _, _ in base]
    gaps: list[Span] = []
    for start, end in under:
        pos = start
        i = max(0, bisect_right(starts, pos) - 1)
        while i < len(base) and pos < end:
            b_start, b_end, _ = base[i]
            i += 1
            if b_end <= pos:
                continue
            if b_start >= end:
                break
            if b_start > pos:
                gaps.append((pos, b_start, exists))
            pos = max(pos, b_end)
        if pos < end:
            gaps.append((pos, end, exists))
    return normalize([*base, *gaps]) if gaps else base


def to_extents(spans: list[Span], granularity: int, size: int) -> Iterator[Extent]:
    """Normalized spans as Extents, clipped to ``size`` and cut at multiples of
    ``granularity``."""
    for start, end, exists in spans:
        end = min(end, size)
        pos = start
        while pos < end:
            stop = min(end, (pos // granularity + 1) * granularity)
            yield Extent(pos, stop - pos, exists)
            pos = stop


__all__ = ["Span", "check_granularity", "normalize", "paint", "to_extents"]
