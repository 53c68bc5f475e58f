"""Nova's network proxies, up to 2.35: ``os-security-groups``,
``os-security-group-rules``, ``os-floating-ips``, ``os-floating-ip-pools``,
``os-networks`` and ``os-tenant-networks``, over strato's network service.

Nova translates Neutron's resources into nova-network's old shapes
(``nova/network/security_group_api.py``); this module does the same over
``services.network``'s Python API, so Neutron's policy, quotas and ownership apply.
Reads work when the data plane is disabled (they only read records).
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound, StratoError
from strato.network.api import NetworkAPI
from strato.policy import Enforcer
from strato.validation import show

P = "os_compute_api:"
MAX_LIMIT = 1000


def _uuid(value: str, what: str = "Security group id") -> str:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise BadRequest(f"{what} should be uuid") from None
    return value


def _cidr(value: Any) -> str:
    """Nova's ``parse_cidr``: empty means anywhere; otherwise a valid CIDR."""
    if not value:
        return "0.0.0.0/0"
    try:
        ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise BadRequest(f"Invalid cidr {show(value)}.") from None
    if "/" not in str(value):
        raise BadRequest(f"Invalid cidr {show(value)}.")
    return str(value)


def nova_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """Neutron rule -> Nova's internal rule (``_convert_to_nova_security_group_rule_format``)."""
    protocol = rule.get("protocol")
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if protocol and low is None and high is None:
        low, high = (1, 65535) if str(protocol).upper() in ("TCP", "UDP") else (-1, -1)
    return {"id": rule["id"], "parent_group_id": rule["security_group_id"],
            "protocol": protocol, "from_port": low, "to_port": high,
            "group_id": rule.get("remote_group_id"),
            "cidr": rule.get("remote_ip_prefix") or "0.0.0.0/0"}


def rule_view(rule: dict[str, Any], group: dict[str, Any] | None) -> dict[str, Any]:
    """Nova's ``security_group_rule`` view; ``group`` is the remote group's
    ``{name, tenant_id}`` for a group rule."""
    view: dict[str, Any] = {"id": rule["id"], "parent_group_id": rule["parent_group_id"],
                            "ip_protocol": rule["protocol"], "from_port": rule["from_port"],
                            "to_port": rule["to_port"], "group": {}, "ip_range": {}}
    if rule["group_id"]:
        view["group"] = group or {}
    else:
        view["ip_range"] = {"cidr": rule["cidr"]}
    return view


