"""The Linux data plane with real guests: plans built by hand, applied, two tiny guests
on their taps (QEMU started here with the tap fd), DHCP, security groups, a router with
a floating IP reachable from the host, idempotence, a "restart", and a teardown that
leaves nothing behind."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from strato.config import load
from strato.network.dataplane import (
    FloatingPlan,
    NetworkPlan,
    PortPlan,
    RouterInterfacePlan,
    RouterPlan,
    RulePlan,
    SubnetPlan,
)
from strato.network.linux import LinuxDataplane
from strato.virt.guestbuild import build_guest
from tests.network.dataplane_helpers import (
    TapGuest,
    dnsmasqs,
    host_links,
    host_ruleset,
    namespaces,
    start_guest,
    wait_agent,
)

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("the Linux data plane needs root", allow_module_level=True)

NET = "5e1f0000-aaaa-4bbb-8ccc-000000000001"
NET2 = "5e1f0000-aaaa-4bbb-8ccc-000000000002"
EXT = "5e1f0000-aaaa-4bbb-8ccc-0000000000e1"
ROUTER = "5e1f0000-aaaa-4bbb-8ccc-0000000000f1"
EXT_CIDR = "198.18.201.0/24"
FLOATING = "198.18.201.20"
FLOATING_B = "198.18.201.21"  # B: no tcp/22 rule
A_IP, B_IP, C_IP = "10.77.0.10", "10.77.0.11", "10.77.1.10"

ALLOW_OUT = RulePlan("egress")
A_RULES = (ALLOW_OUT, RulePlan("ingress", protocol="tcp", port_min=22, port_max=22),
           RulePlan("ingress", protocol="icmp"))
B_RULES = (ALLOW_OUT, RulePlan("ingress", protocol="icmp", port_min=8))  # echo only
PORT_A = PortPlan("a0a0a0a0-0000-4000-8000-00000000000a", "fa:16:3e:77:00:0a", (A_IP,),
                  rules=A_RULES, hostname="guest-a")
PORT_B = PortPlan("b0b0b0b0-0000-4000-8000-00000000000b", "fa:16:3e:77:00:0b", (B_IP,),
                  rules=B_RULES, hostname="guest-b")
PORT_C = PortPlan("c1c1c1c1-0000-4000-8000-0000000000c1", "fa:16:3e:77:01:0c", (C_IP,),
                  rules=B_RULES, hostname="guest-c")
RIF2 = RouterInterfacePlan("c2c2c2c2-0000-4000-8000-0000000000c2", NET2, "10.77.1.1",
                           "10.77.1.0/24", "fa:16:3e:77:01:01")
RIF = RouterInterfacePlan("c0c0c0c0-0000-4000-8000-00000000000c", NET, "10.77.0.1",
                          "10.77.0.0/24", "fa:16:3e:77:00:01")
RGW = RouterInterfacePlan("d0d0d0d0-0000-4000-8000-00000000000d", EXT, "198.18.201.10",
                          EXT_CIDR, "fa:16:3e:77:00:02")

NET_PLAN = NetworkPlan(
    NET, subnets=(SubnetPlan("sub-77", "10.77.0.0/24", "10.77.0.1", dhcp_ip="10.77.0.2",
                             dns_nameservers=("10.77.0.53",)),),
    ports=(PORT_A, PORT_B, PortPlan(RIF.port_id, RIF.mac, (RIF.ip,), kind="router")),
    lease_seconds=600)
NET2_PLAN = NetworkPlan(
    NET2, subnets=(SubnetPlan("sub-77-1", "10.77.1.0/24", "10.77.1.1",
                              dhcp_ip="10.77.1.2"),),
    ports=(PORT_C, PortPlan(RIF2.port_id, RIF2.mac, (RIF2.ip,), kind="router")))
EXT_PLAN = NetworkPlan(
    EXT, external=True,
    subnets=(SubnetPlan("sub-ext", EXT_CIDR, "198.18.201.1", enable_dhcp=False),),
    ports=(PortPlan(RGW.port_id, RGW.mac, (RGW.ip,), kind="router"),))
ROUTER_PLAN = RouterPlan(ROUTER, interfaces=(RIF, RIF2), gateway=RGW,
                         floating=(FloatingPlan(FLOATING, A_IP), FloatingPlan(FLOATING_B, B_IP)))
LISTEN = ("setsid sh -c 'while :; do echo SSH-{name} | nc -l -p 22; done' "
          "</dev/null >/dev/null 2>&1 &")


@dataclass
class World:
    dp: LinuxDataplane
    conf_state: Path
    a: TapGuest
    b: TapGuest
    c: TapGuest  # on the second network, behind the router, no floating IP
    host_rules: str


def _dataplane(state: Path) -> LinuxDataplane:
    return LinuxDataplane(load(None, [("network", "state_path", str(state))]))


def _apply_all(dp: LinuxDataplane, router: RouterPlan = ROUTER_PLAN) -> None:
    dp.apply_network(NET_PLAN)
    dp.apply_network(NET2_PLAN)
    dp.apply_network(EXT_PLAN)
    dp.apply_router(router)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("dp")
    guest = build_guest(base / "guest")
    state = base / "netstate"
    dp = _dataplane(state)
    dp.probe()
    rules_before = host_ruleset()
    guests: list[TapGuest] = []
    try:
        _apply_all(dp)
        for net, port, name in ((NET, PORT_A, "A"), (NET, PORT_B, "B"),
                                (NET2, PORT_C, "C")):
            guests.append(start_guest(guest, base, name, dp.open_tap(net, port.id),
                                      port.mac))
        for g in guests:
            wait_agent(g)
            g.wait_console("STRATO-NET-UP eth0", 90)
        yield World(dp, state, guests[0], guests[1], guests[2], rules_before)
    finally:
        for g in guests:
            g.stop()
        dp.teardown()


def _ok(g: TapGuest, script: str, timeout: float = 30.0) -> str:
    code, out = g.sh(script, timeout)
    assert code == 0, f"{g.name}: {script!r} -> {code}: {out}"
    return out


def _fails(g: TapGuest, script: str, timeout: float = 30.0) -> str:
    code, out = g.sh(script, timeout)
    assert code != 0, f"{g.name}: {script!r} worked: {out}"
    return out


def _tcp_banner(addr: str, timeout: float = 3.0) -> str:
    with socket.create_connection((addr, 22), timeout=timeout) as s:
        s.settimeout(timeout)
        return s.recv(100).decode()


def _snapshot(dp: LinuxDataplane) -> dict[str, object]:
    """What an apply may change: devices (by ifindex), addresses, rules, dnsmasq's pid."""
    out: dict[str, object] = {}
    for ns in (dp.network_ns(NET), dp.network_ns(NET2), dp.network_ns(EXT),
               dp.router_ns(ROUTER)):
        links = json.loads(subprocess.run(["ip", "-j", "-n", ns, "addr"], check=True,
                                          capture_output=True, text=True).stdout)
        out[ns] = sorted((x["ifindex"], x["ifname"], x.get("master"), x["operstate"],
                          sorted(a["local"] for a in x.get("addr_info", [])))
                         for x in links)
        out[ns + " nft"] = subprocess.run(["ip", "netns", "exec", ns, "nft", "list",
                                           "ruleset"], check=True, capture_output=True,
                                          text=True).stdout
    out["dnsmasq"] = dp._dnsmasq(NET).pid()
    out["host"] = host_links(f"sx{dp.tag}")
    return out


