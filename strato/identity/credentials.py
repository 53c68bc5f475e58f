"""Keystone's credentials (users' secrets, encrypted at rest) and policy blobs.

A mixin of :class:`strato.identity.api.IdentityAPI`. Credential blobs are encrypted
with the deployment's Fernet keys (the token key repository), so a database dump
alone does not reveal them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryptography.fernet import InvalidToken
from sqlalchemy import select

from strato.context import RequestContext
from strato.exceptions import BadRequest, NotFound
from strato.identity.models import Credential, PolicyBlob, Project, User

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
