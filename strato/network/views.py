"""Neutron's response shapes: what each resource looks like on the wire, in one place
so that list, show, create and update answer alike."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.network.base import NetworkBase
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


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _standard(row: Any) -> dict:
    return {"description": row.description, "tags": list(row.tags or []),
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
            "revision_number": row.revision_number}


def _owner(row: Any) -> dict:
    return {"tenant_id": row.project_id, "project_id": row.project_id}


# Neutron shows a port's binding to admins only (the host is the operator's business)
ADMIN_ONLY_BINDING = ("binding:host_id", "binding:vif_type", "binding:vif_details",
                      "binding:profile")


def _hide_binding(ctx: RequestContext, view: dict) -> dict:
    if ctx.is_admin:
        return view
    return {k: v for k, v in view.items() if k not in ADMIN_ONLY_BINDING}


class Views(NetworkBase):
    """The views of ``NetworkAPI``; some read related rows (a port's addresses and groups)."""

    def _network_view(self, net: Network, subnets: list[str]) -> dict:
        return {"id": net.id, "name": net.name, **_owner(net),
                "admin_state_up": net.admin_state_up, "mtu": net.mtu, "status": net.status,
                "subnets": subnets, "shared": net.shared,
                "availability_zone_hints": [], "availability_zones": ["nova"],
                "ipv4_address_scope": None, "ipv6_address_scope": None,
                "router:external": net.router_external, "is_default": False,
                "port_security_enabled": net.port_security_enabled,
                "l2_adjacency": True, **_standard(net)}

    def _show_network(self, s: Session, net: Network) -> dict:
        return self._network_view(net, list(s.scalars(select(Subnet.id).where(
            Subnet.network_id == net.id).order_by(Subnet.created_at, Subnet.id))))

    def _subnet_view(self, sub: Subnet) -> dict:
        return {"id": sub.id, "name": sub.name, **_owner(sub), "network_id": sub.network_id,
                "ip_version": sub.ip_version, "subnetpool_id": None,
                "enable_dhcp": sub.enable_dhcp, "ipv6_ra_mode": None,
                "ipv6_address_mode": None, "gateway_ip": sub.gateway_ip, "cidr": sub.cidr,
                "allocation_pools": list(sub.allocation_pools),
                "host_routes": list(sub.host_routes),
                "dns_nameservers": list(sub.dns_nameservers), "service_types": [],
                "segment_id": None, "dns_publish_fixed_ip": False, **_standard(sub)}

    def _port_views(self, s: Session, ports: list[Port]) -> list[dict]:
        ids = [p.id for p in ports]
        ips: dict[str, list[dict]] = {}
        groups: dict[str, list[str]] = {}
        for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
            for pip in s.scalars(select(PortIP).where(PortIP.port_id.in_(chunk))
                                 .order_by(PortIP.ip_address)):
                ips.setdefault(pip.port_id, []).append(
                    {"subnet_id": pip.subnet_id, "ip_address": pip.ip_address})
            for b in s.scalars(select(PortSecurityGroup).where(
                    PortSecurityGroup.port_id.in_(chunk))):
                groups.setdefault(b.port_id, []).append(b.security_group_id)
        return [self._port_view(p, ips.get(p.id, []), sorted(groups.get(p.id, [])))
                for p in ports]

    @staticmethod
    def _port_view(p: Port, ips: list[dict], groups: list[str]) -> dict:
        bound = bool(p.binding_host_id)
        return {"id": p.id, "name": p.name, "network_id": p.network_id, **_owner(p),
                "mac_address": p.mac_address, "admin_state_up": p.admin_state_up,
                "status": p.status, "device_id": p.device_id,
                "device_owner": p.device_owner, "fixed_ips": ips,
                "allowed_address_pairs": list(p.allowed_address_pairs),
                "extra_dhcp_opts": [], "security_groups": groups,
                "port_security_enabled": p.port_security_enabled,
                "binding:host_id": p.binding_host_id,
                "binding:vif_type": "tap" if bound else "unbound",
                "binding:vnic_type": "normal", "binding:profile": {},
                "binding:vif_details": {"port_filter": True} if bound else {},
                "ip_allocation": "immediate", "propagate_uplink_status": False,
                **_standard(p)}

    def _port_view1(self, s: Session, p: Port, ctx: RequestContext | None = None) -> dict:
        view = self._port_views(s, [p])[0]
        return view if ctx is None else _hide_binding(ctx, view)

    def _rule_view(self, r: SecurityGroupRule, default_ids: set[str]) -> dict:
        return {"id": r.id, "security_group_id": r.security_group_id,
                "direction": r.direction, "ethertype": r.ethertype, "protocol": r.protocol,
                "port_range_min": r.port_range_min, "port_range_max": r.port_range_max,
                "remote_ip_prefix": r.remote_ip_prefix, "remote_group_id": r.remote_group_id,
                "remote_address_group_id": None,
                "normalized_cidr": r.remote_ip_prefix,
                "belongs_to_default_sg": r.security_group_id in default_ids,
                **_owner(r), **_standard(r)}

    def _group_views(self, s: Session, groups: list[SecurityGroup]) -> list[dict]:
        ids = [g.id for g in groups]
        defaults = {g.id for g in groups if g.is_default}
        rules: dict[str, list[dict]] = {}
        if ids:
            for r in s.scalars(select(SecurityGroupRule).where(
                    SecurityGroupRule.security_group_id.in_(ids))
                    .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)):
                rules.setdefault(r.security_group_id, []).append(self._rule_view(r, defaults))
        return [{"id": g.id, "name": g.name, **_owner(g), "stateful": g.stateful,
                 "shared": False, "security_group_rules": rules.get(g.id, []),
                 **_standard(g)} for g in groups]

    def _router_view(self, s: Session, r: Router) -> dict:
        gw_info = None
        if r.gw_port_id:
            gw = s.get(Port, r.gw_port_id)
            if gw is not None:
                gw_info = {"network_id": gw.network_id, "enable_snat": r.enable_snat,
                           "external_fixed_ips": [
                               {"subnet_id": p.subnet_id, "ip_address": p.ip_address}
                               for p in s.scalars(select(PortIP).where(
                                   PortIP.port_id == gw.id))]}
        return {"id": r.id, "name": r.name, **_owner(r), "admin_state_up": r.admin_state_up,
                "status": r.status, "external_gateway_info": gw_info, "routes": [],
                "distributed": False, "ha": False, "availability_zone_hints": [],
                "availability_zones": ["nova"], "flavor_id": None, **_standard(r)}

    def _fip_views(self, s: Session, fips: list[FloatingIP]) -> list[dict]:
        ports = {p.id: p for p in s.scalars(select(Port).where(Port.id.in_(
            [f.port_id for f in fips if f.port_id])))} if fips else {}
        out = []
        for f in fips:
            p = ports.get(f.port_id or "")
            details = None if p is None else {
                "name": p.name, "network_id": p.network_id, "mac_address": p.mac_address,
                "admin_state_up": p.admin_state_up, "status": p.status,
                "device_id": p.device_id, "device_owner": p.device_owner}
            out.append({"id": f.id, **_owner(f), "floating_network_id": f.floating_network_id,
                        "floating_ip_address": f.floating_ip_address,
                        "fixed_ip_address": f.fixed_ip_address, "port_id": f.port_id,
                        "router_id": f.router_id, "status": f.status,
                        "port_details": details, "qos_policy_id": None,
                        "port_forwardings": [], **_standard(f)})
        return out
