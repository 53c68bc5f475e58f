"""Keystone's credentials (users' secrets, encrypted at rest), policy blobs and
application credentials.

A mixin of :class:`strato.identity.api.IdentityAPI`. Credential blobs are encrypted
with the deployment's Fernet keys (the token key repository), so a database dump
alone does not reveal them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.fernet import InvalidToken
from sqlalchemy import select

from strato.context import RequestContext
from strato.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    NotSupported,
    Unauthorized,
)
from strato.identity.models import (
    ApplicationCredential,
    Credential,
    PolicyBlob,
    Project,
    Role,
    User,
)
from strato.identity.passwords import check_password, hash_password
from strato.identity.tokens import TokenInvalid

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from strato.db import Database
    from strato.identity.tokens import TokenFactory
    from strato.policy import Enforcer

_CRED_KEYS = ("id", "user_id", "project_id", "type", "blob", "links")
_POLICY_KEYS = ("id", "type", "blob", "links")


class CredentialsMixin:
    db: Database
    policy: Enforcer
    base_url: str
    tokens: TokenFactory

    def _get(self, session: Session, model: type, id_: str, what: str) -> Any: ...  # noqa: D102

    # ---------------------------------------------------------------- credentials
    def _seal(self, blob: str) -> str:
        return self.tokens.keys.encrypt(blob.encode()).decode()

    def _open(self, sealed: str) -> str:
        try:
            return self.tokens.keys.decrypt(sealed.encode()).decode()
        except InvalidToken:
            return ""  # the key that sealed it was removed from the repository

    def credential_view(self, c: Credential) -> dict[str, Any]:
        return {"id": c.id, "user_id": c.user_id, "project_id": c.project_id, "type": c.type,
                "blob": self._open(c.encrypted_blob),
                "links": {"self": f"{self.base_url}/identity/v3/credentials/{c.id}"},
                **(c.extra or {})}

    def _check_owner_refs(self, session: Session, ref: dict[str, Any], type_: str) -> None:
        if "user_id" in ref:
            self._get(session, User, ref["user_id"], "user")
        if ref.get("project_id"):
            self._get(session, Project, ref["project_id"], "project")
        elif type_ == "ec2":
            raise BadRequest("An ec2 credential needs a project_id.")

    def list_credentials(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_credentials", {})
        with self.db.session(readonly=True) as session:
            q = select(Credential).order_by(Credential.id)
            if not (ctx.is_admin or ctx.system_scope == "all"):
                q = q.where(Credential.user_id == ctx.user_id)
            if "user_id" in filters:
                q = q.where(Credential.user_id == filters["user_id"])
            if "type" in filters:
                q = q.where(Credential.type == filters["type"])
            return [self.credential_view(c) for c in session.scalars(q)]

    def get_credential(self, ctx: RequestContext, credential_id: str) -> dict:
        with self.db.session(readonly=True) as session:
            cred = session.get(Credential, credential_id)
            self.policy.enforce(ctx, "identity:get_credential", {
                "target.credential.user_id": cred.user_id if cred else None})
            if cred is None:
                raise NotFound(f"Could not find credential: {credential_id}.")
            return self.credential_view(cred)

    def create_credential(self, ctx: RequestContext, body: dict) -> dict:
        ref = body["credential"]
        self.policy.enforce(ctx, "identity:create_credential",
                            {"target.credential.user_id": ref["user_id"]})
        with self.db.session() as session:
            self._check_owner_refs(session, ref, ref["type"])
            cred = Credential(user_id=ref["user_id"], project_id=ref.get("project_id"),
                              type=ref["type"], encrypted_blob=self._seal(ref["blob"]),
                              extra={k: v for k, v in ref.items() if k not in _CRED_KEYS})
            session.add(cred)
            session.flush()
            return self.credential_view(cred)

    def update_credential(self, ctx: RequestContext, credential_id: str, body: dict) -> dict:
        ref = body["credential"]
        with self.db.session() as session:
            cred = session.get(Credential, credential_id)
            self.policy.enforce(ctx, "identity:update_credential", {
                "target.credential.user_id": cred.user_id if cred else None})
            if cred is None:
                raise NotFound(f"Could not find credential: {credential_id}.")
            self._check_owner_refs(session, {"project_id": cred.project_id, **ref},
                                   ref.get("type", cred.type))
            for key in ("user_id", "project_id", "type"):
                if key in ref:
                    setattr(cred, key, ref[key])
            if "blob" in ref:
                cred.encrypted_blob = self._seal(ref["blob"])
            extra = {k: v for k, v in ref.items() if k not in _CRED_KEYS}
            if extra:
                cred.extra = {**(cred.extra or {}), **extra}
            return self.credential_view(cred)

    def delete_credential(self, ctx: RequestContext, credential_id: str) -> None:
        with self.db.session() as session:
            cred = session.get(Credential, credential_id)
            self.policy.enforce(ctx, "identity:delete_credential", {
                "target.credential.user_id": cred.user_id if cred else None})
            if cred is None:
                raise NotFound(f"Could not find credential: {credential_id}.")
            session.delete(cred)

    # ---------------------------------------------------------------- policy blobs
    def policy_view(self, p: PolicyBlob) -> dict[str, Any]:
        return {"id": p.id, "type": p.type, "blob": p.blob,
                "links": {"self": f"{self.base_url}/identity/v3/policies/{p.id}"},
                **(p.extra or {})}

    def list_policies(self, ctx: RequestContext, filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_policies", {})
        with self.db.session(readonly=True) as session:
            q = select(PolicyBlob).order_by(PolicyBlob.id)
            if "type" in filters:
                q = q.where(PolicyBlob.type == filters["type"])
            return [self.policy_view(p) for p in session.scalars(q)]

    def get_policy(self, ctx: RequestContext, policy_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_policy", {})
        with self.db.session(readonly=True) as session:
            return self.policy_view(self._get(session, PolicyBlob, policy_id, "policy"))

    def create_policy(self, ctx: RequestContext, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:create_policy", {})
        ref = body["policy"]
        with self.db.session() as session:
            blob = PolicyBlob(type=ref["type"], blob=ref["blob"],
                              extra={k: v for k, v in ref.items() if k not in _POLICY_KEYS})
            session.add(blob)
            session.flush()
            return self.policy_view(blob)

    def update_policy(self, ctx: RequestContext, policy_id: str, body: dict) -> dict:
        self.policy.enforce(ctx, "identity:update_policy", {})
        ref = body["policy"]
        with self.db.session() as session:
            blob = self._get(session, PolicyBlob, policy_id, "policy")
            for key in ("type", "blob"):
                if key in ref:
                    setattr(blob, key, ref[key])
            return self.policy_view(blob)

    def delete_policy(self, ctx: RequestContext, policy_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_policy", {})
        with self.db.session() as session:
            session.delete(self._get(session, PolicyBlob, policy_id, "policy"))


def _parse_expiry(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("Invalid input for field 'expires_at': an ISO 8601 time.")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid input for field 'expires_at': {value!r}.") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when <= datetime.now(UTC):
        raise BadRequest("An application credential cannot expire in the past.")
    return when


class AppCredentialsMixin:
    """``/v3/users/{id}/application_credentials`` and their authentication method."""

    db: Database
    policy: Enforcer
    base_url: str
    tokens: TokenFactory

    def _get(self, session: Session, model: type, id_: str, what: str) -> Any: ...  # noqa: D102
    def _effective_roles(self, session: Session, user_id: str,  # noqa: D102
                         project_id: str) -> list[Role]: ...

    def app_cred_view(self, session: Session, a: ApplicationCredential) -> dict[str, Any]:
        roles = [session.get(Role, r) for r in a.role_ids or []]
        return {
            "id": a.id, "name": a.name, "description": a.description, "user_id": a.user_id,
            "project_id": a.project_id,
            "roles": [{"id": r.id, "name": r.name, "domain_id": r.domain_id}
                      for r in roles if r is not None],
            "expires_at": a.expires_at.replace(tzinfo=None).isoformat()
            if a.expires_at else None,
            "unrestricted": a.unrestricted, "access_rules": [],
            "links": {"self": f"{self.base_url}/identity/v3/users/{a.user_id}/"
                              f"application_credentials/{a.id}"},
        }

    def list_app_creds(self, ctx: RequestContext, user_id: str,
                       filters: dict[str, str]) -> list[dict]:
        self.policy.enforce(ctx, "identity:list_application_credentials",
                            {"target.user.id": user_id})
        with self.db.session(readonly=True) as session:
            self._get(session, User, user_id, "user")
            q = select(ApplicationCredential).where(
                ApplicationCredential.user_id == user_id).order_by(ApplicationCredential.name)
            if "name" in filters:
                q = q.where(ApplicationCredential.name == filters["name"])
            return [self.app_cred_view(session, a) for a in session.scalars(q)]

    def _own_app_cred(self, session: Session, user_id: str,
                      app_cred_id: str) -> ApplicationCredential:
        cred = session.get(ApplicationCredential, app_cred_id)
        if cred is None or cred.user_id != user_id:
            raise NotFound(f"Could not find application credential: {app_cred_id}.")
        return cred

    def get_app_cred(self, ctx: RequestContext, user_id: str, app_cred_id: str) -> dict:
        self.policy.enforce(ctx, "identity:get_application_credential",
                            {"target.user.id": user_id})
        with self.db.session(readonly=True) as session:
            return self.app_cred_view(session, self._own_app_cred(session, user_id,
                                                                  app_cred_id))

    def delete_app_cred(self, ctx: RequestContext, user_id: str, app_cred_id: str) -> None:
        self.policy.enforce(ctx, "identity:delete_application_credential",
                            {"target.user.id": user_id})
        with self.db.session() as session:
            session.delete(self._own_app_cred(session, user_id, app_cred_id))

    def create_app_cred(self, ctx: RequestContext, user_id: str, body: dict) -> dict:
        """Only the user themself, with a project-scoped token: the credential gets that
        project and the requested subset of the token's roles (all of them by default)."""
        self.policy.enforce(ctx, "identity:create_application_credential",
                            {"target.user.id": user_id})
        ref = body["application_credential"]
        if ctx.project_id is None:
            raise Forbidden("An application credential is created with a project-scoped "
                            "token.")
        self._not_from_restricted_app_cred(ctx)
        if ref.get("access_rules"):
            raise NotSupported("Application credential access rules are not "
                                      "implemented.")
        with self.db.session() as session:
            held = {r.id: r for r in self._effective_roles(session, user_id, ctx.project_id)}
            wanted: list[str] = []
            for item in ref.get("roles") or []:
                match = [r for r in held.values()
                         if r.id == item.get("id") or r.name == item.get("name")]
                if not match:
                    raise BadRequest(f"The user does not hold role {item} on the project.")
                wanted.append(match[0].id)
            if session.scalars(select(ApplicationCredential.id).where(
                    ApplicationCredential.user_id == user_id,
                    ApplicationCredential.name == ref["name"])).first():
                raise Conflict(f"Duplicate entry: an application credential named "
                               f"{ref['name']} exists.")
            secret = ref.get("secret") or secrets.token_urlsafe(64)
            cred = ApplicationCredential(
                user_id=user_id, project_id=ctx.project_id, name=ref["name"],
                description=ref.get("description"), secret_hash=hash_password(secret),
                expires_at=_parse_expiry(ref.get("expires_at")),
                unrestricted=bool(ref.get("unrestricted", False)),
                role_ids=list(dict.fromkeys(wanted)) or sorted(held))
            session.add(cred)
            session.flush()
            return {**self.app_cred_view(session, cred), "secret": secret}

    def _not_from_restricted_app_cred(self, ctx: RequestContext) -> None:
        """As Keystone: a token from a restricted application credential cannot make
        more credentials (else it could mint one that never expires)."""
        if not ctx.token:
            return
        try:
            payload = self.tokens.read(ctx.token)
        except TokenInvalid:
            return
        if payload.app_cred_id:
            with self.db.session(readonly=True) as session:
                cred = session.get(ApplicationCredential, payload.app_cred_id)
                if cred is None or not cred.unrestricted:
                    raise Forbidden("A restricted application credential cannot create "
                                    "application credentials.")

    def app_cred_login(self, session: Session, ref: Any) -> ApplicationCredential:
        """The ``application_credential`` auth method: the credential, when its secret
        matches, it has not expired, and its user is enabled."""
        denied = Unauthorized("The request you have made requires authentication.")
        if not isinstance(ref, dict) or not isinstance(ref.get("secret"), str):
            raise BadRequest("Expecting to find application_credential.secret.")
        if ref.get("id"):
            cred = session.get(ApplicationCredential, ref["id"])
        elif ref.get("name") and isinstance(ref.get("user"), dict):
            user_id = ref["user"].get("id")
            if not user_id:
                user = session.scalars(select(User).where(
                    User.name == ref["user"].get("name"))).first()
                user_id = user.id if user else None
            cred = session.scalars(select(ApplicationCredential).where(
                ApplicationCredential.user_id == user_id,
                ApplicationCredential.name == ref["name"])).first()
        else:
            raise BadRequest("An application credential is given by id, or by name and user.")
        if cred is None or not check_password(ref["secret"], cred.secret_hash):
            raise denied
        if cred.expires_at is not None and cred.expires_at <= datetime.now(UTC):
            raise denied
        user = session.get(User, cred.user_id)
        if user is None or not user.enabled:
            raise denied
        return cred