def group_views(groups: list[dict[str, Any]],
                lookup: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Nova's ``security_group`` views (ingress rules only, as Nova shows them), sorted
    by (tenant, name). ``lookup``: remote group id -> its Neutron view."""
    out = []
    for g in groups:
        rules = []
        for r in g.get("security_group_rules", []):
            if r.get("direction") != "ingress":
                continue
            rule = nova_rule(r)
            remote = None
            if rule["group_id"]:
                source = lookup.get(rule["group_id"])
                if source is None:
                    continue  # the remote group is gone: Nova skips the rule
                remote = {"name": source.get("name"), "tenant_id": source.get("tenant_id")}
            rules.append(rule_view(rule, remote))
        out.append({"id": g["id"], "description": g.get("description") or "",
                    "name": g.get("name") or "", "tenant_id": g.get("tenant_id") or "",
                    "rules": rules})
    return sorted(out, key=lambda k: (k["tenant_id"], k["name"]))


def _limited(items: list[Any], params: dict[str, str]) -> list[Any]:
    try:
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", MAX_LIMIT))
    except ValueError:
        raise BadRequest("limit and offset param must be an integer") from None
    if offset < 0 or limit < 0:
        raise BadRequest("limit and offset param must be positive")
    return items[offset:offset + min(MAX_LIMIT, limit or MAX_LIMIT)]


class NetworkProxy:
    def __init__(self, network: NetworkAPI | None, policy: Enforcer) -> None:
        if network is None:
            raise NotFound("The resource could not be found.")
        self.network = network
        self.policy = policy

    def _enforce(self, ctx: RequestContext, rule: str) -> None:
        self.policy.enforce(ctx, P + rule, {"project_id": ctx.project_id})

    # ------------------------------------------------------------ security groups
    def _lookup(self, ctx: RequestContext, groups: list[dict[str, Any]]) -> dict[str, dict]:
        found = {g["id"]: g for g in groups}
        wanted = {r.get("remote_group_id") for g in groups
                  for r in g.get("security_group_rules", []) if r.get("remote_group_id")}
        for gid in wanted - set(found):
            try:
                found[gid] = self.network.show_security_group(ctx, gid)
            except NotFound:
                pass
        return found

    def _group(self, ctx: RequestContext, group_id: str) -> dict[str, Any]:
        try:
            return self.network.show_security_group(ctx, group_id)
        except NotFound:
            raise NotFound(f"Security group {group_id} not found.") from None

    def _one(self, ctx: RequestContext, group: dict[str, Any]) -> dict[str, Any]:
        return group_views([group], self._lookup(ctx, [group]))[0]

    def list_groups(self, ctx: RequestContext, params: dict[str, str]) -> list[dict]:
        self._enforce(ctx, "os-security-groups:get")
        groups = self.network.list_security_groups(ctx)
        if not (ctx.is_admin and "all_tenants" in params):
            groups = [g for g in groups if g.get("tenant_id") == ctx.project_id]
        groups = _limited(groups, params)
        return group_views(groups, self._lookup(ctx, groups))

    def show_group(self, ctx: RequestContext, group_id: str) -> dict[str, Any]:
        self._enforce(ctx, "os-security-groups:show")
        return self._one(ctx, self._group(ctx, _uuid(group_id)))

    @staticmethod
    def _group_body(body: Any) -> dict[str, str]:
        ref = body.get("security_group") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Invalid input for field/attribute security_group: "
                             "'security_group' is a required property.")
        for key in ("name", "description"):
            value = ref.get(key)
            if key not in ref:
                raise BadRequest(f"Invalid input for field/attribute security_group: "
                                 f"'{key}' is a required property.")
            if not isinstance(value, str) or len(value) > 255:
                raise BadRequest(f"Invalid input for field/attribute {key}. Value: "
                                 f"{show(value)}. It must be a string of at most 255 "
                                 "characters.")
        return {"name": ref["name"], "description": ref["description"]}

    def create_group(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        self._enforce(ctx, "os-security-groups:create")
        ref = self._group_body(body)
        try:
            group = self.network.create_security_group(ctx, {"security_group": ref})
        except Conflict as exc:  # any Neutron 409 (over quota, "default"): Nova's 403
            raise Forbidden(exc.message) from None
        return self._one(ctx, group)

    def update_group(self, ctx: RequestContext, group_id: str, body: Any) -> dict:
        self._enforce(ctx, "os-security-groups:update")
        self._group(ctx, _uuid(group_id))
        ref = self._group_body(body)
        try:
            group = self.network.update_security_group(ctx, group_id,
                                                       {"security_group": ref})
        except Conflict as exc:
            raise BadRequest(exc.message) from None
        return self._one(ctx, group)

    def delete_group(self, ctx: RequestContext, group_id: str) -> None:
        self._enforce(ctx, "os-security-groups:delete")
        self._group(ctx, _uuid(group_id))
        try:
            self.network.delete_security_group(ctx, group_id)
        except Conflict as exc:  # in use, or the default group: Nova's 400
            raise BadRequest(exc.message) from None

    # ------------------------------------------------------------ rules
    def create_rule(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        self._enforce(ctx, "os-security-groups:rule:create")
        ref = body.get("security_group_rule") if isinstance(body, dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("parent_group_id"), str):
            raise BadRequest("Invalid input for field/attribute security_group_rule: "
                             "'parent_group_id' is a required property.")
        parent = self._group(ctx, _uuid(ref["parent_group_id"], "parent_group_id"))
        group_id = ref.get("group_id")
        remote = None
        if group_id is not None:
            if not isinstance(group_id, str):
                raise BadRequest("Invalid input for field/attribute group_id.")
            source = self._group(ctx, _uuid(group_id, "group_id"))
            remote = {"name": source.get("name"), "tenant_id": source.get("tenant_id")}
        new = self._new_rule(ref.get("ip_protocol"), ref.get("from_port"),
                             ref.get("to_port"), group_id,
                             None if group_id is not None else _cidr(ref.get("cidr")))
        if new is None:
            raise BadRequest("Not enough parameters to build a valid rule.")
        cidr = new.get("cidr")
        if cidr:
            net = ipaddress.ip_network(cidr, strict=False)
            if str(net.network_address) not in ("0.0.0.0", "::") and net.prefixlen == 0:
                raise BadRequest(f"Bad prefix for network in cidr {cidr}")
        for rule in (nova_rule(r) for r in parent.get("security_group_rules", [])
                     if r.get("direction") == "ingress"):
            if all(rule.get(k) == new.get(k) for k in ("group_id", "cidr", "from_port",
                                                        "to_port", "protocol")):
                raise BadRequest(f"This rule already exists in group {parent['id']}")
        neutron: dict[str, Any] = {
            "security_group_id": parent["id"], "direction": "ingress",
            "protocol": new.get("protocol"), "remote_ip_prefix": cidr,
            "remote_group_id": new.get("group_id"),
            "ethertype": "IPv6" if cidr and ipaddress.ip_network(
                cidr, strict=False).version == 6 else "IPv4"}
        if new.get("from_port") not in (None, -1):
            neutron["port_range_min"] = new["from_port"]
        if new.get("to_port") not in (None, -1):
            neutron["port_range_max"] = new["to_port"]
        try:
            created = self.network.create_security_group_rule(
                ctx, {"security_group_rule": neutron})
        except Conflict as exc:  # Neutron's 409 (over quota, duplicate): Nova's 403
            raise Forbidden(exc.message) from None
        except StratoError as exc:
            if exc.status == 404:
                raise NotFound(exc.message) from None
            if exc.status >= 500:
                raise
            raise BadRequest(exc.message) from None
        return rule_view(nova_rule(created), remote)

    @staticmethod
    def _new_rule(protocol: Any, from_port: Any, to_port: Any, group_id: str | None,
                  cidr: str | None) -> dict[str, Any] | None:
        """Nova's ``_new_ingress_rule``: the checks of protocol and port range."""
        values: dict[str, Any] = {}
        upper = str(protocol).upper() if protocol else ""
        if group_id:
            values["group_id"] = group_id
            if from_port is None and to_port is None:
                if upper == "ICMP":
                    from_port = to_port = -1
                elif upper in ("TCP", "UDP"):
                    from_port, to_port = 1, 65535
        elif cidr:
            values["cidr"] = cidr
        if protocol and from_port is not None and to_port is not None:
            try:
                low, high = int(from_port), int(to_port)
            except (TypeError, ValueError):
                raise BadRequest("Type and Code must be integers for ICMP protocol type"
                                 if upper == "ICMP" else "To and From ports must be "
                                 "integers") from None
            if upper not in ("TCP", "UDP", "ICMP"):
                raise BadRequest(f"Invalid IP protocol {protocol}.")
            if upper in ("TCP", "UDP") and low > high:
                raise BadRequest(f"Invalid port range {low}:{high}. Former value cannot "
                                 "be greater than the later")
            if upper in ("TCP", "UDP") and (low < 1 or high > 65535):
                raise BadRequest(f"Invalid port range {low}:{high}. Valid {upper} ports "
                                 "should be between 1-65535")
            if upper == "ICMP" and not (-1 <= low <= 255 and -1 <= high <= 255):
                raise BadRequest(f"Invalid port range {low}:{high}. For ICMP, the "
                                 "type:code must be valid")
            values.update(protocol=str(protocol).lower(), from_port=low, to_port=high)
        elif cidr:
            return None
        return values

    def delete_rule(self, ctx: RequestContext, rule_id: str) -> None:
        self._enforce(ctx, "os-security-groups:rule:delete")
        _uuid(rule_id, "Security group rule id")
        try:
            self.network.show_security_group_rule(ctx, rule_id)
        except NotFound:
            raise NotFound(f"Security group rule {rule_id} not found.") from None
        self.network.delete_security_group_rule(ctx, rule_id)

    # ------------------------------------------------------------ floating IPs
    def _fip_view(self, fip: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
        details = fip.get("port_details") or {}
        net = fip.get("floating_network_id") or ""
        return {"id": fip["id"], "ip": fip["floating_ip_address"],
                "fixed_ip": fip.get("fixed_ip_address"),
                "instance_id": details.get("device_id") or None,
                "pool": names.get(net) or net}

    def _net_names(self, ctx: RequestContext) -> dict[str, str]:
        return {n["id"]: n.get("name") or "" for n in self.network.list_networks(ctx)}

    def list_floating_ips(self, ctx: RequestContext) -> list[dict[str, Any]]:
        self._enforce(ctx, "os-floating-ips:list")
        names = self._net_names(ctx)
        return [self._fip_view(f, names) for f in self.network.list_floatingips(ctx)]

    def show_floating_ip(self, ctx: RequestContext, fip_id: str) -> dict[str, Any]:
        self._enforce(ctx, "os-floating-ips:show")
        try:
            fip = self.network.show_floatingip(ctx, fip_id)
        except NotFound:
            raise NotFound(f"Floating IP {fip_id} could not be found.") from None
        return self._fip_view(fip, self._net_names(ctx))

    def create_floating_ip(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        self._enforce(ctx, "os-floating-ips:create")
        pool = body.get("pool") if isinstance(body, dict) else None
        if pool is not None and not isinstance(pool, str):
            raise BadRequest("Invalid input for field/attribute pool.")
        pools = [n for n in self.network.list_networks(ctx) if n.get("router:external")]
        if pool:
            pools = [n for n in pools if pool in (n["id"], n.get("name"))]
            if not pools:
                raise NotFound(f"Floating IP pool not found: {pool}.")
        if not pools:
            raise NotFound("No floating IP pool is available.")
        try:
            fip = self.network.create_floatingip(
                ctx, {"floatingip": {"floating_network_id": pools[0]["id"]}})
        except Conflict as exc:
            if "quota" in exc.message.lower():
                raise Forbidden("Maximum number of floating IPs exceeded") from None
            raise NotFound(f"No more floating IPs in pool {pool or pools[0]['id']}.") \
                from None
        return self._fip_view(fip, {n["id"]: n.get("name") or "" for n in pools})

    def delete_floating_ip(self, ctx: RequestContext, fip_id: str) -> None:
        self._enforce(ctx, "os-floating-ips:delete")
        try:
            self.network.delete_floatingip(ctx, fip_id)
        except NotFound:
            raise NotFound(f"Floating IP {fip_id} could not be found.") from None

    def list_pools(self, ctx: RequestContext) -> list[dict[str, str]]:
        self._enforce(ctx, "os-floating-ip-pools:list")
        return [{"name": n.get("name") or n["id"]} for n in self.network.list_networks(ctx)
                if n.get("router:external")]

    # ------------------------------------------------------------ networks
    NETWORK_FIELDS = ("id", "cidr", "netmask", "gateway", "broadcast", "dns1", "dns2",
                      "cidr_v6", "gateway_v6", "label", "netmask_v6")
    ADMIN_FIELDS = ("created_at", "updated_at", "deleted_at", "deleted", "injected",
                    "bridge", "vlan", "vpn_public_address", "vpn_public_port",
                    "vpn_private_address", "dhcp_start", "project_id", "host",
                    "bridge_interface", "multi_host", "priority", "rxtx_base", "mtu",
                    "dhcp_server", "enable_dhcp", "share_address")

    def _network_view(self, ctx: RequestContext, net: dict[str, Any]) -> dict[str, Any]:
        """Nova's ``network_dict`` over Neutron: id and label, every other field null."""
        fields = self.NETWORK_FIELDS + (self.ADMIN_FIELDS if ctx.is_admin else ())
        view: dict[str, Any] = dict.fromkeys(fields)
        view.update(id=net["id"], label=net.get("name") or "")
        return view

    def _network(self, ctx: RequestContext, network_id: str) -> dict[str, Any]:
        try:
            return self.network.show_network(ctx, network_id)
        except (NotFound, Forbidden):
            raise NotFound("Network not found") from None

    def list_networks(self, ctx: RequestContext) -> list[dict[str, Any]]:
        self._enforce(ctx, "os-networks:list")
        return [self._network_view(ctx, n) for n in self.network.list_networks(ctx)]

    def show_network(self, ctx: RequestContext, network_id: str) -> dict[str, Any]:
        self._enforce(ctx, "os-networks:view")
        return self._network_view(ctx, self._network(ctx, network_id))

    @staticmethod
    def _tenant_view(net: dict[str, Any]) -> dict[str, Any]:
        # Nova over Neutron historically answers the string "None" for cidr
        return {"id": net["id"], "cidr": str(None), "label": net.get("name") or ""}

    def list_tenant_networks(self, ctx: RequestContext) -> list[dict[str, Any]]:
        self._enforce(ctx, "os-tenant-networks:list")
        return [self._tenant_view(n) for n in self.network.list_networks(ctx)]

    def show_tenant_network(self, ctx: RequestContext, network_id: str) -> dict[str, Any]:
        self._enforce(ctx, "os-tenant-networks:show")
        return self._tenant_view(self._network(ctx, network_id))
