"""The network service: Neutron's v2.0 resources (validation, policy, quota, records),
and what compute asks of it for an instance's NICs.

Every change that alters a data plane object is applied before its transaction
commits (``NetworkManager.apply``): a failure rolls the records back, so a record never
claims a network the host does not have.  Security groups cost nothing on the data
plane and stay manageable when networking is unavailable here."""

from __future__ import annotations

import ipaddress
import logging
import socket
import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from strato import exceptions as exc
from strato.context import RequestContext
from strato.exceptions import StratoError
from strato.network import ipam
from strato.network.base import QUOTA_MODELS, QUOTA_RESOURCES, _bump
from strato.network.dataplane import tap_name
from strato.network.errors import (
    BadRequest,
    OverQuota,
    PolicyNotAuthorized,
    bad,
    conflict,
    in_use,
    not_found,
)
from strato.network.instance import Nic, Request
from strato.network.manager import (
    ROUTER_GATEWAY,
    ROUTER_INTERFACE,
    Touch,
    is_guest,
)
from strato.network.models import (
    FloatingIP,
    Network,
    Port,
    PortIP,
    PortSecurityGroup,
    Router,
    SecurityGroup,
    Subnet,
)
from strato.network.networks import NetworkOps
from strato.network.ports import PortOps
from strato.network.secgroups import SecurityGroupOps
from strato.network.subnets import SubnetOps
from strato.network.validation import _body, _bool, _id_list, _ip, _str
from strato.network.views import Views, _owner
from strato.quota.models import QuotaLimit

LOG = logging.getLogger("strato.network")
Params = list[tuple[str, str]]


