"""Identity's business logic: authentication, tokens, and the admin resources.

Routes (strato/api/identity.py) parse HTTP and call these methods; everything here
takes and returns plain dicts in Keystone's shapes, checks policy, and keeps the
database consistent (a changed password or a deleted user ends that user's tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.db import Database, utcnow
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from strato.identity import catalog as catalog_mod
from strato.identity.models import (
    Assignment,
    Domain,
    ImpliedRole,
    Project,
    RevokedToken,
    Role,
    User,
)
from strato.identity.passwords import check_password, hash_password
from strato.identity.tokens import TokenFactory, TokenInvalid, TokenPayload
from strato.policy import Enforcer

DEFAULT_DOMAIN_ID = "default"
NAME_MAX = 255


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


@dataclass
class TokenData:
    """A validated token with what it stands for now."""

    token: str
    payload: TokenPayload
    user: User
    user_domain: Domain
    project: Project | None
    project_domain: Domain | None
    roles: list[Role]


def _require(body: Any, key: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(f"Expecting to find {key} in request body.")
    return body[key]


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"Invalid input for field '{what}': a non-empty string is required.")
    if len(value) > NAME_MAX:
        raise BadRequest(f"Invalid input for field '{what}': longer than {NAME_MAX} characters.")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"Invalid input for field '{what}': {value!r} is not a boolean.")
    return value


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for field '{what}': a string is required.")
    return value


class IdentityAPI:
    def __init__(self, db: Database, tokens: TokenFactory, policy: Enforcer, base_url: str,
                 region: str, password_min_length: int = 0) -> None:
        self.db = db
        self.tokens = tokens
        self.policy = policy
        self.base_url = base_url
        self.region = region
        self.password_min_length = password_min_length

    # ---------------------------------------------------------------- rendering
    def _link(self, kind: str, id_: str) -> dict[str, str]:
        return {"self": f"{self.base_url}/identity/v3/{kind}/{id_}"}

    def domain_view(self, d: Domain) -> dict[str, Any]:
        return {"id": d.id, "name": d.name, "description": d.description, "enabled": d.enabled,
                "tags": [], "options": {}, "links": self._link("domains", d.id)}

    def project_view(self, p: Project) -> dict[str, Any]:
        return {"id": p.id, "name": p.name, "domain_id": p.domain_id,
                "description": p.description, "enabled": p.enabled, "parent_id": p.domain_id,
                "is_domain": False, "tags": list(p.tags or []), "options": {},
                "links": self._link("projects", p.id), **(p.extra or {})}

    def user_view(self, u: User) -> dict[str, Any]:
        view = {"id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
                "password_expires_at": None, "options": {}, "links": self._link("users", u.id),
                **(u.extra or {})}
        if u.default_project_id:
            view["default_project_id"] = u.default_project_id
        if u.description:
            view["description"] = u.description
        if u.email:
            view["email"] = u.email
        return view

    def role_view(self, r: Role) -> dict[str, Any]:
        return {"id": r.id, "name": r.name, "domain_id": None, "description": r.description,
                "options": {}, "links": self._link("roles", r.id)}

    # ---------------------------------------------------------------- lookups
    @staticmethod
    def _get(session: Session, model: type, id_: str, what: str) -> Any:
        obj = session.get(model, id_)
        if obj is None:
            raise NotFound(f"Could not find {what}: {id_}.")
        return obj

    def _domain_ref(self, session: Session, ref: Any) -> Domain:
        if not isinstance(ref, dict) or not (ref.get("id") or ref.get("name")):
            raise BadRequest("A domain must be given by id or name.")
        if ref.get("id"):
            domain = session.get(Domain, ref["id"])
        else:
            domain = session.scalars(select(Domain).where(Domain.name == ref["name"])).first()
        if domain is None:
            raise Unauthorized("The request you have made requires authentication.")
        return domain

    def _effective_roles(self, session: Session, user_id: str, project_id: str) -> list[Role]:
        """Assigned roles plus the roles they imply (admin → member → reader)."""
        direct = set(session.scalars(
            select(Assignment.role_id).where(
                Assignment.user_id == user_id, Assignment.project_id == project_id)
        ))
        rules: dict[str, set[str]] = {}
        for rule in session.scalars(select(ImpliedRole)):
            rules.setdefault(rule.prior_role_id, set()).add(rule.implied_role_id)
        found, todo = set(direct), list(direct)
        while todo:
            for implied in rules.get(todo.pop(), ()):
                if implied not in found:
                    found.add(implied)
                    todo.append(implied)
        if not found:
            return []
        return list(session.scalars(select(Role).where(Role.id.in_(found)).order_by(Role.name)))

    # ---------------------------------------------------------------- tokens
    def authenticate(self, body: Any) -> TokenData:
        """``POST /v3/auth/tokens``: password or token method, optionally project-scoped."""
        auth = _require(body, "auth")
        identity = auth.get("identity")
        if not isinstance(identity, dict) or not isinstance(identity.get("methods"), list):
            raise BadRequest("Expecting to find identity.methods in request body.")
        methods = identity["methods"]
        expires_at = None
        parent_audit = None
        with self.db.session() as session:
            if "password" in methods:
                user = self._password_user(session, identity.get("password"))
            elif "token" in methods:
                tok = identity.get("token")
                if not isinstance(tok, dict) or not isinstance(tok.get("id"), str):
                    raise BadRequest("Expecting to find identity.token.id in request body.")
                prior = self._validate(session, tok["id"])
                user = prior.user
                expires_at = prior.payload.expires_at
                parent_audit = prior.payload.audit_ids[-1]
            else:
                raise Unauthorized(f"Unsupported authentication method: {methods!r}.")
            project = self._scope(session, user, auth.get("scope"))
            token, payload = self.tokens.issue(
                user.id, project.id if project else None,
                tuple(m for m in methods if m in ("password", "token")),
                expires_at=expires_at, parent_audit_id=parent_audit,
            )
            return self._token_data(session, token, payload)

    def _password_user(self, session: Session, password: Any) -> User:
        if not isinstance(password, dict) or not isinstance(password.get("user"), dict):
            raise BadRequest("Expecting to find identity.password.user in request body.")
        ref = password["user"]
        secret = ref.get("password")
        if not isinstance(secret, str):
            raise BadRequest("Expecting to find identity.password.user.password.")
        if ref.get("id"):
            user = session.get(User, ref["id"])
        elif ref.get("name"):
            domain = self._domain_ref(session, ref.get("domain"))
            user = session.scalars(select(User).where(
                User.name == ref["name"], User.domain_id == domain.id)).first()
        else:
            raise BadRequest("A user must be given by id or by name and domain.")
        # One answer for unknown user, wrong password and disabled: no user enumeration.
        if user is None or not check_password(secret, user.password_hash) or not user.enabled:
            raise Unauthorized("The request you have made requires authentication.")
        domain = session.get(Domain, user.domain_id)
        if domain is None or not domain.enabled:
            raise Unauthorized("The request you have made requires authentication.")
        return user

    def _scope(self, session: Session, user: User, scope: Any) -> Project | None:
        if scope is None or scope == {}:
            if user.default_project_id:
                project = session.get(Project, user.default_project_id)
                if project and project.enabled and self._effective_roles(
                        session, user.id, project.id):
                    return project
            return None
        if scope == "unscoped":
            return None
        if not isinstance(scope, dict) or "project" not in scope:
            if isinstance(scope, dict) and ("system" in scope or "domain" in scope):
                raise BadRequest("Only project scope is supported.")
            raise BadRequest("Invalid scope.")
        ref = scope["project"]
        if not isinstance(ref, dict):
            raise BadRequest("Invalid project scope.")
        if ref.get("id"):
            project = session.get(Project, ref["id"])
        elif ref.get("name"):
            domain = self._domain_ref(session, ref.get("domain"))
            project = session.scalars(select(Project).where(
                Project.name == ref["name"], Project.domain_id == domain.id)).first()
        else:
            raise BadRequest("A project must be given by id or by name and domain.")
        if project is None or not project.enabled:
            raise Unauthorized("The request you have made requires authentication.")
        if not self._effective_roles(session, user.id, project.id):
            raise Unauthorized(f"User {user.id} has no access to project {project.id}.")
        return project

    def _token_data(self, session: Session, token: str, payload: TokenPayload) -> TokenData:
        user = session.get(User, payload.user_id)
        if user is None or not user.enabled:
            raise NotFound("Could not find token.")
        if payload.issued_at < user.tokens_valid_after:
            raise NotFound("Could not find token.")
        project = project_domain = None
        roles: list[Role] = []
        if payload.project_id:
            project = session.get(Project, payload.project_id)
            if project is None or not project.enabled:
                raise NotFound("Could not find token.")
            roles = self._effective_roles(session, user.id, project.id)
            if not roles:
                raise NotFound("Could not find token.")
            project_domain = session.get(Domain, project.domain_id)
        revoked = session.scalars(select(RevokedToken.audit_id).where(
            RevokedToken.audit_id.in_(payload.audit_ids))).first()
        if revoked:
            raise NotFound("Could not find token.")
        return TokenData(token, payload, user, session.get(Domain, user.domain_id),
                         project, project_domain, roles)

    def _validate(self, session: Session, token: str) -> TokenData:
        try:
            payload = self.tokens.read(token)
        except TokenInvalid as exc:
            raise NotFound(f"Could not find token: {exc}.") from None
        return self._token_data(session, token, payload)

    def validate(self, token: str) -> TokenData:
        """The token's current meaning; NotFound when invalid, expired or revoked."""
        with self.db.session(readonly=True) as session:
            return self._validate(session, token)

    def context_for(self, token: str, request_id: str) -> RequestContext:
        """What the auth middleware puts on a request; Unauthorized for a bad token."""
        try:
            data = self.validate(token)
        except NotFound:
            raise Unauthorized("The request you have made requires authentication.") from None
        return RequestContext(
            request_id=request_id, user_id=data.user.id, user_name=data.user.name,
            user_domain_id=data.user.domain_id,
            project_id=data.project.id if data.project else None,
            project_name=data.project.name if data.project else None,
            project_domain_id=data.project.domain_id if data.project else None,
            roles=[r.name for r in data.roles], audit_ids=data.payload.audit_ids, token=token,
        )

    def token_view(self, data: TokenData, nocatalog: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "methods": list(data.payload.methods),
            "audit_ids": data.payload.audit_ids,
            "expires_at": _iso(data.payload.expires_at),
            "issued_at": _iso(data.payload.issued_at),
            "is_domain": False,
            "user": {
                "id": data.user.id, "name": data.user.name, "password_expires_at": None,
                "domain": {"id": data.user_domain.id, "name": data.user_domain.name},
            },
        }
        if data.project is not None and data.project_domain is not None:
            body["project"] = {
                "id": data.project.id, "name": data.project.name,
                "domain": {"id": data.project_domain.id, "name": data.project_domain.name},
            }
            body["roles"] = [{"id": r.id, "name": r.name} for r in data.roles]
        if not nocatalog:
            body["catalog"] = catalog_mod.catalog(
                self.base_url, self.region, data.project.id if data.project else None)
        return {"token": body}

    def check_token(self, ctx: RequestContext, subject: str) -> TokenData:
        data = self.validate(subject)
        self.policy.enforce(ctx, "identity:validate_token",
                            {"target.token.user_id": data.user.id})
        return data

    def revoke_token(self, ctx: RequestContext, subject: str) -> None:
        data = self.validate(subject)
        self.policy.enforce(ctx, "identity:revoke_token", {"target.token.user_id": data.user.id})
        with self.db.session() as session:
            if session.get(RevokedToken, data.payload.audit_id) is None:
                session.add(RevokedToken(audit_id=data.payload.audit_id,
                                         expires_at=data.payload.expires_at))
            session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))

    def user_projects(self, ctx: RequestContext, user_id: str) -> list[dict[str, Any]]:
        self.policy.enforce(ctx, "identity:list_user_projects", {"target.user.id": user_id})
        with self.db.session(readonly=True) as session:
            self._get(session, User, user_id, "user")
            ids = set(session.scalars(
                select(Assignment.project_id).where(Assignment.user_id == user_id)))
            projects = session.scalars(select(Project).where(Project.id.in_(ids))
                                       .order_by(Project.name)) if ids else []
            return [self.project_view(p) for p in projects]

    # ---------------------------------------------------------------- domains
    def list_domains(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_domains", {})
        with self.db.session(readonly=True) as session:
            q = select(Domain).order_by(Domain.name)
            if "name" in filters:
                q = q.where(Domain.name == filters["name"])
            if "enabled" in filters:
                q = q.where(Domain.enabled == _flag(filters["enabled"]))
            return [self.domain_view(d) for d in session.scalars(q)]

    def get_domain(self, ctx: RequestContext, domain_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_domain", {"target.domain.id": domain_id})
        with self.db.session(readonly=True) as session:
            return self.domain_view(self._get(session, Domain, domain_id, "domain"))

    def create_domain(self, ctx: RequestContext, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:create_domain", {})
        ref = _require(body, "domain")
        domain = Domain(name=_name(ref.get("name"), "name"),
                        description=_text(ref.get("description"), "description"),
                        enabled=_bool(ref.get("enabled", True), "enabled"))
        with self._unique("domain", domain.name), self.db.session() as session:
            session.add(domain)
        return self.domain_view(domain)

    def update_domain(self, ctx: RequestContext, domain_id: str, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:update_domain", {"target.domain.id": domain_id})
        ref = _require(body, "domain")
        with self._unique("domain", ref.get("name")), self.db.session() as session:
            domain = self._get(session, Domain, domain_id, "domain")
            if "name" in ref:
                domain.name = _name(ref["name"], "name")
            if "description" in ref:
                domain.description = _text(ref["description"], "description")
            if "enabled" in ref:
                if domain.id == DEFAULT_DOMAIN_ID and ref["enabled"] is False:
                    raise Forbidden("The default domain cannot be disabled.")
                domain.enabled = _bool(ref["enabled"], "enabled")
            return self.domain_view(domain)

    def delete_domain(self, ctx: RequestContext, domain_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_domain", {"target.domain.id": domain_id})
        with self.db.session() as session:
            domain = self._get(session, Domain, domain_id, "domain")
            if domain.enabled:
                raise Forbidden("Cannot delete a domain that is enabled, please disable it "
                                "first.")
            if session.scalars(select(Project.id).where(Project.domain_id == domain_id)).first() \
                    or session.scalars(select(User.id).where(User.domain_id == domain_id)).first():
                raise Conflict("The domain still owns projects or users.")
            session.delete(domain)

    # ---------------------------------------------------------------- projects
    def list_projects(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_projects", {})
        with self.db.session(readonly=True) as session:
            q = select(Project).order_by(Project.name)
            if "name" in filters:
                q = q.where(Project.name == filters["name"])
            if "domain_id" in filters:
                q = q.where(Project.domain_id == filters["domain_id"])
            if "enabled" in filters:
                q = q.where(Project.enabled == _flag(filters["enabled"]))
            return [self.project_view(p) for p in session.scalars(q)]

    def get_project(self, ctx: RequestContext, project_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_project", {"target.project.id": project_id})
        with self.db.session(readonly=True) as session:
            return self.project_view(self._get(session, Project, project_id, "project"))

    def create_project(self, ctx: RequestContext, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:create_project", {})
        ref = _require(body, "project")
        with self.db.session() as session:
            domain_id = ref.get("domain_id") or DEFAULT_DOMAIN_ID
            if session.get(Domain, domain_id) is None:
                raise BadRequest(f"Could not find domain: {domain_id}.")
            parent = ref.get("parent_id")
            if parent not in (None, domain_id):
                raise BadRequest("Nested projects are not supported.")
            tags = ref.get("tags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise BadRequest("Invalid input for field 'tags': a list of strings.")
            project = Project(
                name=_name(ref.get("name"), "name"), domain_id=domain_id,
                description=_text(ref.get("description"), "description"),
                enabled=_bool(ref.get("enabled", True), "enabled"), tags=tags,
                extra=_extra(ref, {"name", "domain_id", "description", "enabled", "tags",
                                   "parent_id", "is_domain", "options"}),
            )
        with self._unique("project", project.name), self.db.session() as session:
            session.add(project)
        return self.project_view(project)

    def update_project(self, ctx: RequestContext, project_id: str, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:update_project", {"target.project.id": project_id})
        ref = _require(body, "project")
        with self._unique("project", ref.get("name")), self.db.session() as session:
            project = self._get(session, Project, project_id, "project")
            if "domain_id" in ref and ref["domain_id"] != project.domain_id:
                raise BadRequest("A project cannot move to another domain.")
            if "name" in ref:
                project.name = _name(ref["name"], "name")
            if "description" in ref:
                project.description = _text(ref["description"], "description")
            if "enabled" in ref:
                project.enabled = _bool(ref["enabled"], "enabled")
            if "tags" in ref:
                project.tags = list(ref["tags"] or [])
            extra = _extra(ref, {"name", "domain_id", "description", "enabled", "tags",
                                 "parent_id", "is_domain", "options"})
            if extra:
                project.extra = {**(project.extra or {}), **extra}
            return self.project_view(project)

    def delete_project(self, ctx: RequestContext, project_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_project", {"target.project.id": project_id})
        with self.db.session() as session:
            project = self._get(session, Project, project_id, "project")
            session.execute(delete(Assignment).where(Assignment.project_id == project_id))
            session.delete(project)

    # ---------------------------------------------------------------- users
    def list_users(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_users", {})
        with self.db.session(readonly=True) as session:
            q = select(User).order_by(User.name)
            if "name" in filters:
                q = q.where(User.name == filters["name"])
            if "domain_id" in filters:
                q = q.where(User.domain_id == filters["domain_id"])
            if "enabled" in filters:
                q = q.where(User.enabled == _flag(filters["enabled"]))
            return [self.user_view(u) for u in session.scalars(q)]

    def get_user(self, ctx: RequestContext, user_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_user", {"target.user.id": user_id})
        with self.db.session(readonly=True) as session:
            return self.user_view(self._get(session, User, user_id, "user"))

    def _password(self, value: Any) -> str:
        if not isinstance(value, str):
            raise BadRequest("Invalid input for field 'password': a string is required.")
        if len(value) < self.password_min_length:
            raise BadRequest(
                f"Password must be at least {self.password_min_length} characters long.")
        return hash_password(value)

    def create_user(self, ctx: RequestContext, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:create_user", {})
        ref = _require(body, "user")
        with self.db.session() as session:
            domain_id = ref.get("domain_id") or DEFAULT_DOMAIN_ID
            if session.get(Domain, domain_id) is None:
                raise BadRequest(f"Could not find domain: {domain_id}.")
            project_id = ref.get("default_project_id")
            if project_id is not None and session.get(Project, project_id) is None:
                raise BadRequest(f"Could not find project: {project_id}.")
        user = User(
            name=_name(ref.get("name"), "name"), domain_id=domain_id,
            enabled=_bool(ref.get("enabled", True), "enabled"),
            default_project_id=project_id,
            description=_text(ref.get("description"), "description"),
            email=ref.get("email") if isinstance(ref.get("email"), str) else None,
            password_hash=self._password(ref["password"]) if ref.get("password") else None,
            extra=_extra(ref, {"name", "domain_id", "enabled", "default_project_id",
                               "description", "email", "password", "options"}),
        )
        with self._unique("user", user.name), self.db.session() as session:
            session.add(user)
        return self.user_view(user)

    def update_user(self, ctx: RequestContext, user_id: str, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:update_user", {"target.user.id": user_id})
        ref = _require(body, "user")
        with self._unique("user", ref.get("name")), self.db.session() as session:
            user = self._get(session, User, user_id, "user")
            if "domain_id" in ref and ref["domain_id"] != user.domain_id:
                raise BadRequest("A user cannot move to another domain.")
            if "name" in ref:
                user.name = _name(ref["name"], "name")
            if "description" in ref:
                user.description = _text(ref["description"], "description")
            if "email" in ref:
                user.email = ref["email"] if isinstance(ref["email"], str) else None
            if "default_project_id" in ref:
                pid = ref["default_project_id"]
                if pid is not None and session.get(Project, pid) is None:
                    raise BadRequest(f"Could not find project: {pid}.")
                user.default_project_id = pid
            if "enabled" in ref:
                user.enabled = _bool(ref["enabled"], "enabled")
                if not user.enabled:
                    user.tokens_valid_after = utcnow()
            if "password" in ref:
                self._set_password(user, ref["password"])
            extra = _extra(ref, {"name", "domain_id", "enabled", "default_project_id",
                                 "description", "email", "password", "options"})
            if extra:
                user.extra = {**(user.extra or {}), **extra}
            return self.user_view(user)

    def _set_password(self, user: User, password: Any) -> None:
        """New password: every token issued before now stops working."""
        user.password_hash = self._password(password)
        user.password_changed_at = user.tokens_valid_after = utcnow()

    def change_password(self, ctx: RequestContext, user_id: str, body: Any) -> None:
        """``POST /v3/users/{id}/password``: a user changing their own password."""
        self.policy.enforce(ctx, "identity:change_password", {"target.user.id": user_id})
        ref = _require(body, "user")
        with self.db.session() as session:
            user = self._get(session, User, user_id, "user")
            if not check_password(str(ref.get("original_password", "")), user.password_hash):
                raise Unauthorized("The original password is not correct.")
            self._set_password(user, ref.get("password"))

    def delete_user(self, ctx: RequestContext, user_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_user", {"target.user.id": user_id})
        with self.db.session() as session:
            user = self._get(session, User, user_id, "user")
            session.execute(delete(Assignment).where(Assignment.user_id == user_id))
            session.delete(user)

    # ---------------------------------------------------------------- roles
    def list_roles(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_roles", {})
        with self.db.session(readonly=True) as session:
            q = select(Role).order_by(Role.name)
            if "name" in filters:
                q = q.where(Role.name == filters["name"])
            if filters.get("domain_id"):
                return []  # no domain-specific roles
            return [self.role_view(r) for r in session.scalars(q)]

    def get_role(self, ctx: RequestContext, role_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_role", {})
        with self.db.session(readonly=True) as session:
            return self.role_view(self._get(session, Role, role_id, "role"))

    def create_role(self, ctx: RequestContext, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:create_role", {})
        ref = _require(body, "role")
        if ref.get("domain_id"):
            raise BadRequest("Domain-specific roles are not supported.")
        role = Role(name=_name(ref.get("name"), "name"),
                    description=_text(ref.get("description"), "description"))
        with self._unique("role", role.name), self.db.session() as session:
            session.add(role)
        return self.role_view(role)

    def update_role(self, ctx: RequestContext, role_id: str, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:update_role", {})
        ref = _require(body, "role")
        with self._unique("role", ref.get("name")), self.db.session() as session:
            role = self._get(session, Role, role_id, "role")
            if "name" in ref:
                role.name = _name(ref["name"], "name")
            if "description" in ref:
                role.description = _text(ref["description"], "description")
            return self.role_view(role)

    def delete_role(self, ctx: RequestContext, role_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_role", {})
        with self.db.session() as session:
            role = self._get(session, Role, role_id, "role")
            session.execute(delete(Assignment).where(Assignment.role_id == role_id))
            session.execute(delete(ImpliedRole).where(
                (ImpliedRole.prior_role_id == role_id) | (ImpliedRole.implied_role_id == role_id)))
            session.delete(role)

    def role_inferences(self, ctx: RequestContext) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_role_inference_rules", {})
        with self.db.session(readonly=True) as session:
            rules: dict[str, list[Role]] = {}
            for rule in session.scalars(select(ImpliedRole)):
                rules.setdefault(rule.prior_role_id, []).append(
                    session.get(Role, rule.implied_role_id))
            return [
                {"prior_role": self.role_view(session.get(Role, prior)),
                 "implies": [self.role_view(r) for r in implied]}
                for prior, implied in rules.items()
            ]

    # ---------------------------------------------------------------- grants
    def _grant_objects(self, session: Session, project_id: str, user_id: str,
                       role_id: str | None) -> Role | None:
        self._get(session, Project, project_id, "project")
        self._get(session, User, user_id, "user")
        return self._get(session, Role, role_id, "role") if role_id else None

    def create_grant(self, ctx: RequestContext, project_id: str, user_id: str,
                     role_id: str) -> None:
        self.policy.enforce(ctx, "identity:create_grant", {"target.project.id": project_id})
        with self.db.session() as session:
            self._grant_objects(session, project_id, user_id, role_id)
            if session.get(Assignment, (user_id, project_id, role_id)) is None:
                session.add(Assignment(user_id=user_id, project_id=project_id, role_id=role_id))

    def check_grant(self, ctx: RequestContext, project_id: str, user_id: str,
                    role_id: str) -> None:
        self.policy.enforce(ctx, "identity:check_grant", {"target.project.id": project_id})
        with self.db.session() as session:
            self._grant_objects(session, project_id, user_id, role_id)
            if session.get(Assignment, (user_id, project_id, role_id)) is None:
                raise NotFound(f"Could not find role assignment of role {role_id} to user "
                               f"{user_id} on project {project_id}.")

    def revoke_grant(self, ctx: RequestContext, project_id: str, user_id: str,
                     role_id: str) -> None:
        self.policy.enforce(ctx, "identity:revoke_grant", {"target.project.id": project_id})
        with self.db.session() as session:
            self._grant_objects(session, project_id, user_id, role_id)
            grant = session.get(Assignment, (user_id, project_id, role_id))
            if grant is None:
                raise NotFound(f"Could not find role assignment of role {role_id} to user "
                               f"{user_id} on project {project_id}.")
            session.delete(grant)

    def list_grants(self, ctx: RequestContext, project_id: str, user_id: str) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_grants", {"target.project.id": project_id})
        with self.db.session(readonly=True) as session:
            self._grant_objects(session, project_id, user_id, None)
            ids = list(session.scalars(select(Assignment.role_id).where(
                Assignment.user_id == user_id, Assignment.project_id == project_id)))
            roles = session.scalars(select(Role).where(Role.id.in_(ids))) if ids else []
            return [self.role_view(r) for r in roles]

    def list_assignments(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        """``GET /v3/role_assignments`` with user.id, scope.project.id, role.id, effective,
        include_names."""
        user_id = filters.get("user.id")
        self.policy.enforce(ctx, "identity:list_role_assignments", {"target.user.id": user_id})
        if "group.id" in filters or "scope.domain.id" in filters or "scope.system" in filters:
            return []
        names = _flag(filters.get("include_names", "false"))
        effective = "effective" in filters and filters["effective"].lower() not in (
            "0", "false", "no")
        with self.db.session(readonly=True) as session:
            q = select(Assignment)
            if user_id:
                q = q.where(Assignment.user_id == user_id)
            if filters.get("scope.project.id"):
                q = q.where(Assignment.project_id == filters["scope.project.id"])
            rows = {(a.user_id, a.project_id, a.role_id) for a in session.scalars(q)}
            if effective:
                for uid, pid in {(u, p) for u, p, _ in rows}:
                    rows |= {(uid, pid, r.id) for r in self._effective_roles(session, uid, pid)}
            if filters.get("role.id"):
                rows = {r for r in rows if r[2] == filters["role.id"]}
            out = []
            for uid, pid, rid in sorted(rows):
                user, project, role = (session.get(User, uid), session.get(Project, pid),
                                       session.get(Role, rid))
                item: dict[str, Any] = {
                    "role": {"id": rid}, "user": {"id": uid},
                    "scope": {"project": {"id": pid}},
                    "links": {"assignment": f"{self.base_url}/identity/v3/projects/{pid}/users/"
                                            f"{uid}/roles/{rid}"},
                }
                if names and user and project and role:
                    udom = session.get(Domain, user.domain_id)
                    pdom = session.get(Domain, project.domain_id)
                    item["role"]["name"] = role.name
                    item["user"].update(name=user.name,
                                        domain={"id": udom.id, "name": udom.name})
                    item["scope"]["project"].update(name=project.name,
                                                    domain={"id": pdom.id, "name": pdom.name})
                out.append(item)
            return out

    # ---------------------------------------------------------------- helpers
    def _unique(self, what: str, name: Any) -> _UniqueGuard:
        return _UniqueGuard(what, name)


class _UniqueGuard:
    """Turns a unique-constraint violation into Keystone's 409."""

    def __init__(self, what: str, name: Any) -> None:
        self.what, self.name = what, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None and issubclass(exc_type, IntegrityError):
            raise Conflict(f"Conflict occurred attempting to store {self.what} - Duplicate "
                           f"entry found with name {self.name}.") from None
        return False


def _flag(text: str) -> bool:
    return str(text).lower() in ("1", "true", "yes", "on")


def _extra(ref: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """Unknown string-keyed attributes are kept, as Keystone keeps 'extra' fields."""
    return {k: v for k, v in ref.items() if k not in known and k not in ("id", "links")}
