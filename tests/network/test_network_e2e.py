"""Issue 15 end to end, as a user does it with the real ``openstack`` client.

One strato server on the Linux data plane (its own ``dataplane_id`` and public range
198.18.150.0/24, which exists only behind strato's host veth).  A project member builds
a network, a subnet, a router with the external gateway ``public``, security groups and
a key pair; boots the Debian cloud image on the network and logs in over SSH *from the
host* through a floating IP; two tiny guests ping each other and a guest whose groups do
not allow TCP 22 cannot be reached there until a rule says so; removing the floating IP
cuts access; a file written over SSH survives ``server image create`` for an
image-backed and a boot-from-volume server; a strato restart keeps the guests'
networking; deleting everything, then stopping (``strato network teardown``), leaves no
namespace, device, rule or dnsmasq behind.

Guests are shared along the module (every cloud-image boot costs about a minute of two
cores under TCG): the tests run in order and build on each other.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strato.virt.cloudimage import CloudImage
from strato.virt.qemu import QemuDriver
from strato.virt.qemu.agent import GuestAgent
from tests.compute.conftest import guest_server
from tests.network.leaks import Snapshot, namespace_links, namespaces
from tests.support import Server, strato
from tests.tenants import Tenant, make_tenant

BOOT = 900.0  # a cloud-init boot under TCG on 2 loaded cores takes minutes
TINY_BOOT = 180.0
PUBLIC_CIDR = "198.18.150.0/24"
PRIVATE_CIDR = "10.0.0.0/24"
TAG = "e2" + uuid.uuid4().hex[:2]  # [network] dataplane_id: in every name strato makes
SSH_OPTS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR")


@dataclass
class Cloud:
    srv: Server
    drv: QemuDriver
    member: Tenant
    key: Path  # private key; the public one is key + ".pub"
    before: Snapshot  # the machine before strato started
    ids: dict[str, str] = field(default_factory=dict)  # what the tests made, by role
    fip: str = ""

    # ---------------------------------------------------------------- the user's CLI
    def os(self, *args: str) -> str:
        return self.member.openstack(*args).stdout

    def os_json(self, *args: str) -> dict:
        out = self.member.openstack_json(*args)
        assert isinstance(out, dict), out
        return out

    def create(self, name: str, *args: str) -> str:
        sid = str(self.os_json("server", "create", "--flavor", "m1.tiny", "--network",
                               "e2e-net", "--wait", *args, name)["id"])
        self.ids[name] = sid
        return sid

    def delete_server(self, name: str) -> None:
        self.os("server", "delete", "--wait", self.ids.pop(name))

    # ---------------------------------------------------------------- reaching guests
    def ssh(self, ip: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        behind_strato(ip)
        return subprocess.run(["ssh", "-i", str(self.key), *SSH_OPTS, f"debian@{ip}",
                               command], capture_output=True, text=True, timeout=timeout)

    def wait_ssh(self, ip: str, timeout: float = BOOT) -> None:
        """Until ``ssh debian@ip true`` works (sshd starts late in a cloud-init boot)."""
        deadline = time.monotonic() + timeout
        done = None
        while time.monotonic() < deadline:
            done = self.ssh(ip, "true", timeout=30)
            if done.returncode == 0:
                return
            time.sleep(3)
        raise AssertionError(f"no SSH to {ip} after {timeout:.0f}s: {done and done.stderr}")

    def port(self, server_id: str) -> dict:
        """The server's (single) port, as the network API shows it to the member."""
        c = self.srv.client(self.member.token())
        r = c.get("/networking/v2.0/ports", params={"device_id": server_id})
        assert r.status_code == 200, r.text
        ports = r.json()["ports"]
        assert len(ports) == 1, ports
        return ports[0]

    def agent(self, server_id: str) -> GuestAgent:
        return self.drv.agent(server_id, timeout=60)

    def tiny_address(self, server_id: str) -> str:
        """Wait until the tiny guest holds its port's address (by DHCP); that address."""
        self.drv.wait_for_agent(server_id, timeout=TINY_BOOT)
        port = self.port(server_id)
        ip = port["fixed_ips"][0]["ip_address"]
        deadline = time.monotonic() + TINY_BOOT
        seen = ""
        with self.agent(server_id) as ga:
            while time.monotonic() < deadline:
                seen = ga.sh("ip -4 -o addr show; ip -o link show").stdout.decode()
                if f"inet {ip}/24" in seen:
                    assert port["mac_address"] in seen.lower()
                    return ip
                time.sleep(1)
        raise AssertionError(f"{server_id} did not get {ip} by DHCP: {seen}")

    def tag_state(self) -> tuple[frozenset[str], frozenset[str]]:
        """This deployment's namespaces and host links now."""
        now = Snapshot.take()
        return (frozenset(n for n in now.namespaces if TAG in n),
                frozenset(n for n in now.links if TAG in n))


