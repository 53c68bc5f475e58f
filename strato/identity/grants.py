"""Identity beyond users and projects: groups, role grants on every target (project,
domain, system, OS-INHERIT), role assignments, project tags, and the catalog's
API-registered regions, services and endpoints.

A mixin of :class:`strato.identity.api.IdentityAPI`, split out to keep each file
readable; it uses that class's database, policy enforcer, lookups and views.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound
from strato.identity import catalog as catalog_mod
from strato.identity.models import (
    Assignment,
    CatalogEndpoint,
    CatalogService,
    Domain,
    Grant,
    Group,
    GroupMember,
    ImpliedRole,
    Project,
    Region,
    Role,
    User,
)

if TYPE_CHECKING:
    from strato.db import Database
    from strato.policy import Enforcer

ACTORS = {"users": "user", "groups": "group"}
TARGETS = {"projects": "project", "domains": "domain", "system": "system"}
INTERFACES = ("public", "internal", "admin")
TAG_MAX = 80
TAG_LEN = 255


def _flag(text: Any) -> bool:
    return str(text).lower() in ("1", "true", "yes", "on")


def _check_tag(tag: Any) -> str:
    """Keystone's tag rules: a non-empty string of at most 255 characters without '/'
    or ','."""
    if not isinstance(tag, str) or not tag.strip() or len(tag) > TAG_LEN or re.search(
            "[/,]", tag):
        raise BadRequest(f"Invalid project tag: {tag!r}.")
    return tag


class GrantsMixin:
    db: Database
    policy: Enforcer
    base_url: str
    region: str

    # provided by IdentityAPI
    def _get(self, session: Session, model: type, id_: str, what: str) -> Any: ...  # noqa: D102
    def role_view(self, r: Role) -> dict[str, Any]: ...  # noqa: D102
    def project_view(self, p: Project) -> dict[str, Any]: ...  # noqa: D102
    def user_view(self, u: User) -> dict[str, Any]: ...  # noqa: D102
    def domain_view(self, d: Domain) -> dict[str, Any]: ...  # noqa: D102
    def _implied(self, session: Session, direct: set[str]) -> list[Role]: ...  # noqa: D102
    def _effective_roles(self, session: Session, user_id: str,  # noqa: D102
                         project_id: str) -> list[Role]: ...
    def _domain_roles(self, session: Session, user_id: str,  # noqa: D102
                      domain_id: str) -> list[Role]: ...
    def _system_roles(self, session: Session, user_id: str) -> list[Role]: ...  # noqa: D102

    def _url(self, path: str) -> str:
        return f"{self.base_url}/identity/v3/{path}"

    # ---------------------------------------------------------------- groups
    def group_view(self, g: Group) -> dict[str, Any]:
        return {"id": g.id, "name": g.name, "domain_id": g.domain_id,
                "description": g.description, "links": {"self": self._url(f"groups/{g.id}")}}

    def list_groups(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_groups", {})
        with self.db.session(readonly=True) as session:
            q = select(Group).order_by(Group.name)
            if "name" in filters:
                q = q.where(Group.name == filters["name"])
            if "domain_id" in filters:
                q = q.where(Group.domain_id == filters["domain_id"])
            return [self.group_view(g) for g in session.scalars(q)]

    def get_group(self, ctx: RequestContext, group_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_group", {})
        with self.db.session(readonly=True) as session:
            return self.group_view(self._get(session, Group, group_id, "group"))

    def create_group(self, ctx: RequestContext, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:create_group", {})
        ref = body["group"]
        if not isinstance(ref.get("name"), str) or not ref["name"].strip():
            raise BadRequest("Invalid input for field 'name': a non-empty string is required.")
        domain_id = ref.get("domain_id") or "default"
        with self.db.session() as session:
            self._get(session, Domain, domain_id, "domain")
            if session.scalars(select(Group.id).where(
                    Group.domain_id == domain_id, Group.name == ref["name"])).first():
                raise Conflict(f"Conflict occurred attempting to store group - Duplicate "
                               f"entry found with name {ref['name']}.")
            group = Group(name=ref["name"], domain_id=domain_id,
                          description=ref.get("description") or "")
            session.add(group)
            session.flush()
            return self.group_view(group)

    def update_group(self, ctx: RequestContext, group_id: str, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:update_group", {})
        ref = body["group"]
        with self.db.session() as session:
            group = self._get(session, Group, group_id, "group")
            if "domain_id" in ref and ref["domain_id"] != group.domain_id:
                raise BadRequest("A group cannot move to another domain.")
            if "name" in ref:
                if not isinstance(ref["name"], str) or not ref["name"].strip():
                    raise BadRequest("Invalid input for field 'name'.")
                group.name = ref["name"]
            if "description" in ref:
                group.description = ref["description"] or ""
            return self.group_view(group)

    def delete_group(self, ctx: RequestContext, group_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_group", {})
        with self.db.session() as session:
            group = self._get(session, Group, group_id, "group")
            session.execute(delete(Grant).where(Grant.actor_type == "group",
                                                Grant.actor_id == group_id))
            session.execute(delete(GroupMember).where(GroupMember.group_id == group_id))
            session.delete(group)

    def group_users(self, ctx: RequestContext, group_id: str) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_users_in_group", {})
        with self.db.session(readonly=True) as session:
            self._get(session, Group, group_id, "group")
            users = session.scalars(select(User).join(
                GroupMember, GroupMember.user_id == User.id).where(
                GroupMember.group_id == group_id).order_by(User.name))
            return [self.user_view(u) for u in users]

    def user_groups(self, ctx: RequestContext, user_id: str) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_groups_for_user", {"target.user.id": user_id})
        with self.db.session(readonly=True) as session:
            self._get(session, User, user_id, "user")
            groups = session.scalars(select(Group).join(
                GroupMember, GroupMember.group_id == Group.id).where(
                GroupMember.user_id == user_id).order_by(Group.name))
            return [self.group_view(g) for g in groups]

    def membership(self, ctx: RequestContext, op: str, group_id: str, user_id: str) -> None:
        """``op``: add, check or remove the user in the group."""
        rule = {"add": "add_user_to_group", "check": "check_user_in_group",
                "remove": "remove_user_from_group"}[op]
        self.policy.enforce(ctx, f"identity:{rule}", {})
        with self.db.session(readonly=op == "check") as session:
            self._get(session, Group, group_id, "group")
            self._get(session, User, user_id, "user")
            member = session.get(GroupMember, (group_id, user_id))
            if op == "add":
                if member is None:
                    session.add(GroupMember(group_id=group_id, user_id=user_id))
            elif member is None:
                raise NotFound(f"Could not find user {user_id} in group {group_id}.")
            elif op == "remove":
                session.delete(member)

    # ---------------------------------------------------------------- grants
    def _check_grant_parts(self, session: Session, actor_type: str, actor_id: str,
                           target_type: str, target_id: str, role_id: str | None) -> None:
        self._get(session, User if actor_type == "user" else Group, actor_id, actor_type)
        if target_type == "project":
            self._get(session, Project, target_id, "project")
        elif target_type == "domain":
            self._get(session, Domain, target_id, "domain")
        if role_id is not None:
            self._get(session, Role, role_id, "role")

    def grant(self, ctx: RequestContext, op: str, actor_type: str, actor_id: str,
              target_type: str, target_id: str, role_id: str,
              inherited: bool = False) -> None:
        """``op``: create, check or revoke one grant. A user's direct role on a project
        lives in ``role_assignments`` (what every other service's token needs); every
        other grant in ``grants``."""
        rule = {"create": "create_grant", "check": "check_grant",
                "revoke": "revoke_grant"}[op]
        if target_type == "system":
            rule = {"create": f"create_system_grant_for_{actor_type}",
                    "check": f"check_system_grant_for_{actor_type}",
                    "revoke": f"revoke_system_grant_for_{actor_type}"}[op]
        self.policy.enforce(ctx, f"identity:{rule}", {f"target.{target_type}.id": target_id})
        direct = actor_type == "user" and target_type == "project" and not inherited
        with self.db.session(readonly=op == "check") as session:
            self._check_grant_parts(session, actor_type, actor_id, target_type, target_id,
                                    role_id)
            key: Any
            if direct:
                model: type = Assignment
                key = (actor_id, target_id, role_id)
            else:
                model = Grant
                key = (actor_type, actor_id, target_type, target_id, role_id, inherited)
            row = session.get(model, key)
            if op == "create":
                if row is None:
                    session.add(Assignment(user_id=actor_id, project_id=target_id,
                                           role_id=role_id) if direct else
                                Grant(actor_type=actor_type, actor_id=actor_id,
                                      target_type=target_type, target_id=target_id,
                                      role_id=role_id, inherited=inherited))
            elif row is None:
                raise NotFound(f"Could not find role assignment of role {role_id} to "
                               f"{actor_type} {actor_id} on {target_type} {target_id}.")
            elif op == "revoke":
                session.delete(row)

    def list_grant_roles(self, ctx: RequestContext, actor_type: str, actor_id: str,
                         target_type: str, target_id: str,
                         inherited: bool = False) -> list[dict]:
        rule = "list_grants" if target_type != "system" else \
            f"list_system_grants_for_{actor_type}"
        self.policy.enforce(ctx, f"identity:{rule}", {f"target.{target_type}.id": target_id})
        with self.db.session(readonly=True) as session:
            self._check_grant_parts(session, actor_type, actor_id, target_type, target_id,
                                    None)
            ids = set(session.scalars(select(Grant.role_id).where(
                Grant.actor_type == actor_type, Grant.actor_id == actor_id,
                Grant.target_type == target_type, Grant.target_id == target_id,
                Grant.inherited == inherited)))
            if actor_type == "user" and target_type == "project" and not inherited:
                ids |= set(session.scalars(select(Assignment.role_id).where(
                    Assignment.user_id == actor_id, Assignment.project_id == target_id)))
            if not ids:
                return []
            roles = session.scalars(select(Role).where(Role.id.in_(ids)).order_by(Role.name))
            return [self.role_view(r) for r in roles]

    def _forget_actor(self, session: Session, actor_type: str, actor_id: str) -> None:
        session.execute(delete(Grant).where(Grant.actor_type == actor_type,
                                            Grant.actor_id == actor_id))

    def _forget_target(self, session: Session, target_type: str, target_id: str) -> None:
        session.execute(delete(Grant).where(Grant.target_type == target_type,
                                            Grant.target_id == target_id))

    # ---------------------------------------------------------------- implied roles
    def _inference(self, prior: Role, implied: Role) -> dict[str, Any]:
        def brief(r: Role) -> dict[str, Any]:
            return {"id": r.id, "name": r.name,
                    "links": {"self": self._url(f"roles/{r.id}")}}
        return {"prior_role": brief(prior), "implies": brief(implied),
                "links": {"self": self._url(f"roles/{prior.id}/implies/{implied.id}")}}

    def implied_roles(self, ctx: RequestContext, prior_id: str) -> dict[str, Any]:
        self.policy.enforce(ctx, "identity:list_implied_roles", {})
        with self.db.session(readonly=True) as session:
            prior = self._get(session, Role, prior_id, "role")
            implied = session.scalars(select(Role).join(
                ImpliedRole, ImpliedRole.implied_role_id == Role.id).where(
                ImpliedRole.prior_role_id == prior_id).order_by(Role.name))
            return {"prior_role": {"id": prior.id, "name": prior.name,
                                   "links": {"self": self._url(f"roles/{prior.id}")}},
                    "implies": [{"id": r.id, "name": r.name,
                                 "links": {"self": self._url(f"roles/{r.id}")}}
                                for r in implied]}

    def implied_role(self, ctx: RequestContext, op: str, prior_id: str,
                     implied_id: str) -> dict[str, Any] | None:
        """``op``: create, get, check or delete the rule "prior implies implied"."""
        rule = {"create": "create_implied_role", "get": "get_implied_role",
                "check": "check_implied_role", "delete": "delete_implied_role"}[op]
        self.policy.enforce(ctx, f"identity:{rule}", {})
        with self.db.session(readonly=op in ("get", "check")) as session:
            prior = self._get(session, Role, prior_id, "role")
            implied = self._get(session, Role, implied_id, "role")
            row = session.get(ImpliedRole, (prior_id, implied_id))
            if op == "create":
                if prior_id == implied_id or session.get(
                        ImpliedRole, (implied_id, prior_id)) is not None:
                    raise Forbidden("An implied role rule cannot make a cycle.")
                if row is None:
                    session.add(ImpliedRole(prior_role_id=prior_id, implied_role_id=implied_id))
                return self._inference(prior, implied)
            if row is None:
                raise NotFound(f"{prior_id} does not imply {implied_id}.")
            if op == "delete":
                session.delete(row)
            return self._inference(prior, implied)

    # ---------------------------------------------------------------- role assignments
    def _all_assignments(self, session: Session) -> list[dict[str, Any]]:
        rows = [{"actor": ("user", a.user_id), "target": ("project", a.project_id),
                 "role": a.role_id, "inherited": False}
                for a in session.scalars(select(Assignment))]
        rows += [{"actor": (g.actor_type, g.actor_id), "target": (g.target_type, g.target_id),
                  "role": g.role_id, "inherited": g.inherited}
                 for g in session.scalars(select(Grant))]
        return rows

    @staticmethod
    def _subtree(session: Session, project_id: str) -> list[str]:
        """The ids of a project's descendants (not the project itself)."""
        out: list[str] = []
        todo = [project_id]
        while todo:
            children = list(session.scalars(select(Project.id).where(
                Project.parent_id == todo.pop())))
            out += [c for c in children if c not in out]
            todo += children
        return out

    def _effective(self, session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keystone's ``effective``: groups expanded into their users, domain-inherited
        grants onto the domain's projects, implied roles added; inherited rows dropped."""
        members: dict[str, list[str]] = {}
        for m in session.scalars(select(GroupMember)):
            members.setdefault(m.group_id, []).append(m.user_id)
        out: list[dict[str, Any]] = []
        for row in rows:
            users = [row["actor"][1]] if row["actor"][0] == "user" else \
                members.get(row["actor"][1], [])
            extra = {} if row["actor"][0] == "user" else {"group": row["actor"][1]}
            if row["inherited"]:
                if row["target"][0] == "domain":
                    targets = [("project", p) for p in session.scalars(
                        select(Project.id).where(Project.domain_id == row["target"][1]))]
                else:
                    targets = [("project", p) for p in self._subtree(session, row["target"][1])]
                extra["inherited_from"] = row["target"]
            else:
                targets = [row["target"]]
            for user in users:
                for target in targets:
                    for role in self._implied(session, {row["role"]}):
                        out.append({"actor": ("user", user), "target": target,
                                    "role": role.id, "inherited": False, **extra})
        unique: dict[tuple, dict[str, Any]] = {}
        for row in out:
            unique.setdefault((row["actor"], row["target"], row["role"]), row)
        return list(unique.values())

    def list_assignments(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        """``GET /v3/role_assignments`` with Keystone's filters, ``effective`` and
        ``include_names``."""
        user_id = filters.get("user.id")
        self.policy.enforce(ctx, "identity:list_role_assignments", {"target.user.id": user_id})
        effective = "effective" in filters and filters["effective"].lower() not in (
            "0", "false", "no")
        names = _flag(filters.get("include_names", "false"))
        if effective and "group.id" in filters:
            raise BadRequest("effective and group.id cannot be combined.")
        with self.db.session(readonly=True) as session:
            rows = self._all_assignments(session)
            if effective:
                rows = self._effective(session, rows)
            want: list[tuple[str, str, Any]] = []
            if user_id:
                want.append(("actor", "user", user_id))
            if filters.get("group.id"):
                want.append(("actor", "group", filters["group.id"]))
            if filters.get("scope.project.id"):
                want.append(("target", "project", filters["scope.project.id"]))
            if filters.get("scope.domain.id"):
                want.append(("target", "domain", filters["scope.domain.id"]))
            if "scope.system" in filters:
                want.append(("target", "system", "all"))
            rows = [r for r in rows if all(r[k] == (t, v) for k, t, v in want)]
            if filters.get("role.id"):
                rows = [r for r in rows if r["role"] == filters["role.id"]]
            if "scope.OS-INHERIT:inherited_to" in filters:
                rows = [r for r in rows if r["inherited"]]
            rows.sort(key=lambda r: (r["actor"], r["target"], r["role"]))
            return [self._assignment_view(session, r, names) for r in rows]

    def _assignment_view(self, session: Session, row: dict[str, Any],
                         names: bool) -> dict[str, Any]:
        (atype, aid), (ttype, tid), rid = row["actor"], row["target"], row["role"]
        scope: dict[str, Any] = {ttype: {"all": True} if ttype == "system" else {"id": tid}}
        if row["inherited"]:
            scope["OS-INHERIT:inherited_to"] = "projects"
        path = "system" if ttype == "system" else f"{ttype}s/{tid}"
        link = self._url(f"{path}/{atype}s/{aid}/roles/{rid}")
        if row["inherited"]:
            link = self._url(f"OS-INHERIT/{path}/{atype}s/{aid}/roles/{rid}"
                             "/inherited_to_projects")
        elif "inherited_from" in row:
            itype, iid = row["inherited_from"]
            owner = ("groups", row["group"]) if "group" in row else ("users", aid)
            link = self._url(f"OS-INHERIT/{itype}s/{iid}/{owner[0]}/{owner[1]}/roles/{rid}"
                             "/inherited_to_projects")
        elif "group" in row:
            link = self._url(f"{path}/groups/{row['group']}/roles/{rid}")
        links: dict[str, str] = {"assignment": link}
        if "group" in row:
            links["membership"] = self._url(f"groups/{row['group']}/users/{aid}")
        item: dict[str, Any] = {"role": {"id": rid}, atype: {"id": aid}, "scope": scope,
                                "links": links}
        if names:
            role = session.get(Role, rid)
            if role is not None:
                item["role"]["name"] = role.name
            actor = session.get(User if atype == "user" else Group, aid)
            if actor is not None:
                dom = session.get(Domain, actor.domain_id)
                item[atype].update(name=actor.name,
                                   domain={"id": dom.id, "name": dom.name} if dom else {})
            if ttype == "project":
                project = session.get(Project, tid)
                if project is not None:
                    dom = session.get(Domain, project.domain_id)
                    scope["project"].update(name=project.name,
                                            domain={"id": dom.id, "name": dom.name})
            elif ttype == "domain":
                dom = session.get(Domain, tid)
                if dom is not None:
                    scope["domain"]["name"] = dom.name
        return item

    # ---------------------------------------------------------------- what a user reaches
    def _reachable_projects(self, session: Session, user_id: str) -> list[Project]:
        ids = set(session.scalars(
            select(Assignment.project_id).where(Assignment.user_id == user_id)))
        groups = list(session.scalars(
            select(GroupMember.group_id).where(GroupMember.user_id == user_id)))
        actor = (Grant.actor_type == "user") & (Grant.actor_id == user_id)
        if groups:
            actor = actor | ((Grant.actor_type == "group") & Grant.actor_id.in_(groups))
        domains: set[str] = set()
        for g in session.scalars(select(Grant).where(actor)):
            if g.target_type == "project" and not g.inherited:
                ids.add(g.target_id)
            elif g.target_type == "project":
                ids.update(self._subtree(session, g.target_id))
            elif g.target_type == "domain" and g.inherited:
                domains.add(g.target_id)
        q = select(Project).order_by(Project.name)
        if domains:
            q = q.where(Project.id.in_(ids) | Project.domain_id.in_(domains))
        elif ids:
            q = q.where(Project.id.in_(ids))
        else:
            return []
        return list(session.scalars(q))

    def user_projects(self, ctx: RequestContext, user_id: str) -> list[dict[str, Any]]:
        self.policy.enforce(ctx, "identity:list_user_projects", {"target.user.id": user_id})
        with self.db.session(readonly=True) as session:
            self._get(session, User, user_id, "user")
            return [self.project_view(p) for p in self._reachable_projects(session, user_id)]

    def auth_projects(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """``GET /v3/auth/projects``: enabled projects the token's user can scope to."""
        with self.db.session(readonly=True) as session:
            if ctx.user_id is None:
                return []
            return [self.project_view(p) for p in self._reachable_projects(session, ctx.user_id)
                    if p.enabled]

    def auth_domains(self, ctx: RequestContext) -> list[dict[str, Any]]:
        with self.db.session(readonly=True) as session:
            if ctx.user_id is None:
                return []
            return [self.domain_view(d) for d in session.scalars(select(Domain).order_by(
                Domain.name)) if d.enabled and self._domain_roles(session, ctx.user_id, d.id)]

    def auth_system(self, ctx: RequestContext) -> list[dict[str, Any]]:
        with self.db.session(readonly=True) as session:
            if ctx.user_id and self._system_roles(session, ctx.user_id):
                return [{"all": True}]
            return []

    # ---------------------------------------------------------------- project tags
    def project_tags(self, ctx: RequestContext, project_id: str) -> list[str]:
        self.policy.enforce(ctx, "identity:get_project_tags", {"target.project.id": project_id})
        with self.db.session(readonly=True) as session:
            return list(self._get(session, Project, project_id, "project").tags or [])

    def set_project_tags(self, ctx: RequestContext, project_id: str,
                         tags: list[Any]) -> list[str]:
        self.policy.enforce(ctx, "identity:update_project_tags",
                            {"target.project.id": project_id})
        if len(tags) > TAG_MAX:
            raise BadRequest(f"A project has at most {TAG_MAX} tags.")
        clean = list(dict.fromkeys(_check_tag(t) for t in tags))
        with self.db.session() as session:
            self._get(session, Project, project_id, "project").tags = clean
        return clean

    def project_tag(self, ctx: RequestContext, op: str, project_id: str, tag: str) -> None:
        """``op``: check, add or remove one tag."""
        rule = "get_project_tag" if op == "check" else (
            "create_project_tag" if op == "add" else "delete_project_tag")
        self.policy.enforce(ctx, f"identity:{rule}", {"target.project.id": project_id})
        with self.db.session(readonly=op == "check") as session:
            project = self._get(session, Project, project_id, "project")
            tags = list(project.tags or [])
            if op == "add":
                if tag not in tags:
                    if len(tags) >= TAG_MAX:
                        raise BadRequest(f"A project has at most {TAG_MAX} tags.")
                    project.tags = [*tags, _check_tag(tag)]
            elif tag not in tags:
                raise NotFound(f"Tag {tag} not found on project {project_id}.")
            elif op == "remove":
                project.tags = [t for t in tags if t != tag]

    # ---------------------------------------------------------------- catalog
    def catalog(self, project_id: str | None) -> list[dict[str, Any]]:
        """The token catalog: strato's own services, then the API-registered ones (as
        Keystone, enabled endpoints only; templated URLs only with a project)."""
        entries = [e for e in catalog_mod.catalog(self.base_url, self.region, project_id or "")
                   if project_id or "%(project_id)s" not in dict(
                       (s.type, s.path) for s in catalog_mod.SERVICES)[e["type"]]]
        with self.db.session(readonly=True) as session:
            for svc in session.scalars(select(CatalogService).where(
                    CatalogService.enabled.is_(True))):
                eps = []
                for ep in session.scalars(select(CatalogEndpoint).where(
                        CatalogEndpoint.service_id == svc.id,
                        CatalogEndpoint.enabled.is_(True))):
                    url = ep.url
                    if "$(project_id)s" in url or "%(project_id)s" in url:
                        if not project_id:
                            continue
                        url = url.replace("$(project_id)s", project_id).replace(
                            "%(project_id)s", project_id)
                    eps.append({"id": ep.id, "interface": ep.interface, "region": ep.region_id,
                                "region_id": ep.region_id, "url": url})
                entries.append({"id": svc.id, "type": svc.type, "name": svc.name,
                                "endpoints": eps})
        return entries

    def _builtin_service(self, service_id: str) -> dict | None:
        return next((s for s in catalog_mod.services() if s["id"] == service_id), None)

    def service_view(self, s: CatalogService) -> dict[str, Any]:
        return {"id": s.id, "type": s.type, "name": s.name, "description": s.description,
                "enabled": s.enabled, "links": {"self": self._url(f"services/{s.id}")},
                **(s.extra or {})}

    def _builtin_service_view(self, s: dict) -> dict[str, Any]:
        return {**s, "description": "", "links": {"self": self._url(f"services/{s['id']}")}}

    def list_services(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_services", {})
        items = [self._builtin_service_view(s) for s in catalog_mod.services()]
        with self.db.session(readonly=True) as session:
            items += [self.service_view(s) for s in session.scalars(select(CatalogService))]
        if "type" in filters:
            items = [s for s in items if s["type"] == filters["type"]]
        if "name" in filters:
            items = [s for s in items if s["name"] == filters["name"]]
        return items

    def get_service(self, ctx: RequestContext, service_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_service", {})
        builtin = self._builtin_service(service_id)
        if builtin:
            return self._builtin_service_view(builtin)
        with self.db.session(readonly=True) as session:
            return self.service_view(self._get(session, CatalogService, service_id, "service"))

    def create_service(self, ctx: RequestContext, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:create_service", {})
        ref = body["service"]
        if not isinstance(ref.get("type"), str) or not ref["type"]:
            raise BadRequest("Invalid input for field 'type': a non-empty string is required.")
        svc = CatalogService(type=ref["type"], name=ref.get("name") or "",
                             description=ref.get("description") or "",
                             enabled=bool(ref.get("enabled", True)),
                             extra={k: v for k, v in ref.items() if k not in (
                                 "id", "type", "name", "description", "enabled", "links")})
        with self.db.session() as session:
            session.add(svc)
            session.flush()
            return self.service_view(svc)

    def _builtin_is_fixed(self, service_id: str) -> None:
        if self._builtin_service(service_id):
            raise Forbidden("strato's own services are part of the deployment and cannot "
                            "be changed through the API.")

    def update_service(self, ctx: RequestContext, service_id: str, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:update_service", {})
        self._builtin_is_fixed(service_id)
        ref = body["service"]
        with self.db.session() as session:
            svc = self._get(session, CatalogService, service_id, "service")
            for key in ("type", "name", "description"):
                if key in ref:
                    setattr(svc, key, ref[key] or "")
            if "enabled" in ref:
                svc.enabled = bool(ref["enabled"])
            extra = {k: v for k, v in ref.items() if k not in (
                "id", "type", "name", "description", "enabled", "links")}
            if extra:
                svc.extra = {**(svc.extra or {}), **extra}
            return self.service_view(svc)

    def delete_service(self, ctx: RequestContext, service_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_service", {})
        self._builtin_is_fixed(service_id)
        with self.db.session() as session:
            svc = self._get(session, CatalogService, service_id, "service")
            session.execute(delete(CatalogEndpoint).where(
                CatalogEndpoint.service_id == service_id))
            session.delete(svc)

    def endpoint_view(self, e: CatalogEndpoint) -> dict[str, Any]:
        return {"id": e.id, "service_id": e.service_id, "interface": e.interface,
                "region": e.region_id, "region_id": e.region_id, "url": e.url,
                "enabled": e.enabled, "links": {"self": self._url(f"endpoints/{e.id}")},
                **(e.extra or {})}

    def list_endpoints(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_endpoints", {})
        items = [{**e, "links": {"self": self._url(f"endpoints/{e['id']}")}}
                 for e in catalog_mod.endpoints(self.base_url, self.region)]
        with self.db.session(readonly=True) as session:
            items += [self.endpoint_view(e) for e in session.scalars(select(CatalogEndpoint))]
        for key in ("interface", "service_id", "region_id"):
            if key in filters:
                items = [e for e in items if e[key] == filters[key]]
        return items

    def _endpoint_fields(self, session: Session, ref: dict, creating: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "service_id" in ref or creating:
            sid = ref.get("service_id")
            if not isinstance(sid, str) or session.get(CatalogService, sid) is None:
                if isinstance(sid, str) and self._builtin_service(sid):
                    raise Forbidden("strato's own services take no further endpoints.")
                raise BadRequest(f"Could not find service: {sid}.")
            out["service_id"] = sid
        if "interface" in ref or creating:
            if ref.get("interface") not in INTERFACES:
                raise BadRequest("Invalid input for field 'interface': one of public, "
                                 "internal, admin.")
            out["interface"] = ref["interface"]
        if "url" in ref or creating:
            if not isinstance(ref.get("url"), str) or not ref["url"]:
                raise BadRequest("Invalid input for field 'url'.")
            out["url"] = ref["url"]
        region = ref.get("region_id", ref.get("region"))
        if "region_id" in ref or "region" in ref:
            if region is not None and region != self.region and \
                    session.get(Region, region) is None:
                if "region_id" in ref:
                    raise BadRequest(f"Could not find region: {region}.")
                # The legacy ``region`` attribute creates the region it names, as
                # Keystone does.
                session.add(Region(id=region, description="", extra={}))
            out["region_id"] = region
        if "enabled" in ref:
            out["enabled"] = bool(ref["enabled"])
        return out

    _ENDPOINT_KEYS = ("id", "service_id", "interface", "url", "region", "region_id",
                      "enabled", "links")

    def create_endpoint(self, ctx: RequestContext, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:create_endpoint", {})
        ref = body["endpoint"]
        with self.db.session() as session:
            fields = self._endpoint_fields(session, ref, True)
            ep = CatalogEndpoint(**fields, extra={k: v for k, v in ref.items()
                                                  if k not in self._ENDPOINT_KEYS})
            session.add(ep)
            session.flush()
            return self.endpoint_view(ep)

    def _builtin_endpoint(self, endpoint_id: str) -> dict | None:
        return next((e for e in catalog_mod.endpoints(self.base_url, self.region)
                     if e["id"] == endpoint_id), None)

    def get_endpoint(self, ctx: RequestContext, endpoint_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_endpoint", {})
        builtin = self._builtin_endpoint(endpoint_id)
        if builtin:
            return {**builtin, "links": {"self": self._url(f"endpoints/{endpoint_id}")}}
        with self.db.session(readonly=True) as session:
            return self.endpoint_view(self._get(session, CatalogEndpoint, endpoint_id,
                                                "endpoint"))

    def update_endpoint(self, ctx: RequestContext, endpoint_id: str, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:update_endpoint", {})
        if self._builtin_endpoint(endpoint_id):
            raise Forbidden("strato's own endpoints cannot be changed through the API.")
        ref = body["endpoint"]
        with self.db.session() as session:
            ep = self._get(session, CatalogEndpoint, endpoint_id, "endpoint")
            for key, value in self._endpoint_fields(session, ref, False).items():
                setattr(ep, key, value)
            extra = {k: v for k, v in ref.items() if k not in self._ENDPOINT_KEYS}
            if extra:
                ep.extra = {**(ep.extra or {}), **extra}
            return self.endpoint_view(ep)

    def delete_endpoint(self, ctx: RequestContext, endpoint_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_endpoint", {})
        if self._builtin_endpoint(endpoint_id):
            raise Forbidden("strato's own endpoints cannot be deleted through the API.")
        with self.db.session() as session:
            session.delete(self._get(session, CatalogEndpoint, endpoint_id, "endpoint"))

    # ---------------------------------------------------------------- regions
    def _builtin_region_view(self) -> dict[str, Any]:
        return {"id": self.region, "description": "", "parent_region_id": None,
                "links": {"self": self._url(f"regions/{self.region}")}}

    def region_view(self, r: Region) -> dict[str, Any]:
        return {"id": r.id, "description": r.description,
                "parent_region_id": r.parent_region_id,
                "links": {"self": self._url(f"regions/{r.id}")}, **(r.extra or {})}

    def list_regions(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_regions", {})
        with self.db.session(readonly=True) as session:
            items = [self._builtin_region_view()] + [
                self.region_view(r) for r in session.scalars(select(Region).order_by(Region.id))]
        if "parent_region_id" in filters:
            items = [r for r in items if r["parent_region_id"] == filters["parent_region_id"]]
        return items

    def get_region(self, ctx: RequestContext, region_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_region", {})
        if region_id == self.region:
            return self._builtin_region_view()
        with self.db.session(readonly=True) as session:
            return self.region_view(self._get(session, Region, region_id, "region"))

    def _parent_region(self, session: Session, parent: Any, region_id: str | None) -> Any:
        if parent is None:
            return None
        if not isinstance(parent, str) or (
                parent != self.region and session.get(Region, parent) is None):
            raise BadRequest(f"Could not find region: {parent}.")
        if parent == region_id:
            raise BadRequest("A region cannot be its own parent.")
        return parent

    def create_region(self, ctx: RequestContext, body: dict,
                      region_id: str | None = None) -> dict:
        self.policy.enforce(ctx, "identity:create_region", {})
        ref = body["region"]
        region_id = region_id or ref.get("id")
        if region_id is not None and (not isinstance(region_id, str) or not region_id):
            raise BadRequest("Invalid input for field 'id'.")
        with self.db.session() as session:
            if region_id == self.region or (region_id and session.get(Region, region_id)):
                raise Conflict(f"Duplicate ID, {region_id}.")
            region = Region(description=ref.get("description") or "",
                            parent_region_id=self._parent_region(
                                session, ref.get("parent_region_id"), region_id),
                            extra={k: v for k, v in ref.items() if k not in (
                                "id", "description", "parent_region_id", "links")})
            if region_id:
                region.id = region_id
            session.add(region)
            session.flush()
            return self.region_view(region)

    def update_region(self, ctx: RequestContext, region_id: str, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:update_region", {})
        if region_id == self.region:
            raise Forbidden("The configured region cannot be changed through the API.")
        ref = body["region"]
        with self.db.session() as session:
            region = self._get(session, Region, region_id, "region")
            if "description" in ref:
                region.description = ref["description"] or ""
            if "parent_region_id" in ref:
                region.parent_region_id = self._parent_region(
                    session, ref["parent_region_id"], region_id)
            return self.region_view(region)

    def delete_region(self, ctx: RequestContext, region_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_region", {})
        if region_id == self.region:
            raise Forbidden("The configured region cannot be deleted.")
        with self.db.session() as session:
            region = self._get(session, Region, region_id, "region")
            if session.scalars(select(Region.id).where(
                    Region.parent_region_id == region_id)).first():
                raise Forbidden("Cannot delete a region that has child regions.")
            session.delete(region)
