"""Fernet tokens: authenticated encryption, so a token can be neither read nor forged.

The payload names the user, scope, methods, audit id and times; roles and the
catalog are looked up when the token is validated, so a role removed or a user
disabled takes effect at once (as Keystone's Fernet tokens do).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class TokenInvalid(Exception):
    """Undecryptable, tampered with or expired."""


@dataclass(frozen=True)
class TokenPayload:
    user_id: str
    project_id: str | None
    methods: tuple[str, ...]
    audit_id: str
    issued_at: datetime
    expires_at: datetime
    # The audit chain: the first token of a re-scoped series.
    parent_audit_id: str | None = None
    # Domain or system scope (a token has at most one of project, domain, system).
    domain_id: str | None = None
    system: bool = False
    # The application credential the token was issued for.
    app_cred_id: str | None = None

    @property
    def audit_ids(self) -> list[str]:
        return [self.audit_id] + ([self.parent_audit_id] if self.parent_audit_id else [])


def load_keys(repo: Path) -> MultiFernet:
    """Keys in ``repo`` (created with one key when missing); the newest encrypts."""
    repo.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = sorted(
        (p for p in repo.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True
    )
    if not keys:
        path = repo / "0"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
        keys = [path]
    return MultiFernet([Fernet(p.read_bytes().strip()) for p in keys])


def new_audit_id() -> str:
    return secrets.token_urlsafe(16)


class TokenFactory:
    def __init__(self, keys: MultiFernet, lifetime: int) -> None:
        self.keys = keys
        self.lifetime = lifetime

    def issue(
        self,
        user_id: str,
        project_id: str | None,
        methods: tuple[str, ...],
        expires_at: datetime | None = None,
        parent_audit_id: str | None = None,
        domain_id: str | None = None,
        system: bool = False,
        app_cred_id: str | None = None,
    ) -> tuple[str, TokenPayload]:
        now = datetime.now(UTC)
        limit = (now + timedelta(seconds=self.lifetime)).replace(microsecond=0)
        payload = TokenPayload(
            user_id=user_id, project_id=project_id, methods=methods,
            audit_id=new_audit_id(), issued_at=now,
            expires_at=min(expires_at, limit) if expires_at else limit,
            parent_audit_id=parent_audit_id, domain_id=domain_id, system=system,
            app_cred_id=app_cred_id,
        )
        body = {
            "u": user_id, "p": project_id, "m": list(methods), "a": payload.audit_id,
            "i": round(now.timestamp(), 6), "e": int(payload.expires_at.timestamp()),
            "pa": parent_audit_id,
        }
        if domain_id:
            body["d"] = domain_id
        if system:
            body["s"] = 1
        if app_cred_id:
            body["ac"] = app_cred_id
        token = self.keys.encrypt(json.dumps(body, separators=(",", ":")).encode())
        return token.decode(), payload

    def read(self, token: str) -> TokenPayload:
        try:
            body = json.loads(self.keys.decrypt(token.encode()))
            payload = TokenPayload(
                user_id=body["u"], project_id=body["p"], methods=tuple(body["m"]),
                audit_id=body["a"], issued_at=datetime.fromtimestamp(body["i"], UTC),
                expires_at=datetime.fromtimestamp(body["e"], UTC),
                parent_audit_id=body.get("pa"), domain_id=body.get("d"),
                system=bool(body.get("s")), app_cred_id=body.get("ac"),
            )
        except (InvalidToken, ValueError, KeyError, TypeError, UnicodeError) as exc:
            raise TokenInvalid("token is not valid") from exc
        if payload.expires_at <= datetime.now(UTC):
            raise TokenInvalid("token has expired")
        return payload
