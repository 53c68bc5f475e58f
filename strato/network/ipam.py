"""IPv4 address management: pools, the gateway, first free address, random MACs.

Addresses in use on a subnet are its ports' fixed IPs and, on an external subnet, its
floating IPs (which have no port row)."""

from __future__ import annotations

import ipaddress
import random

from sqlalchemy import select
from sqlalchemy.orm import Session

from strato.network.errors import bad, conflict
from strato.network.models import FloatingIP, Port, PortIP, Subnet

MAC_PREFIX = "fa:16:3e"


def parse_cidr(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise bad("InvalidInput", f"Invalid input for cidr. Reason: '{cidr}' is not a "
                  "valid IP subnet.") from None
    if net.version != 4:
        raise bad("InvalidInput", "IPv6 is not supported.")
    if str(net) != cidr:
        raise bad("InvalidInput", f"Invalid input for cidr. Reason: '{cidr}' isn't a "
                  f"recommended CIDR, use '{net}' instead.")
    if net.prefixlen > 30:
        raise bad("InvalidInput", "Invalid input for cidr: a subnet needs a prefix of "
                  "at most /30.")
    return net  # type: ignore[return-value]


def hosts(net: ipaddress.IPv4Network) -> tuple[int, int]:
    """First and last usable address (as ints)."""
    return int(net.network_address) + 1, int(net.broadcast_address) - 1


def default_pools(net: ipaddress.IPv4Network, gateway: str | None) -> list[dict]:
    first, last = hosts(net)
    gw = int(ipaddress.ip_address(gateway)) if gateway else None
    pools, start = [], first
    if gw is not None and first <= gw <= last:
        if gw > first:
            pools.append((first, gw - 1))
        start = gw + 1
    if start <= last:
        pools.append((start, last))
    return [{"start": str(ipaddress.ip_address(a)), "end": str(ipaddress.ip_address(b))}
            for a, b in pools]


def check_pools(net: ipaddress.IPv4Network, pools: list[dict],
                gateway: str | None) -> list[dict]:
    first, last = hosts(net)
    out, spans = [], []
    for pool in pools:
        try:
            a = int(ipaddress.IPv4Address(pool["start"]))
            b = int(ipaddress.IPv4Address(pool["end"]))
        except (KeyError, TypeError, ValueError):
            raise bad("InvalidInput", f"Invalid input for allocation_pools: {pool!r} is "
                      "not a valid pool.") from None
        if not (first <= a <= b <= last):
            raise bad("InvalidAllocationPool",
                      f"The allocation pool {pool['start']}-{pool['end']} spans beyond "
                      f"the subnet cidr {net}.")
        if gateway and a <= int(ipaddress.IPv4Address(gateway)) <= b:
            raise bad("GatewayConflictWithAllocationPools",
                      f"Gateway ip {gateway} conflicts with allocation pool "
                      f"{pool['start']}-{pool['end']}.")
        for c, d in spans:
            if a <= d and c <= b:
                raise bad("OverlappingAllocationPools", "Found overlapping allocation "
                          f"pools in subnet {net}.")
        spans.append((a, b))
        out.append({"start": pool["start"], "end": pool["end"]})
    return out


def used(session: Session, subnet_id: str) -> set[str]:
    ips = set(session.scalars(select(PortIP.ip_address).where(PortIP.subnet_id == subnet_id)))
    ips.update(session.scalars(select(FloatingIP.floating_ip_address).where(
        FloatingIP.floating_subnet_id == subnet_id)))
    return ips


def allocate(session: Session, subnet: Subnet, ip: str | None = None) -> str:
    """``ip`` if it is free and valid on the subnet, else the first free address of the
    pools; 409 IpAddressAlreadyAllocated / IpAddressGenerationFailure."""
    taken = used(session, subnet.id)
    net = ipaddress.ip_network(subnet.cidr)
    if ip is not None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            raise bad("InvalidInput", f"Invalid input for ip_address. Reason: '{ip}' is "
                      "not a valid IP address.") from None
        first, last = hosts(net)  # type: ignore[arg-type]
        if addr.version != 4 or not first <= int(addr) <= last:
            raise bad("InvalidIpForSubnet", f"IP address {ip} is not a valid IP for the "
                      "specified subnet.")
        if str(addr) in taken:
            raise conflict("IpAddressAlreadyAllocated", f"IP address {addr} already "
                           f"allocated in subnet {subnet.id}")
        return str(addr)
    for pool in subnet.allocation_pools:
        a = int(ipaddress.IPv4Address(pool["start"]))
        b = int(ipaddress.IPv4Address(pool["end"]))
        for n in range(a, b + 1):
            candidate = str(ipaddress.IPv4Address(n))
            if candidate not in taken:
                return candidate
    raise conflict("IpAddressGenerationFailure", "No more IP addresses available on "
                   f"network {subnet.network_id}.")


def new_mac(session: Session, network_id: str) -> str:
    taken = set(session.scalars(select(Port.mac_address).where(
        Port.network_id == network_id)))
    while True:
        mac = MAC_PREFIX + "".join(f":{random.randrange(256):02x}" for _ in range(3))
        if mac not in taken:
            return mac
