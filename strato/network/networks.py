"""Neutron networks: create, update, delete (with their DHCP ports and subnets)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.network.base import _bump
from strato.network.errors import BadRequest, PolicyNotAuthorized, in_use
from strato.network.manager import DHCP_OWNER, Touch
from strato.network.models import FloatingIP, Network, Port, Subnet
from strato.network.validation import _body, _bool, _id_list, _str
from strato.network.views import Views


class NetworkOps(Views):
    """The ``/v2.0/networks`` operations of ``NetworkAPI``."""

    def list_networks(self, ctx: RequestContext) -> list[dict]:
        with self.db.session(readonly=True) as s:
            subnets: dict[str, list[str]] = {}
            for sid, nid in s.execute(select(Subnet.id, Subnet.network_id)
                                      .order_by(Subnet.created_at, Subnet.id)):
                subnets.setdefault(nid, []).append(sid)
            return [self._network_view(n, subnets.get(n.id, [])) for n in s.scalars(
                select(Network).order_by(Network.created_at, Network.id))
                if self._net_visible(ctx, n)]

    def show_network(self, ctx: RequestContext, network_id: str) -> dict:
        with self.db.session(readonly=True) as s:
            net = self._get_network(s, ctx, network_id)
            self._enforce(ctx, "get_network", net.project_id) if not (
                net.shared or net.router_external) else None
            return self._show_network(s, net)

    NETWORK_ATTRS = {"name", "description", "admin_state_up", "shared", "router:external",
                     "mtu", "port_security_enabled", "project_id", "tenant_id", "tags",
                     "availability_zone_hints", "provider:network_type",
                     "provider:physical_network", "provider:segmentation_id",
                     "dns_domain", "qos_policy_id", "is_default"}

    def create_network(self, ctx: RequestContext, body: Any) -> dict:
        data = _body(body, "network", self.NETWORK_ATTRS)
        self._require_dataplane()
        project = self._target_project(ctx, data)
        self._enforce(ctx, "create_network", project)
        shared = _bool(data, "shared", False)
        external = _bool(data, "router:external", False)
        if shared:
            self._enforce(ctx, "create_network:shared", project)
        if external:
            self._enforce(ctx, "create_network:router:external", project)
        mtu = data.get("mtu", self.conf.network.global_physnet_mtu)
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not \
                68 <= mtu <= self.conf.network.global_physnet_mtu:
            raise BadRequest(f"Invalid input for mtu. Reason: '{mtu}' is not in the range "
                             f"68 to {self.conf.network.global_physnet_mtu}.")

        def work(s: Session, touch: Touch) -> dict:
            self._check_quota(s, project, "network")
            net = Network(id=str(uuid.uuid4()), project_id=project,
                          name=_str(data, "name"), description=_str(data, "description"),
                          admin_state_up=_bool(data, "admin_state_up", True),
                          shared=shared, router_external=external, mtu=mtu,
                          port_security_enabled=_bool(data, "port_security_enabled", True),
                          tags=_id_list(data, "tags"))
            s.add(net)
            s.flush()
            touch.networks.add(net.id)
            return self._show_network(s, net)

        return self._change(work)

    def update_network(self, ctx: RequestContext, network_id: str, body: Any) -> dict:
        data = _body(body, "network", self.NETWORK_ATTRS - {"project_id", "tenant_id"})
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> dict:
            net = self._get_network(s, ctx, network_id)
            self._enforce(ctx, "update_network", net.project_id)
            for key, attr in (("shared", "shared"), ("router:external", "router_external")):
                if key in data and _bool(data, key, False) != getattr(net, attr):
                    self._enforce(ctx, f"update_network:{key}", net.project_id)
                    setattr(net, attr, _bool(data, key, False))
            if "name" in data:
                net.name = _str(data, "name")
            if "description" in data:
                net.description = _str(data, "description")
            if "admin_state_up" in data:
                net.admin_state_up = _bool(data, "admin_state_up", True)
            if "port_security_enabled" in data:
                net.port_security_enabled = _bool(data, "port_security_enabled", True)
            if "mtu" in data and data["mtu"] != net.mtu:
                raise BadRequest("Invalid input for operation: changing mtu is not "
                                 "supported.")
            if "tags" in data:
                net.tags = _id_list(data, "tags")
            _bump(net)
            touch.networks.add(net.id)
            return self._show_network(s, net)

        return self._change(work)

    def delete_network(self, ctx: RequestContext, network_id: str) -> None:
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> None:
            net = self._get_network(s, ctx, network_id)
            self._enforce(ctx, "delete_network", net.project_id)
            if not self._own(ctx, net):
                raise PolicyNotAuthorized("rule:delete_network is disallowed by policy")
            busy = s.scalar(select(func.count()).select_from(Port).where(
                Port.network_id == network_id, Port.device_owner != DHCP_OWNER))
            fips = s.scalar(select(func.count()).select_from(FloatingIP).where(
                FloatingIP.floating_network_id == network_id))
            if busy or fips:
                raise in_use("NetworkInUse", f"Unable to complete operation on network "
                             f"{network_id}. There are one or more ports still in use on "
                             "the network.")
            s.execute(delete(Port).where(Port.network_id == network_id))
            s.execute(delete(Subnet).where(Subnet.network_id == network_id))
            s.delete(net)
            touch.removed_networks.add(network_id)

        self._change(work)