def test_probe_and_owned(world: World) -> None:
    world.dp.probe()  # again, with networks up: the scratch namespace is its own
    owned = world.dp.owned()
    assert owned.networks == {NET, NET2, EXT} and owned.routers == {ROUTER}
    assert world.dp.host_veth(EXT) in host_links("sx")
    assert world.dp._dnsmasq(EXT).pid() is None  # no DHCP subnet, no dnsmasq
    assert len(dnsmasqs(world.conf_state)) == 2


def test_dhcp_gives_the_planned_address_and_routes(world: World) -> None:
    for g, addr in ((world.a, A_IP), (world.b, B_IP)):
        assert f"STRATO-NET-UP eth0 {addr}/24" in g.console()
        out = _ok(g, "ip -4 addr show eth0; ip route; cat /etc/resolv.conf")
        assert f"inet {addr}/24" in out
        assert "default via 10.77.0.1" in out
        assert "169.254.169.254 via 10.77.0.2" in out  # option 121
        assert "nameserver 10.77.0.53" in out
    hosts = (world.conf_state / NET / "host").read_text()
    assert "fa:16:3e:77:00:0a,10.77.0.10,guest-a" in hosts


def test_two_guests_ping_each_other(world: World) -> None:
    _ok(world.a, f"ping -c 2 -W 3 {B_IP}")
    _ok(world.b, f"ping -c 2 -W 3 {A_IP}")


