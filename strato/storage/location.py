"""Image locations: ``rbd://<fsid>/<pool>/<image>/<snap>``, the same for every engine.

Glance stores this string and Nova/Cinder decide "can I clone this?" by parsing it, so
both engines build it here.  Components are percent-quoted so names containing ``/``
or ``%`` survive a round trip (the rbd store in Glance quotes the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from .errors import InvalidArgument

SCHEME = "rbd://"


@dataclass(frozen=True)
class Location:
    fsid: str
    pool: str
    image: str
    snapshot: str | None = None

    def __str__(self) -> str:
        parts = [self.fsid, self.pool, self.image]
        if self.snapshot is not None:
            parts.append(self.snapshot)
        return SCHEME + "/".join(quote(p, safe="") for p in parts)


def build(fsid: str, pool: str, image: str, snapshot: str | None = None) -> str:
    return str(Location(fsid, pool, image, snapshot))


def parse(url: str) -> Location:
    """Parse a location; InvalidArgument if it is not ``rbd://fsid/pool/image[/snap]``."""
    if not url.startswith(SCHEME):
        raise InvalidArgument(f"not an rbd location: {url!r}")
    pieces = url[len(SCHEME):].split("/")
    if len(pieces) not in (3, 4) or any(p == "" for p in pieces):
        raise InvalidArgument(f"malformed rbd location: {url!r}")
    fsid, pool, image, *snap = (unquote(p) for p in pieces)
    return Location(fsid, pool, image, snap[0] if snap else None)
