"""Flavors: listing for everyone, create/delete/extra specs for admins; a private flavor
is seen and used only by admins and the projects on its access list (Nova's
os-flavor-access)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from strato.compute.models import Flavor, FlavorProject
from strato.compute.views import Version, flavor_view
from strato.context import RequestContext
from strato.db import Database
from strato.exceptions import BadRequest, Conflict, NotFound
from strato.policy import Enforcer
from strato.validation import _FALSE, _TRUE, INT32_MAX, show, string_map

P = "os_compute_api:"
SORT_KEYS = {"flavorid": Flavor.id, "id": Flavor.id, "name": Flavor.name,
             "memory_mb": Flavor.memory_mb, "vcpus": Flavor.vcpus, "root_gb": Flavor.root_gb,
             "created_at": Flavor.created_at}


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"Invalid input for field/attribute {what}.")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid input for field/attribute {what}: {show(value)} is not "
                         "an integer.") from None
    if not minimum <= out <= INT32_MAX:  # the Integer columns
        raise BadRequest(f"Invalid input for field/attribute {what}: an integer from "
                         f"{minimum} to {INT32_MAX} is required.")
    return out


def _bool(value: Any) -> bool:
    """A boolean or its string ("False", "f", "no", ...), as the schema let through."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


def _specs(value: Any) -> dict[str, str]:
    return string_map(value, "extra_specs", numbers=True)


