"""The Nova side of networking with the real network service and the Linux data plane
(runs once ``strato.network.api`` and ``strato.network.linux`` are merged, and
``Services.build`` gives compute the network: ``ComputeAPI(..., network=network)``,
``QemuDriver(..., open_tap=ports.tap_opener(network))``).

Two tiny guests on one network get their ports' addresses by DHCP and ping each other;
the metadata service answers at 169.254.169.254 over the network; the port views of
``os-interface``; an interface hot-plugged and unplugged; a hard reboot reopens the tap;
deleting the servers deletes their ports.  Every namespace, veth and dnsmasq of this
test's data plane (``dataplane_id`` "cnet") is torn down, also on failure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from strato.virt.qemu import QemuDriver
from tests.compute.conftest import guest_server, wait_console

pytest.importorskip("strato.network.api")
pytest.importorskip("strato.network.linux")

H = {"OpenStack-API-Version": "compute 2.79"}


def _until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout}s")
        time.sleep(0.3)


def _subnet(c: httpx.Client, name: str, cidr: str) -> str:
    r = c.post("/networking/v2.0/networks", json={"network": {"name": name}})
    assert r.status_code == 201, r.text
    net = r.json()["network"]["id"]
    r = c.post("/networking/v2.0/subnets", json={"subnet": {
        "network_id": net, "cidr": cidr, "ip_version": 4}})
    assert r.status_code == 201, r.text
    return str(net)


def _active(c: httpx.Client, sid: str) -> dict | None:
    view = c.get(f"/compute/v2.1/servers/{sid}", headers=H).json()["server"]
    assert view["status"] != "ERROR", view.get("fault")
    return view if view["status"] == "ACTIVE" else None


def _macs(drv: QemuDriver, sid: str) -> str:
    with drv.agent(sid) as ga:
        return ga.sh("cat /sys/class/net/*/address").stdout.decode()


def test_cli_flows(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``server create --network --security-group``, ``server add/remove security
    group``, ``server add/remove network`` with the real ``openstack`` client."""
    tmp = tmp_path_factory.mktemp("cl")
    try:
        with guest_server(tmp, {"network": {"dataplane": "linux",
                                            "dataplane_id": "ccli"}}) as srv:
            o = srv.openstack_json
            for name, cidr in (("n1", "10.7.0.0/24"), ("n2", "10.6.0.0/24")):
                o("network", "create", name)
                o("subnet", "create", "--network", name, "--subnet-range", cidr, f"s-{name}")
            o("security", "group", "create", "web")
            s: Any = o("server", "create", "--flavor", "m1.tiny", "--image", "strato-guest",
                       "--network", "n1", "--security-group", "web", "--wait", "c1")
            sid = s["id"]
            assert s["security_groups"] == [{"name": "web"}]
            assert s["addresses"] == {"n1": ["10.7.0.3"]}
            drv = QemuDriver(srv.state / "instances")
            assert "STRATO-NET-UP eth0 10.7.0.3/24" in wait_console(drv, sid, "STRATO-NET-UP")
            srv.openstack("server", "add", "security", "group", sid, "default")
            srv.openstack("server", "remove", "security", "group", sid, "web")
            assert o("server", "show", sid)["security_groups"] == [  # type: ignore[index]
                {"name": "default"}]
            srv.openstack("server", "add", "network", sid, "n2")
            _until("on n2", lambda: "n2" in o("server", "show", sid)["addresses"])  # type: ignore[index]
            mac = next(p["MAC Address"] for p in o("port", "list", "--server", sid)  # type: ignore[union-attr]
                       if "10.6.0." in str(p["Fixed IP Addresses"]))
            _until("hot-plugged", lambda: mac in _macs(drv, sid))
            srv.openstack("server", "remove", "network", sid, "n2")
            _until("off n2", lambda: "n2" not in o("server", "show", sid)["addresses"])  # type: ignore[index]
            _until("unplugged", lambda: mac not in _macs(drv, sid))
            srv.openstack("server", "delete", "--wait", sid)
            assert o("port", "list", "--device-owner", "compute:nova") == []
    finally:
        _teardown(tmp)


def _teardown(root: Path) -> None:
    from strato.config import load
    from strato.network.linux import LinuxDataplane

    if (root / "strato.conf").exists():
        LinuxDataplane(load(root / "strato.conf")).teardown()