def behind_strato(ip: str) -> None:
    """The workplace rule: the host sends only to addresses behind strato's own host
    veth.  Before any packet to ``ip`` leaves the host, its route must go through a
    device of this deployment (else it might follow the default route off the machine)."""
    route = subprocess.run(["ip", "-o", "route", "get", ip], capture_output=True,
                           text=True, timeout=10).stdout
    words = route.split()
    dev = words[words.index("dev") + 1] if "dev" in words else ""
    assert TAG in dev, f"{ip} is not behind strato's host veth: {route!r}"


def tcp_reachable(ip: str, port: int, timeout: float = 5.0) -> bool:
    behind_strato(ip)
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def guest_connects(ga: GuestAgent, ip: str, port: int) -> bool:
    """A TCP connection from inside a tiny guest succeeds (busybox nc, 3 s timeout)."""
    return ga.sh(f"nc -w 3 {ip} {port} </dev/null", timeout=30).exitcode == 0


def listen(ga: GuestAgent, port: int) -> None:
    """A persistent listener in a tiny guest (accepts, closes; busybox nc -ll -e)."""
    ga.execute("guest-exec", {"path": "/bin/sh", "arg": [
        "-c", f"nc -ll -p {port} -e /bin/true </dev/null >/dev/null 2>&1"]})


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, cloud_image: CloudImage
          ) -> Iterator[Cloud]:
    root = tmp_path_factory.mktemp("net-e2e")
    before = Snapshot.take()
    with guest_server(root / "srv", {
            "compute": {"sync_power_state_interval": "2", "quota_ram": "-1",
                        "quota_cores": "-1", "quota_instances": "-1"},
            "network": {"dataplane": "linux", "public_cidr": PUBLIC_CIDR,
                        "dataplane_id": TAG}}) as srv:
        out = strato("cloud-image", "--config", str(srv.conf), "--dest",
                     str(cloud_image.path.parent.parent), "--register", timeout=900)
        assert "image strato-cloud: " in out.stdout, out.stdout
        member = make_tenant(srv, "net")
        key = root / "id_net"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "net@strato",
                        "-f", str(key)], check=True)
        yield Cloud(srv, QemuDriver(srv.state / "instances"), member, key, before)


def test_a_member_builds_a_routed_network_with_the_cli(cloud: Cloud) -> None:
    public = cloud.srv.openstack_json("network", "show", "public")
    assert isinstance(public, dict) and public["router:external"] in (True, "External")
    cloud.ids["public"] = str(public["id"])
    net = cloud.os_json("network", "create", "e2e-net")
    cloud.ids["net"] = str(net["id"])
    subnet = cloud.os_json("subnet", "create", "--network", "e2e-net", "--subnet-range",
                           PRIVATE_CIDR, "e2e-subnet")
    assert subnet["cidr"] == PRIVATE_CIDR and subnet["gateway_ip"] == "10.0.0.1"
    router = cloud.os_json("router", "create", "e2e-router")
    cloud.ids["router"] = str(router["id"])
    cloud.os("router", "add", "subnet", "e2e-router", "e2e-subnet")
    cloud.os("router", "set", "--external-gateway", "public", "e2e-router")
    shown = cloud.os_json("router", "show", "e2e-router")
    gw = shown["external_gateway_info"]
    assert gw["network_id"] == cloud.ids["public"], gw
    for group, rules in (("ssh", (("tcp", "22"),)), ("ping", ())):
        cloud.os("security", "group", "create", group)
        for proto, port in rules:
            cloud.os("security", "group", "rule", "create", "--protocol", proto,
                     "--dst-port", port, group)
        cloud.os("security", "group", "rule", "create", "--protocol", "icmp", group)
    rules = cloud.member.openstack_json("security", "group", "rule", "list", "ssh")
    assert isinstance(rules, list)
    assert any(r["IP Protocol"] == "tcp" and r["Port Range"] == "22:22" for r in rules), rules
    cloud.os("keypair", "create", "--public-key", f"{cloud.key}.pub", "net-key")
    # the data plane: a namespace for the network, one for the router, the public
    # network's host veth -- all named with this deployment's tag
    ns, links = cloud.tag_state()
    assert any(cloud.ids["net"][:8] in n for n in ns), ns
    assert any(cloud.ids["router"][:8] in n for n in ns), ns
    assert links, "no host veth for the public network"


