"""What compute asks of the network service for an instance: resolving ``networks``,
ports for its NICs, plugging them on this host, its addresses and security groups,
metadata and ``network_data.json``, and re-applying the host at startup.

Errors here are ``strato.exceptions`` classes with Nova's messages: compute re-raises
them in its own fault format."""

from __future__ import annotations

import ipaddress
import socket

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato import exceptions as exc
from strato.context import RequestContext
from strato.exceptions import StratoError
from strato.network import ipam
from strato.network.base import NetworkBase, _bump
from strato.network.dataplane import tap_name
from strato.network.errors import OverQuota, not_found
from strato.network.instance import Nic, Request
from strato.network.manager import Touch, is_guest
from strato.network.models import (
    FloatingIP,
    Network,
    Port,
    PortIP,
    PortSecurityGroup,
    SecurityGroup,
    Subnet,
)


class NovaOps(NetworkBase):
    """The compute-facing methods of ``NetworkAPI``."""

    def _nova_group(self, s: Session, project: str, name_or_id: str) -> SecurityGroup | None:
        sg = s.get(SecurityGroup, name_or_id)
        if sg is not None and sg.project_id == project:
            return sg
        if name_or_id == "default":
            return self._default_group(s, project)
        found = list(s.scalars(select(SecurityGroup).where(
            SecurityGroup.project_id == project, SecurityGroup.name == name_or_id)))
        return found[0] if len(found) == 1 else None

    def resolve_requests(self, ctx: RequestContext, networks: str | list[dict],
                         security_groups: list[str] | None) -> list[Request]:
        """A server's ``networks`` checked against the tables (nothing is reserved)."""
        if networks == "none":
            return []
        if not self.enabled:
            if isinstance(networks, list) and networks:
                raise exc.BadRequest("Networking is not available on this host: "
                                     f"{self.disabled_reason}")
            return []
        project = ctx.project_id or ""
        with self.db.session() as s:
            for name in security_groups or ():
                if self._nova_group(s, project, name) is None:
                    raise exc.BadRequest("Unable to find security_group with name or id "
                                         f"'{name}'")
            if networks == "auto":
                usable = [n for n in s.scalars(select(Network).order_by(
                    Network.created_at, Network.id))
                    if (n.project_id == project or n.shared) and not n.router_external]
                if not usable:
                    return []
                if len(usable) > 1:
                    raise exc.Conflict("Multiple possible networks found, use a Network "
                                       "ID to be more specific.")
                return [Request(network_id=usable[0].id)]
            out: list[Request] = []
            for entry in networks:
                tag = entry.get("tag")
                if entry.get("port"):
                    port = s.get(Port, entry["port"])
                    if port is None or not self._own(ctx, port):
                        raise exc.BadRequest(f"Port {entry['port']} could not be found.")
                    if port.device_id:
                        raise exc.Conflict(f"Port {port.id} is still in use.")
                    out.append(Request(network_id=port.network_id, port_id=port.id, tag=tag))
                    continue
                net_id = entry.get("uuid")
                net = s.get(Network, net_id) if net_id else None
                if net is None or not (self._own(ctx, net) or net.shared) or \
                        (net.router_external and not ctx.is_admin
                         and net.project_id != project):
                    raise exc.BadRequest(f"Network {net_id} could not be found.")
                fixed = entry.get("fixed_ip")
                if fixed:
                    subs = [x for x in s.scalars(select(Subnet).where(
                        Subnet.network_id == net.id))
                        if self._in_subnet(fixed, x)]
                    if not subs:
                        raise exc.BadRequest(f"Fixed IP {fixed} is not a valid ip address "
                                             f"for network {net.id}.")
                    holder = s.scalars(select(Port).join(PortIP).where(
                        PortIP.subnet_id == subs[0].id, PortIP.ip_address == fixed)).first()
                    if holder is not None or fixed in ipam.used(s, subs[0].id):
                        raise exc.Conflict(f"Fixed IP address {fixed} is already in use on "
                                           f"instance {holder.device_id if holder else ''}.")
                out.append(Request(network_id=net.id, fixed_ip=fixed, tag=tag))
            return out

    @staticmethod
    def _in_subnet(ip: str, sub: Subnet) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        net = ipaddress.ip_network(sub.cidr)
        first, last = ipam.hosts(net)  # type: ignore[arg-type]
        return addr.version == 4 and first <= int(addr) <= last

    def _allocate_one(self, s: Session, ctx: RequestContext, instance_id: str, host: str,
                      req: Request, groups: list[str] | None, hostname: str,
                      index: int) -> Port:
        if req.port_id:
            port = s.get(Port, req.port_id)
            if port is None:
                raise exc.BadRequest(f"Port {req.port_id} could not be found.")
            if port.device_id and port.device_id != instance_id:
                raise exc.Conflict(f"Port {port.id} is still in use.")
            port.device_id, port.device_owner = instance_id, "compute:nova"
            port.binding_host_id, port.status = host, "DOWN"
            port.preserve_on_delete, port.nic_index = True, index
            port.dns_name = port.dns_name or hostname
            _bump(port)
            return port
        net = s.get(Network, req.network_id)
        if net is None:
            raise exc.BadRequest(f"Network {req.network_id} could not be found.")
        data: dict = {}
        if req.fixed_ip:
            data["fixed_ips"] = [{"ip_address": req.fixed_ip}]
        wanted = [] if not net.port_security_enabled else list(groups or ["default"])
        project = ctx.project_id or net.project_id
        try:
            return self._new_port(s, ctx, net, project, data, owner="compute:nova",
                                  device_id=instance_id, host=host, groups=wanted,
                                  dns_name=hostname, nic_index=index)
        except StratoError as err:
            if err.status == 409 and req.fixed_ip and \
                    getattr(err, "neutron_type", "") == "IpAddressAlreadyAllocated":
                raise exc.Conflict(f"Fixed IP address {req.fixed_ip} is already in use "
                                   "on instance.") from None
            raise

    def allocate_for_instance(self, ctx: RequestContext, session: Session, instance_id: str,
                              host: str, requests: list[Request],
                              security_groups: list[str] | None, hostname: str) -> list[str]:
        """Ports for the instance in the caller's transaction (not yet plugged)."""
        if requests and not self.enabled:
            raise exc.BadRequest("Networking is not available on this host: "
                                 f"{self.disabled_reason}")
        try:
            return [self._allocate_one(session, ctx, instance_id, host, req,
                                       security_groups, hostname, i).id
                    for i, req in enumerate(requests)]
        except OverQuota as err:  # compute's quota error (it renders Nova's fault)
            raise exc.OverLimit(err.message) from None

    def _nic(self, port: Port) -> Nic:
        return Nic(port_id=port.id, network_id=port.network_id, mac=port.mac_address,
                   tap=tap_name(port.id))

    def plug(self, port_id: str) -> Nic:
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> Nic:
            port = s.get(Port, port_id)
            if port is None:
                raise not_found("port", port_id)
            port.binding_host_id = port.binding_host_id or self.host
            port.status = "ACTIVE"
            touch.networks.add(port.network_id)
            self._touch_remote(s, port.id, touch)
            for fip in s.scalars(select(FloatingIP).where(FloatingIP.port_id == port.id)):
                if fip.router_id:
                    touch.routers.add(fip.router_id)
            return self._nic(port)

        return self._change(work)

    def open_tap(self, nic: Nic) -> int:
        self._require_dataplane()
        assert self.dataplane is not None
        return self.dataplane.open_tap(nic.network_id, nic.port_id)

    def unplug(self, port_id: str) -> None:
        if not self.enabled:
            return

        def work(s: Session, touch: Touch) -> None:
            port = s.get(Port, port_id)
            if port is None:
                return
            port.status = "DOWN"
            touch.networks.add(port.network_id)
            self._touch_remote(s, port.id, touch)

        self._change(work)

    def _release(self, s: Session, port: Port, touch: Touch) -> None:
        """An instance lets go of a port: a preserved one is unbound, others deleted."""
        touch.networks.add(port.network_id)
        if port.preserve_on_delete:
            self._touch_remote(s, port.id, touch)
            port.device_id = port.device_owner = port.binding_host_id = ""
            port.status, port.preserve_on_delete = "DOWN", False
            _bump(port)
        else:
            self._drop_port(s, port, touch)

    def deallocate_for_instance(self, ctx: RequestContext, instance_id: str) -> None:
        def work(s: Session, touch: Touch) -> None:
            for port in s.scalars(select(Port).where(Port.device_id == instance_id)):
                if is_guest(port):
                    self._release(s, port, touch)

        self._change(work)

    def instance_nics(self, instance_id: str) -> list[Nic]:
        with self.db.session(readonly=True) as s:
            return [self._nic(p) for p in self._instance_ports(s, instance_id)]

    @staticmethod
    def _instance_ports(s: Session, instance_id: str) -> list[Port]:
        return [p for p in s.scalars(select(Port).where(Port.device_id == instance_id)
                                     .order_by(Port.nic_index, Port.created_at, Port.id))
                if is_guest(p)]

    def addresses(self, instance_ids: list[str]) -> dict[str, dict[str, list[dict]]]:
        out: dict[str, dict[str, list[dict]]] = {i: {} for i in instance_ids}
        if not instance_ids:
            return out
        with self.db.session(readonly=True) as s:
            ports = [p for p in s.scalars(select(Port).where(
                Port.device_id.in_(instance_ids)).order_by(
                Port.nic_index, Port.created_at, Port.id)) if is_guest(p)]
            names = {n.id: n.name or n.id for n in s.scalars(select(Network).where(
                Network.id.in_({p.network_id for p in ports})))}
            fips: dict[tuple[str, str], list[str]] = {}
            for f in s.scalars(select(FloatingIP).where(FloatingIP.port_id.in_(
                    [p.id for p in ports]))):
                fips.setdefault((f.port_id or "", f.fixed_ip_address or ""), []).append(
                    f.floating_ip_address)
            for p in ports:
                entries = out[p.device_id].setdefault(names.get(p.network_id, ""), [])
                for pip in s.scalars(select(PortIP).where(PortIP.port_id == p.id)
                                     .order_by(PortIP.ip_address)):
                    version = ipaddress.ip_address(pip.ip_address).version
                    entries.append({"version": version, "addr": pip.ip_address,
                                    "OS-EXT-IPS:type": "fixed",
                                    "OS-EXT-IPS-MAC:mac_addr": p.mac_address})
                    for floating in fips.get((p.id, pip.ip_address), []):
                        entries.append({"version": 4, "addr": floating,
                                        "OS-EXT-IPS:type": "floating",
                                        "OS-EXT-IPS-MAC:mac_addr": p.mac_address})
        return out

    def instance_security_groups(self, instance_ids: list[str]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {i: [] for i in instance_ids}
        if not instance_ids:
            return out
        with self.db.session(readonly=True) as s:
            rows = s.execute(select(Port.device_id, SecurityGroup.name).join(
                PortSecurityGroup, PortSecurityGroup.port_id == Port.id).join(
                SecurityGroup, SecurityGroup.id == PortSecurityGroup.security_group_id)
                .where(Port.device_id.in_(instance_ids))
                .order_by(Port.nic_index, SecurityGroup.name))
            for device_id, name in rows:
                if {"name": name} not in out[device_id]:
                    out[device_id].append({"name": name})
        return out

    def add_security_group(self, ctx: RequestContext, instance_id: str,
                           name_or_id: str) -> None:
        def work(s: Session, touch: Touch) -> None:
            ports = self._instance_ports(s, instance_id)
            project = ports[0].project_id if ports else (ctx.project_id or "")
            sg = self._nova_group(s, project, name_or_id)
            if sg is None:
                raise exc.NotFound(f"Security group {name_or_id} not found for project "
                                   f"{project}.")
            if not ports:
                raise exc.BadRequest(f"Instance {instance_id} has no network ports to "
                                     "take a security group.")
            added = False
            for port in ports:
                if not port.port_security_enabled:
                    continue
                if s.get(PortSecurityGroup, (port.id, sg.id)) is None:
                    s.add(PortSecurityGroup(port_id=port.id, security_group_id=sg.id))
                    added = True
                    touch.networks.add(port.network_id)
            if not added:
                raise exc.BadRequest(f"Security group {sg.name} is already associated with "
                                     f"the instance {instance_id}")
            s.flush()
            for port in ports:
                self._touch_remote(s, port.id, touch)

        self._change(work)

    def remove_security_group(self, ctx: RequestContext, instance_id: str,
                              name_or_id: str) -> None:
        def work(s: Session, touch: Touch) -> None:
            ports = self._instance_ports(s, instance_id)
            project = ports[0].project_id if ports else (ctx.project_id or "")
            sg = self._nova_group(s, project, name_or_id)
            if sg is None:
                raise exc.NotFound(f"Security group {name_or_id} not found for project "
                                   f"{project}.")
            removed = False
            for port in ports:
                binding = s.get(PortSecurityGroup, (port.id, sg.id))
                if binding is not None:
                    self._touch_remote(s, port.id, touch)
                    s.delete(binding)
                    removed = True
                    touch.networks.add(port.network_id)
            if not removed:
                raise exc.BadRequest(f"Security group {sg.name} not associated with the "
                                     f"instance {instance_id}")

        self._change(work)

    def create_port_for_instance(self, ctx: RequestContext, instance_id: str, host: str,
                                 request: Request) -> str:
        if not self.enabled:
            raise exc.BadRequest("Networking is not available on this host: "
                                 f"{self.disabled_reason}")
        with self.db.session() as s:
            ports = self._instance_ports(s, instance_id)
            index = max((p.nic_index for p in ports), default=-1) + 1
            hostname = ports[0].dns_name if ports else ""
            try:
                return self._allocate_one(s, ctx, instance_id, host, request, None,
                                          hostname, index).id
            except OverQuota as err:
                raise exc.OverLimit(err.message) from None

    def detach_port(self, ctx: RequestContext, instance_id: str, port_id: str) -> None:
        def work(s: Session, touch: Touch) -> None:
            port = s.get(Port, port_id)
            if port is None or port.device_id != instance_id or not is_guest(port):
                raise exc.NotFound(f"Port {port_id} is not attached")
            self._release(s, port, touch)

        self._change(work)

    def instance_for_address(self, network_id: str, ip: str) -> str | None:
        with self.db.session(readonly=True) as s:
            for port in s.scalars(select(Port).join(PortIP).where(
                    Port.network_id == network_id, PortIP.ip_address == ip)):
                if is_guest(port) and port.device_id:
                    return port.device_id
        return None

    def metadata_networks(self) -> list[str]:
        if not self.enabled:
            return []
        with self.db.session(readonly=True) as s:
            return sorted({p.network_id for p in s.scalars(select(Port).where(
                Port.binding_host_id == self.host, Port.status == "ACTIVE"))
                if is_guest(p)})

    def metadata_listener(self, network_id: str) -> socket.socket:
        self._require_dataplane()
        assert self.dataplane is not None
        return self.dataplane.metadata_listener(network_id)

    def network_data(self, instance_id: str) -> dict:
        """Nova's ``network_data.json``: links, networks and DNS services."""
        links, networks, services = [], [], []
        with self.db.session(readonly=True) as s:
            for port in self._instance_ports(s, instance_id):
                net = s.get(Network, port.network_id)
                links.append({"id": tap_name(port.id), "vif_id": port.id, "type": "bridge",
                              "mtu": net.mtu if net else 1500,
                              "ethernet_mac_address": port.mac_address})
                for pip in s.scalars(select(PortIP).where(PortIP.port_id == port.id)
                                     .order_by(PortIP.ip_address)):
                    sub = s.get(Subnet, pip.subnet_id)
                    if sub is None:
                        continue
                    cidr = ipaddress.ip_network(sub.cidr)
                    routes = [{"network": str(ipaddress.ip_network(r["destination"])
                                              .network_address),
                               "netmask": str(ipaddress.ip_network(r["destination"])
                                              .netmask), "gateway": r["nexthop"]}
                              for r in sub.host_routes]
                    if sub.gateway_ip:
                        routes.insert(0, {"network": "0.0.0.0", "netmask": "0.0.0.0",
                                          "gateway": sub.gateway_ip})
                    networks.append({
                        "id": f"network{len(networks)}",
                        "type": "ipv4_dhcp" if sub.enable_dhcp else "ipv4",
                        "link": tap_name(port.id), "ip_address": pip.ip_address,
                        "netmask": str(cidr.netmask), "routes": routes,
                        "network_id": port.network_id,
                        "services": [{"type": "dns", "address": d}
                                     for d in sub.dns_nameservers]})
                    for d in sub.dns_nameservers:
                        if {"type": "dns", "address": d} not in services:
                            services.append({"type": "dns", "address": d})
        return {"links": links, "networks": networks, "services": services}

    def sync_host(self) -> None:
        self.manager.sync_host()
