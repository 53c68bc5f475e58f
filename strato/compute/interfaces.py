"""A server's networking as Nova shows it: ``ips``, security group actions and the
server's ``os-security-groups``, and ``os-interface`` (attach/detach a port).

The network service owns ports and groups; this module checks the server (existence,
policy, lock, state), records instance actions and enqueues the host's jobs.  With no
network service, the user-mode NIC is all there is: the reads answer from it and the
changes are refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from strato.compute import states
from strato.compute.api import ComputeAPI, P, ctx_payload, now
from strato.compute.views import Version
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound
from strato.jobs.queue import enqueue

if TYPE_CHECKING:
    from strato.network.api import NetworkAPI

ATTACH_STATES = (states.ACTIVE, states.PAUSED, states.STOPPED)


class ServerNetworks:
    def __init__(self, api: ComputeAPI) -> None:
        self.api = api
        self.db = api.db

    def _network(self) -> NetworkAPI:
        net = self.api.network
        if net is None or not net.enabled:
            reason = "the network service is not configured" if net is None \
                else net.disabled_reason
            raise BadRequest(f"Networking is not available on this host: {reason}")
        return net

    def _server(self, ctx: RequestContext, server_id: str, rule: str) -> Any:
        with self.db.session(readonly=True) as session:
            inst = self.api.get_row(session, ctx, server_id, P + rule)
            session.expunge(inst)
            return inst

    # ------------------------------------------------------------ ips
    def addresses(self, ctx: RequestContext, server_id: str, rule: str) -> dict[str, Any]:
        from strato.compute.views import addresses

        inst = self._server(ctx, server_id, rule)
        net = self.api.net_info([inst.id]).get(inst.id)
        full = {**addresses(inst), **(net[0] if net else {})}
        return {label: [{"version": a["version"], "addr": a["addr"]} for a in items]
                for label, items in full.items()}

    def ips(self, ctx: RequestContext, server_id: str) -> dict[str, Any]:
        return {"addresses": self.addresses(ctx, server_id, "ips:index")}

    def ips_for(self, ctx: RequestContext, server_id: str, label: str) -> dict[str, Any]:
        found = self.addresses(ctx, server_id, "ips:show")
        if label not in found:
            raise NotFound("Instance is not a member of specified network")
        return {label: found[label]}

    # ------------------------------------------------------------ security groups
    def security_group_action(self, ctx: RequestContext, server_id: str, action: str,
                              args: Any) -> None:
        """``addSecurityGroup``/``removeSecurityGroup`` ``{"name": <name or id>}``."""
        if not isinstance(args, dict) or not isinstance(args.get("name"), str) \
                or not args["name"].strip():
            raise BadRequest("Missing parameter dict" if not isinstance(args, dict)
                             else "Security group name cannot be empty")
        add = action == "addSecurityGroup"
        inst = self._server(ctx, server_id, "os-security-groups:" + ("add" if add
                                                                     else "remove"))
        net = self._network()
        if add:
            net.add_security_group(ctx, inst.id, args["name"].strip())
        else:
            net.remove_security_group(ctx, inst.id, args["name"].strip())

    def server_security_groups(self, ctx: RequestContext, server_id: str) -> dict[str, Any]:
        """``GET /servers/{id}/os-security-groups``: Nova's security group view (id,
        name, description, tenant_id and the ingress rules) of every group bound to the
        server's ports, sorted by (tenant, name) as Nova sorts them."""
        from strato.compute.proxy_network import group_views

        inst = self._server(ctx, server_id, "os-security-groups:list")
        net = self.api.network
        if net is None:
            return {"security_groups": []}
        if not hasattr(net, "show_port"):  # a network service without Neutron's reads
            return {"security_groups": [
                {"id": g.get("id", ""), "name": g.get("name", ""), "description": "",
                 "tenant_id": inst.project_id, "rules": []}
                for g in net.instance_security_groups([inst.id]).get(inst.id) or []]}
        ids: list[str] = []
        for nic in net.instance_nics(inst.id):
            try:
                port = net.show_port(ctx, nic.port_id)
            except NotFound:
                continue
            ids += [g for g in port.get("security_groups", []) if g not in ids]
        groups: list[dict[str, Any]] = []
        for gid in ids:
            try:
                groups.append(net.show_security_group(ctx, gid))
            except NotFound:
                continue
        lookup = {g["id"]: g for g in groups}
        for remote in {r.get("remote_group_id") for g in groups
                       for r in g.get("security_group_rules", [])} - set(lookup) - {None}:
            try:
                lookup[remote] = net.show_security_group(ctx, remote)
            except NotFound:
                continue
        return {"security_groups": group_views(groups, lookup)}

    # ------------------------------------------------------------ os-interface
    def _attachments(self, ctx: RequestContext, inst: Any,
                     version: Version) -> list[dict[str, Any]]:
        """Nova's interfaceAttachment views: from the network service's port views when
        it has them (``show_port``), else from the instance's ``network_data``."""
        net = self.api.network
        if net is None:
            return []
        show = getattr(net, "show_port", None)
        if show is not None:
            out = []
            for nic in net.instance_nics(inst.id):
                try:
                    port = show(ctx, nic.port_id)
                except NotFound:
                    continue
                view: dict[str, Any] = {
                    "port_state": port.get("status", "DOWN"),
                    "fixed_ips": [{"subnet_id": f.get("subnet_id", ""),
                                   "ip_address": f.get("ip_address", "")}
                                  for f in port.get("fixed_ips", [])],
                    "port_id": nic.port_id, "net_id": nic.network_id, "mac_addr": nic.mac}
                if version >= (2, 70):
                    view["tag"] = getattr(nic, "tag", None)
                out.append(view)
            return out
        nics = net.instance_nics(inst.id)
        data = net.network_data(inst.id) if nics else {}
        links = {lk.get("vif_id"): lk.get("id") for lk in data.get("links", [])}
        ips: dict[str, list[dict[str, str]]] = {}
        for n in data.get("networks", []):
            if n.get("ip_address"):
                ips.setdefault(n.get("link", ""), []).append(
                    {"subnet_id": n.get("subnet_id", ""), "ip_address": n["ip_address"]})
        out = []
        for nic in nics:
            view: dict[str, Any] = {
                "port_state": "ACTIVE" if inst.vm_state == states.ACTIVE else "DOWN",
                "fixed_ips": ips.get(links.get(nic.port_id, nic.tap), []),
                "port_id": nic.port_id, "net_id": nic.network_id, "mac_addr": nic.mac}
            if version >= (2, 70):
                view["tag"] = getattr(nic, "tag", None)
            out.append(view)
        return out

    def list_interfaces(self, ctx: RequestContext, server_id: str,
                        version: Version) -> dict[str, Any]:
        inst = self._server(ctx, server_id, "os-attach-interfaces:list")
        return {"interfaceAttachments": self._attachments(ctx, inst, version)}

    def show_interface(self, ctx: RequestContext, server_id: str, port_id: str,
                       version: Version) -> dict[str, Any]:
        inst = self._server(ctx, server_id, "os-attach-interfaces:show")
        for a in self._attachments(ctx, inst, version):
            if a["port_id"] == port_id:
                return {"interfaceAttachment": a}
        raise NotFound(f"Port {port_id} is not attached")

    def attach_interface(self, ctx: RequestContext, server_id: str, body: Any,
                         version: Version) -> dict[str, Any]:
        """Create (or bind) the port now, plug it on the host in a job."""
        from strato.network.instance import Request

        ref = body.get("interfaceAttachment") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Missing required element 'interfaceAttachment' in request "
                             "body.")
        allowed = {"net_id", "port_id", "fixed_ips"} | ({"tag"} if version >= (2, 49)
                                                        else set())
        extra = set(ref) - allowed
        if extra:
            raise BadRequest("Invalid input for field/attribute interfaceAttachment. "
                             "Additional properties are not allowed "
                             f"({', '.join(repr(k) for k in sorted(extra))} was unexpected)")
        net_id, port_id = ref.get("net_id"), ref.get("port_id")
        fixed = ref.get("fixed_ips")
        if net_id and port_id:
            raise BadRequest("Must not input both network_id and port_id")
        fixed_ip = None
        if fixed:
            if not isinstance(fixed, list) or len(fixed) != 1 or not isinstance(
                    fixed[0], dict) or not isinstance(fixed[0].get("ip_address"), str):
                raise BadRequest("Invalid input for field/attribute fixed_ips: one "
                                 "{\"ip_address\": ...} entry.")
            if not net_id:
                raise BadRequest("Must input network_id when request IP address")
            fixed_ip = fixed[0]["ip_address"]
        tag = ref.get("tag")
        inst = self._server(ctx, server_id, "os-attach-interfaces:create")
        self.api._check_lock(ctx, inst)
        if inst.vm_state not in ATTACH_STATES or inst.task_state is not None:
            raise Conflict(f"Cannot 'attach_interface' instance {inst.id} while it is in "
                           f"vm_state {inst.vm_state}")
        net = self._network()
        if net_id or port_id:
            entry: dict[str, Any] = {"port": port_id} if port_id else {"uuid": net_id}
            if fixed_ip:
                entry["fixed_ip"] = fixed_ip
            (request,) = net.resolve_requests(ctx, [entry], None)
            request = Request(request.network_id, request.port_id, request.fixed_ip, tag)
        else:
            found = net.resolve_requests(ctx, "auto", None)
            if not found:
                raise BadRequest("No network available to attach an interface to.")
            request = Request(found[0].network_id, tag=tag)
        new_port = net.create_port_for_instance(ctx, inst.id, inst.host, request)
        try:
            with self.db.session() as session:
                row = self.api.get_row(session, ctx, server_id)
                if row.vm_state not in ATTACH_STATES or row.task_state is not None:
                    raise Conflict(f"Cannot 'attach_interface' instance {inst.id} while it "
                                   f"is in vm_state {row.vm_state}")
                self.api.record_action(session, ctx, row, "attach_interface")
                row.updated_at = now()
                enqueue(session, "compute.attach_interface", {
                    "instance_id": inst.id, "port_id": new_port, "ctx": ctx_payload(ctx),
                    "request_id": ctx.request_id}, target=f"host:{inst.host}",
                    max_attempts=3)
        except BaseException:
            net.detach_port(ctx, inst.id, new_port)  # revert: no port left bound
            raise
        nic = next((n for n in net.instance_nics(inst.id) if n.port_id == new_port), None)
        view: dict[str, Any] = {"port_state": "DOWN", "fixed_ips": [], "port_id": new_port,
                                "net_id": nic.network_id if nic else request.network_id,
                                "mac_addr": nic.mac if nic else ""}
        for a in self._attachments(ctx, inst, version):
            if a["port_id"] == new_port:
                view = {**a, "port_state": "DOWN"}
        if version >= (2, 70):
            view["tag"] = tag
        return {"interfaceAttachment": view}

    def detach_interface(self, ctx: RequestContext, server_id: str, port_id: str) -> None:
        inst = self._server(ctx, server_id, "os-attach-interfaces:delete")
        self.api._check_lock(ctx, inst)
        if inst.vm_state not in ATTACH_STATES or inst.task_state is not None:
            raise Conflict(f"Cannot 'detach_interface' instance {inst.id} while it is in "
                           f"vm_state {inst.vm_state}")
        net = self._network()
        if all(n.port_id != port_id for n in net.instance_nics(inst.id)):
            raise NotFound(f"Port {port_id} is not attached")
        with self.db.session() as session:
            row = self.api.get_row(session, ctx, server_id)
            self.api.record_action(session, ctx, row, "detach_interface")
            row.updated_at = now()
            enqueue(session, "compute.detach_interface", {
                "instance_id": inst.id, "port_id": port_id, "ctx": ctx_payload(ctx),
                "request_id": ctx.request_id}, target=f"host:{inst.host}", max_attempts=3)
