"""Neutron floating IPs: allocation on an external network and association with a port
reachable through a router."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.exceptions import StratoError
from strato.network import ipam
from strato.network.base import _bump
from strato.network.errors import PolicyNotAuthorized, bad, conflict, not_found
from strato.network.manager import ROUTER_INTERFACE, Touch
from strato.network.models import FloatingIP, Port, PortIP, Router, Subnet
from strato.network.validation import _body, _id_list, _ip, _str
from strato.network.views import Views


class FloatingIPOps(Views):
    """The ``/v2.0/floatingips`` operations of ``NetworkAPI``."""

    def list_floatingips(self, ctx: RequestContext) -> list[dict]:
        with self.db.session(readonly=True) as s:
            q = select(FloatingIP).order_by(FloatingIP.created_at, FloatingIP.id)
            if not ctx.is_admin:
                q = q.where(FloatingIP.project_id == ctx.project_id)
            return self._fip_views(s, list(s.scalars(q)))

    def show_floatingip(self, ctx: RequestContext, fip_id: str) -> dict:
        with self.db.session(readonly=True) as s:
            return self._fip_views(s, [self._get(s, ctx, FloatingIP, "floatingip",
                                                 fip_id)])[0]

    def _associate(self, s: Session, ctx: RequestContext, fip: FloatingIP,
                   port_id: str | None, fixed: str | None, touch: Touch) -> None:
        if fip.router_id:
            touch.routers.add(fip.router_id)
        if port_id is None:
            fip.port_id = fip.fixed_ip_address = fip.router_id = None
            fip.status = "DOWN"
            return
        port = self._get(s, ctx, Port, "port", port_id)
        if port.project_id != fip.project_id and not ctx.is_admin:
            raise not_found("port", port_id)
        ips = list(s.scalars(select(PortIP).where(PortIP.port_id == port.id)))
        if fixed is not None:
            fixed = _ip(fixed, "fixed_ip_address")
            ips = [i for i in ips if i.ip_address == fixed]
            if not ips:
                raise bad("BadRequest", f"Bad floatingip request: Port {port_id} does not "
                          f"have fixed ip {fixed}.")
        ips = [i for i in ips if ipaddress.ip_address(i.ip_address).version == 4]
        if not ips:
            raise bad("BadRequest", f"Bad floatingip request: Port {port_id} does not have "
                      "any IPv4 address.")
        pip = ips[0]
        other = s.scalars(select(FloatingIP).where(
            FloatingIP.port_id == port.id, FloatingIP.fixed_ip_address == pip.ip_address,
            FloatingIP.id != fip.id)).first()
        if other is not None:
            raise conflict("FloatingIPPortAlreadyAssociated", f"Cannot associate floating "
                           f"IP {fip.floating_ip_address} ({fip.id}) with port {port.id} "
                           f"using fixed IP {pip.ip_address}, as that fixed IP already "
                           f"has a floating IP on external network "
                           f"{other.floating_network_id}.")
        router = s.scalars(select(Router).where(
            Router.id.in_(select(Port.device_id).join(PortIP).where(
                Port.device_owner == ROUTER_INTERFACE, PortIP.subnet_id == pip.subnet_id)),
            Router.gw_port_id.in_(select(Port.id).where(
                Port.network_id == fip.floating_network_id)))).first()
        if router is None:
            err = not_found("floatingip", fip.id)
            err.neutron_type = "ExternalGatewayForFloatingIPNotFound"
            err.message = (f"External network {fip.floating_network_id} is not reachable "
                           f"from subnet {pip.subnet_id}.  Therefore, cannot associate "
                           f"Port {port.id} with a Floating IP.")
            raise err
        fip.port_id, fip.fixed_ip_address, fip.router_id = port.id, pip.ip_address, router.id
        fip.status = "ACTIVE"
        touch.routers.add(router.id)

    FIP_ATTRS = {"floating_network_id", "floating_ip_address", "subnet_id", "port_id",
                 "fixed_ip_address", "description", "project_id", "tenant_id", "tags",
                 "dns_name", "dns_domain", "qos_policy_id"}

    def create_floatingip(self, ctx: RequestContext, body: Any) -> dict:
        data = _body(body, "floatingip", self.FIP_ATTRS, ("floating_network_id",))
        self._require_dataplane()
        project = self._target_project(ctx, data)
        self._enforce(ctx, "create_floatingip", project)
        if data.get("floating_ip_address") and not ctx.is_admin:
            raise PolicyNotAuthorized("rule:create_floatingip:floating_ip_address is "
                                      "disallowed by policy")

        def work(s: Session, touch: Touch) -> dict:
            net = self._get_network(s, ctx, data["floating_network_id"])
            if not net.router_external:
                raise bad("BadRequest", f"Bad floatingip request: Network "
                          f"{net.id} is not a valid external network.")
            self._check_quota(s, project, "floatingip")
            subnets = list(s.scalars(select(Subnet).where(Subnet.network_id == net.id)
                                     .order_by(Subnet.created_at, Subnet.id)))
            if data.get("subnet_id"):
                subnets = [x for x in subnets if x.id == data["subnet_id"]]
                if not subnets:
                    raise not_found("subnet", data["subnet_id"])
            wanted = data.get("floating_ip_address")
            if wanted:
                wanted = _ip(wanted, "floating_ip_address")
                subnets = [x for x in subnets if ipaddress.ip_address(wanted) in
                           ipaddress.ip_network(x.cidr)]
                if not subnets:
                    raise bad("InvalidIpForNetwork", f"IP address {wanted} is not a valid "
                              "IP for any of the subnets on the specified network.")
            addr = sub = None
            for sub in subnets:
                try:
                    addr = ipam.allocate(s, sub, wanted)
                    break
                except StratoError:
                    if wanted:
                        raise
            if addr is None or sub is None:
                raise conflict("IpAddressGenerationFailure", "No more IP addresses "
                               f"available on network {net.id}.")
            fip = FloatingIP(id=str(uuid.uuid4()), project_id=project,
                             floating_network_id=net.id, floating_subnet_id=sub.id,
                             floating_ip_address=addr, description=_str(data, "description"),
                             tags=_id_list(data, "tags"))
            s.add(fip)
            s.flush()
            if data.get("port_id"):
                self._associate(s, ctx, fip, data["port_id"], data.get("fixed_ip_address"),
                                touch)
            s.flush()
            return self._fip_views(s, [fip])[0]

        return self._change(work)

    def update_floatingip(self, ctx: RequestContext, fip_id: str, body: Any) -> dict:
        data = _body(body, "floatingip", {"port_id", "fixed_ip_address", "description",
                                          "tags", "qos_policy_id"})
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> dict:
            fip = self._get(s, ctx, FloatingIP, "floatingip", fip_id)
            self._enforce(ctx, "update_floatingip", fip.project_id)
            if "description" in data:
                fip.description = _str(data, "description")
            if "tags" in data:
                fip.tags = _id_list(data, "tags")
            if "port_id" in data:
                self._associate(s, ctx, fip, data["port_id"], data.get("fixed_ip_address"),
                                touch)
            _bump(fip)
            s.flush()
            return self._fip_views(s, [fip])[0]

        return self._change(work)

    def delete_floatingip(self, ctx: RequestContext, fip_id: str) -> None:
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> None:
            fip = self._get(s, ctx, FloatingIP, "floatingip", fip_id)
            self._enforce(ctx, "delete_floatingip", fip.project_id)
            if fip.router_id:
                touch.routers.add(fip.router_id)
            s.delete(fip)

        self._change(work)
