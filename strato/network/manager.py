"""From the tables to the data plane: the whole plan of a network or a router, applied.

A single host for now: every router, and every network with something on it, lives on
the host running the API (``[DEFAULT] host``), and the API applies plans synchronously,
inside the transaction that changed the tables (a failed apply rolls the change back;
the data plane is then re-applied from what stayed committed).  With several hosts this
becomes a job per host, the plans unchanged."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato.config import Config
from strato.db import Database
from strato.exceptions import StratoError
from strato.network.dataplane import (
    Dataplane,
    FloatingPlan,
    NetworkPlan,
    PortPlan,
    RouterInterfacePlan,
    RouterPlan,
    RulePlan,
    SubnetPlan,
)
from strato.network.models import (
    FloatingIP,
    Network,
    Port,
    PortIP,
    PortSecurityGroup,
    Router,
    SecurityGroupRule,
    Subnet,
)

LOG = logging.getLogger("strato.network")

DHCP_OWNER = "network:dhcp"
ROUTER_INTERFACE = "network:router_interface"
ROUTER_GATEWAY = "network:router_gateway"
PROTOCOL_NAMES = {"6": "tcp", "17": "udp", "1": "icmp"}


class ApplyFailed(StratoError):
    status = 500
    neutron_type = "NetworkApplyFailed"
    message = "The network configuration could not be applied on this host."


@dataclass
class Touch:
    """What a change needs re-applied (or removed) on the data plane."""

    networks: set[str] = field(default_factory=set)
    routers: set[str] = field(default_factory=set)
    removed_networks: set[str] = field(default_factory=set)
    removed_routers: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.networks or self.routers or self.removed_networks
                    or self.removed_routers)


def is_guest(port: Port) -> bool:
    return port.device_owner.startswith("compute:")


class NetworkManager:
    def __init__(self, db: Database, conf: Config, dataplane: Dataplane | None) -> None:
        self.db = db
        self.conf = conf
        self.host = conf.DEFAULT.host
        self.dataplane = dataplane

    # ------------------------------------------------------------ plans
    def rules_for(self, session: Session, group_ids: list[str]) -> tuple[RulePlan, ...]:
        rules: list[RulePlan] = []
        if not group_ids:
            return ()
        for rule in session.scalars(select(SecurityGroupRule).where(
                SecurityGroupRule.security_group_id.in_(group_ids))
                .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)):
            if rule.remote_group_id:
                cidrs = tuple(sorted({
                    ip for ip in session.scalars(
                        select(PortIP.ip_address).join(
                            PortSecurityGroup, PortSecurityGroup.port_id == PortIP.port_id)
                        .where(PortSecurityGroup.security_group_id == rule.remote_group_id))
                    if (ipaddress.ip_address(ip).version == 4) == (rule.ethertype == "IPv4")}))
                if not cidrs:
                    continue  # a remote group with no members allows nothing
            elif rule.remote_ip_prefix:
                cidrs = (rule.remote_ip_prefix,)
            else:
                cidrs = ()
            proto = rule.protocol
            if proto is not None:
                proto = PROTOCOL_NAMES.get(proto, proto)
            rules.append(RulePlan(direction=rule.direction, ethertype=rule.ethertype,
                                  protocol=proto, port_min=rule.port_range_min,
                                  port_max=rule.port_range_max, remote_cidrs=cidrs))
        return tuple(rules)

    def network_plan(self, session: Session, network_id: str) -> NetworkPlan | None:
        net = session.get(Network, network_id)
        if net is None:
            return None
        subnets = list(session.scalars(select(Subnet).where(
            Subnet.network_id == network_id).order_by(Subnet.created_at, Subnet.id)))
        ports = list(session.scalars(select(Port).where(
            Port.network_id == network_id).order_by(Port.created_at, Port.id)))
        ips: dict[str, list[tuple[str, str]]] = {}
        for pip in session.scalars(select(PortIP).join(Port).where(
                Port.network_id == network_id)):
            ips.setdefault(pip.port_id, []).append((pip.subnet_id, pip.ip_address))
        dhcp_ip = {sid: ip for p in ports if p.device_owner == DHCP_OWNER
                   for sid, ip in ips.get(p.id, ())}
        subnet_plans = tuple(SubnetPlan(
            id=s.id, cidr=s.cidr, gateway_ip=s.gateway_ip, enable_dhcp=s.enable_dhcp,
            dhcp_ip=dhcp_ip.get(s.id), dns_nameservers=tuple(s.dns_nameservers),
            host_routes=tuple((r["destination"], r["nexthop"]) for r in s.host_routes))
            for s in subnets)
        groups: dict[str, list[str]] = {}
        for b in session.scalars(select(PortSecurityGroup).join(Port).where(
                Port.network_id == network_id)):
            groups.setdefault(b.port_id, []).append(b.security_group_id)
        port_plans = []
        for p in ports:
            addrs = tuple(ip for _, ip in ips.get(p.id, ()))
            if is_guest(p) and p.binding_host_id == self.host and p.status == "ACTIVE":
                rules = self.rules_for(session, sorted(groups.get(p.id, ()))) \
                    if p.port_security_enabled else None
                port_plans.append(PortPlan(
                    id=p.id, mac=p.mac_address, ips=addrs, kind="guest", rules=rules,
                    allowed_pairs=tuple((a["ip_address"], a.get("mac_address")
                                         or p.mac_address)
                                        for a in p.allowed_address_pairs),
                    hostname=p.dns_name, admin_up=p.admin_state_up))
            elif p.device_owner in (ROUTER_INTERFACE, ROUTER_GATEWAY) and \
                    session.get(Router, p.device_id) is not None:
                port_plans.append(PortPlan(id=p.id, mac=p.mac_address, ips=addrs,
                                           kind="router", rules=None,
                                           admin_up=p.admin_state_up))
        return NetworkPlan(id=net.id, mtu=net.mtu, subnets=subnet_plans,
                           ports=tuple(port_plans), external=net.router_external,
                           lease_seconds=self.conf.network.dhcp_lease_duration)

    def _interface(self, session: Session, port: Port) -> RouterInterfacePlan | None:
        pip = session.scalars(select(PortIP).where(PortIP.port_id == port.id)
                              .order_by(PortIP.ip_address)).first()
        if pip is None:
            return None
        subnet = session.get(Subnet, pip.subnet_id)
        assert subnet is not None
        return RouterInterfacePlan(port_id=port.id, network_id=port.network_id,
                                   ip=pip.ip_address, cidr=subnet.cidr, mac=port.mac_address)

    def router_plan(self, session: Session, router_id: str) -> RouterPlan | None:
        router = session.get(Router, router_id)
        if router is None:
            return None
        interfaces = []
        for port in session.scalars(select(Port).where(
                Port.device_id == router_id, Port.device_owner == ROUTER_INTERFACE)
                .order_by(Port.created_at, Port.id)):
            plan = self._interface(session, port)
            if plan is not None:
                interfaces.append(plan)
        gateway = None
        if router.gw_port_id:
            gw = session.get(Port, router.gw_port_id)
            gateway = self._interface(session, gw) if gw is not None else None
        floating = tuple(FloatingPlan(f.floating_ip_address, f.fixed_ip_address)
                         for f in session.scalars(select(FloatingIP).where(
                             FloatingIP.router_id == router_id,
                             FloatingIP.port_id.is_not(None))
                             .order_by(FloatingIP.floating_ip_address))
                         if f.fixed_ip_address)
        return RouterPlan(id=router.id, interfaces=tuple(interfaces), gateway=gateway,
                          enable_snat=router.enable_snat, floating=floating,
                          admin_up=router.admin_state_up)

    # ------------------------------------------------------------ applying
    def apply(self, session: Session, touch: Touch) -> None:
        """Make the data plane match ``session``'s view (flushed, not yet committed);
        ApplyFailed when it cannot, so the caller's transaction rolls back."""
        if self.dataplane is None or not touch:
            return
        session.flush()
        try:
            self._apply(session, touch)
        except Exception as exc:
            LOG.exception("applying %s failed", touch)
            raise ApplyFailed("The network configuration could not be applied on this "
                              f"host: {exc}") from exc

    def _apply(self, session: Session, touch: Touch) -> None:
        assert self.dataplane is not None
        # routers before networks: an interface's veth is made with the router, and
        # the network then lists it; removals the other way round
        for router_id in sorted(touch.removed_routers):
            self.dataplane.remove_router(router_id)
        for network_id in sorted(touch.networks - touch.removed_networks):
            plan = self.network_plan(session, network_id)
            if plan is not None:
                self.dataplane.apply_network(plan)
        for router_id in sorted(touch.routers - touch.removed_routers):
            plan = self.router_plan(session, router_id)
            if plan is not None:
                self.dataplane.apply_router(plan)
        for network_id in sorted(touch.removed_networks):
            self.dataplane.remove_network(network_id)

    def repair(self, touch: Touch) -> None:
        """After a failed apply rolled its change back: re-apply what stayed committed
        (best effort; the error already reaches the client)."""
        if self.dataplane is None or not touch:
            return
        with self.db.session(readonly=True) as session:
            everything = Touch(networks=touch.networks | touch.removed_networks,
                               routers=touch.routers | touch.removed_routers)
            for nid in list(everything.networks):
                if session.get(Network, nid) is None:
                    everything.networks.discard(nid)
                    everything.removed_networks.add(nid)
            for rid in list(everything.routers):
                if session.get(Router, rid) is None:
                    everything.routers.discard(rid)
                    everything.removed_routers.add(rid)
            try:
                self._apply(session, everything)
            except Exception:
                LOG.exception("re-applying %s after a failed change failed too", touch)

    def sync_host(self) -> None:
        """Re-apply every network and router from the tables; remove what the data
        plane owns that the tables no longer have."""
        if self.dataplane is None:
            return
        with self.db.session(readonly=True) as session:
            networks = set(session.scalars(select(Network.id)))
            routers = set(session.scalars(select(Router.id)))
            owned = self.dataplane.owned()
            touch = Touch(networks=networks, routers=routers,
                          removed_networks=owned.networks - networks,
                          removed_routers=owned.routers - routers)
            # one by one, in _apply's order: a network that cannot be built is logged
            # and the others still come up
            steps = [Touch(removed_routers={r}) for r in sorted(touch.removed_routers)]
            steps += [Touch(networks={n}) for n in sorted(networks)]
            steps += [Touch(routers={r}) for r in sorted(routers)]
            steps += [Touch(removed_networks={n}) for n in sorted(touch.removed_networks)]
            for step in steps:
                try:
                    self._apply(session, step)
                except Exception:
                    LOG.exception("network: re-applying %s at startup failed", step)
        LOG.info("network: %d networks and %d routers applied, %d and %d removed",
                 len(networks), len(routers), len(touch.removed_networks),
                 len(touch.removed_routers))
