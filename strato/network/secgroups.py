"""Neutron security groups and their rules, including each project's default group.
They cost nothing on the data plane until a port uses them."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.network.base import _bump
from strato.network.errors import BadRequest, bad, conflict, in_use
from strato.network.manager import Touch
from strato.network.models import PortSecurityGroup, SecurityGroup, SecurityGroupRule
from strato.network.validation import _body, _bool, _id_list, _str
from strato.network.views import Views

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132,
             "gre": 47, "esp": 50, "ah": 51, "any": None}


class SecurityGroupOps(Views):
    """The ``/v2.0/security-groups`` and ``security-group-rules`` operations of ``NetworkAPI``."""

    DEFAULT_RULES = (("egress", "IPv4", False), ("egress", "IPv6", False),
                     ("ingress", "IPv4", True), ("ingress", "IPv6", True))

    def _default_group(self, s: Session, project: str) -> SecurityGroup:
        sg = s.scalars(select(SecurityGroup).where(SecurityGroup.project_id == project,
                                                   SecurityGroup.is_default)).first()
        if sg is not None:
            return sg
        sg = SecurityGroup(id=str(uuid.uuid4()), project_id=project, name="default",
                           description="Default security group", is_default=True)
        s.add(sg)
        s.flush()
        for direction, ethertype, self_ref in self.DEFAULT_RULES:
            s.add(SecurityGroupRule(id=str(uuid.uuid4()), project_id=project,
                                    security_group_id=sg.id, direction=direction,
                                    ethertype=ethertype,
                                    remote_group_id=sg.id if self_ref else None))
        s.flush()
        return sg

    def ensure_default_group(self, ctx: RequestContext) -> None:
        if not ctx.project_id:
            return
        with self.db.session(readonly=True) as s:
            if s.scalars(select(SecurityGroup.id).where(
                    SecurityGroup.project_id == ctx.project_id,
                    SecurityGroup.is_default)).first():
                return
        with self.db.session() as s:
            self._default_group(s, ctx.project_id)

    def list_security_groups(self, ctx: RequestContext) -> list[dict]:
        self.ensure_default_group(ctx)
        with self.db.session(readonly=True) as s:
            q = select(SecurityGroup).order_by(SecurityGroup.created_at, SecurityGroup.id)
            if not ctx.is_admin:
                q = q.where(SecurityGroup.project_id == ctx.project_id)
            return self._group_views(s, list(s.scalars(q)))

    def show_security_group(self, ctx: RequestContext, group_id: str) -> dict:
        with self.db.session(readonly=True) as s:
            return self._group_views(s, [self._get(s, ctx, SecurityGroup, "security_group",
                                                   group_id)])[0]

    def create_security_group(self, ctx: RequestContext, body: Any) -> dict:
        data = _body(body, "security_group", {"name", "description", "project_id",
                                              "tenant_id", "stateful", "tags"})
        project = self._target_project(ctx, data)
        self._enforce(ctx, "create_security_group", project)
        name = _str(data, "name")
        if name == "default":
            raise conflict("SecurityGroupDefaultAlreadyExists",
                           "Default security group already exists.")
        with self.db.session() as s:
            self._default_group(s, project)
            self._check_quota(s, project, "security_group")
            sg = SecurityGroup(id=str(uuid.uuid4()), project_id=project, name=name,
                               description=_str(data, "description"),
                               stateful=_bool(data, "stateful", True),
                               tags=_id_list(data, "tags"))
            s.add(sg)
            s.flush()
            for direction, ethertype, _ in self.DEFAULT_RULES[:2]:
                s.add(SecurityGroupRule(id=str(uuid.uuid4()), project_id=project,
                                        security_group_id=sg.id, direction=direction,
                                        ethertype=ethertype))
            s.flush()
            return self._group_views(s, [sg])[0]

    def update_security_group(self, ctx: RequestContext, group_id: str, body: Any) -> dict:
        data = _body(body, "security_group", {"name", "description", "stateful", "tags"})
        with self.db.session() as s:
            sg = self._get(s, ctx, SecurityGroup, "security_group", group_id)
            self._enforce(ctx, "update_security_group", sg.project_id)
            if "name" in data:
                if sg.is_default and data["name"] != "default":
                    raise conflict("SecurityGroupCannotUpdateDefault",
                                   "Updating default security group not allowed.")
                sg.name = _str(data, "name")
            if "description" in data:
                sg.description = _str(data, "description")
            if "tags" in data:
                sg.tags = _id_list(data, "tags")
            if "stateful" in data:
                sg.stateful = _bool(data, "stateful", True)
            _bump(sg)
            s.flush()
            return self._group_views(s, [sg])[0]

    def delete_security_group(self, ctx: RequestContext, group_id: str) -> None:
        def work(s: Session, touch: Touch) -> None:
            sg = self._get(s, ctx, SecurityGroup, "security_group", group_id)
            self._enforce(ctx, "delete_security_group", sg.project_id)
            if sg.is_default and not ctx.is_admin:
                raise conflict("SecurityGroupCannotRemoveDefault",
                               "Removing default security group not allowed.")
            if s.scalars(select(PortSecurityGroup).where(
                    PortSecurityGroup.security_group_id == group_id)).first():
                raise in_use("SecurityGroupInUse", f"Security Group {group_id} in use.")
            referring = list(s.scalars(select(SecurityGroupRule.security_group_id).where(
                SecurityGroupRule.remote_group_id == group_id)))
            self._touch_groups(s, referring, touch)
            s.execute(delete(SecurityGroupRule).where(
                SecurityGroupRule.remote_group_id == group_id))
            s.execute(delete(SecurityGroupRule).where(
                SecurityGroupRule.security_group_id == group_id))
            s.delete(sg)

        self._change(work)

    # ------------------------------------------------------------ rules
    RULE_ATTRS = {"security_group_id", "direction", "ethertype", "protocol",
                  "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id",
                  "description", "project_id", "tenant_id", "remote_address_group_id"}

    def list_security_group_rules(self, ctx: RequestContext) -> list[dict]:
        with self.db.session(readonly=True) as s:
            q = select(SecurityGroupRule).order_by(SecurityGroupRule.created_at,
                                                   SecurityGroupRule.id)
            if not ctx.is_admin:
                q = q.where(SecurityGroupRule.project_id == ctx.project_id)
            defaults = set(s.scalars(select(SecurityGroup.id).where(
                SecurityGroup.is_default)))
            return [self._rule_view(r, defaults) for r in s.scalars(q)]

    def show_security_group_rule(self, ctx: RequestContext, rule_id: str) -> dict:
        with self.db.session(readonly=True) as s:
            r = self._get(s, ctx, SecurityGroupRule, "security_group_rule", rule_id)
            defaults = set(s.scalars(select(SecurityGroup.id).where(
                SecurityGroup.is_default)))
            return self._rule_view(r, defaults)

    @staticmethod
    def _port_bound(value: Any, key: str) -> int | None:
        if value is None:
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise BadRequest(f"Invalid input for {key}. Reason: '{value}' is not an "
                             "integer.") from None
        if not 0 <= number <= 65535:
            raise bad("SecurityGroupInvalidPortValue", f"Invalid value for port {value}.")
        return number

    def create_security_group_rule(self, ctx: RequestContext, body: Any) -> dict:
        data = _body(body, "security_group_rule", self.RULE_ATTRS,
                     ("security_group_id", "direction"))
        direction = data["direction"]
        if direction not in ("ingress", "egress"):
            raise BadRequest(f"Invalid input for direction. Reason: '{direction}' is not in "
                             "['ingress', 'egress'].")
        ethertype = data.get("ethertype") or "IPv4"
        if ethertype not in ("IPv4", "IPv6"):
            raise bad("SecurityGroupRuleInvalidEtherType", f"Security group rule for "
                      f"ethertype '{ethertype}' not supported. Allowed values are "
                      "['IPv4', 'IPv6'].")
        protocol = data.get("protocol")
        if protocol is not None:
            protocol = str(protocol).lower()
            if protocol not in PROTOCOLS and not (protocol.isdigit()
                                                  and 0 <= int(protocol) <= 255):
                raise bad("SecurityGroupRuleInvalidProtocol", f"Security group rule "
                          f"protocol {protocol} not supported.")
            if protocol == "any":
                protocol = None
        pmin = self._port_bound(data.get("port_range_min"), "port_range_min")
        pmax = self._port_bound(data.get("port_range_max"), "port_range_max")
        if protocol in ("tcp", "udp", "6", "17", "sctp", "132"):
            if pmin is not None and pmax is None:
                pmax = pmin
            if pmin is None and pmax is not None:
                raise bad("SecurityGroupInvalidPortRange",
                          "For TCP/UDP protocols, port_range_min must be <= port_range_max")
            if pmin is not None and (pmin == 0 or pmin > pmax):  # type: ignore[operator]
                raise bad("SecurityGroupInvalidPortRange",
                          "For TCP/UDP protocols, port_range_min must be <= port_range_max")
            if pmin == 1 and pmax == 65535:
                pmin = pmax = None
        elif protocol in ("icmp", "1", "icmpv6", "ipv6-icmp", "58"):
            if pmin is not None and pmin > 255 or pmax is not None and pmax > 255:
                raise bad("SecurityGroupInvalidIcmpValue", "Invalid value for ICMP type or "
                          "code: must be at most 255.")
            if pmax is not None and pmin is None:
                raise bad("SecurityGroupMissingIcmpType", "ICMP code (port-range-max) "
                          f"{pmax} is provided but ICMP type (port-range-min) is missing.")
        elif pmin is not None or pmax is not None:
            raise bad("SecurityGroupProtocolRequiredWithPorts",
                      "Must also specify protocol if port range is given.")
        prefix = data.get("remote_ip_prefix")
        if prefix is not None:
            if not isinstance(prefix, str):
                raise BadRequest(f"Invalid input for remote_ip_prefix. Reason: '{prefix}' "
                                 "is not a valid IP prefix.")
            try:
                cidr = ipaddress.ip_network(prefix, strict=False)
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid input for remote_ip_prefix. Reason: '{prefix}' "
                                 "is not a valid IP prefix.") from None
            if (cidr.version == 4) != (ethertype == "IPv4"):
                raise bad("SecurityGroupRuleParameterConflict", f"Conflicting value "
                          f"ethertype {ethertype} for CIDR {prefix}")
            prefix = str(cidr)
        remote = data.get("remote_group_id")
        if prefix is not None and remote is not None:
            raise bad("SecurityGroupRemoteGroupAndRemoteIpPrefix", "Only remote_ip_prefix "
                      "or remote_group_id may be provided.")

        def work(s: Session, touch: Touch) -> dict:
            sg = self._get(s, ctx, SecurityGroup, "security_group", data["security_group_id"])
            self._enforce(ctx, "create_security_group_rule", sg.project_id)
            if remote is not None:
                self._get(s, ctx, SecurityGroup, "security_group", remote)
            self._check_quota(s, sg.project_id, "security_group_rule")
            for r in s.scalars(select(SecurityGroupRule).where(
                    SecurityGroupRule.security_group_id == sg.id)):
                if (r.direction, r.ethertype, r.protocol, r.port_range_min,
                        r.port_range_max, r.remote_ip_prefix, r.remote_group_id) == (
                        direction, ethertype, protocol, pmin, pmax, prefix, remote):
                    raise conflict("SecurityGroupRuleExists", "Security group rule "
                                   f"already exists. Rule id is {r.id}.")
            rule = SecurityGroupRule(id=str(uuid.uuid4()), project_id=sg.project_id,
                                     security_group_id=sg.id, direction=direction,
                                     ethertype=ethertype, protocol=protocol,
                                     port_range_min=pmin, port_range_max=pmax,
                                     remote_ip_prefix=prefix, remote_group_id=remote,
                                     description=_str(data, "description"))
            s.add(rule)
            _bump(sg)
            s.flush()
            self._touch_groups(s, [sg.id], touch)
            return self._rule_view(rule, {sg.id} if sg.is_default else set())

        return self._change(work)

    def delete_security_group_rule(self, ctx: RequestContext, rule_id: str) -> None:
        def work(s: Session, touch: Touch) -> None:
            rule = self._get(s, ctx, SecurityGroupRule, "security_group_rule", rule_id)
            self._enforce(ctx, "delete_security_group_rule", rule.project_id)
            self._touch_groups(s, [rule.security_group_id], touch)
            s.delete(rule)

        self._change(work)
