"""Neutron's list semantics over rendered views: filters on any attribute (a key given
twice matches either value), ``fields``, ``sort_key``/``sort_dir``, ``limit``/``marker``
(``page_reverse``) with ``<resources>_links``.

Lists are filtered after rendering: one host's tables are small, and filtering the view
is what guarantees a filter means exactly what the client sees."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from strato.network.errors import BadRequest

CONTROL = {"fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse"}
TAG_FILTERS = {"tags", "tags-any", "not-tags", "not-tags-any"}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _match(view: dict, key: str, wanted: list[str]) -> bool:
    if key in TAG_FILTERS:
        tags = set(view.get("tags") or ())
        asked = {t for w in wanted for t in w.split(",") if t}
        if key == "tags":
            return asked <= tags
        if key == "tags-any":
            return bool(asked & tags)
        if key == "not-tags":
            return not asked <= tags
        return not asked & tags
    value = view[key]
    if key == "fixed_ips":  # ?fixed_ips=ip_address=1.2.3.4 / subnet_id=...
        for w in wanted:
            k, _, v = w.partition("=")
            if any(_text(ip.get(k)) == v for ip in value):
                return True
        return False
    if isinstance(value, list):
        return any(_text(v) in wanted for v in value)
    if isinstance(value, bool):
        return _text(value) in [w.lower() for w in wanted]
    return _text(value) in wanted


def listing(views: list[dict], params: list[tuple[str, str]], plural: str,
            url: str) -> dict:
    """``{plural: [...], plural_links: [...]}`` per the query ``params``."""
    filters: dict[str, list[str]] = {}
    fields: list[str] = []
    sort_keys: list[str] = []
    sort_dirs: list[str] = []
    limit: int | None = None
    marker: str | None = None
    reverse = False
    for key, value in params:
        if key == "fields":
            fields.extend(f for f in value.split(",") if f)
        elif key == "sort_key":
            sort_keys.append(value)
        elif key == "sort_dir":
            sort_dirs.append(value.lower())
        elif key == "limit":
            try:
                limit = int(value)
            except ValueError:
                raise BadRequest(f"Bad limit request: Limit must be an integer 0 or "
                                 f"greater and not '{value}'.") from None
            if limit < 0:
                raise BadRequest(f"Bad limit request: Limit must be an integer 0 or "
                                 f"greater and not '{value}'.")
            limit = limit or None
        elif key == "marker":
            marker = value
        elif key == "page_reverse":
            reverse = value.lower() == "true"
        else:
            filters.setdefault(key, []).append(value)
    sample = views[0] if views else {}
    out = [v for v in views if all(
        (k in v or k in TAG_FILTERS) and _match(v, k, w) for k, w in filters.items()
        if k in sample or k in TAG_FILTERS or not views)]
    # an unknown filter key: Neutron ignores attributes it does not know
    for d in sort_dirs:
        if d not in ("asc", "desc"):
            raise BadRequest(f"Invalid input for operation: sort_dir must be 'asc' or "
                             f"'desc', not '{d}'.")
    if sort_keys:
        if len(sort_dirs) not in (0, len(sort_keys)):
            raise BadRequest("The number of sort_keys and sort_dirs must be same")
        for k in sort_keys:
            if sample and k not in sample:
                raise BadRequest(f"{k} is invalid attribute for sort_key")
        dirs = sort_dirs or ["asc"] * len(sort_keys)
        for k, d in reversed(list(zip(sort_keys, dirs, strict=True))):
            out.sort(key=lambda v, k=k: (v.get(k) is not None, _text(v.get(k))),
                     reverse=d == "desc")
    elif limit is not None or marker is not None:
        out.sort(key=lambda v: v["id"])
    links: list[dict] = []
    if limit is not None or marker is not None:
        ordered = list(reversed(out)) if reverse else out
        start = 0
        if marker is not None:
            ids = [v["id"] for v in ordered]
            start = ids.index(marker) + 1 if marker in ids else len(ordered)
        page = ordered[start:start + limit] if limit is not None else ordered[start:]
        more = limit is not None and start + limit < len(ordered)
        base = [(k, v) for k, v in params if k not in ("marker", "page_reverse")]
        if page and more:
            links.append({"rel": "next" if not reverse else "previous",
                          "href": f"{url}?{urlencode([*base, ('marker', page[-1]['id'])])}"})
        if page and marker is not None:
            links.append({"rel": "previous" if not reverse else "next",
                          "href": f"{url}?" + urlencode(
                              [*base, ("marker", page[0]["id"]), ("page_reverse", "True")])})
        out = list(reversed(page)) if reverse else page
    if fields:
        out = [{k: v[k] for k in fields if k in v} for v in out]
    result: dict[str, Any] = {plural: out}
    if links:
        result[f"{plural}_links"] = links
    return result


def pick(view: dict, params: list[tuple[str, str]]) -> dict:
    """A show's ``fields=``."""
    fields = [f for k, v in params if k == "fields" for f in v.split(",") if f]
    return {k: view[k] for k in fields if k in view} if fields else view
