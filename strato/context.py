"""The request context: who is asking, in which project, with which roles."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


@dataclass
class RequestContext:
    request_id: str = field(default_factory=new_request_id)
    user_id: str | None = None
    user_name: str | None = None
    user_domain_id: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    project_domain_id: str | None = None
    roles: list[str] = field(default_factory=list)
    audit_ids: list[str] = field(default_factory=list)
    token: str | None = None
    microversion: str | None = None
    # "all" for a system-scoped token (Keystone's system_scope), else None.
    system_scope: str | None = None
    # The domain of a domain-scoped token.
    domain_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    def credentials(self) -> dict[str, Any]:
        """What oslo.policy rules see as ``creds``."""
        return {
            "user_id": self.user_id,
            "project_id": self.project_id,
            "domain_id": self.user_domain_id,
            "project_domain_id": self.project_domain_id,
            "roles": list(self.roles),
            "system_scope": self.system_scope,
            "token_domain_id": self.domain_id,
            "is_admin": self.is_admin,
        }
