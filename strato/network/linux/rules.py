"""nftables rulesets of a network namespace (port filters) and a router namespace (NAT).

Each ruleset is a whole ``nft -f`` file that deletes and re-creates its tables in one
transaction, so a reapply never leaves a half-written filter behind.
"""

from __future__ import annotations

import ipaddress

from ..dataplane import METADATA_ADDR, METADATA_PORT, PortPlan, RouterPlan, RulePlan, tap_name

#: IP protocol names nft knows as ``meta l4proto`` values
_PROTOCOLS = {"tcp", "udp", "icmp", "sctp", "udplite", "gre", "esp", "ah", "dccp"}


def _set(items: list[str] | tuple[str, ...]) -> str:
    return "{ " + ", ".join(items) + " }"


def _v4(addrs: tuple[str, ...] | list[str]) -> list[str]:
    out = []
    for a in addrs:
        try:
            net = ipaddress.ip_network(a, strict=False)
        except ValueError:
            continue
        if net.version == 4:
            out.append(str(net.network_address) if net.prefixlen == 32 else str(net))
    return out


def _rule_match(rule: RulePlan) -> str | None:
    """The nft match of one allowing rule (None: not expressible for IPv4, skipped)."""
    if rule.ethertype != "IPv4":
        return None
    parts: list[str] = []
    remote = _v4(rule.remote_cidrs)
    if rule.remote_cidrs and not remote:
        return None
    if remote:
        key = "saddr" if rule.direction == "ingress" else "daddr"
        parts.append(f"ip {key} {_set(remote)}")
    proto = (rule.protocol or "").lower()
    if proto in ("", "any"):
        pass
    elif proto.isdigit():
        if not 0 <= int(proto) <= 255:
            return None
        parts.append(f"meta l4proto {int(proto)}")
    elif proto in _PROTOCOLS:
        parts.append(f"meta l4proto {proto}")
    else:
        return None
    if proto in ("tcp", "udp") and (rule.port_min is not None or rule.port_max is not None):
        lo = rule.port_min if rule.port_min is not None else rule.port_max
        hi = rule.port_max if rule.port_max is not None else lo
        parts.append(f"{proto} dport {lo}" if lo == hi else f"{proto} dport {lo}-{hi}")
    elif proto == "icmp" and rule.port_min is not None:
        parts.append(f"icmp type {int(rule.port_min)}")
        if rule.port_max is not None:
            parts.append(f"icmp code {int(rule.port_max)}")
    return " ".join(parts)


def _port_ips(port: PortPlan) -> list[str]:
    return _v4(port.ips + tuple(ip for ip, _mac in port.allowed_pairs))


