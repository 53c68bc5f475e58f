"""Server tags (Nova 2.26): simple strings on a server, listed, set one by one or all
at once, and used as list filters (``tags``, ``tags-any``, ``not-tags``,
``not-tags-any``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from strato.compute import states
from strato.compute.models import Instance
from strato.compute.views import Version
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound

if TYPE_CHECKING:
    from strato.compute.api import ComputeAPI

P = "os_compute_api:"

MAX_TAGS = 50  # Nova's per-server limit
MAX_LENGTH = 60
_WRITABLE = (states.ACTIVE, states.PAUSED, states.SUSPENDED, states.STOPPED)
FILTERS = ("tags", "tags-any", "not-tags", "not-tags-any")


def check_version(version: Version) -> None:
    """Before 2.26 the routes do not exist (Nova: 404)."""
    if version < (2, 26):
        raise NotFound("The resource could not be found.")


def check_tag(tag: Any) -> str:
    """Nova's tag: 1-60 characters, neither '/' nor ','."""
    if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_LENGTH or "/" in tag \
            or "," in tag:
        raise BadRequest(f"Tag '{tag}' is invalid. It must be a non empty string of at most "
                         f"{MAX_LENGTH} characters without characters '/' and ','.")
    return tag


def check_tags(tags: Any) -> list[str]:
    """A request's list of tags (``PUT /tags``, a create's ``tags``)."""
    if not isinstance(tags, list):
        raise BadRequest("Invalid input for field/attribute tags. Value should be a list.")
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"The number of tags exceeded the per-server limit {MAX_TAGS}")
    return list(dict.fromkeys(check_tag(t) for t in tags))


class ServerTags:
    def __init__(self, api: ComputeAPI) -> None:
        self.api = api

    def _writable(self, inst: Instance, action: str) -> None:
        if inst.vm_state not in _WRITABLE:
            raise Conflict(f"Cannot '{action}' instance {inst.id} while it is in vm_state "
                           f"{inst.vm_state}")

    def list(self, ctx: RequestContext, server_id: str) -> list[str]:
        with self.api.db.session(readonly=True) as session:
            inst = self.api.get_row(session, ctx, server_id, P + "os-server-tags:index")
            return list(inst.tags or [])

    def exists(self, ctx: RequestContext, server_id: str, tag: str) -> None:
        with self.api.db.session(readonly=True) as session:
            inst = self.api.get_row(session, ctx, server_id, P + "os-server-tags:show")
            if tag not in (inst.tags or []):
                raise NotFound(f"Tag {tag} could not be found.")

    def add(self, ctx: RequestContext, server_id: str, tag: str) -> bool:
        """True when the tag is new (201), False when the server had it (204)."""
        with self.api.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, P + "os-server-tags:update")
            self._writable(inst, "update tag")
            check_tag(tag)
            tags = list(inst.tags or [])
            if len(tags) >= MAX_TAGS:
                raise BadRequest(f"The number of tags exceeded the per-server limit "
                                 f"{MAX_TAGS}")
            if tag in tags:
                return False
            inst.tags = [*tags, tag]
            inst.updated_at = datetime.now(UTC)
            return True

    def replace(self, ctx: RequestContext, server_id: str, body: Any) -> list[str]:
        if not isinstance(body, dict) or "tags" not in body or set(body) != {"tags"}:
            raise BadRequest("Invalid input for field/attribute tags: the body is "
                             "{\"tags\": [...]}.")
        with self.api.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id,
                                    P + "os-server-tags:update_all")
            self._writable(inst, "update tags")
            inst.tags = check_tags(body["tags"])
            inst.updated_at = datetime.now(UTC)
            return list(inst.tags)

    def delete(self, ctx: RequestContext, server_id: str, tag: str) -> None:
        with self.api.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, P + "os-server-tags:delete")
            self._writable(inst, "delete tag")
            tags = list(inst.tags or [])
            if tag not in tags:
                raise NotFound(f"Tag {tag} could not be found.")
            inst.tags = [t for t in tags if t != tag]
            inst.updated_at = datetime.now(UTC)

    def delete_all(self, ctx: RequestContext, server_id: str) -> None:
        with self.api.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id,
                                    P + "os-server-tags:delete_all")
            self._writable(inst, "delete tags")
            inst.tags = []
            inst.updated_at = datetime.now(UTC)


def list_filter(params: dict[str, str]) -> dict[str, set[str]]:
    """The tag filters of a server listing (comma-separated tag lists)."""
    return {k: {t for t in params[k].split(",") if t} for k in FILTERS if params.get(k)}


def matches(raw_tags: Any, wanted: dict[str, set[str]]) -> bool:
    """Nova's semantics: ``tags`` all of, ``tags-any`` one of, ``not-tags`` not all of,
    ``not-tags-any`` none of."""
    tags: Iterable[str] = (json.loads(raw_tags) if isinstance(raw_tags, str)
                           else raw_tags) or []
    have = set(tags)
    if "tags" in wanted and not wanted["tags"] <= have:
        return False
    if "tags-any" in wanted and not wanted["tags-any"] & have:
        return False
    if "not-tags" in wanted and wanted["not-tags"] <= have:
        return False
    return not ("not-tags-any" in wanted and wanted["not-tags-any"] & have)