def test_ingress_rule_lets_in_and_its_absence_blocks(world: World) -> None:
    _ok(world.a, LISTEN.format(name="A"))
    _ok(world.b, LISTEN.format(name="B"))
    time.sleep(0.5)
    # A allows tcp/22 in: B connects; B does not: A's attempt gets nothing
    assert "SSH-A" in _ok(world.b, f"echo hi | nc -w 3 {A_IP} 22")
    code, out = world.a.sh(f"echo hi | nc -w 3 {B_IP} 22")
    assert "SSH-B" not in out
    # B allows only ICMP echo request, A's ping still works both ways (replies are
    # established), and a ping from an address that is not A's is dropped as spoofed
    _ok(world.a, f"ping -c 1 -W 3 {B_IP}")
    _ok(world.a, "ip addr add 10.77.0.99/24 dev eth0")
    try:
        _fails(world.a, f"ping -c 1 -W 3 -I 10.77.0.99 {B_IP}")
    finally:
        _ok(world.a, "ip addr del 10.77.0.99/24 dev eth0")


def test_floating_ip_reaches_the_guest_from_the_host(world: World) -> None:
    subprocess.run(["ping", "-c", "1", "-W", "3", FLOATING], check=True,
                   capture_output=True)
    assert "SSH-A" in _tcp_banner(FLOATING)
    # B answers pings but has no rule for tcp/22: not reachable there
    subprocess.run(["ping", "-c", "1", "-W", "3", FLOATING_B], check=True,
                   capture_output=True)
    with pytest.raises(OSError):
        _tcp_banner(FLOATING_B, timeout=2.0)
    # the guest's own connections leave through its floating IP (SNAT); the host end of
    # the external network is the only thing it can reach outside
    _ok(world.a, "ping -c 1 -W 3 198.18.201.1")
    # the external network passes only traffic for the host itself toward the host
    ext_rules = subprocess.run(["ip", "netns", "exec", world.dp.network_ns(EXT), "nft",
                                "list", "table", "bridge", "strato"], capture_output=True,
                               text=True, check=True).stdout
    assert f'oifname "sh-{EXT[:11]}" ip daddr 198.18.201.1 accept' in ext_rules
    # nothing routes beyond the external subnet
    out = subprocess.run(["ip", "netns", "exec", world.dp.router_ns(ROUTER), "ip",
                          "route"], capture_output=True, text=True, check=True).stdout
    assert "default" not in out


def _peer_seen_by_host(g: TapGuest) -> str:
    """The source address a connection from guest ``g`` to the host arrives with."""
    with socket.socket() as srv:
        srv.bind(("198.18.201.1", 0))
        srv.listen(1)
        srv.settimeout(15)
        port = srv.getsockname()[1]
        got: list[str] = []

        def accept() -> None:
            conn, peer = srv.accept()
            got.append(peer[0])
            conn.close()

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        g.sh(f"echo hi | nc -w 3 198.18.201.1 {port}")
        t.join(15)
    assert got, f"{g.name} did not reach the host"
    return got[0]


def test_routing_between_networks_and_snat(world: World) -> None:
    _ok(world.c, f"ping -c 2 -W 3 {A_IP}")  # through the router, A allows ICMP in
    assert "SSH-A" in _ok(world.c, f"echo hi | nc -w 3 {A_IP} 22")
    # leaving by the gateway: C (no floating IP) as the router's address, A as its own
    assert _peer_seen_by_host(world.c) == RGW.ip
    assert _peer_seen_by_host(world.a) == FLOATING