class FlavorAPI:
    def __init__(self, db: Database, policy: Enforcer, base: str) -> None:
        self.db = db
        self.policy = policy
        self.base = base

    def get_row(self, session: Any, flavor_id: str,
                ctx: RequestContext | None = None) -> Flavor:
        """The flavor; with ``ctx``, only one that ``ctx`` may see."""
        flavor = session.get(Flavor, flavor_id)
        if flavor is None or (ctx is not None and not self.visible(session, ctx, flavor)):
            raise NotFound(f"Flavor {flavor_id} could not be found.")
        return flavor

    @staticmethod
    def visible(session: Any, ctx: RequestContext, flavor: Flavor) -> bool:
        """Public, or the caller is an admin or on the flavor's access list."""
        return flavor.is_public or ctx.is_admin or session.get(
            FlavorProject, (flavor.id, ctx.project_id)) is not None

    def list(self, ctx: RequestContext, params: dict[str, str], detail: bool,
             version: Version) -> dict[str, Any]:
        query = select(Flavor)
        public = (params.get("is_public") or "true").strip().lower()
        if not ctx.is_admin:  # the public ones and the private ones shared with it
            query = query.where(or_(Flavor.is_public.is_(True), Flavor.id.in_(
                select(FlavorProject.flavor_id).where(
                    FlavorProject.project_id == ctx.project_id))))
        elif public in _TRUE:
            query = query.where(Flavor.is_public.is_(True))
        elif public in _FALSE:
            query = query.where(Flavor.is_public.is_(False))
        # 'None' (the literal the client sends) and anything else: every flavor
        if "minRam" in params:
            query = query.where(Flavor.memory_mb >= _int(params["minRam"], "minRam"))
        if "minDisk" in params:
            query = query.where(Flavor.root_gb >= _int(params["minDisk"], "minDisk"))
        key = SORT_KEYS.get(params.get("sort_key", "flavorid"))
        if key is None:
            raise BadRequest(f"Invalid sort_key {params['sort_key']}.")
        query = query.order_by(key.desc() if params.get("sort_dir") == "desc" else key.asc())
        with self.db.session(readonly=True) as session:
            rows = list(session.scalars(query))
        if params.get("marker"):
            ids = [f.id for f in rows]
            if params["marker"] not in ids:
                raise BadRequest(f"marker [{params['marker']}] not found")
            rows = rows[ids.index(params["marker"]) + 1:]
        out: dict[str, Any] = {}
        if params.get("limit"):
            limit = _int(params["limit"], "limit")
            if len(rows) > limit > 0:
                out["flavors_links"] = [{"rel": "next", "href": (
                    f"{self.base}/compute/v2.1/flavors?limit={limit}"
                    f"&marker={rows[limit - 1].id}")}]
            rows = rows[:limit]
        if detail:
            out["flavors"] = [flavor_view(f, self.base, version) for f in rows]
        else:
            out["flavors"] = [{"id": f.id, "name": f.name,
                               "links": flavor_view(f, self.base, version)["links"],
                               **({"description": f.description} if version >= (2, 55)
                                  else {})} for f in rows]
        return out

    def show(self, ctx: RequestContext, flavor_id: str, version: Version) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            return flavor_view(self.get_row(session, flavor_id, ctx), self.base, version)

    def create(self, ctx: RequestContext, body: Any, version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-flavor-manage:create", {})
        ref = body.get("flavor") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Missing required element 'flavor' in request body.")
        name = ref.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise BadRequest("Invalid input for field/attribute name.")
        fid = ref.get("id")
        if fid is None or fid == "auto":
            fid = str(uuid.uuid4())
        if not isinstance(fid, str | int) or not str(fid).strip():
            raise BadRequest("Invalid input for field/attribute id.")
        desc = ref.get("description")
        if desc is not None and version < (2, 55):
            raise BadRequest("Invalid input for field/attribute flavor: 'description' "
                             "needs microversion 2.55.")
        swap = ref.get("swap", 0)
        flavor = Flavor(
            id=str(fid), name=name, memory_mb=_int(ref.get("ram"), "ram", 1),
            vcpus=_int(ref.get("vcpus"), "vcpus", 1), root_gb=_int(ref.get("disk"), "disk"),
            ephemeral_gb=_int(ref.get("OS-FLV-EXT-DATA:ephemeral", 0), "ephemeral"),
            swap=_int(swap if swap != "" else 0, "swap"),
            rxtx_factor=float(ref.get("rxtx_factor", 1.0)),
            is_public=_bool(ref.get("os-flavor-access:is_public", True)),
            description=desc, extra_specs={})
        try:
            with self.db.session() as session:
                if session.scalars(select(Flavor).where(Flavor.name == name)).first():
                    raise Conflict(f"Flavor with name {name} already exists.")
                if session.get(Flavor, flavor.id):
                    raise Conflict(f"Flavor with ID {flavor.id} already exists.")
                session.add(flavor)
        except IntegrityError:
            raise Conflict(f"Flavor {name} already exists.") from None
        return flavor_view(flavor, self.base, version)

    def update(self, ctx: RequestContext, flavor_id: str, body: Any,
               version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-flavor-manage:update", {})
        ref = body.get("flavor") if isinstance(body, dict) else None
        if version < (2, 55) or not isinstance(ref, dict) or set(ref) != {"description"}:
            raise BadRequest("Only a flavor's description can be updated (microversion "
                             "2.55).")
        with self.db.session() as session:
            flavor = self.get_row(session, flavor_id)
            flavor.description = ref["description"]
            return flavor_view(flavor, self.base, version)

    def delete(self, ctx: RequestContext, flavor_id: str) -> None:
        self.policy.enforce(ctx, P + "os-flavor-manage:delete", {})
        with self.db.session() as session:
            flavor = self.get_row(session, flavor_id)
            session.execute(delete(FlavorProject).where(FlavorProject.flavor_id == flavor.id))
            session.delete(flavor)

    # ------------------------------------------------------------ access lists
    def access_list(self, ctx: RequestContext, flavor_id: str) -> list[dict[str, str]]:
        self.policy.enforce(ctx, P + "os-flavor-access", {})
        with self.db.session(readonly=True) as session:
            flavor = self.get_row(session, flavor_id)
            if flavor.is_public:
                raise NotFound("Access list not available for public flavors.")
            return self._access(session, flavor.id)

    @staticmethod
    def _access(session: Any, flavor_id: str) -> list[dict[str, str]]:
        return [{"flavor_id": flavor_id, "tenant_id": p} for p in session.scalars(
            select(FlavorProject.project_id).where(FlavorProject.flavor_id == flavor_id)
            .order_by(FlavorProject.project_id))]

    def access_action(self, ctx: RequestContext, flavor_id: str, name: str,
                      args: Any) -> list[dict[str, str]]:
        """``addTenantAccess`` / ``removeTenantAccess`` ``{"tenant": <project id>}``."""
        rule = "add_tenant_access" if name == "addTenantAccess" else "remove_tenant_access"
        self.policy.enforce(ctx, f"{P}os-flavor-access:{rule}", {})
        tenant = args.get("tenant") if isinstance(args, dict) else None
        if not isinstance(tenant, str) or not tenant.strip() or len(tenant) > 255:
            raise BadRequest(f"Invalid input for field/attribute {name}: 'tenant' is "
                             "required.")
        with self.db.session() as session:
            flavor = self.get_row(session, flavor_id)
            if flavor.is_public:
                raise Conflict("Can not add access to a public flavor." if rule.startswith(
                    "add") else "Can not remove access from a public flavor.")
            row = session.get(FlavorProject, (flavor.id, tenant))
            if name == "addTenantAccess":
                if row is not None:
                    raise Conflict(f"Flavor access already exists for flavor {flavor_id} "
                                   f"and project {tenant} combination.")
                session.add(FlavorProject(flavor_id=flavor.id, project_id=tenant))
            else:
                if row is None:
                    raise NotFound(f"Flavor access not found for {flavor_id} / {tenant} "
                                   "combination.")
                session.delete(row)
            session.flush()
            return self._access(session, flavor.id)

    # ------------------------------------------------------------ extra specs
    def extra_specs(self, ctx: RequestContext, flavor_id: str) -> dict[str, str]:
        self.policy.enforce(ctx, P + "os-flavor-extra-specs:index")
        with self.db.session(readonly=True) as session:
            return dict(self.get_row(session, flavor_id).extra_specs or {})

    def extra_spec(self, ctx: RequestContext, flavor_id: str, key: str) -> dict[str, str]:
        self.policy.enforce(ctx, P + "os-flavor-extra-specs:show")
        specs = self.extra_specs(ctx, flavor_id)
        if key not in specs:
            raise NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")
        return {key: specs[key]}

    def set_extra_specs(self, ctx: RequestContext, flavor_id: str, body: Any,
                        key: str | None = None) -> dict[str, str]:
        """POST merges ``extra_specs``; PUT on a key sets that one key."""
        rule = "update" if key else "create"
        self.policy.enforce(ctx, f"{P}os-flavor-extra-specs:{rule}", {})
        new = _specs(body.get("extra_specs") if key is None and isinstance(body, dict)
                     else body)
        if key is not None and set(new) != {key}:
            raise BadRequest("The request body must hold exactly the key of the URL.")
        with self.db.session() as session:
            flavor = self.get_row(session, flavor_id)
            flavor.extra_specs = {**(flavor.extra_specs or {}), **new}
        return new

    def delete_extra_spec(self, ctx: RequestContext, flavor_id: str, key: str) -> None:
        self.policy.enforce(ctx, P + "os-flavor-extra-specs:delete", {})
        with self.db.session() as session:
            flavor = self.get_row(session, flavor_id)
            specs = dict(flavor.extra_specs or {})
            if key not in specs:
                raise NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")
            del specs[key]
            flavor.extra_specs = specs
