"""What every network resource's operations stand on: the transaction that applies the
data plane before it commits, policy, quota counting and visibility of rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from strato.config import Config
from strato.context import RequestContext
from strato.db import Database
from strato.network.dataplane import Dataplane
from strato.network.errors import (
    BadRequest,
    OverQuota,
    PolicyNotAuthorized,
    ServiceUnavailable,
    not_found,
)
from strato.network.manager import ApplyFailed, NetworkManager, Touch
from strato.network.models import (
    FloatingIP,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from strato.policy import Enforcer
from strato.quota.models import QuotaLimit

T = TypeVar("T")

QUOTA_RESOURCES = ("network", "subnet", "port", "router", "floatingip", "security_group",
                   "security_group_rule")
QUOTA_MODELS: dict[str, Any] = {
    "network": Network, "subnet": Subnet, "port": Port, "router": Router,
    "floatingip": FloatingIP, "security_group": SecurityGroup,
    "security_group_rule": SecurityGroupRule}


def _bump(row: Any) -> None:
    row.revision_number = (row.revision_number or 0) + 1


class NetworkBase:
    """State and plumbing shared by the resource mixins that make up ``NetworkAPI``."""

    def __init__(self, db: Database, policy: Enforcer, conf: Config,
                 dataplane: Dataplane | None, disabled_reason: str = "") -> None:
        self.db = db
        self.policy = policy
        self.conf = conf
        self.dataplane = dataplane
        self.enabled = dataplane is not None
        self.disabled_reason = disabled_reason if not self.enabled else ""
        self.host = conf.DEFAULT.host
        self.manager = NetworkManager(db, conf, dataplane)
        n = conf.network
        self.quota_defaults = {
            "network": n.quota_network, "subnet": n.quota_subnet, "port": n.quota_port,
            "router": n.quota_router, "floatingip": n.quota_floatingip,
            "security_group": n.quota_security_group,
            "security_group_rule": n.quota_security_group_rule}

    # ------------------------------------------------------------ plumbing
    def _require_dataplane(self) -> None:
        if not self.enabled:
            raise ServiceUnavailable("Networking is not available on this host: "
                                     f"{self.disabled_reason}")

    def _change(self, work: Callable[[Session, Touch], T]) -> T:
        """``work`` in one transaction, then its data plane changes before the commit;
        a failed apply rolls back and re-applies what stayed committed."""
        touch = Touch()
        try:
            with self.db.session() as session:
                result = work(session, touch)
                self.manager.apply(session, touch)
            return result
        except ApplyFailed:
            self.manager.repair(touch)
            raise

    def _enforce(self, ctx: RequestContext, rule: str, project_id: str | None) -> None:
        if not self.policy.allowed(ctx, rule, {"project_id": project_id,
                                               "tenant_id": project_id}):
            raise PolicyNotAuthorized(f"rule:{rule} is disallowed by policy")

    def _target_project(self, ctx: RequestContext, data: dict) -> str:
        project = data.get("project_id") or data.get("tenant_id") or ctx.project_id
        if data.get("project_id") and data.get("tenant_id") and \
                data["project_id"] != data["tenant_id"]:
            raise BadRequest("'project_id' and 'tenant_id' do not match")
        if not isinstance(project, str):
            raise BadRequest("Invalid input for project_id.")
        if project != ctx.project_id and not ctx.is_admin:
            raise PolicyNotAuthorized("Only admin can create a resource of another project")
        return project

    def _check_quota(self, session: Session, project_id: str, resource: str,
                     count: int = 1) -> None:
        limit = self._limits(session, project_id)[resource]
        if limit < 0:
            return
        model = QUOTA_MODELS[resource]
        used = session.scalar(select(func.count()).select_from(model).where(
            model.project_id == project_id)) or 0
        if used + count > limit:
            raise OverQuota(f"Quota exceeded for resources: ['{resource}'].")

    def _limits(self, session: Session, project_id: str) -> dict[str, int]:
        limits = dict(self.quota_defaults)
        for row in session.scalars(select(QuotaLimit).where(
                QuotaLimit.project_id == project_id,
                QuotaLimit.resource.in_(QUOTA_RESOURCES))):
            limits[row.resource] = int(row.hard_limit)
        return limits

    # ------------------------------------------------------------ visibility
    def _net_visible(self, ctx: RequestContext, net: Network) -> bool:
        return ctx.is_admin or net.project_id == ctx.project_id or net.shared or \
            net.router_external

    def _get_network(self, session: Session, ctx: RequestContext, network_id: str) -> Network:
        net = session.get(Network, network_id)
        if net is None or not self._net_visible(ctx, net):
            raise not_found("network", network_id)
        return net

    def _own(self, ctx: RequestContext, row: Any) -> bool:
        return ctx.is_admin or row.project_id == ctx.project_id

    def _get(self, session: Session, ctx: RequestContext, model: Any, kind: str,
             row_id: str) -> Any:
        row = session.get(model, row_id)
        if row is None or not self._own(ctx, row):
            raise not_found(kind, row_id)
        return row

    def _get_subnet(self, session: Session, ctx: RequestContext, subnet_id: str) -> Subnet:
        subnet = session.get(Subnet, subnet_id)
        if subnet is None or not (self._own(ctx, subnet) or self._net_visible(
                ctx, session.get(Network, subnet.network_id))):  # type: ignore[arg-type]
            raise not_found("subnet", subnet_id)
        return subnet