def test_removing_the_floating_ip_cuts_access(world: World) -> None:
    world.dp.apply_router(dataclasses.replace(ROUTER_PLAN, floating=()))
    try:
        with pytest.raises(OSError):
            _tcp_banner(FLOATING, timeout=2.0)
        r = subprocess.run(["ping", "-c", "1", "-W", "2", FLOATING], capture_output=True)
        assert r.returncode != 0
    finally:
        world.dp.apply_router(ROUTER_PLAN)
    assert "SSH-A" in _tcp_banner(FLOATING)


def test_metadata_listener_answers_the_guest(world: World) -> None:
    sock = world.dp.metadata_listener(NET)
    peers: list[str] = []

    def serve() -> None:
        conn, peer = sock.accept()
        with conn:
            peers.append(peer[0])
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nmeta-ok\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        out = _ok(world.a, "wget -q -O - http://169.254.169.254/openstack")
    finally:
        t.join(10)
        sock.close()
    assert "meta-ok" in out
    assert peers == [A_IP]


def test_apply_twice_changes_nothing(world: World) -> None:
    _apply_all(world.dp)
    before = _snapshot(world.dp)
    _apply_all(world.dp)
    assert _snapshot(world.dp) == before


def test_apply_repairs_what_went_missing(world: World) -> None:
    dp = world.dp
    ns = dp.network_ns(NET)
    old_pid = dp._dnsmasq(NET).pid()
    assert old_pid is not None
    os.kill(old_pid, 9)
    subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "strato"],
                   check=True)
    subprocess.run(["ip", "addr", "flush", "dev", dp.host_veth(EXT)], check=True)
    subprocess.run(["ip", "-n", dp.router_ns(ROUTER), "addr", "del", f"{FLOATING}/32",
                    "dev", "qg-" + RGW.port_id[:11]], check=True)
    _apply_all(dp)
    pid = dp._dnsmasq(NET).pid()
    assert pid is not None and pid != old_pid
    assert "egress_a0a0a0a0_00" in subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True,
        text=True, check=True).stdout
    assert "SSH-A" in _tcp_banner(FLOATING)
    _ok(world.b, f"ping -c 1 -W 3 {A_IP}")


def test_restart_keeps_running_guests_networking(world: World) -> None:
    pid = world.dp._dnsmasq(NET).pid()
    assert pid is not None
    fresh = _dataplane(world.conf_state)  # a new process's view: kernel + state_path
    assert fresh.owned() == world.dp.owned()
    _apply_all(fresh)
    assert fresh._dnsmasq(NET).pid() == pid  # adopted, not restarted
    _ok(world.a, f"ping -c 2 -W 3 {B_IP}")
    assert "SSH-A" in _tcp_banner(FLOATING)
    # a guest that asks again gets its address from the adopted dnsmasq
    _ok(world.b, "kill -USR1 $(pidof udhcpc)")
    world.b.wait_console("STRATO-NET-UP eth0 10.77.0.11/24", 10)


def test_a_port_leaving_the_plan_loses_its_tap(world: World) -> None:
    ns = world.dp.network_ns(NET)
    plan = dataclasses.replace(NET_PLAN, ports=tuple(p for p in NET_PLAN.ports
                                                     if p.id != PORT_B.id))
    world.dp.apply_network(plan)
    try:
        links = subprocess.run(["ip", "-br", "-n", ns, "link"], capture_output=True,
                               text=True, check=True).stdout
        assert "tapb0b0b0b0" not in links and "tapa0a0a0a0" in links
        assert "10.77.0.11" not in (world.conf_state / NET / "host").read_text()
    finally:
        world.dp.apply_network(NET_PLAN)
    # B's QEMU still holds the deleted tap: B is off the network until it is replugged
    code, _ = world.b.sh(f"ping -c 1 -W 2 {A_IP}")
    assert code != 0


def test_remove_and_teardown_leave_nothing(world: World) -> None:
    dp = world.dp
    dp.remove_router(ROUTER)
    assert dp.router_ns(ROUTER) not in namespaces(dp.tag)
    dp.remove_network(EXT)
    assert host_links(f"sx{dp.tag}") == []
    assert dp.network_ns(EXT) not in namespaces(dp.tag)
    dp.teardown()  # with the guests still holding their taps
    assert namespaces(dp.tag) == []
    assert dnsmasqs(world.conf_state) == []
    assert host_ruleset() == world.host_rules
    assert dp.owned().networks == set() and dp.owned().routers == set()
    dp.teardown()  # idempotent


