"""One dnsmasq per network (DHCP only), started in the network's namespace.

Its hosts and options files are rewritten on every apply and re-read on SIGHUP; a
changed command line (subnets came or went) restarts it.  After a strato restart the
running one is adopted through its pid file and ``/proc/<pid>/cmdline``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import signal
import time
from pathlib import Path

from ..dataplane import METADATA_ADDR, NetworkPlan, SubnetPlan
from . import netns

LOG = logging.getLogger(__name__)


def dhcp_subnets(plan: NetworkPlan) -> list[SubnetPlan]:
    """The IPv4 subnets dnsmasq serves: DHCP enabled and a DHCP address to serve from."""
    return [s for s in plan.subnets
            if s.enable_dhcp and s.dhcp_ip
            and ipaddress.ip_network(s.cidr, strict=False).version == 4]


def _hostname(name: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return label


def hosts_file(plan: NetworkPlan) -> str:
    nets = [ipaddress.ip_network(s.cidr, strict=False) for s in dhcp_subnets(plan)]
    lines = []
    for p in plan.ports:
        if p.kind != "guest":
            continue
        for ip in p.ips:
            addr = ipaddress.ip_address(ip)
            if any(addr in n for n in nets):
                host = _hostname(p.hostname)
                lines.append(f"{p.mac.lower()},{ip}" + (f",{host}" if host else ""))
                break
    return "\n".join(lines) + ("\n" if lines else "")


def opts_file(plan: NetworkPlan) -> str:
    lines = []
    for s in dhcp_subnets(plan):
        tag = f"tag:subnet-{s.id}"
        routes = [f"{METADATA_ADDR}/32,{s.dhcp_ip}"]
        routes += [f"{dest},{hop}" for dest, hop in s.host_routes
                   if ipaddress.ip_network(dest, strict=False).version == 4]
        if s.gateway_ip:
            lines.append(f"{tag},option:router,{s.gateway_ip}")
            routes.append(f"0.0.0.0/0,{s.gateway_ip}")
        else:
            lines.append(f"{tag},option:router")  # none, not dnsmasq's own address
        dns = [d for d in s.dns_nameservers if ipaddress.ip_address(d).version == 4]
        lines.append(f"{tag},option:dns-server" + "".join(f",{d}" for d in dns))
        lines.append(f"{tag},option:classless-static-route," + ",".join(routes))
        lines.append(f"{tag},249," + ",".join(routes))
        lines.append(f"{tag},option:mtu,{plan.mtu}")
    return "\n".join(lines) + ("\n" if lines else "")


class Dnsmasq:
    """The dnsmasq of one network: files under ``state_dir``, process in ``ns``."""

    def __init__(self, ns: str, state_dir: Path, bridge: str) -> None:
        self.ns = ns
        self.dir = state_dir
        self.bridge = bridge
        self.pid_file = state_dir / "dnsmasq.pid"

    def argv(self, plan: NetworkPlan) -> list[str]:
        d = self.dir
        argv = ["dnsmasq", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
                "--strict-order", "--except-interface=lo", "--bind-interfaces",
                f"--interface={self.bridge}", "--port=0", "--user=root", "--group=root",
                f"--pid-file={self.pid_file}", f"--dhcp-hostsfile={d / 'host'}",
                f"--dhcp-optsfile={d / 'opts'}", f"--dhcp-leasefile={d / 'leases'}",
                "--dhcp-authoritative", f"--domain={plan.dns_domain}"]
        for s in dhcp_subnets(plan):
            net = ipaddress.ip_network(s.cidr, strict=False)
            argv.append(f"--dhcp-range=set:subnet-{s.id},{net.network_address},static,"
                        f"{net.netmask},{plan.lease_seconds}s")
        return argv

    def pid(self) -> int | None:
        """The running dnsmasq of this network, if any (its cmdline names our pid file)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if cmd and os.path.basename(cmd[0]) == b"dnsmasq" and \
                f"--pid-file={self.pid_file}".encode() in cmd:
            return pid
        return None

    def _cmdline(self, pid: int) -> list[str]:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        return [a.decode() for a in raw]

    def apply(self, plan: NetworkPlan) -> None:
        """Write the files; HUP the running dnsmasq, or (re)start it; none if no DHCP."""
        if not dhcp_subnets(plan):
            self.stop()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _write(self.dir / "host", hosts_file(plan))
        _write(self.dir / "opts", opts_file(plan))
        argv = self.argv(plan)
        pid = self.pid()
        stale = self._stale_leases(plan)
        if pid is not None:
            try:
                same = self._cmdline(pid) == argv
            except OSError:
                same = False
            if same and not stale:
                os.kill(pid, signal.SIGHUP)  # re-reads the hosts and options files
                return
            self.stop()
        if stale:
            self._drop_leases(stale)
        netns.exec_in(self.ns, argv)  # dnsmasq daemonizes once it has bound
        LOG.info("dnsmasq started in %s (pid %s)", self.ns, self.pid())

    def _stale_leases(self, plan: NetworkPlan) -> set[str]:
        """Lease lines of addresses no longer given to that MAC: dnsmasq would refuse
        the address to its new owner until they expire, and SIGHUP does not reload
        leases, so they are dropped from the file with dnsmasq stopped."""
        try:
            lines = (self.dir / "leases").read_text().splitlines()
        except OSError:
            return set()
        owner = {}
        for line in hosts_file(plan).splitlines():
            mac, ip = line.split(",")[:2]
            owner[ip] = mac
        stale = set()
        for line in lines:
            f = line.split()
            if len(f) >= 3 and owner.get(f[2]) != f[1].lower():
                stale.add(line)
        return stale

    def _drop_leases(self, stale: set[str]) -> None:
        path = self.dir / "leases"
        keep = [line for line in path.read_text().splitlines() if line not in stale]
        _write(path, "".join(line + "\n" for line in keep))

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Running (a zombie no parent has reaped yet is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
