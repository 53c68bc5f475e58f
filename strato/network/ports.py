"""Neutron ports: fixed IP choice, security group binding and the data plane objects a
port change touches; also what routers and instances use to make and drop ports."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.exceptions import StratoError
from strato.network import ipam
from strato.network.base import _bump
from strato.network.errors import BadRequest, PolicyNotAuthorized, bad, conflict, in_use, not_found
from strato.network.manager import ROUTER_GATEWAY, ROUTER_INTERFACE, Touch
from strato.network.models import (
    FloatingIP,
    Network,
    Port,
    PortIP,
    PortSecurityGroup,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from strato.network.validation import _body, _bool, _dict_list, _id_list, _ip, _str
from strato.network.views import Views, _hide_binding


class PortOps(Views):
    """The ``/v2.0/ports`` operations of ``NetworkAPI`` and the port helpers others reuse."""

    def list_ports(self, ctx: RequestContext) -> list[dict]:
        with self.db.session(readonly=True) as s:
            q = select(Port).order_by(Port.created_at, Port.id)
            if not ctx.is_admin:
                q = q.where(Port.project_id == ctx.project_id)
            return [_hide_binding(ctx, v) for v in self._port_views(s, list(s.scalars(q)))]

    def show_port(self, ctx: RequestContext, port_id: str) -> dict:
        with self.db.session(readonly=True) as s:
            return self._port_view1(s, self._get(s, ctx, Port, "port", port_id), ctx)

    PORT_ATTRS = {"name", "description", "network_id", "admin_state_up", "mac_address",
                  "fixed_ips", "device_id", "device_owner", "security_groups",
                  "port_security_enabled", "allowed_address_pairs", "binding:host_id",
                  "binding:vnic_type", "binding:profile", "project_id", "tenant_id", "tags",
                  "extra_dhcp_opts", "dns_name", "qos_policy_id", "propagate_uplink_status"}

    def _resolve_groups(self, s: Session, project: str, names: list[str]) -> list[str]:
        out = []
        for name in names:
            sg = s.get(SecurityGroup, name)
            if sg is None or sg.project_id != project:
                if name == "default":
                    sg = self._default_group(s, project)
                else:
                    found = list(s.scalars(select(SecurityGroup).where(
                        SecurityGroup.project_id == project, SecurityGroup.name == name)))
                    if len(found) != 1:
                        raise not_found("security_group", name)
                    sg = found[0]
            if sg.id not in out:
                out.append(sg.id)
        return out

    def _fixed_ips(self, s: Session, net: Network, wanted: Any) -> list[tuple[Subnet, str]]:
        """[(subnet, ip)] for a port's ``fixed_ips`` (None: one address of the first
        subnet with one free)."""
        subnets = list(s.scalars(select(Subnet).where(Subnet.network_id == net.id)
                                 .order_by(Subnet.created_at, Subnet.id)))
        if wanted is None:
            for sub in subnets:
                try:
                    return [(sub, ipam.allocate(s, sub))]
                except StratoError:
                    continue
            if subnets:
                raise conflict("IpAddressGenerationFailure", "No more IP addresses "
                               f"available on network {net.id}.")
            return []
        if not isinstance(wanted, list):
            raise BadRequest("Invalid input for fixed_ips. Reason: a list is required.")
        out: list[tuple[Subnet, str]] = []
        for item in wanted:
            if not isinstance(item, dict) or not set(item) <= {"subnet_id", "ip_address"}:
                raise BadRequest(f"Invalid input for fixed_ips. Reason: {item!r} is not a "
                                 "valid fixed IP.")
            sub = None
            if item.get("subnet_id"):
                sub = next((x for x in subnets if x.id == item["subnet_id"]), None)
                if sub is None:
                    raise bad("InvalidInput", f"Invalid input for operation: Failed to "
                              f"create port on network {net.id}, because fixed_ips "
                              "included invalid subnet " + str(item["subnet_id"]) + ".")
            ip = item.get("ip_address")
            if ip is not None:
                ip = _ip(ip, "ip_address")
                if sub is None:
                    sub = next((x for x in subnets if ipaddress.ip_address(ip) in
                                ipaddress.ip_network(x.cidr)), None)
                    if sub is None:
                        raise bad("InvalidIpForNetwork", f"IP address {ip} is not a valid "
                                  f"IP for any of the subnets on the specified network.")
            if sub is None:
                raise BadRequest("Invalid input for fixed_ips: a subnet_id or an "
                                 "ip_address is required.")
            addr = ipam.allocate(s, sub, ip)
            if any(o[1] == addr and o[0].id == sub.id for o in out):
                raise conflict("IpAddressAlreadyAllocated", f"IP address {addr} already "
                               f"allocated in subnet {sub.id}")
            out.append((sub, addr))
        return out

    @staticmethod
    def _pairs(value: Any) -> list[dict]:
        if not isinstance(value, list):
            raise BadRequest("Invalid input for allowed_address_pairs.")
        out = []
        for pair in value:
            if not isinstance(pair, dict) or not isinstance(pair.get("ip_address"), str) \
                    or not set(pair) <= {"ip_address", "mac_address"}:
                raise BadRequest(f"Invalid input for allowed_address_pairs: {pair!r}.")
            try:
                ip = str(ipaddress.ip_network(pair["ip_address"], strict=False))
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid input for allowed_address_pairs: "
                                 f"{pair['ip_address']!r} is not an address.") from None
            entry = {"ip_address": ip.removesuffix("/32")}
            if pair.get("mac_address"):
                entry["mac_address"] = str(pair["mac_address"]).lower()
            out.append(entry)
        return out

    def _new_port(self, s: Session, ctx: RequestContext, net: Network, project: str,
                  data: dict, *, owner: str = "", device_id: str = "", host: str = "",
                  groups: list[str] | None = None, preserve: bool = False,
                  dns_name: str = "", nic_index: int = 0) -> Port:
        """A port record with its addresses and groups (quota checked)."""
        if project:
            self._check_quota(s, project, "port")
        mac = data.get("mac_address")
        if mac is not None:
            if not isinstance(mac, str) or len(mac.split(":")) != 6:
                raise BadRequest(f"Invalid input for mac_address. Reason: '{mac}' is not a "
                                 "valid MAC address.")
            mac = mac.lower()
            if s.scalars(select(Port.id).where(Port.network_id == net.id,
                                               Port.mac_address == mac)).first():
                raise conflict("MacAddressInUse", f"Unable to complete operation for "
                               f"network {net.id}. The mac address {mac} is in use.")
        security = _bool(data, "port_security_enabled", net.port_security_enabled)
        port = Port(id=str(uuid.uuid4()), project_id=project, network_id=net.id,
                    name=_str(data, "name"), description=_str(data, "description"),
                    mac_address=mac or ipam.new_mac(s, net.id),
                    admin_state_up=_bool(data, "admin_state_up", True),
                    device_id=device_id or _str(data, "device_id"),
                    device_owner=owner or _str(data, "device_owner"),
                    binding_host_id=host, port_security_enabled=security,
                    allowed_address_pairs=self._pairs(data.get("allowed_address_pairs")
                                                      or []),
                    preserve_on_delete=preserve, dns_name=dns_name, nic_index=nic_index,
                    tags=_id_list(data, "tags"))
        s.add(port)
        s.flush()
        for sub, ip in self._fixed_ips(s, net, data.get("fixed_ips")):
            s.add(PortIP(port_id=port.id, subnet_id=sub.id, ip_address=ip))
        s.flush()
        if groups is None:
            groups = _id_list(data, "security_groups") if "security_groups" in data else \
                (["default"] if security and not port.device_owner.startswith("network:")
                 else [])
        if groups and not security:
            raise conflict("PortSecurityAndIPRequiredForSecurityGroups",
                           "Port security must be enabled and port must have an IP address "
                           "in order to use security groups.")
        for gid in self._resolve_groups(s, project, groups):
            s.add(PortSecurityGroup(port_id=port.id, security_group_id=gid))
        s.flush()
        return port

    def create_port(self, ctx: RequestContext, body: Any) -> dict:
        data = _body(body, "port", self.PORT_ATTRS, ("network_id",))
        self._require_dataplane()
        project = self._target_project(ctx, data)
        self._enforce(ctx, "create_port", project)
        host = _str(data, "binding:host_id")
        if host:
            self._enforce(ctx, "create_port:binding:host_id", project)
        if str(data.get("device_owner") or "").startswith("network:") and not ctx.is_admin:
            raise PolicyNotAuthorized("rule:create_port:device_owner is disallowed by "
                                      "policy")

        def work(s: Session, touch: Touch) -> dict:
            net = self._get_network(s, ctx, data["network_id"])
            if net.router_external and not ctx.is_admin and net.project_id != project:
                raise PolicyNotAuthorized("rule:create_port is disallowed by policy")
            port = self._new_port(s, ctx, net, project, data, host=host,
                                  dns_name=_str(data, "dns_name"))
            return self._port_view1(s, port, ctx)

        return self._change(work)

    def update_port(self, ctx: RequestContext, port_id: str, body: Any) -> dict:
        data = _body(body, "port", self.PORT_ATTRS - {"network_id", "project_id",
                                                       "tenant_id"})
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> dict:
            port = self._get(s, ctx, Port, "port", port_id)
            self._enforce(ctx, "update_port", port.project_id)
            net = s.get(Network, port.network_id)
            assert net is not None
            for key in ("name", "description", "device_id", "device_owner", "dns_name"):
                if key in data:
                    setattr(port, key, _str(data, key))
            if "binding:host_id" in data:
                self._enforce(ctx, "update_port:binding:host_id", port.project_id)
                port.binding_host_id = _str(data, "binding:host_id")
            if "admin_state_up" in data:
                port.admin_state_up = _bool(data, "admin_state_up", True)
            if "port_security_enabled" in data:
                port.port_security_enabled = _bool(data, "port_security_enabled", True)
            if "allowed_address_pairs" in data:
                port.allowed_address_pairs = self._pairs(data["allowed_address_pairs"] or [])
            if "tags" in data:
                port.tags = _id_list(data, "tags")
            if "mac_address" in data and data["mac_address"] != port.mac_address:
                raise BadRequest("Invalid input for operation: the MAC address of a port "
                                 "cannot be changed.")
            if "fixed_ips" in data:
                wanted = _dict_list(data, "fixed_ips")
                old = {(p.subnet_id, p.ip_address) for p in s.scalars(
                    select(PortIP).where(PortIP.port_id == port.id))}
                keep = [i for i in wanted
                        if (i.get("subnet_id"), i.get("ip_address")) in old]
                s.execute(delete(PortIP).where(PortIP.port_id == port.id))
                s.flush()
                for sub, ip in self._fixed_ips(s, net, keep + [
                        i for i in wanted if i not in keep]):
                    s.add(PortIP(port_id=port.id, subnet_id=sub.id, ip_address=ip))
                touch.networks.add(port.network_id)
                self._touch_remote(s, port.id, touch)
            if "security_groups" in data:
                self._touch_remote(s, port.id, touch)
                s.execute(delete(PortSecurityGroup).where(
                    PortSecurityGroup.port_id == port.id))
                groups = _id_list(data, "security_groups")
                if groups and not port.port_security_enabled:
                    raise conflict("PortSecurityAndIPRequiredForSecurityGroups",
                                   "Port security must be enabled and port must have an IP "
                                   "address in order to use security groups.")
                for gid in self._resolve_groups(s, port.project_id, groups):
                    s.add(PortSecurityGroup(port_id=port.id, security_group_id=gid))
                s.flush()
                self._touch_remote(s, port.id, touch)
            if port.port_security_enabled is False and s.scalars(select(
                    PortSecurityGroup).where(PortSecurityGroup.port_id == port.id)).first():
                raise conflict("PortSecurityPortHasSecurityGroup", "Port has security "
                               "group associated. Cannot disable port security or ip "
                               "address until security group is removed")
            _bump(port)
            touch.networks.add(port.network_id)
            s.flush()
            return self._port_view1(s, port, ctx)

        return self._change(work)

    def _touch_remote(self, s: Session, port_id: str, touch: Touch) -> None:
        """Networks whose filters name ``port_id``'s groups as a remote group."""
        groups = list(s.scalars(select(PortSecurityGroup.security_group_id).where(
            PortSecurityGroup.port_id == port_id)))
        if not groups:
            return
        referring = select(SecurityGroupRule.security_group_id).where(
            SecurityGroupRule.remote_group_id.in_(groups))
        touch.networks.update(s.scalars(select(Port.network_id).join(
            PortSecurityGroup, PortSecurityGroup.port_id == Port.id).where(
            PortSecurityGroup.security_group_id.in_(referring))))

    def _touch_groups(self, s: Session, group_ids: list[str], touch: Touch) -> None:
        touch.networks.update(s.scalars(select(Port.network_id).join(
            PortSecurityGroup, PortSecurityGroup.port_id == Port.id).where(
            PortSecurityGroup.security_group_id.in_(group_ids))))

    def _drop_port(self, s: Session, port: Port, touch: Touch) -> None:
        """Delete a port record, disassociating its floating IPs."""
        for fip in s.scalars(select(FloatingIP).where(FloatingIP.port_id == port.id)):
            if fip.router_id:
                touch.routers.add(fip.router_id)
            fip.port_id = fip.fixed_ip_address = fip.router_id = None
            fip.status = "DOWN"
            _bump(fip)
        self._touch_remote(s, port.id, touch)
        s.flush()
        s.delete(port)
        touch.networks.add(port.network_id)

    def delete_port(self, ctx: RequestContext, port_id: str) -> None:
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> None:
            port = self._get(s, ctx, Port, "port", port_id)
            self._enforce(ctx, "delete_port", port.project_id)
            if port.device_owner in (ROUTER_INTERFACE, ROUTER_GATEWAY) and \
                    s.get(Router, port.device_id) is not None:
                raise in_use("L3PortInUse", f"Port {port_id} cannot be deleted directly "
                             f"via the port API: has device owner {port.device_owner}.")
            self._drop_port(s, port, touch)

        self._change(work)
