"""The Linux data plane: namespaces, a bridge per network, taps, veths, dnsmasq, nftables.

Every apply is a full reconcile of one plan against what the kernel has (devices,
addresses) and what ``state_path`` holds (dnsmasq files, pid), so it is idempotent and
finishes what a crash left halfway.  Names carry a tag (``dataplane_id``, or a hash of
``state_path``) so that several deployments on one machine never touch each other's.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ...config import Config
from ..dataplane import (
    METADATA_ADDR,
    METADATA_PORT,
    DataplaneUnavailable,
    NetworkPlan,
    Owned,
    RouterPlan,
    tap_name,
)
from . import netns, rules
from .dnsmasq import Dnsmasq, dhcp_subnets
from .netns import CommandError, ip, ip_json

LOG = logging.getLogger(__name__)
BRIDGE = "br0"
F = TypeVar("F", bound=Callable[..., Any])


def _exclusive(fn: F) -> F:
    """One change at a time on this deployment's devices: threads of this process
    (a lock) and other processes on the same ``state_path`` (``flock``)."""

    @functools.wraps(fn)
    def wrapper(self: LinuxDataplane, *args: Any, **kwargs: Any) -> Any:
        with self._locked():
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _mac_for(seed: str) -> str:
    """A stable locally administered MAC (the bridge's, so it never changes)."""
    h = hashlib.sha256(seed.encode()).digest()
    return "fa:16:3e:" + ":".join(f"{b:02x}" for b in h[:3])


class LinuxDataplane:
    """:class:`strato.network.dataplane.Dataplane` on this machine's kernel."""

    def __init__(self, conf: Config) -> None:
        self.state_path = Path(conf.network.state_path)
        tag = (conf.network.dataplane_id or "").strip()
        if not tag:
            tag = hashlib.sha256(str(self.state_path).encode()).hexdigest()[:6]
        self.tag = tag
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.state_path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.state_path / ".dataplane.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ names
    def network_ns(self, network_id: str) -> str:
        return f"sn-{self.tag}-{network_id}"

    def router_ns(self, router_id: str) -> str:
        return f"sr-{self.tag}-{router_id}"

    def host_veth(self, network_id: str) -> str:
        return f"sx{self.tag[:6]}{network_id.replace('-', '')[:6]}"

    @staticmethod
    def _short(port_id: str) -> str:
        return port_id[:11]

    def _dnsmasq(self, network_id: str) -> Dnsmasq:
        return Dnsmasq(self.network_ns(network_id), self.state_path / network_id, BRIDGE)

    # ------------------------------------------------------------------ probe
    def probe(self) -> None:
        if os.geteuid() != 0:
            raise DataplaneUnavailable("not running as root (network namespaces need it)")
        for tool in ("ip", "nft", "dnsmasq"):
            if shutil.which(tool) is None:
                raise DataplaneUnavailable(f"the program {tool!r} is not installed")
        if not os.path.exists("/dev/net/tun"):
            raise DataplaneUnavailable("/dev/net/tun is missing (no tap devices)")
        scratch = f"sp-{self.tag}-{os.getpid()}"
        try:
            netns.create(scratch)
            ip("link", "add", "br0", "type", "bridge", "nf_call_iptables", "1", ns=scratch)
            netns.exec_in(scratch, ["nft", "-f", "-"], input=(
                "table inet probe {\n chain f {\n  type filter hook forward priority 0;\n }\n}\n"))
        except (CommandError, OSError) as exc:
            raise DataplaneUnavailable(f"cannot build a network namespace here: {exc}") \
                from exc
        finally:
            try:
                netns.delete(scratch)
            except CommandError:
                pass

    # ------------------------------------------------------------------ networks
    def _ensure_network_base(self, network_id: str, mtu: int | None) -> str:
        """The namespace and its bridge (created if missing); returns the namespace."""
        ns = self.network_ns(network_id)
        if netns.create(ns):
            LOG.info("network %s: namespace %s created", network_id, ns)
        links = {link["ifname"]: link for link in ip_json("link", "show", ns=ns)}
        if BRIDGE not in links:  # created whole: nf_call_iptables is never missing
            ip("link", "add", BRIDGE, "address", _mac_for(ns), "type", "bridge",
               "nf_call_iptables", "1", ns=ns)
            _disable_ipv6(ns, BRIDGE)
        link = links.get(BRIDGE, {})
        if mtu is not None and link.get("mtu") != mtu:
            ip("link", "set", BRIDGE, "mtu", str(mtu), ns=ns)
        if "UP" not in link.get("flags", ()):
            ip("link", "set", BRIDGE, "up", ns=ns)
        return ns

    @_exclusive
    def apply_network(self, plan: NetworkPlan) -> None:
        ns = self._ensure_network_base(plan.id, plan.mtu)
        links = {link["ifname"]: link for link in ip_json("link", "show", ns=ns)}
        # guest taps
        want_taps = {tap_name(p.id): p for p in plan.ports if p.kind == "guest"}
        for name, port in want_taps.items():
            if name not in links:
                ip("tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr", ns=ns)
                _disable_ipv6(ns, name)
                links[name] = {}
            self._on_bridge(ns, name, links[name], plan.mtu, port.admin_up)
        # network ends of router veths (apply_router creates the pairs)
        want_router = {self._short(p.id) for p in plan.ports if p.kind == "router"}
        for name, link in links.items():
            if name[:3] in ("qn-", "qe-") and name[3:] in want_router:
                self._on_bridge(ns, name, link, plan.mtu, True)
        # the host veth of an external network
        sh = f"sh-{plan.id[:11]}"
        hx = self.host_veth(plan.id)
        if plan.external:
            if sh not in links:
                ip("link", "del", hx, check=False)  # a stale host end without its peer
                ip("link", "add", "name", hx, "type", "veth", "peer", "name", sh,
                   "netns", ns)
                _disable_ipv6(None, hx)
                links[sh] = {}
            self._on_bridge(ns, sh, links[sh], plan.mtu, True)
            self._host_addresses(plan, hx)
        # remove what the plan no longer lists
        for name in links:
            stale = (name.startswith("tap") and name not in want_taps) or (
                name[:3] in ("qn-", "qe-") and name[3:] not in want_router) or (
                name.startswith("sh-") and not (plan.external and name == sh))
            if stale:
                ip("link", "del", name, ns=ns, check=False)
        # bridge addresses: the DHCP ports' and the metadata address
        want = {f"{METADATA_ADDR}/32"}
        for s in dhcp_subnets(plan):
            net = ipaddress.ip_network(s.cidr, strict=False)
            want.add(f"{s.dhcp_ip}/{net.prefixlen}")
        _sync_addresses(ns, BRIDGE, want)
        self._dnsmasq(plan.id).apply(plan)
        host_ips = tuple(sorted(a.split("/")[0] for a in self._host_cidrs(plan)))
        _nft(ns, rules.network_ruleset(plan.ports, sh if plan.external else None, host_ips))

    def _on_bridge(self, ns: str, dev: str, link: dict[str, Any], mtu: int, up: bool) -> None:
        if link.get("master") != BRIDGE:
            ip("link", "set", dev, "master", BRIDGE, ns=ns)
        if link.get("mtu") != mtu:
            ip("link", "set", dev, "mtu", str(mtu), ns=ns)
        if ("UP" in link.get("flags", ())) != up:
            ip("link", "set", dev, "up" if up else "down", ns=ns)

    @staticmethod
    def _host_cidrs(plan: NetworkPlan) -> set[str]:
        """The host end's addresses: each IPv4 external subnet's gateway."""
        want = set()
        for s in plan.subnets:
            net = ipaddress.ip_network(s.cidr, strict=False)
            if plan.external and s.gateway_ip and net.version == 4:
                want.add(f"{s.gateway_ip}/{net.prefixlen}")
        return want

    def _host_addresses(self, plan: NetworkPlan, dev: str) -> None:
        _sync_addresses(None, dev, self._host_cidrs(plan))
        ip("link", "set", dev, "up")

    @_exclusive
    def remove_network(self, network_id: str) -> None:
        ns = self.network_ns(network_id)
        self._dnsmasq(network_id).stop()
        ip("link", "del", self.host_veth(network_id), check=False)
        if netns.exists(ns):
            # delete devices explicitly: a QEMU still holding a tap keeps the namespace
            for link in ip_json("link", "show", ns=ns):
                if link["ifname"] != "lo":
                    ip("link", "del", link["ifname"], ns=ns, check=False)
            netns.delete(ns)
            LOG.info("network %s: namespace %s removed", network_id, ns)
        shutil.rmtree(self.state_path / network_id, ignore_errors=True)

    # ------------------------------------------------------------------ routers
    @_exclusive
    def apply_router(self, plan: RouterPlan) -> None:
        ns = self.router_ns(plan.id)
        if netns.create(ns):
            LOG.info("router %s: namespace %s created", plan.id, ns)
        netns.exec_in(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        links = {link["ifname"]: link for link in ip_json("addr", "show", ns=ns)}
        want: dict[str, tuple[Any, str]] = {}
        for itf in plan.interfaces:
            want["qr-" + self._short(itf.port_id)] = (itf, "qn-")
        if plan.gateway is not None:
            want["qg-" + self._short(plan.gateway.port_id)] = (plan.gateway, "qe-")
        for name in links:
            if name[:3] in ("qr-", "qg-") and name not in want:
                ip("link", "del", name, ns=ns, check=False)
        gw_dev = gw_cidr = None
        for name, (itf, peer_prefix) in want.items():
            peer = peer_prefix + name[3:]
            net_ns = self._ensure_network_base(itf.network_id, None)
            if name not in links:
                ip("link", "del", peer, ns=net_ns, check=False)
                ip("link", "add", "name", name, "netns", ns, "type", "veth", "peer",
                   "name", peer, "netns", net_ns)
                _disable_ipv6(ns, name)
                links[name] = {}
            if links[name].get("address") != itf.mac.lower():
                ip("link", "set", name, "address", itf.mac, ns=ns)
            net = ipaddress.ip_network(itf.cidr, strict=False)
            addrs = {f"{itf.ip}/{net.prefixlen}"}
            if peer_prefix == "qe-":
                gw_dev, gw_cidr = name, str(net)
                addrs |= {f"{f.floating_ip}/32" for f in plan.floating}
            _sync_addresses(ns, name, addrs)
            ip("link", "set", name, "up" if plan.admin_up else "down", ns=ns)
            peer_link = {link["ifname"]: link for link in ip_json("link", "show", ns=net_ns)}
            self._on_bridge(net_ns, peer, peer_link.get(peer, {}),
                            peer_link.get(BRIDGE, {}).get("mtu", 1500), True)
        _nft(ns, rules.router_ruleset(plan, gw_dev, gw_cidr))

    @_exclusive
    def remove_router(self, router_id: str) -> None:
        ns = self.router_ns(router_id)
        if netns.exists(ns):
            for link in ip_json("link", "show", ns=ns):
                if link["ifname"] != "lo":  # takes the peer in the network's namespace
                    ip("link", "del", link["ifname"], ns=ns, check=False)
            netns.delete(ns)
            LOG.info("router %s: namespace %s removed", router_id, ns)

    # ------------------------------------------------------------------ handles
    def open_tap(self, network_id: str, port_id: str) -> int:
        return netns.open_tap(self.network_ns(network_id), tap_name(port_id))

    def metadata_listener(self, network_id: str) -> socket.socket:
        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((METADATA_ADDR, METADATA_PORT))
                sock.listen(64)
            except BaseException:
                sock.close()
                raise
            return sock

        return netns.run_in(self.network_ns(network_id), listen)

    def owned(self) -> Owned:
        out = Owned()
        for name in netns.list_namespaces():
            if name.startswith(f"sn-{self.tag}-"):
                out.networks.add(name[len(f"sn-{self.tag}-"):])
            elif name.startswith(f"sr-{self.tag}-"):
                out.routers.add(name[len(f"sr-{self.tag}-"):])
        return out

    @_exclusive
    def teardown(self) -> None:
        owned = self.owned()
        for router_id in owned.routers:
            self.remove_router(router_id)
        for network_id in owned.networks:
            self.remove_network(network_id)
        # a probe's scratch namespace left by a crash
        for name in netns.list_namespaces():
            if name.startswith(f"sp-{self.tag}-"):
                netns.delete(name)
        # host veths whose namespace is already gone, and dnsmasqs left by a crash
        for link in ip_json("link", "show"):
            if link["ifname"].startswith(f"sx{self.tag[:6]}"):
                ip("link", "del", link["ifname"], check=False)
        if self.state_path.is_dir():
            for d in self.state_path.iterdir():
                if d.is_dir() and any((d / f).exists() for f in ("dnsmasq.pid", "host")):
                    self.remove_network(d.name)


def _disable_ipv6(ns: str | None, dev: str) -> None:
    """No IPv6 on our devices: no router solicitations or DAD noise, v4 only."""
    argv = ["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"]
    if ns:
        netns.exec_in(ns, argv, check=False)
    else:
        netns.run(argv, check=False)


def _sync_addresses(ns: str | None, dev: str, want: set[str]) -> None:
    """Make ``dev``'s IPv4 addresses exactly ``want`` (``a.b.c.d/len`` strings)."""
    have = set()
    for link in ip_json("-4", "addr", "show", "dev", dev, ns=ns):
        for a in link.get("addr_info", []):
            have.add(f"{a['local']}/{a['prefixlen']}")
    for a in sorted(have - want):
        ip("addr", "del", a, "dev", dev, ns=ns, check=False)
    for a in sorted(want - have):
        ip("addr", "add", a, "dev", dev, ns=ns)


def _nft(ns: str, ruleset: str) -> None:
    """Load a ruleset file in ``ns`` (one transaction: all of it or nothing)."""
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as fh:
        fh.write(ruleset)
        path = fh.name
    try:
        netns.exec_in(ns, ["nft", "-f", path])
    finally:
        os.unlink(path)
