"""Nova's os-keypairs: a user's keypairs, imported or generated, per microversion.

Keypairs belong to a user, not a project: a name is unique per user, another user
(even of the same project) never sees them, and only an admin may name another user
(``user_id``, 2.10+; policy ``admin or user_id:%(user_id)s``). Server create looks a
``key_name`` up with :meth:`KeyPairs.get`.

Microversions: 2.2 ``type`` (ssh | x509) and 201/204 instead of 200/202; 2.10
``user_id``; 2.35 ``limit``/``marker`` paging by name and ``keypairs_links``; 2.75
unknown query parameters refused; 2.92 ``public_key`` required (no generation, so no
``private_key``) and ``@`` and ``.`` allowed in names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strato.compute import keycrypto, schemas
from strato.compute.models import KeyPairRecord
from strato.compute.views import Version, iso_us
from strato.context import RequestContext
from strato.db import Database
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound
from strato.policy import Enforcer
from strato.quota.engine import QuotaEngine
from strato.validation import query_int, show

P = "os_compute_api:os-keypairs:"
_NAME = re.compile(r"^[_\- a-zA-Z0-9]+$")
_NAME_V292 = re.compile(r"^[_\-@. a-zA-Z0-9]+$")
Query = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class KeyPair:
    name: str
    user_id: str
    public_key: str
    fingerprint: str
    type: str = "ssh"


class KeyPairs:
    def __init__(self, db: Database, policy: Enforcer, quota: QuotaEngine, base: str,
                 max_limit: int) -> None:
        self.db = db
        self.policy = policy
        self.quota = quota
        self.base = base
        self.max_limit = max_limit

    def get(self, user_id: str | None, name: str) -> KeyPair | None:
        """The user's keypair called ``name``, or None."""
        with self.db.session(readonly=True) as session:
            row = session.scalars(select(KeyPairRecord).where(
                KeyPairRecord.user_id == user_id, KeyPairRecord.name == name)).first()
            if row is None:
                return None
            return KeyPair(row.name, row.user_id, row.public_key, row.fingerprint, row.type)

    # ------------------------------------------------------------ helpers
    def _user(self, ctx: RequestContext, rule: str, version: Version,
              requested: str | None) -> str:
        """Whose keypairs: ``requested`` (2.10+, policy-checked) or the caller's."""
        user_id = (requested if version >= (2, 10) else None) or ctx.user_id or ""
        self.policy.enforce(ctx, P + rule, {"user_id": user_id})
        return user_id

    @staticmethod
    def _query(params: Query, version: Version, allowed: tuple[str, ...]) -> dict[str, str]:
        """The first value of each parameter; unknown ones refused from 2.75."""
        out: dict[str, str] = {}
        for key, value in params:
            if key not in allowed and version >= (2, 75):
                raise BadRequest(f"Invalid input for query parameters {key}. Value: "
                                 f"{show(value)}. Additional properties are not allowed "
                                 f"({key!r} was unexpected)")
            out.setdefault(key, value)
        return out

    @staticmethod
    def _check_name(name: str, version: Version) -> None:
        pattern = _NAME_V292 if version >= (2, 92) else _NAME
        allowed = "letters, digits, spaces, '_', '-'" + (
            ", '@', '.'" if version >= (2, 92) else "")
        if name != name.strip() or not pattern.match(name):
            raise BadRequest(f"Invalid input for field/attribute keypair.name: "
                             f"{show(name)} must be 1-255 characters of {allowed}, not "
                             "starting or ending with a space.")

    @staticmethod
    def _view(row: KeyPairRecord, keys: tuple[str, ...], version: Version) -> dict[str, Any]:
        values = {"name": row.name, "public_key": row.public_key,
                  "fingerprint": row.fingerprint, "user_id": row.user_id,
                  "type": row.type, "id": row.id, "created_at": iso_us(row.created_at),
                  "deleted": False, "deleted_at": None, "updated_at": None}
        if version >= (2, 2):
            keys += ("type",)
        return {k: values[k] for k in keys}

    # ------------------------------------------------------------ create
    def create(self, ctx: RequestContext, body: Any,
               version: Version) -> dict[str, Any]:
        schemas.create_keypair(version)(body)
        ref = body["keypair"]
        name = ref["name"]
        self._check_name(name, version)
        key_type = ref.get("type") or keycrypto.SSH
        user_id = self._user(ctx, "create", version, ref.get("user_id"))
        with self.db.session(readonly=True) as session:
            self._check_quota(session, ctx, user_id)
        private_key = None
        if "public_key" in ref:
            public_key = ref["public_key"]
            fingerprint = keycrypto.fingerprint(public_key, key_type)
        else:  # before 2.92 only: the schema requires public_key from 2.92
            private_key, public_key, fingerprint = keycrypto.generate(key_type, user_id)
        row = KeyPairRecord(user_id=user_id, name=name, type=key_type,
                            public_key=public_key, fingerprint=fingerprint)
        try:
            with self.db.session() as session:
                self._check_quota(session, ctx, user_id)  # again: a create may have won
                if session.scalars(select(KeyPairRecord.id).where(
                        KeyPairRecord.user_id == user_id,
                        KeyPairRecord.name == name)).first() is not None:
                    raise Conflict(f"Key pair '{name}' already exists.")
                session.add(row)
                session.flush()
                out = self._view(row, ("name", "public_key", "fingerprint", "user_id"),
                                 version)
        except IntegrityError:  # a concurrent create of the same name won
            raise Conflict(f"Key pair '{name}' already exists.") from None
        if private_key is not None:
            out["private_key"] = private_key
        return out

    def _check_quota(self, session: Session, ctx: RequestContext, user_id: str) -> None:
        """403 when the user holds its project's ``key_pairs`` limit already."""
        limit = self.quota.limits(session, ctx.project_id).get(
            "key_pairs", self.quota.default_for("key_pairs"))
        count = session.scalar(select(func.count()).select_from(KeyPairRecord).where(
            KeyPairRecord.user_id == user_id)) or 0
        if 0 <= limit < count + 1:
            raise Forbidden("Quota exceeded, too many key pairs.")

    # ------------------------------------------------------------ read
    def _row(self, session: Session, user_id: str, name: str) -> KeyPairRecord:
        row = session.scalars(select(KeyPairRecord).where(
            KeyPairRecord.user_id == user_id, KeyPairRecord.name == name)).first()
        if row is None:
            raise NotFound(f"Keypair {name} not found for user {user_id}")
        return row

    def show(self, ctx: RequestContext, name: str, params: Query,
             version: Version) -> dict[str, Any]:
        query = self._query(params, version, ("user_id",))
        user_id = self._user(ctx, "show", version, query.get("user_id"))
        with self.db.session(readonly=True) as session:
            return self._view(self._row(session, user_id, name), (
                "name", "public_key", "fingerprint", "user_id", "created_at", "deleted",
                "deleted_at", "id", "updated_at"), version)

    def list(self, ctx: RequestContext, params: Query, version: Version) -> dict[str, Any]:
        paged = version >= (2, 35)
        query = self._query(params, version,
                            ("user_id", "limit", "marker") if paged else ("user_id",))
        user_id = self._user(ctx, "index", version, query.get("user_id"))
        stmt = select(KeyPairRecord).where(KeyPairRecord.user_id == user_id)
        limit = None
        if paged:
            limit = self.max_limit
            if "limit" in query:
                limit = min(query_int("limit", query["limit"]), limit)
        with self.db.session(readonly=True) as session:
            if paged and "marker" in query:
                marker = session.scalars(select(KeyPairRecord.name).where(
                    KeyPairRecord.user_id == user_id,
                    KeyPairRecord.name == query["marker"])).first()
                if marker is None:
                    raise BadRequest(f"Marker {query['marker']} could not be found.")
                stmt = stmt.where(KeyPairRecord.name > marker)
            stmt = stmt.order_by(KeyPairRecord.name, KeyPairRecord.id)
            if limit is not None:
                stmt = stmt.limit(limit)
            rows = list(session.scalars(stmt))
            body: dict[str, Any] = {"keypairs": [{"keypair": self._view(
                r, ("name", "public_key", "fingerprint"), version)} for r in rows]}
        if paged and limit and len(rows) == limit:
            # Nova's next link: every parameter of the request, sorted, marker replaced
            links = dict(sorted(query.items()))
            links["marker"] = rows[-1].name
            body["keypairs_links"] = [{"rel": "next", "href": (
                f"{self.base}/compute/v2.1/os-keypairs?{urlencode(links)}")}]
        return body

    # ------------------------------------------------------------ delete
    def delete(self, ctx: RequestContext, name: str, params: Query, version: Version) -> None:
        query = self._query(params, version, ("user_id",))
        user_id = self._user(ctx, "delete", version, query.get("user_id"))
        with self.db.session() as session:
            session.delete(self._row(session, user_id, name))
