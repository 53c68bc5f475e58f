"""Neutron subnets: address pools, gateway, DNS and host routes, and the network's DHCP
address on each subnet."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.network import ipam
from strato.network.base import _bump
from strato.network.errors import BadRequest, PolicyNotAuthorized, bad, in_use
from strato.network.manager import DHCP_OWNER, Touch
from strato.network.models import FloatingIP, Network, Port, PortIP, Subnet
from strato.network.validation import _body, _bool, _dict_list, _id_list, _ip, _str
from strato.network.views import Views


class SubnetOps(Views):
    """The ``/v2.0/subnets`` operations of ``NetworkAPI``."""

    def list_subnets(self, ctx: RequestContext) -> list[dict]:
        with self.db.session(readonly=True) as s:
            nets = {n.id: n for n in s.scalars(select(Network))}
            return [self._subnet_view(sub) for sub in s.scalars(
                select(Subnet).order_by(Subnet.created_at, Subnet.id))
                if self._own(ctx, sub) or self._net_visible(ctx, nets[sub.network_id])]

    def show_subnet(self, ctx: RequestContext, subnet_id: str) -> dict:
        with self.db.session(readonly=True) as s:
            return self._subnet_view(self._get_subnet(s, ctx, subnet_id))

    SUBNET_ATTRS = {"name", "description", "network_id", "ip_version", "cidr", "gateway_ip",
                    "enable_dhcp", "allocation_pools", "dns_nameservers", "host_routes",
                    "project_id", "tenant_id", "tags", "subnetpool_id", "prefixlen",
                    "ipv6_ra_mode", "ipv6_address_mode", "service_types", "segment_id",
                    "use_default_subnetpool", "dns_publish_fixed_ip"}

    @staticmethod
    def _dns(data: dict) -> list[str]:
        return [_ip(v, "dns_nameservers") for v in _id_list(data, "dns_nameservers")]

    @staticmethod
    def _routes(data: dict, net: ipaddress.IPv4Network) -> list[dict]:
        routes = data.get("host_routes") or []
        out = []
        if not isinstance(routes, list):
            raise BadRequest("Invalid input for host_routes.")
        for r in routes:
            if not isinstance(r, dict) or set(r) != {"destination", "nexthop"} or \
                    not isinstance(r["destination"], str):
                raise BadRequest(f"Invalid input for host_routes. Reason: {r!r} is not a "
                                 "valid host route.")
            try:
                dest = str(ipaddress.ip_network(r["destination"]))
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid input for host_routes: {r['destination']!r} is "
                                 "not a valid network.") from None
            out.append({"destination": dest, "nexthop": _ip(r["nexthop"], "nexthop")})
        return out

    def create_subnet(self, ctx: RequestContext, body: Any) -> dict:
        data = _body(body, "subnet", self.SUBNET_ATTRS, ("network_id",))
        self._require_dataplane()
        if data.get("ip_version", 4) == 6:
            raise bad("InvalidInput", "IPv6 is not supported.")
        if data.get("ip_version", 4) != 4:
            raise BadRequest(f"Invalid input for ip_version. Reason: {data['ip_version']!r}"
                             " is not in [4, 6].")
        if not data.get("cidr"):
            raise BadRequest("Bad subnets request: a cidr must be specified in the absence "
                             "of a subnet pool.")
        if not isinstance(data["cidr"], str):
            raise BadRequest("Invalid input for cidr.")
        cidr = ipam.parse_cidr(data["cidr"])
        project = self._target_project(ctx, data)
        self._enforce(ctx, "create_subnet", project)
        first, last = ipam.hosts(cidr)
        if "gateway_ip" in data and data["gateway_ip"] is None:
            gateway = None
        elif data.get("gateway_ip") is not None:
            gateway = _ip(data["gateway_ip"], "gateway_ip")
            if not first <= int(ipaddress.ip_address(gateway)) <= last:
                raise bad("InvalidInput", f"Invalid input for operation: Gateway IP "
                          f"{gateway} is not in subnet {cidr}.")
        else:
            gateway = str(ipaddress.ip_address(first))
        pools = _dict_list(data, "allocation_pools")
        pools = ipam.check_pools(cidr, pools, gateway) if pools else \
            ipam.default_pools(cidr, gateway)
        dns = self._dns(data)
        routes = self._routes(data, cidr)
        enable_dhcp = _bool(data, "enable_dhcp", True)

        def work(s: Session, touch: Touch) -> dict:
            net = self._get_network(s, ctx, data["network_id"])
            if net.project_id != project and not ctx.is_admin:
                raise PolicyNotAuthorized("rule:create_subnet is disallowed by policy")
            self._check_quota(s, project, "subnet")
            for other in s.scalars(select(Subnet).where(Subnet.network_id == net.id)):
                if ipaddress.ip_network(other.cidr).overlaps(cidr):
                    raise bad("InvalidInput", f"Invalid input for operation: Requested "
                              f"subnet with cidr: {cidr} for network: {net.id} overlaps "
                              "with another subnet.")
            sub = Subnet(id=str(uuid.uuid4()), project_id=project, network_id=net.id,
                         name=_str(data, "name"), description=_str(data, "description"),
                         ip_version=4, cidr=str(cidr), gateway_ip=gateway,
                         enable_dhcp=enable_dhcp, allocation_pools=pools,
                         dns_nameservers=dns, host_routes=routes,
                         tags=_id_list(data, "tags"))
            s.add(sub)
            s.flush()
            if enable_dhcp:
                self._dhcp_address(s, net, sub)
            touch.networks.add(net.id)
            return self._subnet_view(sub)

        return self._change(work)

    def _dhcp_address(self, s: Session, net: Network, sub: Subnet) -> None:
        """The network's DHCP port (made with the first DHCP subnet) takes an address
        on ``sub``, as Neutron's DHCP agent does."""
        port = s.scalars(select(Port).where(Port.network_id == net.id,
                                            Port.device_owner == DHCP_OWNER)).first()
        if port is None:
            port = Port(id=str(uuid.uuid4()), project_id=net.project_id,
                        network_id=net.id, mac_address=ipam.new_mac(s, net.id),
                        device_id=f"dhcp{net.id}", device_owner=DHCP_OWNER,
                        binding_host_id=self.host, status="ACTIVE",
                        port_security_enabled=False)
            s.add(port)
            s.flush()
        s.add(PortIP(port_id=port.id, subnet_id=sub.id, ip_address=ipam.allocate(s, sub)))
        s.flush()

    def update_subnet(self, ctx: RequestContext, subnet_id: str, body: Any) -> dict:
        data = _body(body, "subnet", {"name", "description", "gateway_ip", "enable_dhcp",
                                      "dns_nameservers", "host_routes", "allocation_pools",
                                      "tags"})
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> dict:
            sub = self._get_subnet(s, ctx, subnet_id)
            if not self._own(ctx, sub):
                raise PolicyNotAuthorized("rule:update_subnet is disallowed by policy")
            self._enforce(ctx, "update_subnet", sub.project_id)
            net = s.get(Network, sub.network_id)
            assert net is not None
            cidr = ipaddress.ip_network(sub.cidr)
            if "name" in data:
                sub.name = _str(data, "name")
            if "description" in data:
                sub.description = _str(data, "description")
            if "dns_nameservers" in data:
                sub.dns_nameservers = self._dns(data)
            if "host_routes" in data:
                sub.host_routes = self._routes(data, cidr)  # type: ignore[arg-type]
            if "gateway_ip" in data:
                sub.gateway_ip = None if data["gateway_ip"] is None else \
                    _ip(data["gateway_ip"], "gateway_ip")
            if "allocation_pools" in data:
                sub.allocation_pools = ipam.check_pools(
                    cidr, _dict_list(data, "allocation_pools"),  # type: ignore[arg-type]
                    sub.gateway_ip)
            if "tags" in data:
                sub.tags = _id_list(data, "tags")
            if "enable_dhcp" in data:
                dhcp = _bool(data, "enable_dhcp", True)
                if dhcp and not sub.enable_dhcp:
                    sub.enable_dhcp = True
                    self._dhcp_address(s, net, sub)
                elif not dhcp and sub.enable_dhcp:
                    sub.enable_dhcp = False
                    s.execute(delete(PortIP).where(PortIP.subnet_id == sub.id, PortIP.port_id.in_(
                        select(Port.id).where(Port.device_owner == DHCP_OWNER))))
            _bump(sub)
            touch.networks.add(sub.network_id)
            return self._subnet_view(sub)

        return self._change(work)

    def delete_subnet(self, ctx: RequestContext, subnet_id: str) -> None:
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> None:
            sub = self._get_subnet(s, ctx, subnet_id)
            if not self._own(ctx, sub):
                raise PolicyNotAuthorized("rule:delete_subnet is disallowed by policy")
            self._enforce(ctx, "delete_subnet", sub.project_id)
            users = s.scalar(select(func.count()).select_from(PortIP).join(Port).where(
                PortIP.subnet_id == subnet_id, Port.device_owner != DHCP_OWNER))
            fips = s.scalar(select(func.count()).select_from(FloatingIP).where(
                FloatingIP.floating_subnet_id == subnet_id))
            if users or fips:
                raise in_use("SubnetInUse", f"Unable to complete operation on subnet "
                             f"{subnet_id}: One or more ports have an IP allocation from "
                             "this subnet.")
            dhcp_ports = list(s.scalars(select(PortIP.port_id).where(
                PortIP.subnet_id == subnet_id)))
            s.execute(delete(PortIP).where(PortIP.subnet_id == subnet_id))
            for pid in dhcp_ports:
                if not s.scalar(select(func.count()).select_from(PortIP).where(
                        PortIP.port_id == pid)):
                    s.execute(delete(Port).where(Port.id == pid))
            s.delete(sub)
            touch.networks.add(sub.network_id)

        self._change(work)