def test_ssh_into_a_guest_by_its_floating_ip(cloud: Cloud) -> None:
    """The cloud image gets its key from the metadata service over the tenant network."""
    sid = cloud.create("web", "--image", "strato-cloud", "--key-name", "net-key",
                       "--security-group", "ssh")
    port = cloud.port(sid)
    fixed = port["fixed_ips"][0]["ip_address"]
    assert fixed.startswith("10.0.0.")
    fip = cloud.os_json("floating", "ip", "create", "public")
    cloud.fip = str(fip["floating_ip_address"])
    assert ipaddress.ip_address(cloud.fip) in ipaddress.ip_network(PUBLIC_CIDR)
    cloud.ids["fip"] = str(fip["id"])
    cloud.os("server", "add", "floating", "ip", "web", cloud.fip)
    shown = cloud.os_json("server", "show", "web")
    assert fixed in str(shown["addresses"]) and cloud.fip in str(shown["addresses"])
    cloud.wait_ssh(cloud.fip)
    said = cloud.ssh(cloud.fip, "cloud-init query v1.instance_id; "
                     "cloud-init query v1.subplatform; ip -4 -o addr show")
    assert said.returncode == 0, said.stderr
    lines = said.stdout.splitlines()
    assert lines[0] == sid
    assert "169.254.169.254" in lines[1], lines[1]  # the metadata service, not a drive
    assert f"inet {fixed}/24" in said.stdout  # the address its port says, by DHCP


def test_two_guests_ping_each_other_and_rules_are_enforced(cloud: Cloud) -> None:
    """t1 (groups ssh + ping) and t2 (ping only) on one network: ICMP both ways; TCP 22
    only towards t1 until t2's group gets the rule, and again not once it is gone."""
    t1 = cloud.create("t1", "--image", "strato-guest", "--security-group", "ssh",
                      "--security-group", "ping")
    t2 = cloud.create("t2", "--image", "strato-guest", "--security-group", "ping")
    ip1, ip2 = cloud.tiny_address(t1), cloud.tiny_address(t2)
    cloud.ids.update(ip1=ip1, ip2=ip2)
    with cloud.agent(t1) as a, cloud.agent(t2) as b:
        for ga, peer in ((a, ip2), (b, ip1)):
            done = ga.sh(f"ping -c 3 -W 5 {peer}", timeout=60)
            assert done.exitcode == 0, done.stdout.decode() + done.stderr.decode()
        listen(a, 22)
        listen(b, 22)
        time.sleep(1)
        assert guest_connects(b, ip1, 22)  # t1's group allows it
        assert not guest_connects(a, ip2, 22)  # t2's does not
        rule = cloud.os_json("security", "group", "rule", "create", "--protocol", "tcp",
                             "--dst-port", "22", "ping")
        deadline = time.monotonic() + 30
        while not guest_connects(a, ip2, 22):
            assert time.monotonic() < deadline, "the new rule was not applied in 30 s"
        cloud.os("security", "group", "rule", "delete", str(rule["id"]))
        deadline = time.monotonic() + 30
        while guest_connects(a, ip2, 22):
            assert time.monotonic() < deadline, "the deleted rule still lets TCP 22 in"


def test_removing_the_floating_ip_cuts_access_and_a_snapshot_keeps_the_file(
        cloud: Cloud) -> None:
    """Image-backed round trip: write over SSH, snapshot, boot the snapshot from a
    volume on the network, move the floating IP to it, read the file over SSH."""
    marker = "net-" + uuid.uuid4().hex
    done = cloud.ssh(cloud.fip, f"echo {marker} > /home/debian/marker && sync")
    assert done.returncode == 0, done.stderr
    cloud.os("server", "remove", "floating", "ip", "web", cloud.fip)
    deadline = time.monotonic() + 30
    while tcp_reachable(cloud.fip, 22, timeout=3):
        assert time.monotonic() < deadline, "the floating IP still reaches the guest"
    assert cloud.ssh(cloud.fip, "true", timeout=30).returncode != 0
    cloud.os_json("server", "image", "create", "--wait", "--name", "web-snap", "web")
    cloud.delete_server("web")  # its data now lives in the snapshot only
    cloud.create("bfv", "--image", "web-snap", "--boot-from-volume", "1", "--key-name",
                 "net-key", "--security-group", "ssh")
    shown = cloud.os_json("server", "show", "bfv")
    assert shown["volumes_attached"] and shown["image"] in ("", None,
                                                            "N/A (booted from volume)")
    cloud.os("server", "add", "floating", "ip", "bfv", cloud.fip)
    cloud.wait_ssh(cloud.fip)
    done = cloud.ssh(cloud.fip, "cat /home/debian/marker; cloud-init query v1.instance_id")
    assert done.stdout.split() == [marker, cloud.ids["bfv"]], done.stdout + done.stderr
    cloud.ids["marker"] = marker


