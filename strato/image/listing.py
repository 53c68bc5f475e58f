"""``GET /v2/images``: filters, sort keys, limit/marker pages and the ``next`` link."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select

from strato.context import RequestContext
from strato.exceptions import BadRequest
from strato.image.api import VISIBILITIES, ImageAPI
from strato.image.models import Image, ImageMember, ImageProperty, ImageTag
from strato.validation import query_int

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id",
             "created_at", "updated_at", "visibility", "owner", "min_disk", "min_ram",
             "virtual_size")
_COLUMN_FILTERS = ("name", "status", "owner", "disk_format", "container_format", "id")
_BOOL_FILTERS = ("protected", "os_hidden")
_OPS = {"eq": "__eq__", "neq": "__ne__", "gt": "__gt__", "gte": "__ge__", "lt": "__lt__",
        "lte": "__le__"}
_PAGING = {"limit", "marker", "sort", "sort_key", "sort_dir", "visibility", "member_status",
           "tag", "size_min", "size_max", "created_at", "updated_at"}


def _flag(key: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise BadRequest(f"Invalid value {text!r} for {key}: true or false.")
    return text.lower() == "true"


def _in_or_eq(column: Any, text: str) -> Any:
    if text.startswith("in:"):
        values = [v.strip('"') for v in text[3:].split(",")]
        return column.in_(values)
    return column == text


def _time(key: str, text: str) -> Any:
    op, _, value = text.partition(":")
    if op not in _OPS or not value:
        raise BadRequest(f"Invalid {key} filter {text!r}: use OP:TIME with OP one of "
                         f"{', '.join(_OPS)}.")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid time {value!r} in {key} filter.") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return getattr(getattr(Image, key), _OPS[op])(when)


def _sorting(params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    keys = [v for k, v in params if k == "sort_key"]
    dirs = [v for k, v in params if k == "sort_dir"]
    combined = [v for k, v in params if k == "sort"]
    if combined and (keys or dirs):
        raise BadRequest("The 'sort' parameter cannot be combined with sort_key/sort_dir.")
    pairs: list[tuple[str, str]] = []
    if combined:
        for item in ",".join(combined).split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key, direction or "desc"))
    else:
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise BadRequest("Give one sort_dir, or one for each sort_key.")
        for i, key in enumerate(keys):
            pairs.append((key, dirs[i] if len(dirs) > 1 else (dirs[0] if dirs else "desc")))
    for key, direction in pairs:
        if key not in SORT_KEYS:
            raise BadRequest(f"Invalid sort key: {key}. It must be one of "
                             f"{', '.join(SORT_KEYS)}.")
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort direction: {direction}. asc or desc.")
    if not any(k == "created_at" for k, _ in pairs):
        pairs.append(("created_at", "desc"))
    pairs.append(("id", pairs[0][1] if len(pairs) == 1 else "desc"))
    return pairs


def _int(key: str, text: str) -> int:
    return query_int(key, text)


def _after(image: Image, marker: Image, order: list[tuple[str, str]]) -> bool:
    """Does ``image`` sort after ``marker``?  (None sorts first, as the smallest.)"""
    for key, direction in order:
        a, b = getattr(image, key), getattr(marker, key)
        if a == b:
            continue
        if a is None or b is None:
            bigger = b is None
        else:
            bigger = a > b
        return bigger if direction == "asc" else not bigger
    return False


def list_images(api: ImageAPI, ctx: RequestContext,
                params: Sequence[tuple[str, str]]) -> dict[str, Any]:
    api.policy.enforce(ctx, "get_images", {"project_id": ctx.project_id})
    single = dict(params)
    limit = min(_int("limit", single["limit"]) if "limit" in single
                else api.conf.image.limit_param_default, api.conf.image.api_limit_max)
    order = _sorting(params)
    query = select(Image).where(Image.status != "pending_delete")

    visibility = single.get("visibility")
    member_status = single.get("member_status", "accepted")
    if member_status not in ("pending", "accepted", "rejected", "all"):
        raise BadRequest(f"Invalid member_status {member_status!r}.")
    membership = select(ImageMember.image_id).where(ImageMember.member == ctx.project_id)
    if member_status != "all":
        membership = membership.where(ImageMember.status == member_status)
    mine = Image.owner == ctx.project_id
    shared_with_me = (Image.visibility == "shared") & Image.id.in_(membership)
    if visibility is None:
        if not ctx.is_admin:
            query = query.where(mine | (Image.visibility == "public") | shared_with_me)
    elif visibility == "all":
        if not ctx.is_admin:
            query = query.where(mine | Image.visibility.in_(("public", "community"))
                                | shared_with_me)
    elif visibility in VISIBILITIES:
        query = query.where(Image.visibility == visibility)
        if not ctx.is_admin:
            if visibility == "private":
                query = query.where(mine)
            elif visibility == "shared":
                query = query.where(mine | shared_with_me)
    else:
        raise BadRequest(f"Invalid visibility value: {visibility}")

    for key, text in params:
        if key in _COLUMN_FILTERS:
            query = query.where(_in_or_eq(getattr(Image, key), text))
        elif key in _BOOL_FILTERS:
            query = query.where(getattr(Image, key) == _flag(key, text))
        elif key == "tag":
            query = query.where(Image.id.in_(
                select(ImageTag.image_id).where(ImageTag.value == text)))
        elif key == "size_min":
            query = query.where(Image.size >= _int(key, text))
        elif key == "size_max":
            query = query.where(Image.size <= _int(key, text))
        elif key in ("created_at", "updated_at"):
            query = query.where(_time(key, text))
        elif key not in _PAGING:
            prop = select(ImageProperty.image_id).where(
                ImageProperty.name == key, _in_or_eq(ImageProperty.value, text))
            query = query.where(Image.id.in_(prop))
    if "os_hidden" not in single:
        query = query.where(Image.os_hidden.is_(False))
    for key, direction in order:
        column = getattr(Image, key)
        query = query.order_by(column.asc() if direction == "asc" else column.desc())

    with api.db.session(readonly=True) as session:
        images = list(session.scalars(query))
        if "marker" in single:
            marker = session.scalars(select(Image).where(
                Image.id == single["marker"], api.visible_clause(ctx))).first()
            if marker is None:
                raise BadRequest(f"marker {single['marker']} could not be found.")
            # Keyset semantics: what sorts after the marker, whether or not the marker
            # itself passes the filters.
            images = [i for i in images if _after(i, marker, order)]
        page = images[:limit]
        body: dict[str, Any] = {"images": [api.view(i) for i in page],
                                "schema": "/v2/schemas/images", "first": "/v2/images"}
        if len(images) > limit and page:
            rest = [(k, v) for k, v in params if k != "marker"]
            rest.append(("marker", page[-1].id))
            if "limit" not in single:
                rest.append(("limit", str(limit)))
            body["next"] = "/v2/images?" + urlencode(rest)
        return body
