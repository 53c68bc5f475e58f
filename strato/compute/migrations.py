"""Nova's migration records (``os-migrations``): one row per move of a server.

A resize or cold migration (``resize`` / ``migration``; source and destination are the
same host only for a same-host resize) follows Nova's statuses: ``pre-migrating``
(accepted, the destination claimed), ``migrating``, ``post-migrating``, ``finished``
(VERIFY_RESIZE), then ``confirming`` → ``confirmed`` or ``reverting`` → ``reverted``, or
``error``.  An evacuation: ``accepted`` → ``pre-migrating`` → ``done`` (``completed``
once the returning source has destroyed its leftover guest), or ``failed``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from strato.compute.api import ComputeAPI, P
from strato.compute.migration_models import Migration
from strato.compute.views import Version, iso
from strato.context import RequestContext
from strato.db.base import utcnow
from strato.exceptions import BadRequest

RULE = P + "os-migrations:index"
SERVER_RULE = P + "servers:migrations:index"


def record(session: Session, ctx: RequestContext, instance_id: str, host: str | None,
           old_flavor: str, new_flavor: str, *, dest: str | None = None,
           migration_type: str = "resize", status: str = "pre-migrating") -> int:
    """A new migration record (``host`` the source, ``dest`` the destination: the
    source when None, a same-host resize); its id.  ``migration_type`` is Nova's:
    ``resize``, ``migration`` (cold), ``live-migration``, ``evacuation``.  Recorded in
    the transaction that chose ``dest``: the scheduler counts an unfinished
    migration's flavor on its destination (the claim)."""
    dest = host if dest is None else dest
    row = Migration(instance_uuid=instance_id, source_compute=host, dest_compute=dest,
                    source_node=host, dest_node=dest, dest_host=None,
                    old_flavor_id=old_flavor, new_flavor_id=new_flavor,
                    migration_type=migration_type,
                    status=status, project_id=ctx.project_id, user_id=ctx.user_id)
    session.add(row)
    session.flush()
    return int(row.id)


def set_status(session: Session, migration_id: int | None, status: str) -> None:
    if migration_id is not None:
        session.execute(update(Migration).where(Migration.id == migration_id).values(
            status=status, updated_at=utcnow()))


def view(m: Migration, version: Version) -> dict[str, Any]:
    """Nova's shape per microversion; the flavors' integer ids do not exist here (null),
    and a resize has no ``links`` (only in-progress live migrations have them)."""
    body: dict[str, Any] = {
        "id": m.id, "status": m.status, "instance_uuid": m.instance_uuid,
        "source_node": m.source_node, "source_compute": m.source_compute,
        "dest_node": m.dest_node, "dest_compute": m.dest_compute, "dest_host": m.dest_host,
        "old_instance_type_id": None, "new_instance_type_id": None,
        "created_at": iso(m.created_at), "updated_at": iso(m.updated_at)}
    if version >= (2, 23):
        body["migration_type"] = m.migration_type
    if version >= (2, 59):
        body["uuid"] = m.uuid
    if version >= (2, 80):
        body["user_id"], body["project_id"] = m.user_id, m.project_id
    return body


_FILTERS = {"status": Migration.status, "instance_uuid": Migration.instance_uuid,
            "source_compute": Migration.source_compute, "host": Migration.source_compute,
            "migration_type": Migration.migration_type}


def list_migrations(api: ComputeAPI, ctx: RequestContext, params: dict[str, str],
                    version: Version) -> dict[str, Any]:
    """``GET /os-migrations`` (admin): newest first, Nova's filters; 2.59 paging."""
    api.policy.enforce(ctx, RULE, {"project_id": ctx.project_id})
    q = select(Migration).where(Migration.deleted.is_(False))
    for key, col in _FILTERS.items():
        if params.get(key):
            q = q.where(col == params[key])
    if version >= (2, 80):
        for key, col in (("user_id", Migration.user_id),
                         ("project_id", Migration.project_id)):
            if params.get(key):
                q = q.where(col == params[key])
    q = q.order_by(Migration.created_at.desc(), Migration.id.desc())
    with api.db.session(readonly=True) as session:
        rows = list(session.scalars(q))
        if version >= (2, 59):
            marker = params.get("marker")
            if marker:
                ids = [r.uuid for r in rows]
                if marker not in ids:
                    raise BadRequest(f"Marker {marker} could not be found.")
                rows = rows[ids.index(marker) + 1:]
            if params.get("limit"):
                try:
                    limit = int(params["limit"])
                except ValueError:
                    raise BadRequest("Invalid input for query parameters limit.") from None
                if limit < 0:
                    raise BadRequest("Invalid input for query parameters limit.")
                rows = rows[:limit]
        return {"migrations": [view(r, version) for r in rows]}


def list_server_migrations(api: ComputeAPI, ctx: RequestContext,
                           server_id: str) -> dict[str, Any]:
    """``GET /servers/{id}/migrations``: the server's live migrations in progress; a
    single host has none (resizes are listed by ``os-migrations``)."""
    with api.db.session(readonly=True) as session:
        api.get_row(session, ctx, server_id, SERVER_RULE)
    return {"migrations": []}