def test_a_boot_from_volume_snapshot_keeps_the_file(cloud: Cloud) -> None:
    marker = "bfv-" + uuid.uuid4().hex
    done = cloud.ssh(cloud.fip, f"echo {marker} > /home/debian/marker2 && sync")
    assert done.returncode == 0, done.stderr
    cloud.os_json("server", "image", "create", "--wait", "--name", "bfv-snap", "bfv")
    cloud.os("server", "remove", "floating", "ip", "bfv", cloud.fip)
    cloud.delete_server("bfv")
    cloud.create("copy", "--image", "bfv-snap", "--key-name", "net-key",
                 "--security-group", "ssh")
    assert cloud.os_json("server", "show", "copy")["volumes_attached"]
    cloud.os("server", "add", "floating", "ip", "copy", cloud.fip)
    cloud.wait_ssh(cloud.fip)
    done = cloud.ssh(cloud.fip, "cat /home/debian/marker /home/debian/marker2")
    assert done.stdout.split() == [cloud.ids["marker"], marker], done.stdout + done.stderr


def test_a_restart_keeps_the_guests_networking(cloud: Cloud) -> None:
    ns, links = cloud.tag_state()
    cloud.srv.stop(teardown=False)
    # the guests run on while strato is down: SSH still works
    assert cloud.ssh(cloud.fip, "true").returncode == 0
    cloud.srv.start()
    assert cloud.ssh(cloud.fip, "cat /home/debian/marker2").returncode == 0
    with cloud.agent(cloud.ids["t1"]) as a:
        done = a.sh(f"ping -c 3 -W 5 {cloud.ids['ip2']}", timeout=60)
        assert done.exitcode == 0, done.stdout.decode()
    assert cloud.tag_state() == (ns, links)  # the same devices: nothing rebuilt or leaked
    # and the data plane still follows the API after the restart
    cloud.os("server", "remove", "floating", "ip", "copy", cloud.fip)
    deadline = time.monotonic() + 30
    while tcp_reachable(cloud.fip, 22, timeout=3):
        assert time.monotonic() < deadline, "the floating IP still reaches the guest"
    cloud.os("server", "add", "floating", "ip", "copy", cloud.fip)
    cloud.wait_ssh(cloud.fip, timeout=60)


def test_deleting_everything_and_a_teardown_leave_nothing_behind(cloud: Cloud) -> None:
    net_ns = [n for n in namespaces() if TAG in n and cloud.ids["net"][:8] in n]
    assert len(net_ns) == 1, net_ns
    for name in ("copy", "t1", "t2"):
        cloud.delete_server(name)
    taps = [d for d in namespace_links(net_ns[0]) if d.startswith("tap")]
    assert not taps, taps
    cloud.os("floating", "ip", "delete", cloud.ids["fip"])
    cloud.os("router", "unset", "--external-gateway", "e2e-router")
    cloud.os("router", "remove", "subnet", "e2e-router", "e2e-subnet")
    cloud.os("router", "delete", "e2e-router")
    cloud.os("network", "delete", "e2e-net")
    ns, _ = cloud.tag_state()
    # only the public network is left (admin's, made at bootstrap)
    assert ns and all(cloud.ids["public"][:8] in n for n in ns), ns
    cloud.srv.stop()  # SIGTERM, then `strato network teardown`
    after = Snapshot.take()
    leaks = after.leaked_since(cloud.before, tag=TAG)
    assert not leaks, str(leaks)
    owned = after.owned_by(TAG, state=cloud.srv.state)
    assert not owned, str(owned)
    assert not cloud.drv.list_running()
