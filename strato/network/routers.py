"""Neutron routers: the external gateway and the interfaces on tenant subnets."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from strato.context import RequestContext
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
    Subnet,
)
from strato.network.validation import _body, _bool, _id_list, _str
from strato.network.views import Views, _owner


class RouterOps(Views):
    """The ``/v2.0/routers`` operations of ``NetworkAPI``."""

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