def network_ruleset(ports: tuple[PortPlan, ...], host_port: str | None = None,
                    host_ips: tuple[str, ...] = ()) -> str:
    """Anti-spoofing (bridge family) and security groups (inet family) of guest ports.

    ``host_port`` (an external network's veth to the host) passes only ARP and IPv4 to
    ``host_ips``: the host is an end, never a router out of the machine."""
    filtered = [p for p in ports if p.kind == "guest" and p.rules is not None]
    lines = [
        "table bridge strato", "delete table bridge strato",
        "table inet strato", "delete table inet strato",
        "table bridge strato {",
        "  chain prerouting {",
        "    type filter hook prerouting priority -200; policy accept;",
    ]
    for p in filtered:
        lines.append(f'    iifname "{tap_name(p.id)}" jump spoof_{_cid(p.id)}')
    lines.append("  }")
    for p in filtered:
        lines.append(f"  chain spoof_{_cid(p.id)} {{")
        pairs: dict[str, list[str]] = {p.mac.lower(): _v4(p.ips)}
        for ip_, mac in p.allowed_pairs:
            pairs.setdefault((mac or p.mac).lower(), []).extend(_v4((ip_,)))
        for mac, ips in pairs.items():
            lines.append(f"    ether saddr {mac} udp sport 68 udp dport 67 accept")
            lines.append(f"    ether saddr {mac} arp saddr ip 0.0.0.0 accept")
            if ips:
                lines.append(f"    ether saddr {mac} ip saddr {_set(ips)} accept")
                lines.append(f"    ether saddr {mac} arp saddr ether {mac} "
                             f"arp saddr ip {_set(ips)} accept")
        lines.append("    drop")
        lines.append("  }")
    if host_port:
        lines += ["  chain forward {",
                  "    type filter hook forward priority 0; policy accept;",
                  f'    oifname "{host_port}" ether type arp accept']
        if host_ips:
            lines.append(f'    oifname "{host_port}" ip daddr {_set(list(host_ips))} accept')
        lines += [f'    oifname "{host_port}" drop', "  }"]
    lines.append("}")
    guest_ips = sorted({ip_ for p in filtered for ip_ in _port_ips(p)})
    lines += [
        "table inet strato {",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        "    ct state established,related accept",
        "    udp dport 67 accept",
        f"    ip daddr {METADATA_ADDR} tcp dport {METADATA_PORT} accept",
        "    meta l4proto icmp accept",
    ]
    if guest_ips:
        lines.append(f"    ip saddr {_set(guest_ips)} drop")
    lines += [
        "  }",
        "  chain forward {",
        "    type filter hook forward priority 0; policy accept;",
        "    ct state established,related accept",
        "    ct state invalid drop",
    ]
    for p in filtered:
        ips = _port_ips(p)
        if ips:
            lines.append(f"    ip saddr {_set(ips)} jump egress_{_cid(p.id)}")
    for p in filtered:
        ips = _port_ips(p)
        if ips:
            lines.append(f"    ip daddr {_set(ips)} jump ingress_{_cid(p.id)}")
    lines.append("  }")
    for p in filtered:
        rules = p.rules or ()
        lines.append(f"  chain egress_{_cid(p.id)} {{")
        for r in rules:
            m = _rule_match(r) if r.direction == "egress" else None
            if m is not None:
                # return, not accept: the destination's ingress chain still decides
                lines.append(f"    {m + ' ' if m else ''}return")
        lines.append("    drop")
        lines.append("  }")
        lines.append(f"  chain ingress_{_cid(p.id)} {{")
        for r in rules:
            m = _rule_match(r) if r.direction == "ingress" else None
            if m is not None:
                lines.append(f"    {m + ' ' if m else ''}accept")
        lines.append("    drop")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _cid(port_id: str) -> str:
    """A chain name part from a port id (nft identifiers: letters, digits, _)."""
    return "".join(c if c.isalnum() else "_" for c in port_id[:11])


def router_ruleset(plan: RouterPlan, gateway_dev: str | None, gateway_cidr: str | None,
                   ) -> str:
    """SNAT of internal subnets, floating IPs' DNAT/SNAT, nothing out but the external
    subnet."""
    lines = ["table ip strato", "delete table ip strato", "table ip strato {"]
    lines += ["  chain prerouting {",
              "    type nat hook prerouting priority dstnat; policy accept;"]
    if gateway_dev:
        for f in plan.floating:
            lines.append(f"    ip daddr {f.floating_ip} dnat to {f.fixed_ip}")
    lines += ["  }", "  chain postrouting {",
              "    type nat hook postrouting priority srcnat; policy accept;"]
    if gateway_dev:
        for f in plan.floating:
            lines.append(f'    oifname "{gateway_dev}" ip saddr {f.fixed_ip} '
                         f"snat to {f.floating_ip}")
        gw_ip = plan.gateway.ip if plan.gateway else None
        internal = _v4([i.cidr for i in plan.interfaces])
        if plan.enable_snat and gw_ip and internal:
            lines.append(f'    oifname "{gateway_dev}" ip saddr {_set(internal)} '
                         f"snat to {gw_ip}")
    lines += ["  }", "  chain forward {",
              "    type filter hook forward priority filter; policy accept;"]
    if gateway_dev and gateway_cidr:
        lines.append(f'    oifname "{gateway_dev}" ip daddr != {gateway_cidr} drop')
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"
