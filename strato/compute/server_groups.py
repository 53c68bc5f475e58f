"""os-server-groups: groups of servers with a placement policy (affinity,
anti-affinity and their soft variants), which the scheduler applies to members named
at create (``os:scheduler_hints.group``). Members are the group's live servers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from strato.compute.models import Instance
from strato.compute.reads_models import ServerGroup, ServerGroupMember
from strato.compute.views import Version
from strato.context import RequestContext
from strato.db.base import utcnow
from strato.exceptions import BadRequest, Forbidden, NotFound
from strato.validation import query_int

P = "os_compute_api:"
HARD = ("affinity", "anti-affinity")
SOFT = ("soft-affinity", "soft-anti-affinity")


def members(session: Session, group_id: str) -> list[str]:
    return list(session.scalars(
        select(ServerGroupMember.instance_uuid).join(
            Instance, Instance.id == ServerGroupMember.instance_uuid)
        .where(ServerGroupMember.group_id == group_id, Instance.deleted.is_(False))
        .order_by(Instance.created_at, Instance.id)))


def view(session: Session, g: ServerGroup, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {"id": g.id, "name": g.name, "members": members(session, g.id)}
    if version >= (2, 64):
        body["policy"] = g.policy
        body["rules"] = dict(g.rules or {})
    else:
        body["policies"] = [g.policy]
        body["metadata"] = {}
    if version >= (2, 13):
        body["project_id"] = g.project_id
        body["user_id"] = g.user_id
    return body


def hinted_group(body: Any) -> str | None:
    """The group a server create names in ``os:scheduler_hints`` (None: none)."""
    from strato.compute.scheduler_hints import parse

    group = parse(body).get("group")
    return None if group is None else str(group)


def join(session: Session, ctx: RequestContext, group_id: str, instance_id: str,
         member_limit: int) -> ServerGroup:
    """Make the new server a member (in its create transaction), as Nova's API does
    before it schedules; 400 for a group the caller cannot see, 403 over the
    ``server_group_members`` quota."""
    g = session.get(ServerGroup, group_id)
    if g is None or not (ctx.is_admin or g.project_id == ctx.project_id):
        raise BadRequest(f"Invalid server group: group {group_id} could not be found.")
    if member_limit >= 0 and len(members(session, group_id)) + 1 > member_limit:
        raise Forbidden("Quota exceeded, too many servers in group")
    session.add(ServerGroupMember(group_id=group_id, instance_uuid=instance_id))
    return g


class ServerGroups:
    def __init__(self, api: Any, limits: Any) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy
        self.limits = limits

    def _parse(self, body: Any, version: Version) -> tuple[str, str, dict[str, Any]]:
        ref = body.get("server_group") if isinstance(body, dict) else None
        if not isinstance(ref, dict) or set(body) != {"server_group"}:
            raise BadRequest("Missing required element 'server_group' in request body.")
        allowed = {"name", "policy", "rules"} if version >= (2, 64) else {"name", "policies"}
        extra = set(ref) - allowed
        if extra:
            raise BadRequest(f"Additional properties are not allowed ({', '.join(extra)} "
                             "unexpected).")
        name = ref.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 255 or \
                name.strip() != name:
            raise BadRequest("Invalid input for field/attribute name.")
        choices = HARD + SOFT if version >= (2, 15) else HARD
        rules: dict[str, Any] = {}
        if version >= (2, 64):
            policy = ref.get("policy")
            if policy not in choices:
                raise BadRequest(f"Invalid input for field/attribute policy: one of "
                                 f"{', '.join(choices)} is required.")
            raw = ref.get("rules", {})
            if not isinstance(raw, dict) or set(raw) - {"max_server_per_host"}:
                raise BadRequest("Invalid input for field/attribute rules.")
            if raw and policy != "anti-affinity":
                raise BadRequest("Only anti-affinity policy supports rules.")
            if "max_server_per_host" in raw:
                value = raw["max_server_per_host"]
                if isinstance(value, str) and value.isdigit():
                    value = int(value)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise BadRequest("Invalid input for field/attribute "
                                     "max_server_per_host: an integer >= 1 is required.")
                rules["max_server_per_host"] = value
        else:
            policies = ref.get("policies")
            if not isinstance(policies, list) or len(policies) != 1 or \
                    policies[0] not in choices:
                raise BadRequest("Invalid input for field/attribute policies: exactly one "
                                 f"of {', '.join(choices)} is required.")
            policy = policies[0]
        return name, str(policy), rules

    def create(self, ctx: RequestContext, body: Any, version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-server-groups:create",
                            {"project_id": ctx.project_id, "user_id": ctx.user_id})
        name, policy, rules = self._parse(body, version)
        with self.db.session() as session:
            limit = self.limits.project_limits(session, ctx.project_id or "")["server_groups"]
            count = session.scalar(select(func.count()).select_from(ServerGroup).where(
                ServerGroup.project_id == ctx.project_id)) or 0
            if 0 <= limit <= count:
                raise Forbidden("Quota exceeded, too many server groups.")
            g = ServerGroup(name=name, project_id=ctx.project_id or "",
                            user_id=ctx.user_id or "", policy=policy, rules=rules,
                            created_at=utcnow())
            session.add(g)
            session.flush()
            return view(session, g, version)

    def _get(self, session: Session, ctx: RequestContext, group_id: str,
             rule: str) -> ServerGroup:
        g = session.get(ServerGroup, group_id)
        if g is None or not (ctx.is_admin or g.project_id == ctx.project_id):
            raise NotFound(f"Instance group {group_id} could not be found.")
        self.policy.enforce(ctx, P + rule, {"project_id": g.project_id})
        return g

    def show(self, ctx: RequestContext, group_id: str, version: Version) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            return view(session, self._get(session, ctx, group_id,
                                           "os-server-groups:show"), version)

    def delete(self, ctx: RequestContext, group_id: str) -> None:
        with self.db.session() as session:
            g = self._get(session, ctx, group_id, "os-server-groups:delete")
            for m in session.scalars(select(ServerGroupMember).where(
                    ServerGroupMember.group_id == g.id)):
                session.delete(m)
            session.delete(g)

    def list(self, ctx: RequestContext, q: dict[str, str],
             version: Version) -> list[dict[str, Any]]:
        self.policy.enforce(ctx, P + "os-server-groups:index",
                            {"project_id": ctx.project_id})
        everyone = q.get("all_projects", "").strip().lower() in ("1", "true", "yes", "t") \
            and self.policy.allowed(ctx, P + "os-server-groups:index:all_projects", {})
        offset = query_int("offset", q["offset"]) if "offset" in q else 0
        limit = query_int("limit", q["limit"]) if "limit" in q else None
        with self.db.session(readonly=True) as session:
            stmt = select(ServerGroup).order_by(ServerGroup.created_at, ServerGroup.id)
            if not everyone:
                stmt = stmt.where(ServerGroup.project_id == ctx.project_id)
            rows = list(session.scalars(stmt))[offset:]
            if limit is not None:
                rows = rows[:limit]
            return [view(session, g, version) for g in rows]