class Ec2CredentialsMixin:
    """``/v3/users/{id}/credentials/OS-EC2``: EC2-style key pairs, kept as credentials
    of type ``ec2`` (so ``/v3/credentials`` lists them, as Keystone's do). Nothing in
    strato authenticates with them (no ``/v3/ec2tokens``): they are stored for
    clients that keep EC2 keys in Keystone."""

    db: Database
    policy: Enforcer
    base_url: str

    def _get(self, session: Session, model: type, id_: str, what: str) -> Any: ...  # noqa: D102
    def _seal(self, blob: str) -> str: ...  # noqa: D102
    def _open(self, sealed: str) -> str: ...  # noqa: D102
    def _effective_roles(self, session: Session, user_id: str,  # noqa: D102
                         project_id: str) -> list[Role]: ...

    def _ec2_view(self, c: Credential) -> dict[str, Any]:
        blob = json.loads(self._open(c.encrypted_blob) or "{}")
        return {"user_id": c.user_id, "tenant_id": c.project_id,
                "access": blob.get("access"), "secret": blob.get("secret"),
                "trust_id": blob.get("trust_id"),
                "links": {"self": f"{self.base_url}/identity/v3/users/{c.user_id}/"
                                  f"credentials/OS-EC2/{blob.get('access')}"}}

    def create_ec2(self, ctx: RequestContext, user_id: str, body: Any) -> dict:
        self.policy.enforce(ctx, "identity:ec2_create_credential", {"target.user.id": user_id})
        project_id = body.get("tenant_id") if isinstance(body, dict) else None
        if not isinstance(project_id, str) or not project_id:
            raise BadRequest("Expecting to find tenant_id in request body.")
        with self.db.session() as session:
            self._get(session, User, user_id, "user")
            self._get(session, Project, project_id, "project")
            if not self._effective_roles(session, user_id, project_id):
                raise Forbidden(f"User {user_id} has no role on project {project_id}.")
            access = uuid.uuid4().hex
            blob = json.dumps({"access": access, "secret": uuid.uuid4().hex,
                               "trust_id": None})
            cred = Credential(id=hashlib.sha256(access.encode()).hexdigest(),
                              user_id=user_id, project_id=project_id, type="ec2",
                              encrypted_blob=self._seal(blob), extra={})
            session.add(cred)
            session.flush()
            return self._ec2_view(cred)

    def list_ec2(self, ctx: RequestContext, user_id: str) -> list[dict]:
        self.policy.enforce(ctx, "identity:ec2_list_credentials", {"target.user.id": user_id})
        with self.db.session(readonly=True) as session:
            self._get(session, User, user_id, "user")
            return [self._ec2_view(c) for c in session.scalars(select(Credential).where(
                Credential.user_id == user_id, Credential.type == "ec2"))]

    def _ec2(self, session: Session, user_id: str, access: str) -> Credential:
        cred = session.get(Credential, hashlib.sha256(access.encode()).hexdigest())
        if cred is None or cred.user_id != user_id or cred.type != "ec2":
            raise NotFound(f"Could not find credential: {access}.")
        return cred

    def get_ec2(self, ctx: RequestContext, user_id: str, access: str) -> dict:
        self.policy.enforce(ctx, "identity:ec2_get_credential", {"target.user.id": user_id})
        with self.db.session(readonly=True) as session:
            return self._ec2_view(self._ec2(session, user_id, access))

    def delete_ec2(self, ctx: RequestContext, user_id: str, access: str) -> None:
        self.policy.enforce(ctx, "identity:ec2_delete_credential", {"target.user.id": user_id})
        with self.db.session() as session:
            session.delete(self._ec2(session, user_id, access))