def test_guests_on_a_network(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp_path = tmp_path_factory.mktemp("cn")  # short: the guests' socket paths
    try:
        _guests_on_a_network(tmp_path)
    finally:
        _teardown(tmp_path)


def _guests_on_a_network(tmp_path: Path) -> None:
    with guest_server(tmp_path, {"network": {"dataplane": "linux",
                                             "dataplane_id": "cnet"}}) as srv:
        c = srv.client(srv.token())
        net = _subnet(c, "n1", "10.9.0.0/24")
        img = srv.openstack_json("image", "show", "strato-guest")["id"]  # type: ignore[index]
        ids = []
        for name, entry in (("g1", {"uuid": net}),
                            ("g2", {"uuid": net, "fixed_ip": "10.9.0.50"})):
            r = c.post("/compute/v2.1/servers", headers=H, json={"server": {
                "name": name, "flavorRef": "1", "imageRef": img, "networks": [entry]}})
            assert r.status_code == 202, r.text
            ids.append(r.json()["server"]["id"])
        sid, sid2 = ids
        drv = QemuDriver(srv.state / "instances")
        view = _until("active", lambda: _active(c, sid), 120)
        _until("active", lambda: _active(c, sid2), 120)
        addr = view["addresses"]["n1"][0]["addr"]
        assert view["addresses"]["n1"][0]["OS-EXT-IPS:type"] == "fixed"
        assert f"STRATO-NET-UP eth0 {addr}/24" in wait_console(drv, sid, "STRATO-NET-UP")
        assert "STRATO-NET-UP eth0 10.9.0.50/24" in wait_console(drv, sid2, "STRATO-NET-UP")
        with drv.agent(sid) as ga:
            assert ga.sh("ping -c 2 -W 2 10.9.0.50").exitcode == 0
            meta = ga.sh("printf 'GET /openstack/latest/meta_data.json HTTP/1.0\\r\\n\\r\\n'"
                         " | nc -w 10 169.254.169.254 80").stdout.decode()
        assert " 200 OK" in meta and f'"uuid": "{sid}"' in meta
        (iface,) = c.get(f"/compute/v2.1/servers/{sid}/os-interface",
                         headers=H).json()["interfaceAttachments"]
        assert iface["port_state"] == "ACTIVE" and iface["net_id"] == net
        assert iface["fixed_ips"][0]["ip_address"] == addr

        # interface attach and detach, hot, on a second network
        net2 = _subnet(c, "n2", "10.8.0.0/24")
        r = c.post(f"/compute/v2.1/servers/{sid}/os-interface", headers=H,
                   json={"interfaceAttachment": {"net_id": net2}})
        assert r.status_code == 200, r.text
        att = r.json()["interfaceAttachment"]
        _until("hot-plugged", lambda: att["mac_addr"] in _macs(drv, sid))
        assert len(drv.spec(sid).nics) == 2
        r = c.delete(f"/compute/v2.1/servers/{sid}/os-interface/{att['port_id']}",
                     headers=H)
        assert r.status_code == 202
        _until("unplugged", lambda: att["mac_addr"] not in _macs(drv, sid)
               and len(drv.spec(sid).nics) == 1)
        _until("port deleted", lambda: c.get(
            f"/networking/v2.0/ports/{att['port_id']}").status_code == 404)

        # a hard reboot starts a new QEMU: the tap is opened again, DHCP again
        r = c.post(f"/compute/v2.1/servers/{sid}/action", headers=H,
                   json={"reboot": {"type": "HARD"}})
        assert r.status_code == 202
        _until("up again", lambda: drv.console_output(sid).count("STRATO-NET-UP") >= 2, 120)

        # a strato restart leaves running guests' networking as it was (QEMU keeps its
        # tap fds; the network service re-applies the host's networks)
        srv.stop(teardown=False)
        srv.start()
        c = srv.client(srv.token())
        with drv.agent(sid2) as ga:
            assert ga.sh(f"ping -c 2 -W 2 {addr}").exitcode == 0

        for x in ids:
            assert c.delete(f"/compute/v2.1/servers/{x}", headers=H).status_code == 204
        _until("deleted", lambda: all(c.get(f"/compute/v2.1/servers/{x}", headers=H)
                                      .status_code == 404 for x in ids))
        ports = c.get("/networking/v2.0/ports").json()["ports"]
        assert not [p for p in ports if p["device_owner"].startswith("compute:")]
