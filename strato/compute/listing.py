"""``GET /servers/detail`` fast enough for a thousand servers per page.

Rows are read as raw column text (no ORM objects, no JSON or datetime decoding) and
each server's rendered JSON is memoised under everything that goes into it: the raw
row, its volumes, the microversion and the admin flag.  An unchanged server is never
rendered twice; any change to it (every write bumps ``updated_at`` and changes the
row) misses the memo and renders afresh.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import JSON, Text, cast, select
from sqlalchemy.orm import Session

from strato.compute.models import BlockDevice, Instance
from strato.compute.views import Version, server_view
from strato.db.base import UTCDateTime

_SKIP = {"reservations"}
COLUMNS = [c for c in Instance.__table__.c if c.key not in _SKIP]
_JSON = {c.key for c in COLUMNS if isinstance(c.type, JSON)}
_TIME = {c.key for c in COLUMNS if isinstance(c.type, UTCDateTime)}
# the model's attribute names (``metadata_`` is the column ``metadata``)
_ATTR = {c.key: next(a.key for a in Instance.__mapper__.column_attrs
                     if a.columns[0] is c) for c in COLUMNS}
RAW = [cast(c, Text).label(c.key) if c.key in _JSON | _TIME else c for c in COLUMNS]

_MEMO: dict[tuple, bytes] = {}
_MEMO_MAX = 50_000
_LOCK = threading.Lock()


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)


def _instance(row: Any) -> SimpleNamespace:
    values = {}
    for key, value in row._mapping.items():
        if key in _JSON:
            value = None if value is None else json.loads(value)
        elif key in _TIME:
            value = _time(value)
        values[_ATTR[key]] = value
    return SimpleNamespace(**values)


def bdm_rows(session: Session, ids: list[str]) -> dict[str, tuple]:
    out: dict[str, list] = {}
    if ids:
        for r in session.execute(select(
                BlockDevice.instance_uuid, BlockDevice.volume_id,
                BlockDevice.destination_type, BlockDevice.delete_on_termination,
                BlockDevice.boot_index, BlockDevice.device_name).where(
                BlockDevice.instance_uuid.in_(ids)).order_by(BlockDevice.id)):
            out.setdefault(r[0], []).append(tuple(r[1:]))
    return {k: tuple(v) for k, v in out.items()}


def render(rows: list[Any], bdms: dict[str, tuple], base: str, version: Version,
           admin: bool, nets: dict[str, tuple[dict, list]] | None = None) -> list[bytes]:
    """Each row's server JSON (bytes), memoised; ``nets``: addresses and security groups
    from the network service (part of the memo key: they change without the row)."""
    out = []
    for row in rows:
        devs = bdms.get(row.id, ())
        net = (nets or {}).get(row.id)
        key = (tuple(row), devs, base, version, admin,
               json.dumps(net, sort_keys=True) if net else None)
        data = _MEMO.get(key)
        if data is None:
            blocks = [SimpleNamespace(volume_id=v, destination_type=d,
                                      delete_on_termination=dot, boot_index=b,
                                      device_name=n) for v, d, dot, b, n in devs]
            view = server_view(_instance(row), blocks, base, version,  # type: ignore[arg-type]
                               admin=admin, show=False, net=net)
            data = json.dumps(view, separators=(",", ":")).encode()
            with _LOCK:
                if len(_MEMO) >= _MEMO_MAX:
                    _MEMO.clear()
                _MEMO[key] = data
        out.append(data)
    return out
