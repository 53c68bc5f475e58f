"""Neutron's quotas: per-project limits over the defaults from ``[network] quota_*``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from strato.context import RequestContext
from strato.network.base import QUOTA_MODELS, QUOTA_RESOURCES, NetworkBase
from strato.network.errors import BadRequest, PolicyNotAuthorized
from strato.network.validation import _body
from strato.quota.models import QuotaLimit


class QuotaOps(NetworkBase):
    """The ``/v2.0/quotas`` operations of ``NetworkAPI``."""

    def _quota_project(self, ctx: RequestContext, project_id: str, rule: str) -> None:
        if project_id != ctx.project_id and not ctx.is_admin:
            raise PolicyNotAuthorized(f"rule:{rule} is disallowed by policy")
        self._enforce(ctx, rule, project_id)

    def quota(self, ctx: RequestContext, project_id: str, detail: bool = False) -> dict:
        self._quota_project(ctx, project_id, "get_quota")
        with self.db.session(readonly=True) as s:
            limits = self._limits(s, project_id)
            if not detail:
                return limits
            out = {}
            for resource in QUOTA_RESOURCES:
                model = QUOTA_MODELS[resource]
                used = s.scalar(select(func.count()).select_from(model).where(
                    model.project_id == project_id)) or 0
                out[resource] = {"limit": limits[resource], "used": used, "reserved": 0}
            return out

    def quota_defaults_for(self, ctx: RequestContext, project_id: str) -> dict:
        self._quota_project(ctx, project_id, "get_quota")
        return dict(self.quota_defaults)

    def list_quotas(self, ctx: RequestContext) -> list[dict]:
        if not ctx.is_admin:
            raise PolicyNotAuthorized("rule:get_quota is disallowed by policy")
        with self.db.session(readonly=True) as s:
            projects = sorted(set(s.scalars(select(QuotaLimit.project_id).where(
                QuotaLimit.resource.in_(QUOTA_RESOURCES)))))
            return [{**self._limits(s, p), "project_id": p, "tenant_id": p}
                    for p in projects]

    def update_quota(self, ctx: RequestContext, project_id: str, body: Any) -> dict:
        self._quota_project(ctx, project_id, "update_quota")
        data = _body(body, "quota", set(QUOTA_RESOURCES) | {"force", "check_limit",
                                                             "rbac_policy", "subnetpool"})
        with self.db.session() as s:
            for resource, value in data.items():
                if resource not in QUOTA_RESOURCES:
                    continue
                try:
                    limit = int(value)
                except (TypeError, ValueError):
                    raise BadRequest(f"Invalid input for {resource}. Reason: '{value}' is "
                                     "not an integer.") from None
                if limit < -1:
                    raise BadRequest(f"Invalid input for {resource}. Reason: '{value}' "
                                     "must be >= -1.")
                row = s.get(QuotaLimit, (project_id, resource))
                if row is None:
                    s.add(QuotaLimit(project_id=project_id, resource=resource,
                                     hard_limit=limit))
                else:
                    row.hard_limit = limit
            s.flush()
            return self._limits(s, project_id)

    def delete_quota(self, ctx: RequestContext, project_id: str) -> None:
        self._quota_project(ctx, project_id, "delete_quota")
        with self.db.session() as s:
            s.execute(delete(QuotaLimit).where(QuotaLimit.project_id == project_id,
                                               QuotaLimit.resource.in_(QUOTA_RESOURCES)))