class NetworkAPI(NetworkOps, SubnetOps, PortOps, SecurityGroupOps, Views):
    def list_routers(self, ctx: RequestContext) -> list[dict]:
        with self.db.session(readonly=True) as s:
            q = select(Router).order_by(Router.created_at, Router.id)
            if not ctx.is_admin:
                q = q.where(Router.project_id == ctx.project_id)
            return [self._router_view(s, r) for r in s.scalars(q)]

    def show_router(self, ctx: RequestContext, router_id: str) -> dict:
        with self.db.session(readonly=True) as s:
            return self._router_view(s, self._get(s, ctx, Router, "router", router_id))

    def _set_gateway(self, s: Session, ctx: RequestContext, router: Router, info: Any,
                     touch: Touch) -> None:
        """Replace the router's external gateway by ``info`` (None/{}: none)."""
        if info is not None and not isinstance(info, dict):
            raise BadRequest("Invalid input for external_gateway_info.")
        new_net = (info or {}).get("network_id")
        if new_net is not None and not isinstance(new_net, str):
            raise BadRequest(f"Invalid input for network_id. Reason: '{new_net}' is not a "
                             "valid UUID.")
        if router.gw_port_id:
            old = s.get(Port, router.gw_port_id)
            if old is not None and (new_net != old.network_id or "external_fixed_ips"
                                    in (info or {})):
                if s.scalars(select(FloatingIP.id).where(
                        FloatingIP.router_id == router.id)).first():
                    raise in_use("RouterExternalGatewayInUseByFloatingIp",
                                 f"Gateway cannot be updated for router {router.id}, since "
                                 "a gateway to external network "
                                 f"{old.network_id} is required by one or more floating "
                                 "IPs.")
                touch.networks.add(old.network_id)
                router.gw_port_id = None
                s.flush()
                s.delete(old)
                s.flush()
            elif old is not None:
                if "enable_snat" in (info or {}):
                    router.enable_snat = _bool(info, "enable_snat", True)
                return
        if not new_net:
            return
        net = self._get_network(s, ctx, new_net)
        if not net.router_external:
            raise bad("BadRequest", f"Bad router request: Network {new_net} is not an "
                      "external network.")
        data: dict = {}
        if info.get("external_fixed_ips"):
            if not ctx.is_admin:
                raise PolicyNotAuthorized("rule:create_router:external_gateway_info:"
                                          "external_fixed_ips is disallowed by policy")
            data["fixed_ips"] = info["external_fixed_ips"]
        gw = self._new_port(s, ctx, net, "", data, owner=ROUTER_GATEWAY,
                            device_id=router.id, groups=[])
        gw.status = "ACTIVE"
        if not s.scalars(select(PortIP).where(PortIP.port_id == gw.id)).first():
            raise conflict("IpAddressGenerationFailure", "No more IP addresses available "
                           f"on network {net.id}.")
        router.gw_port_id = gw.id
        router.enable_snat = _bool(info, "enable_snat", True)
        touch.networks.add(net.id)

    ROUTER_ATTRS = {"name", "description", "admin_state_up", "external_gateway_info",
                    "project_id", "tenant_id", "tags", "distributed", "ha",
                    "availability_zone_hints", "flavor_id", "enable_ndp_proxy"}

    def create_router(self, ctx: RequestContext, body: Any) -> dict:
        data = _body(body, "router", self.ROUTER_ATTRS)
        self._require_dataplane()
        project = self._target_project(ctx, data)
        self._enforce(ctx, "create_router", project)

        def work(s: Session, touch: Touch) -> dict:
            self._check_quota(s, project, "router")
            router = Router(id=str(uuid.uuid4()), project_id=project,
                            name=_str(data, "name"), description=_str(data, "description"),
                            admin_state_up=_bool(data, "admin_state_up", True),
                            tags=_id_list(data, "tags"))
            s.add(router)
            s.flush()
            self._set_gateway(s, ctx, router, data.get("external_gateway_info"), touch)
            touch.routers.add(router.id)
            s.flush()
            return self._router_view(s, router)

        return self._change(work)

    def update_router(self, ctx: RequestContext, router_id: str, body: Any) -> dict:
        data = _body(body, "router", self.ROUTER_ATTRS - {"project_id", "tenant_id"})
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> dict:
            router = self._get(s, ctx, Router, "router", router_id)
            self._enforce(ctx, "update_router", router.project_id)
            for key in ("name", "description"):
                if key in data:
                    setattr(router, key, _str(data, key))
            if "admin_state_up" in data:
                router.admin_state_up = _bool(data, "admin_state_up", True)
            if "tags" in data:
                router.tags = _id_list(data, "tags")
            if "external_gateway_info" in data:
                self._set_gateway(s, ctx, router, data["external_gateway_info"], touch)
            _bump(router)
            touch.routers.add(router.id)
            s.flush()
            return self._router_view(s, router)

        return self._change(work)

    def delete_router(self, ctx: RequestContext, router_id: str) -> None:
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> None:
            router = self._get(s, ctx, Router, "router", router_id)
            self._enforce(ctx, "delete_router", router.project_id)
            if s.scalars(select(Port.id).where(Port.device_id == router_id,
                                               Port.device_owner == ROUTER_INTERFACE)).first():
                raise in_use("RouterInUse", f"Router {router_id} still has ports")
            if s.scalars(select(FloatingIP.id).where(
                    FloatingIP.router_id == router_id)).first():
                raise in_use("RouterInUse", f"Router {router_id} still has floating IPs "
                             "associated")
            if router.gw_port_id:
                gw = s.get(Port, router.gw_port_id)
                if gw is not None:
                    touch.networks.add(gw.network_id)
                    s.delete(gw)
            s.delete(router)
            touch.removed_routers.add(router_id)

        self._change(work)

    def add_router_interface(self, ctx: RequestContext, router_id: str, body: Any) -> dict:
        if not isinstance(body, dict) or not (body.get("subnet_id") or body.get("port_id")):
            raise BadRequest("Bad router request: Either subnet_id or port_id must be "
                             "specified.")
        if not all(isinstance(body.get(k), str | None) for k in ("subnet_id", "port_id")):
            raise BadRequest("Bad router request: subnet_id and port_id are strings.")
        if body.get("subnet_id") and body.get("port_id"):
            raise BadRequest("Bad router request: Cannot specify both subnet-id and "
                             "port-id.")
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> dict:
            router = self._get(s, ctx, Router, "router", router_id)
            self._enforce(ctx, "add_router_interface", router.project_id)
            attached = set(s.scalars(select(PortIP.subnet_id).join(Port).where(
                Port.device_id == router_id, Port.device_owner == ROUTER_INTERFACE)))
            if body.get("subnet_id"):
                sub = self._get_subnet(s, ctx, body["subnet_id"])
                if sub.id in attached:
                    raise bad("BadRequest", f"Bad router request: Router already has a port "
                              f"on subnet {sub.id}.")
                if not sub.gateway_ip:
                    raise bad("BadRequest", f"Bad router request: Subnet {sub.id} does not "
                              "have a gateway IP.")
                net = s.get(Network, sub.network_id)
                assert net is not None
                if net.router_external:
                    raise bad("BadRequest", "Bad router request: an external network's "
                              "subnet is a router's gateway, not an interface.")
                port = self._new_port(s, ctx, net, router.project_id, {
                    "fixed_ips": [{"subnet_id": sub.id, "ip_address": sub.gateway_ip}]},
                    owner=ROUTER_INTERFACE, device_id=router_id, groups=[])
            else:
                port = self._get(s, ctx, Port, "port", body["port_id"])
                if port.device_id or port.device_owner:
                    raise in_use("PortInUse", f"Unable to complete operation on port "
                                 f"{port.id} for network {port.network_id}. Port already has "
                                 f"an attached device {port.device_id}.")
                subs = list(s.scalars(select(PortIP.subnet_id).where(
                    PortIP.port_id == port.id)))
                if not subs:
                    raise bad("BadRequest", "Bad router request: Router port must have at "
                              "least one fixed IP.")
                if attached & set(subs):
                    raise bad("BadRequest", "Bad router request: Router already has a port "
                              f"on subnet {subs[0]}.")
                port.device_owner, port.device_id = ROUTER_INTERFACE, router_id
                s.execute(delete(PortSecurityGroup).where(PortSecurityGroup.port_id == port.id))
                port.port_security_enabled = False
                sub = s.get(Subnet, subs[0])  # type: ignore[assignment]
            port.status = "ACTIVE"
            port.binding_host_id = self.host
            _bump(router)
            touch.routers.add(router_id)
            touch.networks.add(port.network_id)
            s.flush()
            return {"id": router_id, **_owner(router), "port_id": port.id,
                    "subnet_id": sub.id, "subnet_ids": [sub.id],
                    "network_id": port.network_id}

        return self._change(work)

    def remove_router_interface(self, ctx: RequestContext, router_id: str,
                                body: Any) -> dict:
        if not isinstance(body, dict) or not (body.get("subnet_id") or body.get("port_id")):
            raise BadRequest("Bad router request: Either subnet_id or port_id must be "
                             "specified.")
        if not all(isinstance(body.get(k), str | None) for k in ("subnet_id", "port_id")):
            raise BadRequest("Bad router request: subnet_id and port_id are strings.")
        self._require_dataplane()

        def work(s: Session, touch: Touch) -> dict:
            router = self._get(s, ctx, Router, "router", router_id)
            self._enforce(ctx, "remove_router_interface", router.project_id)
            q = select(Port).where(Port.device_id == router_id,
                                   Port.device_owner == ROUTER_INTERFACE)
            if body.get("port_id"):
                q = q.where(Port.id == body["port_id"])
            if body.get("subnet_id"):
                q = q.where(Port.id.in_(select(PortIP.port_id).where(
                    PortIP.subnet_id == body["subnet_id"])))
            port = s.scalars(q).first()
            if port is None:
                if body.get("port_id"):
                    raise not_found("port", body["port_id"]) if s.get(
                        Port, body["port_id"]) is None else bad(
                        "RouterInterfaceNotFound", f"Router {router_id} does not have an "
                        f"interface with id {body['port_id']}")
                raise bad("RouterInterfaceNotFoundForSubnet", f"Router {router_id} has no "
                          f"interface on subnet {body['subnet_id']}")
            subs = list(s.scalars(select(PortIP.subnet_id).where(PortIP.port_id == port.id)))
            fixed = set(s.scalars(select(PortIP.ip_address).join(Port).where(
                PortIP.subnet_id.in_(subs))))
            if s.scalars(select(FloatingIP.id).where(
                    FloatingIP.router_id == router_id,
                    FloatingIP.fixed_ip_address.in_(fixed))).first():
                raise in_use("RouterInterfaceInUseByFloatingIP",
                             f"Router interface for subnet {subs[0]} on router {router_id} "
                             "cannot be deleted, as it is required by one or more floating "
                             "IPs.")
            touch.networks.add(port.network_id)
            touch.routers.add(router_id)
            s.delete(port)
            _bump(router)
            return {"id": router_id, **_owner(router), "port_id": port.id,
                    "subnet_id": subs[0] if subs else None, "subnet_ids": subs,
                    "network_id": port.network_id}

        return self._change(work)

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

    # ============================================================ quotas
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

    # ============================================================ for compute (Nova)
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
