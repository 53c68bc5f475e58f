"""The network data plane's contract: desired state in, devices out.

The network service (``strato.network.manager``) computes, from its tables, the whole
desired state of one network or one router as a *plan* and hands it to a data plane,
which makes the machine match it -- idempotently, so the same plan applied twice, or
after a crash halfway, or after a restart, ends in the same devices.  Nothing here
reads the database; nothing above here runs ``ip``/``nft``/``dnsmasq``.

Topology of the Linux data plane (``strato.network.linux``), per host:

- one namespace per network (``sn-<tag>-<network_id>``) holding its bridge, the taps
  of guest ports, the network side of router veths, dnsmasq (DHCP) on the bridge with
  the DHCP port's address, 169.254.169.254/32 for the metadata service, and the
  nftables rules of every port's security groups (the bridge passes IPv4 through the
  namespace's forward hook, so conntrack makes rules stateful);
- one namespace per router (``sr-<tag>-<router_id>``): its interfaces' gateway
  addresses, the external gateway address, SNAT and the floating IPs' DNAT;
- for an external network, a veth into the host's own namespace whose host end holds
  the external subnet's gateway address: the only way in, and no route anywhere else.

Device names are derived from ids (at most 15 characters): a guest port's tap is
:func:`tap_name`.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Protocol

METADATA_ADDR = "169.254.169.254"
METADATA_PORT = 80


def tap_name(port_id: str) -> str:
    """The tap of a guest port, as Neutron names it."""
    return "tap" + port_id[:11]


@dataclass(frozen=True)
class RulePlan:
    """One allowing rule of a port's security groups, with remote groups resolved.

    ``protocol`` is None (any), "tcp", "udp", "icmp" or an IP protocol number as a
    string; ports only for tcp/udp (for icmp, ``port_min``/``port_max`` are the ICMP
    type/code, as Neutron has them).  ``remote_cidrs`` empty means any address."""

    direction: str  # "ingress" (to the guest) | "egress" (from the guest)
    ethertype: str = "IPv4"
    protocol: str | None = None
    port_min: int | None = None
    port_max: int | None = None
    remote_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortPlan:
    """A port on a network: a guest's (a tap) or the network side of a router's."""

    id: str
    mac: str
    ips: tuple[str, ...]  # fixed IPs (on this network's subnets)
    kind: str = "guest"  # "guest" (tap) | "router" (veth to a router namespace)
    #: None: port security disabled (no anti-spoofing, no filtering); else the rules
    #: of all its security groups (an empty tuple drops everything but DHCP/metadata
    #: and replies).
    rules: tuple[RulePlan, ...] | None = ()
    #: extra (ip_or_cidr, mac) pairs the port may send from (allowed_address_pairs)
    allowed_pairs: tuple[tuple[str, str], ...] = ()
    hostname: str = ""  # the DHCP host name (a guest's name), "" for none
    admin_up: bool = True


@dataclass(frozen=True)
class SubnetPlan:
    id: str
    cidr: str
    gateway_ip: str | None
    enable_dhcp: bool = True
    dhcp_ip: str | None = None  # the address dnsmasq serves from (the DHCP port's)
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination cidr, nexthop)


@dataclass(frozen=True)
class NetworkPlan:
    id: str
    mtu: int = 1500
    subnets: tuple[SubnetPlan, ...] = ()
    #: every port of this network bound to this host (guests) or to a router here;
    #: a tap or veth of this network not listed is removed
    ports: tuple[PortPlan, ...] = ()
    #: True for an external network: the host veth, its gateway address on the host
    external: bool = False
    lease_seconds: int = 86400
    dns_domain: str = "openstacklocal"


@dataclass(frozen=True)
class FloatingPlan:
    floating_ip: str
    fixed_ip: str


@dataclass(frozen=True)
class RouterInterfacePlan:
    port_id: str
    network_id: str
    ip: str  # the router's address on that subnet (usually its gateway_ip)
    cidr: str  # that subnet's cidr
    mac: str


@dataclass(frozen=True)
class RouterPlan:
    id: str
    interfaces: tuple[RouterInterfacePlan, ...] = ()
    #: the gateway port on an external network (None: no external gateway)
    gateway: RouterInterfacePlan | None = None
    enable_snat: bool = True
    floating: tuple[FloatingPlan, ...] = ()
    admin_up: bool = True


@dataclass
class Owned:
    """What of this deployment's exists on the machine (for reconcile and teardown)."""

    networks: set[str] = field(default_factory=set)
    routers: set[str] = field(default_factory=set)


class DataplaneUnavailable(Exception):
    """This process cannot build networks here (not root, no namespaces, a tool
    missing); the message says which, for the operator."""


class Dataplane(Protocol):
    """Every data plane strato can drive; ``strato.network.linux.LinuxDataplane`` is
    the real one.  Each method is idempotent and safe to run again after a crash."""

    def probe(self) -> None:
        """Raise DataplaneUnavailable if this machine/process cannot run networks."""

    def apply_network(self, plan: NetworkPlan) -> None:
        """Namespace, bridge, taps/veths of ``plan.ports`` (others removed), dnsmasq
        (hosts, options; reloaded, started if gone), the metadata address, the
        port filters (replaced atomically), the host veth of an external network."""

    def remove_network(self, network_id: str) -> None:
        """Everything of that network: dnsmasq, taps, veths, rules, the namespace."""

    def apply_router(self, plan: RouterPlan) -> None:
        """Router namespace with its interfaces (veths into the networks' namespaces,
        which ``apply_network`` of those networks keeps listed), the gateway, SNAT and
        floating IPs' DNAT (replaced atomically)."""

    def remove_router(self, router_id: str) -> None: ...

    def open_tap(self, network_id: str, port_id: str) -> int:
        """A new file descriptor on the port's (existing) tap, opened in the network's
        namespace with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, for QEMU (``-netdev tap,fd=``,
        or QMP ``getfd`` for a hot-plug).  The caller closes it after handing it on."""

    def metadata_listener(self, network_id: str) -> socket.socket:
        """A listening TCP socket bound to 169.254.169.254:80 inside the network's
        namespace (the caller accepts and answers; the peer address tells the guest)."""

    def owned(self) -> Owned: ...

    def teardown(self) -> None:
        """Remove every namespace, device, rule and process of this deployment."""
