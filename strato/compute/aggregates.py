"""os-aggregates: host aggregates (admin). An ``availability_zone`` in an aggregate's
metadata is the zone of its hosts (os-availability-zone, os-services show it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato.compute.models import ComputeNode
from strato.compute.reads_models import Aggregate
from strato.compute.views import Version, iso_us
from strato.context import RequestContext
from strato.db.base import utcnow
from strato.exceptions import BadRequest, Conflict, NotFound

P = "os_compute_api:"
AZ = "availability_zone"


def _name(value: Any, field: str, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 255 or value.strip() != value:
        raise BadRequest(f"Invalid input for field/attribute {field}: a string of 1 to 255 "
                         "characters without leading or trailing whitespace is required.")
    return value


class Aggregates:
    def __init__(self, api: Any) -> None:
        self.db = api.db
        self.policy = api.policy

    def _view(self, a: Aggregate, version: Version, full: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": a.id, "name": a.name, "availability_zone": (a.metadata_ or {}).get(AZ),
            "created_at": iso_us(a.created_at), "updated_at": iso_us(a.updated_at),
            "deleted": False, "deleted_at": None}
        if full:
            body["hosts"] = list(a.hosts or [])
            body["metadata"] = dict(a.metadata_ or {})
        if version >= (2, 41):
            body["uuid"] = a.uuid
        return body

    def _get(self, session: Session, ctx: RequestContext, agg_id: str, rule: str
             ) -> Aggregate:
        self.policy.enforce(ctx, P + "os-aggregates:" + rule, {})
        try:
            number = int(agg_id)
        except ValueError:
            raise BadRequest(f"Invalid aggregate id {agg_id!r}: an integer is required.") \
                from None
        a = session.get(Aggregate, number) if 0 < number < 2**63 else None
        if a is None:
            raise NotFound(f"Aggregate {agg_id} could not be found.")
        return a

    def _unique(self, session: Session, name: str, own: int | None = None) -> None:
        for other in session.scalars(select(Aggregate).where(Aggregate.name == name)):
            if other.id != own:
                raise Conflict(f"Aggregate {name} already exists.")

    def _check_zone(self, session: Session, a: Aggregate, zone: str | None,
                    hosts: list[str]) -> None:
        """A host is in one zone: another aggregate of one of its hosts may not name
        another zone."""
        for other in session.scalars(select(Aggregate).where(Aggregate.id != a.id)):
            theirs = (other.metadata_ or {}).get(AZ)
            if zone and theirs and theirs != zone and set(other.hosts or []) & set(hosts):
                raise BadRequest(f"Cannot set availability zone {zone}: a host of the "
                                 f"aggregate is in aggregate {other.name} of zone {theirs}.")

    def create(self, ctx: RequestContext, body: Any, version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-aggregates:create", {})
        ref = body.get("aggregate") if isinstance(body, dict) else None
        if not isinstance(ref, dict) or set(ref) - {"name", AZ}:
            raise BadRequest("Missing required element 'aggregate' (name, "
                             "availability_zone) in request body.")
        name = _name(ref.get("name"), "name")
        zone = _name(ref.get(AZ), AZ, nullable=True)
        with self.db.session() as session:
            self._unique(session, str(name))
            a = Aggregate(name=name, metadata_={AZ: zone} if zone else {}, hosts=[],
                          created_at=utcnow())
            session.add(a)
            session.flush()
            return self._view(a, version, full=False)

    def list(self, ctx: RequestContext, version: Version) -> list[dict[str, Any]]:
        self.policy.enforce(ctx, P + "os-aggregates:index", {})
        with self.db.session(readonly=True) as session:
            return [self._view(a, version) for a in session.scalars(
                select(Aggregate).order_by(Aggregate.id))]

    def show(self, ctx: RequestContext, agg_id: str, version: Version) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            return self._view(self._get(session, ctx, agg_id, "show"), version)

    def update(self, ctx: RequestContext, agg_id: str, body: Any,
               version: Version) -> dict[str, Any]:
        ref = body.get("aggregate") if isinstance(body, dict) else None
        with self.db.session() as session:
            a = self._get(session, ctx, agg_id, "update")
            if not isinstance(ref, dict) or not ref or set(ref) - {"name", AZ}:
                raise BadRequest("Missing required element 'aggregate' (name, "
                                 "availability_zone) in request body.")
            if "name" in ref:
                a.name = str(_name(ref["name"], "name"))
                self._unique(session, a.name, a.id)
            if AZ in ref:
                zone = _name(ref[AZ], AZ, nullable=True)
                self._check_zone(session, a, zone, list(a.hosts or []))
                meta = dict(a.metadata_ or {})
                if zone:
                    meta[AZ] = zone
                else:
                    meta.pop(AZ, None)
                a.metadata_ = meta
            a.updated_at = utcnow()
            session.flush()
            return self._view(a, version)

    def delete(self, ctx: RequestContext, agg_id: str) -> None:
        with self.db.session() as session:
            a = self._get(session, ctx, agg_id, "delete")
            if a.hosts:
                raise BadRequest(f"Invalid aggregate action delete on aggregate {a.id}: "
                                 "the aggregate is not empty.")
            session.delete(a)

    def action(self, ctx: RequestContext, agg_id: str, body: Any,
               version: Version) -> dict[str, Any]:
        if not isinstance(body, dict) or len(body) != 1:
            raise BadRequest("Exactly one of add_host, remove_host or set_metadata is "
                             "required.")
        (name, arg), = body.items()
        if name not in ("add_host", "remove_host", "set_metadata"):
            raise BadRequest(f"Invalid aggregate action {name}.")
        with self.db.session() as session:
            a = self._get(session, ctx, agg_id, name)
            if name == "set_metadata":
                meta = arg.get("metadata") if isinstance(arg, dict) else None
                if not isinstance(meta, dict) or set(arg) != {"metadata"}:
                    raise BadRequest("Invalid input for field/attribute metadata.")
                new = dict(a.metadata_ or {})
                for key, value in meta.items():
                    if not 1 <= len(key) <= 255 or (value is not None and (
                            not isinstance(value, str) or len(value) > 255)):
                        raise BadRequest(f"Invalid metadata item {key!r}: keys are 1 to "
                                         "255 characters, values strings of at most 255 "
                                         "or null.")
                    if value is None:
                        new.pop(key, None)
                    else:
                        new[key] = value
                if AZ in meta:
                    self._check_zone(session, a, new.get(AZ), list(a.hosts or []))
                a.metadata_ = new
            else:
                host = arg.get("host") if isinstance(arg, dict) else None
                if not isinstance(host, str) or set(arg) != {"host"} or \
                        not 1 <= len(host) <= 255:
                    raise BadRequest("Invalid input for field/attribute host.")
                hosts = list(a.hosts or [])
                if name == "add_host":
                    if session.get(ComputeNode, host) is None:
                        raise NotFound(f"Compute host {host} could not be found.")
                    if host in hosts:
                        raise Conflict(f"Aggregate {a.id} already has host {host}.")
                    self._check_zone(session, a, (a.metadata_ or {}).get(AZ), [host])
                    hosts.append(host)
                else:
                    if host not in hosts:
                        raise NotFound(f"Cannot remove host {host} in aggregate {a.id}: "
                                       "not found.")
                    hosts.remove(host)
                a.hosts = hosts
            a.updated_at = utcnow()
            session.flush()
            return self._view(a, version)