def test_probe_without_root_says_why(tmp_path: Path) -> None:
    # imports first (the interpreter's files may not be readable by nobody), then drop
    code = ("import os, sys\n"
            "from strato.config import load\n"
            "from strato.network.linux import LinuxDataplane\n"
            "from strato.network.dataplane import DataplaneUnavailable\n"
            "dp = LinuxDataplane(load(None, [('network', 'state_path', sys.argv[1])]))\n"
            "os.setuid(65534)\n"
            "try:\n    dp.probe()\n"
            "except DataplaneUnavailable as e:\n    print('UNAVAILABLE', e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert "UNAVAILABLE not running as root" in r.stdout, r.stderr


def test_every_rule_shape_loads_and_ipv6_is_skipped(tmp_path: Path) -> None:
    """Rules of every shape Neutron has go through nft in a real namespace; IPv6
    subnets, addresses and rules are left out cleanly (no error, nothing half-done)."""
    dp = _dataplane(tmp_path / "state")
    rules = (
        RulePlan("ingress", protocol="tcp", port_min=1000, port_max=2000,
                 remote_cidrs=("192.0.2.0/24", "198.51.100.7/32")),
        RulePlan("ingress", protocol="udp"),
        RulePlan("ingress", protocol="icmp", port_min=3, port_max=4),
        RulePlan("ingress", protocol="47"),
        RulePlan("egress", protocol="udp", port_min=53, port_max=53),
        RulePlan("egress", protocol="tcp", port_max=443),
        RulePlan("ingress", ethertype="IPv6", protocol="icmpv6"),
        RulePlan("ingress", protocol="tcp", remote_cidrs=("2001:db8::/64",)),
        RulePlan("ingress", protocol="no-such-protocol"),
    )
    port = PortPlan("e0e0e0e0-0000-4000-8000-00000000000e", "fa:16:3e:77:00:0e",
                    ("10.78.0.5", "2001:db8::5"), rules=rules,
                    allowed_pairs=(("10.78.0.128/25", "fa:16:3e:77:00:ee"),
                                   ("10.78.0.6", "")))
    open_port = PortPlan("f0f0f0f0-0000-4000-8000-00000000000f", "fa:16:3e:77:00:0f",
                         ("10.78.0.7",), rules=None)
    plan = NetworkPlan("5e1f0000-aaaa-4bbb-8ccc-000000000078", subnets=(
        SubnetPlan("v4", "10.78.0.0/24", None, dhcp_ip="10.78.0.2",
                   host_routes=(("10.79.0.0/16", "10.78.0.254"),)),
        SubnetPlan("v6", "2001:db8::/64", "2001:db8::1", dhcp_ip="2001:db8::2")),
        ports=(port, open_port))
    try:
        dp.apply_network(plan)
        ns = dp.network_ns(plan.id)
        text = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                              capture_output=True, text=True, check=True).stdout
        assert "tcp dport 1000-2000 accept" in text
        assert "icmp type destination-unreachable icmp code frag-needed accept" in text
        assert "meta l4proto gre accept" in text
        assert "udp dport 53 return" in text and "tcp dport 443 return" in text
        assert "ether saddr fa:16:3e:77:00:ee ip saddr 10.78.0.128/25 accept" in text
        assert "2001:db8" not in text and "tapf0f0f0f0" not in text
        opts = (tmp_path / "state" / plan.id / "opts").read_text()
        assert "option:router\n" in opts  # no gateway: no default route offered
        assert "classless-static-route,169.254.169.254/32,10.78.0.2,10.79.0.0/16," \
               "10.78.0.254\n" in opts
        addrs = subprocess.run(["ip", "-n", ns, "-br", "addr", "show", "br0"],
                               capture_output=True, text=True, check=True).stdout
        assert "10.78.0.2/24" in addrs and "2001:db8" not in addrs
        assert len(dnsmasqs(tmp_path / "state")) == 1
    finally:
        dp.teardown()
    assert namespaces(dp.tag) == [] and dnsmasqs(tmp_path / "state") == []
