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
from strato.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    NotSupported,
    Unauthorized,
)
from strato.identity.credentials import (
    AppCredentialsMixin,
    CredentialsMixin,
    Ec2CredentialsMixin,
)
from strato.identity.grants import GrantsMixin
from strato.identity.models import (
    ApplicationCredential,
    Assignment,
    Domain,
    Grant,
    Group,
    GroupMember,
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
    domain: Domain | None = None  # a domain-scoped token's domain
    system: bool = False  # a system-scoped token


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


class IdentityAPI(GrantsMixin, CredentialsMixin, AppCredentialsMixin, Ec2CredentialsMixin):
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
                "description": p.description, "enabled": p.enabled,
                "parent_id": p.parent_id or p.domain_id,
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
        return {"id": r.id, "name": r.name, "domain_id": r.domain_id,
                "description": r.description,
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

    def _groups_of(self, session: Session, user_id: str) -> list[str]:
        return list(session.scalars(
            select(GroupMember.group_id).where(GroupMember.user_id == user_id)))

    def _grant_roles(self, session: Session, user_id: str, target_type: str,
                     target_id: str, inherited: bool) -> set[str]:
        """Role ids granted in ``grants`` to the user or one of their groups."""
        groups = self._groups_of(session, user_id)
        actor = (Grant.actor_type == "user") & (Grant.actor_id == user_id)
        if groups:
            actor = actor | ((Grant.actor_type == "group") & Grant.actor_id.in_(groups))
        return set(session.scalars(select(Grant.role_id).where(
            actor, Grant.target_type == target_type, Grant.target_id == target_id,
            Grant.inherited == inherited)))

    def _implied(self, session: Session, direct: set[str]) -> list[Role]:
        """``direct`` plus the roles they imply (admin → member → reader), as Roles."""
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
        # Domain-specific roles only ever stand for the global roles they imply.
        return list(session.scalars(select(Role).where(
            Role.id.in_(found), Role.domain_id.is_(None)).order_by(Role.name)))

    def _effective_roles(self, session: Session, user_id: str, project_id: str) -> list[Role]:
        """Roles on a project: the user's and their groups', those inherited from the
        project's domain, and the roles all of them imply."""
        direct = set(session.scalars(
            select(Assignment.role_id).where(
                Assignment.user_id == user_id, Assignment.project_id == project_id)
        ))
        direct |= self._grant_roles(session, user_id, "project", project_id, False)
        project = session.get(Project, project_id)
        if project is not None:
            direct |= self._grant_roles(session, user_id, "domain", project.domain_id, True)
            seen = {project.id}
            while project is not None and project.parent_id and project.parent_id not in seen:
                seen.add(project.parent_id)
                direct |= self._grant_roles(session, user_id, "project", project.parent_id, True)
                project = session.get(Project, project.parent_id)
        return self._implied(session, direct)

    def _app_cred_roles(self, session: Session, cred: ApplicationCredential) -> list[Role]:
        """The credential's roles that its user still holds on its project, with the
        roles they imply."""
        held = {r.id for r in self._effective_roles(session, cred.user_id, cred.project_id)}
        return self._implied(session, held & set(cred.role_ids or []))

    def _domain_roles(self, session: Session, user_id: str, domain_id: str) -> list[Role]:
        return self._implied(session, self._grant_roles(session, user_id, "domain", domain_id,
                                                        False))

    def _system_roles(self, session: Session, user_id: str) -> list[Role]:
        return self._implied(session, self._grant_roles(session, user_id, "system", "all",
                                                        False))

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
        prior_methods: tuple[str, ...] = ()
        with self.db.session() as session:
            if "application_credential" in methods:
                cred = self.app_cred_login(session, identity.get("application_credential"))
                scope = auth.get("scope")
                if scope not in (None, {}, {"project": {"id": cred.project_id}}):
                    raise Unauthorized("An application credential token is scoped to the "
                                       "credential's project only.")
                project = session.get(Project, cred.project_id)
                if project is None or not project.enabled or not self._app_cred_roles(
                        session, cred):
                    raise Unauthorized("The request you have made requires authentication.")
                token, payload = self.tokens.issue(
                    cred.user_id, cred.project_id, ("application_credential",),
                    expires_at=cred.expires_at, app_cred_id=cred.id)
                return self._token_data(session, token, payload)
            if "password" in methods:
                user = self._password_user(session, identity.get("password"))
            elif "token" in methods:
                tok = identity.get("token")
                if not isinstance(tok, dict) or not isinstance(tok.get("id"), str):
                    raise BadRequest("Expecting to find identity.token.id in request body.")
                prior = self._validate(session, tok["id"])
                if prior.payload.app_cred_id:
                    raise Forbidden("A token of an application credential cannot be "
                                    "rescoped.")
                user = prior.user
                expires_at = prior.payload.expires_at
                parent_audit = prior.payload.audit_ids[-1]
                prior_methods = prior.payload.methods  # Keystone keeps them on a rescope
            else:
                raise Unauthorized(f"Unsupported authentication method: {methods!r}.")
            project, domain, system = self._scope(session, user, auth.get("scope"))
            token, payload = self.tokens.issue(
                user.id, project.id if project else None,
                tuple(dict.fromkeys([*prior_methods,
                                     *(m for m in methods if m in ("password", "token"))])),
                expires_at=expires_at, parent_audit_id=parent_audit,
                domain_id=domain.id if domain else None, system=system,
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

    def _scope(self, session: Session, user: User,
               scope: Any) -> tuple[Project | None, Domain | None, bool]:
        """The (project, domain, system) a token asks for; at most one is set."""
        denied = Unauthorized("The request you have made requires authentication.")
        if scope is None or scope == {}:
            if user.default_project_id:
                project = session.get(Project, user.default_project_id)
                if project and project.enabled and self._effective_roles(
                        session, user.id, project.id):
                    return project, None, False
            return None, None, False
        if scope == "unscoped":
            return None, None, False
        if not isinstance(scope, dict) or len(scope) != 1:
            raise BadRequest("Invalid scope: give one of project, domain or system.")
        if "system" in scope:
            if scope["system"] != {"all": True}:
                raise BadRequest("Invalid system scope: only {\"all\": true} exists.")
            if not self._system_roles(session, user.id):
                raise Unauthorized(f"User {user.id} has no access to the system.")
            return None, None, True
        if "domain" in scope:
            domain = self._domain_ref(session, scope["domain"])
            if not domain.enabled:
                raise denied
            if not self._domain_roles(session, user.id, domain.id):
                raise Unauthorized(f"User {user.id} has no access to domain {domain.id}.")
            return None, domain, False
        if "project" not in scope:
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
            raise denied
        if not self._effective_roles(session, user.id, project.id):
            raise Unauthorized(f"User {user.id} has no access to project {project.id}.")
        return project, None, False

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
            if payload.app_cred_id:
                cred = session.get(ApplicationCredential, payload.app_cred_id)
                if cred is None:
                    raise NotFound("Could not find token.")
                roles = self._app_cred_roles(session, cred)
            if not roles:
                raise NotFound("Could not find token.")
            project_domain = session.get(Domain, project.domain_id)
        domain = None
        if payload.domain_id:
            domain = session.get(Domain, payload.domain_id)
            if domain is None or not domain.enabled:
                raise NotFound("Could not find token.")
            roles = self._domain_roles(session, user.id, domain.id)
            if not roles:
                raise NotFound("Could not find token.")
        if payload.system:
            roles = self._system_roles(session, user.id)
            if not roles:
                raise NotFound("Could not find token.")
        revoked = session.scalars(select(RevokedToken.audit_id).where(
            RevokedToken.audit_id.in_(payload.audit_ids))).first()
        if revoked:
            raise NotFound("Could not find token.")
        return TokenData(token, payload, user, session.get(Domain, user.domain_id),
                         project, project_domain, roles, domain, payload.system)

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
            system_scope="all" if data.system else None,
            domain_id=data.domain.id if data.domain else None,
        )

    def token_view(self, data: TokenData, nocatalog: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "methods": list(data.payload.methods),
            "audit_ids": data.payload.audit_ids,
            "expires_at": _iso(data.payload.expires_at),
            "issued_at": _iso(data.payload.issued_at),
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
            body["is_domain"] = False
            if data.payload.app_cred_id:
                with self.db.session(readonly=True) as session:
                    cred = session.get(ApplicationCredential, data.payload.app_cred_id)
                    if cred is not None:
                        body["application_credential"] = {
                            "id": cred.id, "name": cred.name,
                            "restricted": not cred.unrestricted}
        elif data.domain is not None:
            body["domain"] = {"id": data.domain.id, "name": data.domain.name}
            body["roles"] = [{"id": r.id, "name": r.name} for r in data.roles]
        elif data.system:
            body["system"] = {"all": True}
            body["roles"] = [{"id": r.id, "name": r.name} for r in data.roles]
        scoped = data.project is not None or data.domain is not None or data.system
        if scoped and not nocatalog:  # Keystone: no catalog in an unscoped token
            body["catalog"] = self.catalog(data.project.id if data.project else None)
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
            # As Keystone: the domain's projects, users and groups go with it.
            for project_id in list(session.scalars(
                    select(Project.id).where(Project.domain_id == domain_id))):
                session.execute(delete(Assignment).where(Assignment.project_id == project_id))
                self._forget_target(session, "project", project_id)
                session.execute(delete(Project).where(Project.id == project_id))
            for user_id in list(session.scalars(
                    select(User.id).where(User.domain_id == domain_id))):
                session.execute(delete(Assignment).where(Assignment.user_id == user_id))
                self._forget_actor(session, "user", user_id)
                session.execute(delete(GroupMember).where(GroupMember.user_id == user_id))
                session.execute(delete(User).where(User.id == user_id))
            for group_id in list(session.scalars(
                    select(Group.id).where(Group.domain_id == domain_id))):
                self._forget_actor(session, "group", group_id)
                session.execute(delete(GroupMember).where(GroupMember.group_id == group_id))
                session.execute(delete(Group).where(Group.id == group_id))
            self._forget_target(session, "domain", domain_id)
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
            if "parent_id" in filters:
                parent = filters["parent_id"]
                q = q.where((Project.parent_id == parent) | (
                    Project.parent_id.is_(None) & (Project.domain_id == parent)))
            if filters.get("is_domain", "").lower() == "true":
                return []  # no project acts as a domain here
            projects = list(session.scalars(q))
            # Keystone's tag filters: comma-separated lists
            for key, want_all, negate in (("tags", True, False), ("tags-any", False, False),
                                          ("not-tags", True, True),
                                          ("not-tags-any", False, True)):
                if filters.get(key):
                    wanted = set(filters[key].split(","))
                    test = (wanted.issubset if want_all else
                            lambda tags, w=wanted: bool(w & tags))
                    projects = [p for p in projects
                                if test(set(p.tags or [])) != negate]
            return [self.project_view(p) for p in projects]

    def get_project(self, ctx: RequestContext, project_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_project", {"target.project.id": project_id})
        with self.db.session(readonly=True) as session:
            return self.project_view(self._get(session, Project, project_id, "project"))

    def create_project(self, ctx: RequestContext, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:create_project", {})
        ref = _require(body, "project")
        with self.db.session() as session:
            if ref.get("is_domain"):
                raise NotSupported("Projects acting as domains are not implemented; "
                                          "create a domain instead.")
            parent = ref.get("parent_id")
            parent_project = None
            if parent is not None and session.get(Domain, parent) is None:
                parent_project = self._get(session, Project, parent, "parent project")
            domain_id = ref.get("domain_id") or (
                parent_project.domain_id if parent_project else parent) or DEFAULT_DOMAIN_ID
            if session.get(Domain, domain_id) is None:
                raise BadRequest(f"Could not find domain: {domain_id}.")
            if parent_project is None and parent not in (None, domain_id):
                raise BadRequest("A top-level project's parent is its domain.")
            if parent_project is not None and parent_project.domain_id != domain_id:
                raise BadRequest("A project must be in its parent's domain.")
            tags = ref.get("tags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise BadRequest("Invalid input for field 'tags': a list of strings.")
            project = Project(
                name=_name(ref.get("name"), "name"), domain_id=domain_id,
                description=_text(ref.get("description"), "description"),
                enabled=_bool(ref.get("enabled", True), "enabled"), tags=tags,
                parent_id=parent_project.id if parent_project else None,
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
            if session.scalars(select(Project.id).where(Project.parent_id == project_id)).first():
                raise Forbidden(f"Cannot delete project {project_id}: it has sub-projects.")
            session.execute(delete(Assignment).where(Assignment.project_id == project_id))
            self._forget_target(session, "project", project_id)
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
                raise NotFound(f"Could not find domain: {domain_id}.")
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
            self._forget_actor(session, "user", user_id)
            session.delete(user)

    # ---------------------------------------------------------------- roles
    def list_roles(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_roles", {})
        with self.db.session(readonly=True) as session:
            q = select(Role).order_by(Role.name)
            if "name" in filters:
                q = q.where(Role.name == filters["name"])
            q = q.where(Role.domain_id == filters["domain_id"]) if filters.get("domain_id") \
                else q.where(Role.domain_id.is_(None))
            return [self.role_view(r) for r in session.scalars(q)]

    def get_role(self, ctx: RequestContext, role_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_role", {})
        with self.db.session(readonly=True) as session:
            return self.role_view(self._get(session, Role, role_id, "role"))

    def create_role(self, ctx: RequestContext, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:create_role", {})
        ref = _require(body, "role")
        domain_id = ref.get("domain_id")
        if domain_id:
            with self.db.session(readonly=True) as session:
                self._get(session, Domain, domain_id, "domain")
        role = Role(name=_name(ref.get("name"), "name"), domain_id=domain_id or None,
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
            def brief(r: Role) -> dict[str, Any]:
                return {"id": r.id, "name": r.name, "links": self._link("roles", r.id)}
            return [
                {"prior_role": brief(session.get(Role, prior)),
                 "implies": [brief(r) for r in implied]}
                for prior, implied in rules.items()
            ]

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
