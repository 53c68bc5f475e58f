"""Neutron v2.0 at /networking: the real ``openstack`` client and exact HTTP requests
against a strato server (see ``tests.network.servers``), and a server without a data
plane answering reads but refusing changes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.network.servers import network_server
from tests.support import Server
from tests.tenants import make_tenant

N = "/networking/v2.0"


@pytest.fixture(scope="module")
def net_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with network_server(tmp_path_factory.mktemp("net")) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin_http(net_server: Server) -> Iterator[httpx.Client]:
    with net_server.client(net_server.token()) as c:
        yield c


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _fault(r: httpx.Response, status: int, kind: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["NeutronError"]
    assert set(err) == {"type", "message", "detail"}
    if kind:
        assert err["type"] == kind, err
    return err


def test_discovery_catalog_and_extensions(net_server: Server) -> None:
    r = httpx.get(f"{net_server.url}/networking/")
    assert r.status_code == 200 and r.json()["versions"][0]["id"] == "v2.0"
    catalog = net_server.openstack_json("catalog", "list")
    assert any(c["Type"] == "network" and c["Name"] == "neutron" for c in catalog)
    aliases = {e["Alias"] for e in net_server.openstack_json("extension", "list",
                                                             "--network")}
    assert {"external-net", "router", "quotas", "security-group", "port-security",
            "binding", "allowed-address-pairs", "standard-attr-description",
            "standard-attr-timestamp", "standard-attr-revisions", "quota_details",
            "project-id", "pagination", "sorting"} <= aliases
    public = net_server.openstack_json("network", "show", "public")
    assert public["router:external"] is True and public["subnets"]


def test_cli_networks_subnets_ports(net_server: Server) -> None:
    osc = net_server.openstack_json
    name = _name("net")
    net = osc("network", "create", name)
    assert net["name"] == name and net["status"] == "ACTIVE"
    assert name in {n["Name"] for n in osc("network", "list")}
    net_server.openstack("network", "set", "--name", name + "-x", "--description", "d",
                         name)
    shown = osc("network", "show", name + "-x")
    assert shown["description"] == "d" and shown["revision_number"] >= 1
    sub = osc("subnet", "create", "--network", name + "-x", "--subnet-range",
              "10.77.0.0/24", _name("sub"))
    assert sub["gateway_ip"] == "10.77.0.1" and sub["cidr"] == "10.77.0.0/24"
    port = osc("port", "create", "--network", name + "-x", _name("port"))
    assert port["fixed_ips"][0]["ip_address"] == "10.77.0.3"  # .2 is the DHCP port's
    assert port["id"] in {p["ID"] for p in osc("port", "list", "--network", net["id"])}
    net_server.openstack("port", "set", "--name", "renamed", port["id"])
    assert osc("port", "show", port["id"])["name"] == "renamed"
    refused = net_server.openstack("network", "delete", net["id"], check=False)
    assert refused.returncode != 0
    assert "ports still in use" in refused.stderr + refused.stdout
    net_server.openstack("port", "delete", port["id"])
    net_server.openstack("subnet", "delete", sub["id"])
    net_server.openstack("network", "delete", net["id"])
    gone = net_server.openstack("network", "show", net["id"], check=False)
    assert gone.returncode != 0


def test_cli_security_groups_and_rules(net_server: Server) -> None:
    osc = net_server.openstack_json
    name = _name("web")
    group = osc("security", "group", "create", name)
    rule = osc("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port",
               "22", name)
    assert (rule["protocol"], rule["port_range_min"], rule["port_range_max"]) == (
        "tcp", 22, 22)
    osc("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port",
        "80:81", "--remote-ip", "10.0.0.0/8", name)
    osc("security", "group", "rule", "create", "--protocol", "icmp", "--remote-group",
        "default", name)
    rules = osc("security", "group", "rule", "list", name)
    assert len(rules) == 5  # two egress defaults + three
    assert name in {g["Name"] for g in osc("security", "group", "list")}
    assert "default" in {g["Name"] for g in osc("security", "group", "list")}
    shown = osc("security", "group", "show", group["id"])
    assert len(shown["rules"]) == 5
    net_server.openstack("security", "group", "rule", "delete", rule["id"])
    net_server.openstack("security", "group", "delete", name)
    assert net_server.openstack("security", "group", "show", name, check=False).returncode


def test_cli_router_gateway_and_floating_ip(net_server: Server) -> None:
    osc = net_server.openstack_json
    net = osc("network", "create", _name("priv"))
    sub = osc("subnet", "create", "--network", net["id"], "--subnet-range", "10.88.0.0/24",
              _name("sub"))
    router = osc("router", "create", _name("r"))
    net_server.openstack("router", "add", "subnet", router["id"], sub["id"])
    net_server.openstack("router", "set", "--external-gateway", "public", router["id"])
    shown = osc("router", "show", router["id"])
    gw = shown["external_gateway_info"]
    assert gw["network_id"] == osc("network", "show", "public")["id"]
    assert gw["external_fixed_ips"][0]["ip_address"].startswith("198.18.")
    port = osc("port", "create", "--network", net["id"], _name("p"))
    fip = osc("floating", "ip", "create", "public")
    assert fip["floating_ip_address"].startswith("198.18.") and fip["port_id"] is None
    net_server.openstack("floating", "ip", "set", "--port", port["id"], fip["id"])
    fip = osc("floating", "ip", "show", fip["id"])
    assert fip["port_id"] == port["id"] and fip["router_id"] == router["id"]
    assert fip["fixed_ip_address"] == port["fixed_ips"][0]["ip_address"]
    busy = net_server.openstack("router", "remove", "subnet", router["id"], sub["id"],
                                check=False)
    assert busy.returncode != 0
    net_server.openstack("floating", "ip", "unset", "--port", fip["id"])
    assert osc("floating", "ip", "show", fip["id"])["port_id"] is None
    net_server.openstack("floating", "ip", "delete", fip["id"])
    net_server.openstack("router", "remove", "subnet", router["id"], sub["id"])
    net_server.openstack("router", "unset", "--external-gateway", router["id"])
    assert osc("router", "show", router["id"])["external_gateway_info"] is None
    net_server.openstack("router", "delete", router["id"])
    net_server.openstack("port", "delete", port["id"])
    net_server.openstack("network", "delete", net["id"])


def test_cli_quota_show_and_over_quota(net_server: Server) -> None:
    tenant = make_tenant(net_server, "nq")
    quota = {q["Resource"]: q["Limit"] for q in net_server.openstack_json(
        "quota", "show", tenant.project)}
    assert quota["networks"] == 100 and quota["ports"] == 500
    assert quota["security_groups"] == 10 and quota["floating_ips"] == 50
    net_server.openstack("quota", "set", "--networks", "1", tenant.project)
    tenant.openstack("network", "create", _name("one"))
    over = tenant.openstack("network", "create", _name("two"), check=False)
    assert over.returncode != 0 and "Quota exceeded" in over.stderr + over.stdout
    with net_server.client(tenant.token()) as c:
        _fault(c.post(f"{N}/networks", json={"network": {"name": "x"}}), 409, "OverQuota")
        details = c.get(f"{N}/quotas/{tenant.project_id}/details").json()["quota"]
        assert details["network"] == {"limit": 1, "used": 1, "reserved": 0}


def test_http_filters_fields_sort_pagination(net_server: Server,
                                             admin_http: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:6]
    ids = {}
    for n in ("b", "a", "c"):
        r = admin_http.post(f"{N}/networks", json={"network": {
            "name": f"{tag}-{n}", "description": tag}})
        assert r.status_code == 201, r.text
        ids[n] = r.json()["network"]["id"]
    r = admin_http.get(f"{N}/networks", params=[("name", f"{tag}-a"), ("name", f"{tag}-c")])
    assert {n["id"] for n in r.json()["networks"]} == {ids["a"], ids["c"]}
    r = admin_http.get(f"{N}/networks", params=[("description", tag), ("fields", "id"),
                                                ("fields", "name"), ("sort_key", "name"),
                                                ("sort_dir", "desc")])
    assert r.json()["networks"] == [{"id": ids[n], "name": f"{tag}-{n}"} for n in "cba"]
    r = admin_http.get(f"{N}/networks", params=[("description", tag), ("limit", "2"),
                                                ("sort_key", "name"), ("sort_dir", "asc")])
    body = r.json()
    assert [n["id"] for n in body["networks"]] == [ids["a"], ids["b"]]
    nxt = next(link["href"] for link in body["networks_links"] if link["rel"] == "next")
    r = admin_http.get(nxt)
    assert [n["id"] for n in r.json()["networks"]] == [ids["c"]]
    r = admin_http.get(f"{N}/networks/{ids['a']}", params={"fields": "name"})
    assert r.json() == {"network": {"name": f"{tag}-a"}}
    _fault(admin_http.get(f"{N}/networks", params={"sort_key": "nope"}), 400)
    for n in ids.values():
        assert admin_http.delete(f"{N}/networks/{n}").status_code == 204


def test_http_faults(net_server: Server, admin_http: httpx.Client) -> None:
    _fault(admin_http.get(f"{N}/networks/{uuid.uuid4()}"), 404, "NetworkNotFound")
    _fault(admin_http.get(f"{N}/ports/nope"), 404, "PortNotFound")
    _fault(admin_http.delete(f"{N}/security-groups/nope"), 404, "SecurityGroupNotFound")
    _fault(admin_http.post(f"{N}/networks", content=b"{nope",
                           headers={"Content-Type": "application/json"}), 400)
    _fault(admin_http.post(f"{N}/networks", json={"network": {"bogus": 1}}), 400)
    _fault(admin_http.post(f"{N}/networks", json=[1, 2]), 400)
    _fault(admin_http.post(f"{N}/subnets", json={"subnet": {"network_id": "x",
                                                            "cidr": "10.0.0.0/99"}}), 400)
    _fault(admin_http.post(f"{N}/security-group-rules", json={"security_group_rule": {
        "security_group_id": "x", "direction": "up"}}), 400)
    net = admin_http.post(f"{N}/networks", json={"network": {"name": _name("f")}}).json()
    nid = net["network"]["id"]
    sub = admin_http.post(f"{N}/subnets", json={"subnet": {
        "network_id": nid, "cidr": "10.99.0.0/30", "ip_version": 4}})
    assert sub.status_code == 201, sub.text
    # a /30: .1 the gateway, .2 the DHCP port: no room for a port
    _fault(admin_http.post(f"{N}/ports", json={"port": {"network_id": nid}}), 409,
           "IpAddressGenerationFailure")
    sid = sub.json()["subnet"]["id"]
    admin_http.put(f"{N}/subnets/{sid}", json={"subnet": {"enable_dhcp": False}})
    port = admin_http.post(f"{N}/ports", json={"port": {"network_id": nid}})
    assert port.status_code == 201, port.text
    _fault(admin_http.delete(f"{N}/networks/{nid}"), 409, "NetworkInUse")
    _fault(admin_http.delete(f"{N}/subnets/{sid}"), 409, "SubnetInUse")
    _fault(admin_http.post(f"{N}/ports", json={"port": {"network_id": nid, "fixed_ips": [
        {"ip_address": port.json()["port"]["fixed_ips"][0]["ip_address"]}]}}), 409)
    assert admin_http.delete(f"{N}/ports/{port.json()['port']['id']}").status_code == 204
    assert admin_http.delete(f"{N}/networks/{nid}").status_code == 204


def test_http_policy_member_vs_admin(net_server: Server, admin_http: httpx.Client) -> None:
    a, b = make_tenant(net_server, "na"), make_tenant(net_server, "nb")
    with net_server.client(a.token()) as ca, net_server.client(b.token()) as cb:
        net = ca.post(f"{N}/networks", json={"network": {"name": _name("a")}})
        assert net.status_code == 201, net.text
        nid = net.json()["network"]["id"]
        assert net.json()["network"]["project_id"] == a.project_id
        assert net.json()["network"]["tenant_id"] == a.project_id
        _fault(cb.get(f"{N}/networks/{nid}"), 404, "NetworkNotFound")
        assert nid not in {n["id"] for n in cb.get(f"{N}/networks").json()["networks"]}
        assert nid in {n["id"] for n in admin_http.get(f"{N}/networks").json()["networks"]}
        assert "public" in {n["name"] for n in cb.get(f"{N}/networks").json()["networks"]}
        _fault(cb.post(f"{N}/networks", json={"network": {"shared": True}}), 403,
               "PolicyNotAuthorized")
        _fault(cb.post(f"{N}/networks", json={"network": {"project_id": a.project_id}}),
               403)
        _fault(cb.put(f"{N}/quotas/{b.project_id}", json={"quota": {"network": 5}}), 403)
        _fault(cb.get(f"{N}/quotas/{a.project_id}"), 403)
        # each project gets its own default group on first use
        groups = cb.get(f"{N}/security-groups").json()["security_groups"]
        assert [g["name"] for g in groups] == ["default"]
        assert groups[0]["project_id"] == b.project_id
        assert ca.delete(f"{N}/networks/{nid}").status_code == 204


@pytest.fixture(scope="module")
def usermode_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from tests.compute.conftest import guest_server

    with guest_server(tmp_path_factory.mktemp("um"), {"network": {
            "dataplane": "usermode", "public_cidr": "198.18.250.0/24"}}) as srv:
        yield srv


def test_without_data_plane_reads_work_writes_503(usermode_server: Server) -> None:
    srv = usermode_server
    with srv.client(srv.token()) as c:
        for path in ("networks", "subnets", "ports", "routers", "floatingips",
                     "security-groups", "extensions", f"quotas/{_project(srv)}"):
            assert c.get(f"{N}/{path}").status_code == 200, path
        for path, body in (("networks", {"network": {"name": "x"}}),
                           ("routers", {"router": {"name": "x"}}),
                           ("ports", {"port": {"network_id": "x"}}),
                           ("floatingips", {"floatingip": {"floating_network_id": "x"}})):
            err = _fault(c.post(f"{N}/{path}", json=body), 503, "ServiceUnavailable")
            assert err["message"].startswith("Networking is not available on this host: ")
        r = c.post(f"{N}/security-groups", json={"security_group": {"name": "fine"}})
        assert r.status_code == 201, r.text
    # a server still boots, with QEMU's user-mode NIC
    from tests.compute.conftest import boot_ready

    sid = boot_ready(srv, "--image", "strato-guest", prefix="um")
    srv.openstack("server", "delete", "--wait", sid)


def _project(srv: Server) -> str:
    return json.loads(srv.openstack("token", "issue", "-f", "json").stdout)["project_id"]


JUNK: list[object] = [None, True, 0, -1, 2**70, "", "x" * 300, "not-an-ip", "10.0.0.0/99",
                      [], [1], ["a", {"b": 1}], {}, {"a": [1]}, [{"subnet_id": [1]}],
                      [{"ip_address": 5}], [{"start": "1.2.3.4"}], 1.5]


def test_http_wrong_values_are_4xx(net_server: Server, admin_http: httpx.Client) -> None:
    """Every field of a valid body of every write, replaced by wrong-typed and odd
    values, on a server whose data plane is on: a 4xx in Neutron's format, or a
    success; never a 5xx."""
    net = admin_http.post(f"{N}/networks", json={"network": {"name": _name("j")}}).json()
    nid = net["network"]["id"]
    sub = admin_http.post(f"{N}/subnets", json={"subnet": {
        "network_id": nid, "cidr": "10.66.0.0/24"}}).json()["subnet"]
    sg = admin_http.post(f"{N}/security-groups", json={"security_group": {
        "name": _name("j")}}).json()["security_group"]
    router = admin_http.post(f"{N}/routers", json={"router": {
        "name": _name("j")}}).json()["router"]
    port = admin_http.post(f"{N}/ports", json={"port": {"network_id": nid}}).json()["port"]
    public = admin_http.get(f"{N}/networks", params={"name": "public"}).json()["networks"][0]
    templates = [
        ("POST", "networks", "network", {"name": "n", "shared": False, "mtu": 1400,
                                         "admin_state_up": True, "tags": ["a"]}),
        ("PUT", f"networks/{nid}", "network", {"name": "n", "description": "d"}),
        ("POST", "subnets", "subnet", {
            "network_id": nid, "cidr": "10.67.0.0/24", "gateway_ip": "10.67.0.1",
            "allocation_pools": [{"start": "10.67.0.5", "end": "10.67.0.9"}],
            "dns_nameservers": ["10.0.0.53"], "enable_dhcp": True, "ip_version": 4,
            "host_routes": [{"destination": "10.9.0.0/16", "nexthop": "10.67.0.7"}]}),
        ("PUT", f"subnets/{sub['id']}", "subnet", {"name": "s", "gateway_ip": "10.66.0.1",
                                                   "allocation_pools": [{
                                                       "start": "10.66.0.100",
                                                       "end": "10.66.0.110"}]}),
        ("POST", "ports", "port", {
            "network_id": nid, "fixed_ips": [{"subnet_id": sub["id"]}],
            "security_groups": [sg["id"]], "mac_address": "fa:16:3e:00:00:01",
            "allowed_address_pairs": [{"ip_address": "10.66.0.200"}],
            "binding:host_id": "h", "admin_state_up": True}),
        ("PUT", f"ports/{port['id']}", "port", {
            "name": "p", "fixed_ips": [{"subnet_id": sub["id"]}],
            "security_groups": [sg["id"]], "port_security_enabled": True}),
        ("POST", "security-groups", "security_group", {"name": "g", "stateful": True}),
        ("PUT", f"security-groups/{sg['id']}", "security_group", {"name": "g2"}),
        ("POST", "security-group-rules", "security_group_rule", {
            "security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp",
            "port_range_min": 22, "port_range_max": 23, "ethertype": "IPv4",
            "remote_ip_prefix": "10.0.0.0/8"}),
        ("POST", "routers", "router", {"name": "r", "external_gateway_info": {
            "network_id": public["id"], "enable_snat": True}}),
        ("PUT", f"routers/{router['id']}", "router", {"external_gateway_info": {
            "network_id": public["id"]}, "admin_state_up": True}),
        ("POST", "floatingips", "floatingip", {"floating_network_id": public["id"],
                                               "port_id": port["id"], "description": ""}),
        ("PUT", f"quotas/{port['project_id']}", "quota", {"network": 100, "port": 500}),
    ]
    for method, path, key, template in templates:
        for field in template:
            for junk in JUNK:
                body = {key: {**template, field: junk}}
                r = admin_http.request(method, f"{N}/{path}", json=body)
                assert r.status_code < 500, (method, path, field, junk, r.text)
                if r.status_code >= 400:
                    _fault(r, r.status_code)
        for junk in JUNK:
            r = admin_http.request(method, f"{N}/{path}", json={key: junk})
            assert r.status_code < 500, (method, path, junk, r.text)
            if not isinstance(junk, dict):
                assert r.status_code >= 400, (method, path, junk, r.text)
    for action in ("add_router_interface", "remove_router_interface"):
        for junk in [*JUNK, {"subnet_id": [1]}, {"port_id": {}}, {"subnet_id": "nope"}]:
            r = admin_http.put(f"{N}/routers/{router['id']}/{action}", json=junk)
            assert 400 <= r.status_code < 500, (action, junk, r.text)
