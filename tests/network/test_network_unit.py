"""The network service on a recording data plane: records, IPAM, policy, quotas, and
the plans each change hands to the data plane (the Linux data plane is tested with
real namespaces in its own tests)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from strato import exceptions as exc
from strato.context import RequestContext
from strato.network.api import NetworkAPI
from strato.network.instance import Request
from strato.network.models import Network, Port
from strato.network.query import listing
from tests.network.conftest import make_ctx
from tests.network.doubles import RecordingDataplane


def _net(api: NetworkAPI, ctx: RequestContext, name: str = "n", cidr: str = "10.0.0.0/24",
         **extra: object) -> tuple[dict, dict]:
    net = api.create_network(ctx, {"network": {"name": name, **extra}})
    sub = api.create_subnet(ctx, {"subnet": {"network_id": net["id"], "cidr": cidr,
                                             "ip_version": 4}})
    return net, sub


def _public(api: NetworkAPI, admin: RequestContext) -> tuple[dict, dict]:
    net = api.create_network(admin, {"network": {"name": "public", "router:external": True}})
    sub = api.create_subnet(admin, {"subnet": {"network_id": net["id"],
                                               "cidr": "198.18.9.0/24", "enable_dhcp": False}})
    return net, sub


def _err(fn, *args) -> exc.StratoError:  # type: ignore[no-untyped-def]
    with pytest.raises(exc.StratoError) as info:
        fn(*args)
    return info.value


def test_subnet_gateway_pools_and_dhcp_port(net_api: NetworkAPI, alice: RequestContext,
                                            dataplane: RecordingDataplane) -> None:
    net, sub = _net(net_api, alice)
    assert sub["gateway_ip"] == "10.0.0.1"
    assert sub["allocation_pools"] == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    plan = dataplane.networks[net["id"]]
    assert plan.subnets[0].dhcp_ip == "10.0.0.2" and plan.subnets[0].gateway_ip == "10.0.0.1"
    dhcp = [p for p in net_api.list_ports(alice) if p["device_owner"] == "network:dhcp"]
    assert dhcp[0]["device_id"] == f"dhcp{net['id']}"
    port = net_api.create_port(alice, {"port": {"network_id": net["id"]}})
    assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.0.0.3"}]
    assert port["mac_address"].startswith("fa:16:3e:") and port["status"] == "DOWN"
    assert len(port["security_groups"]) == 1  # the project's default group
    err = _err(net_api.create_port, alice, {"port": {"network_id": net["id"], "fixed_ips": [
        {"ip_address": "10.0.0.3"}]}})
    assert (err.status, err.neutron_type) == (409, "IpAddressAlreadyAllocated")
    err = _err(net_api.create_port, alice, {"port": {"network_id": net["id"],
                                                     "mac_address": port["mac_address"]}})
    assert (err.status, err.neutron_type) == (409, "MacAddressInUse")
    # unguest ports are not in the plan (nothing bound here)
    assert dataplane.networks[net["id"]].ports == ()


def test_pool_exhaustion_and_bad_input(net_api: NetworkAPI, alice: RequestContext) -> None:
    net, _ = _net(net_api, alice, cidr="10.1.0.0/29")  # .1 gw, .2 dhcp, .3-.6 free
    for _ in range(4):
        net_api.create_port(alice, {"port": {"network_id": net["id"]}})
    err = _err(net_api.create_port, alice, {"port": {"network_id": net["id"]}})
    assert (err.status, err.neutron_type) == (409, "IpAddressGenerationFailure")
    for body in ({"subnet": {"network_id": net["id"], "cidr": "10.2.0.0/33"}},
                 {"subnet": {"network_id": net["id"], "cidr": "10.2.0.1/24"}},
                 {"subnet": {"network_id": net["id"], "cidr": "fd00::/64", "ip_version": 6}},
                 {"subnet": {"network_id": net["id"], "cidr": "10.1.0.0/28"}},
                 {"subnet": {"cidr": "10.3.0.0/24"}},
                 {"subnet": {"network_id": net["id"], "cidr": "10.4.0.0/24", "bogus": 1}}):
        assert _err(net_api.create_subnet, alice, body).status == 400, body
    assert _err(net_api.create_network, alice, {"nets": {}}).status == 400
    assert _err(net_api.show_network, alice, "nope").status == 404


def test_policy_visibility(net_api: NetworkAPI, admin: RequestContext, alice: RequestContext,
                           bob: RequestContext) -> None:
    mine, _ = _net(net_api, alice, "alice-net")
    shared = net_api.create_network(admin, {"network": {"name": "sh", "shared": True}})
    public, _ = _public(net_api, admin)
    err = _err(net_api.create_network, alice, {"network": {"shared": True}})
    assert (err.status, err.neutron_type) == (403, "PolicyNotAuthorized")
    assert _err(net_api.create_network, alice, {"network": {"router:external": True}}) \
        .status == 403
    seen = {n["id"] for n in net_api.list_networks(bob)}
    assert mine["id"] not in seen and {shared["id"], public["id"]} <= seen
    assert _err(net_api.show_network, bob, mine["id"]).status == 404
    assert _err(net_api.delete_network, bob, mine["id"]).status == 404
    assert _err(net_api.delete_network, bob, shared["id"]).status in (403, 404)
    assert mine["id"] in {n["id"] for n in net_api.list_networks(admin)}
    port = net_api.create_port(alice, {"port": {"network_id": mine["id"]}})
    assert port["id"] not in {p["id"] for p in net_api.list_ports(bob)}
    assert _err(net_api.update_port, bob, port["id"], {"port": {"name": "x"}}).status == 404


def test_quota_over_is_409(net_api: NetworkAPI, admin: RequestContext,
                           alice: RequestContext) -> None:
    net_api.update_quota(admin, "p-alice", {"quota": {"network": 1, "security_group": 1}})
    assert net_api.quota(alice, "p-alice")["network"] == 1
    net_api.create_network(alice, {"network": {"name": "one"}})
    err = _err(net_api.create_network, alice, {"network": {"name": "two"}})
    assert (err.status, err.neutron_type) == (409, "OverQuota")
    # the default group counts: no room for another
    assert _err(net_api.create_security_group, alice,
                {"security_group": {"name": "x"}}).status == 409
    details = net_api.quota(alice, "p-alice", detail=True)
    assert details["network"] == {"limit": 1, "used": 1, "reserved": 0}
    assert _err(net_api.update_quota, alice, "p-alice", {"quota": {"network": 5}}).status \
        == 403
    assert _err(net_api.quota, alice, "p-bob").status == 403
    net_api.delete_quota(admin, "p-alice")
    assert net_api.quota(alice, "p-alice")["network"] == 100


def test_security_groups_default_rules_and_in_use(net_api: NetworkAPI,
                                                  alice: RequestContext) -> None:
    groups = net_api.list_security_groups(alice)
    assert [g["name"] for g in groups] == ["default"]
    rules = groups[0]["security_group_rules"]
    assert sorted((r["direction"], r["ethertype"], bool(r["remote_group_id"]))
                  for r in rules) == [("egress", "IPv4", False), ("egress", "IPv6", False),
                                      ("ingress", "IPv4", True), ("ingress", "IPv6", True)]
    web = net_api.create_security_group(alice, {"security_group": {"name": "web"}})
    rule = net_api.create_security_group_rule(alice, {"security_group_rule": {
        "security_group_id": web["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22}})
    assert rule["remote_ip_prefix"] is None and rule["port_range_max"] == 22
    err = _err(net_api.create_security_group_rule, alice, {"security_group_rule": {
        "security_group_id": web["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22}})
    assert (err.status, err.neutron_type) == (409, "SecurityGroupRuleExists")
    for bad in ({"direction": "sideways"}, {"direction": "ingress", "protocol": "tcp",
                                            "port_range_min": 30, "port_range_max": 20},
                {"direction": "ingress", "remote_ip_prefix": "fd00::/8"},
                {"direction": "ingress", "port_range_min": 1}):
        body = {"security_group_rule": {"security_group_id": web["id"], **bad}}
        assert _err(net_api.create_security_group_rule, alice, body).status == 400, bad
    net, _ = _net(net_api, alice)
    net_api.create_port(alice, {"port": {"network_id": net["id"],
                                         "security_groups": [web["id"]]}})
    err = _err(net_api.delete_security_group, alice, web["id"])
    assert (err.status, err.neutron_type) == (409, "SecurityGroupInUse")
    default = groups[0]["id"]
    assert _err(net_api.delete_security_group, alice, default).status == 409


def test_in_use_deletes(net_api: NetworkAPI, alice: RequestContext,
                        dataplane: RecordingDataplane) -> None:
    net, sub = _net(net_api, alice)
    port = net_api.create_port(alice, {"port": {"network_id": net["id"]}})
    err = _err(net_api.delete_network, alice, net["id"])
    assert (err.status, err.neutron_type) == (409, "NetworkInUse")
    err = _err(net_api.delete_subnet, alice, sub["id"])
    assert (err.status, err.neutron_type) == (409, "SubnetInUse")
    net_api.delete_port(alice, port["id"])
    net_api.delete_network(alice, net["id"])  # the DHCP port goes with it
    assert ("remove_network", net["id"]) in dataplane.calls
    assert net["id"] not in dataplane.networks
    assert _err(net_api.show_subnet, alice, sub["id"]).status == 404


def test_failed_apply_rolls_back(net_api: NetworkAPI, alice: RequestContext,
                                 dataplane: RecordingDataplane, netdb) -> None:  # type: ignore[no-untyped-def]
    net = net_api.create_network(alice, {"network": {"name": "n"}})
    dataplane.fail_on.add(net["id"])
    err = _err(net_api.create_subnet, alice, {"subnet": {"network_id": net["id"],
                                                         "cidr": "10.9.0.0/24"}})
    assert err.status == 500
    assert net_api.show_network(alice, net["id"])["subnets"] == []
    with netdb.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Port)) == 0
    # and the data plane was re-applied from what stayed (the failing apply again)
    assert dataplane.calls.count(("apply_network", net["id"])) >= 3
    before = len(net_api.list_networks(alice))
    dataplane.fail_on.add("*")

    class Boom(RecordingDataplane):
        def apply_network(self, plan):  # type: ignore[no-untyped-def]
            raise RuntimeError("no")

    net_api.manager.dataplane = Boom()
    assert _err(net_api.create_network, alice, {"network": {"name": "m"}}).status == 500
    assert len(net_api.list_networks(alice)) == before


def _topology(api: NetworkAPI, admin: RequestContext, alice: RequestContext) -> dict:
    public, psub = _public(api, admin)
    net, sub = _net(api, alice, "private", "10.0.0.0/24")
    router = api.create_router(alice, {"router": {
        "name": "r", "external_gateway_info": {"network_id": public["id"]}}})
    api.add_router_interface(alice, router["id"], {"subnet_id": sub["id"]})
    return {"public": public, "psub": psub, "net": net, "sub": sub, "router": router}


def test_router_floating_ip_and_instance_flow(net_api: NetworkAPI, admin: RequestContext,
                                              alice: RequestContext,
                                              dataplane: RecordingDataplane) -> None:
    t = _topology(net_api, admin, alice)
    router = net_api.show_router(alice, t["router"]["id"])
    gw = router["external_gateway_info"]
    assert gw["network_id"] == t["public"]["id"]
    assert gw["external_fixed_ips"][0]["ip_address"] == "198.18.9.2"
    rplan = dataplane.routers[router["id"]]
    assert rplan.gateway is not None and rplan.gateway.ip == "198.18.9.2"
    assert [(i.ip, i.cidr) for i in rplan.interfaces] == [("10.0.0.1", "10.0.0.0/24")]
    assert {p.kind for p in dataplane.networks[t["net"]["id"]].ports} == {"router"}
    assert dataplane.networks[t["public"]["id"]].external

    # a web group allowing ssh, an instance on the network in it
    web = net_api.create_security_group(alice, {"security_group": {"name": "web"}})
    net_api.create_security_group_rule(alice, {"security_group_rule": {
        "security_group_id": web["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}})
    reqs = net_api.resolve_requests(alice, [{"uuid": t["net"]["id"]}], ["web", "default"])
    assert reqs == [Request(network_id=t["net"]["id"])]
    with net_api.db.session() as s:
        ports = net_api.allocate_for_instance(alice, s, "inst-1", "host-a", reqs,
                                              ["web", "default"], "vm1")
    nic = net_api.plug(ports[0])
    assert nic.tap == "tap" + ports[0][:11]
    plan = dataplane.networks[t["net"]["id"]]
    guest = next(p for p in plan.ports if p.kind == "guest")
    assert guest.hostname == "vm1" and guest.ips == ("10.0.0.3",)
    assert guest.rules is not None
    assert any(r.protocol == "tcp" and r.port_min == 22 and r.remote_cidrs == ("0.0.0.0/0",)
               for r in guest.rules)
    # the default group's "from the same group" rule names the guest's own address
    assert any(r.direction == "ingress" and r.remote_cidrs == ("10.0.0.3",)
               for r in guest.rules)

    fip = net_api.create_floatingip(alice, {"floatingip": {
        "floating_network_id": t["public"]["id"]}})
    assert fip["floating_ip_address"] == "198.18.9.3" and fip["status"] == "DOWN"
    fip = net_api.update_floatingip(alice, fip["id"], {"floatingip": {"port_id": ports[0]}})
    assert fip["router_id"] == router["id"] and fip["fixed_ip_address"] == "10.0.0.3"
    assert fip["port_details"]["device_id"] == "inst-1"
    assert [(f.floating_ip, f.fixed_ip) for f in dataplane.routers[router["id"]].floating] \
        == [("198.18.9.3", "10.0.0.3")]
    addrs = net_api.addresses(["inst-1"])["inst-1"]["private"]
    assert [(a["addr"], a["OS-EXT-IPS:type"]) for a in addrs] == [
        ("10.0.0.3", "fixed"), ("198.18.9.3", "floating")]
    assert net_api.instance_security_groups(["inst-1"])["inst-1"] == [
        {"name": "default"}, {"name": "web"}]
    assert net_api.instance_for_address(t["net"]["id"], "10.0.0.3") == "inst-1"
    assert net_api.metadata_networks() == [t["net"]["id"]]
    data = net_api.network_data("inst-1")
    assert data["links"][0]["ethernet_mac_address"] == nic.mac
    assert data["networks"][0]["ip_address"] == "10.0.0.3"

    # in-use router pieces
    assert _err(net_api.remove_router_interface, alice, router["id"],
                {"subnet_id": t["sub"]["id"]}).status == 409
    assert _err(net_api.delete_router, alice, router["id"]).status == 409
    assert _err(net_api.delete_network, admin, t["public"]["id"]).status == 409

    # security group changes re-apply the network
    net_api.remove_security_group(alice, "inst-1", "web")
    guest = next(p for p in dataplane.networks[t["net"]["id"]].ports if p.kind == "guest")
    assert not any(r.port_min == 22 for r in guest.rules or ())
    net_api.add_security_group(alice, "inst-1", web["id"])
    assert _err(net_api.add_security_group, alice, "inst-1", "web").status == 400
    assert _err(net_api.add_security_group, alice, "inst-1", "nope").status == 404

    # the instance goes: its port is deleted, the floating IP disassociated
    net_api.deallocate_for_instance(alice, "inst-1")
    assert not any(p.kind == "guest" for p in dataplane.networks[t["net"]["id"]].ports)
    assert dataplane.routers[router["id"]].floating == ()
    fip = net_api.show_floatingip(alice, fip["id"])
    assert fip["port_id"] is None and fip["status"] == "DOWN"
    net_api.delete_floatingip(alice, fip["id"])
    net_api.remove_router_interface(alice, router["id"], {"subnet_id": t["sub"]["id"]})
    net_api.update_router(alice, router["id"], {"router": {"external_gateway_info": {}}})
    assert dataplane.routers[router["id"]].gateway is None
    net_api.delete_router(alice, router["id"])
    assert router["id"] not in dataplane.routers
    net_api.delete_network(alice, t["net"]["id"])
    assert t["net"]["id"] not in dataplane.networks


def test_resolve_requests(net_api: NetworkAPI, admin: RequestContext, alice: RequestContext,
                          bob: RequestContext) -> None:
    assert net_api.resolve_requests(alice, "none", None) == []
    assert net_api.resolve_requests(alice, "auto", None) == []
    _public(net_api, admin)
    assert net_api.resolve_requests(alice, "auto", None) == []  # external is not usable
    net, sub = _net(net_api, alice)
    assert net_api.resolve_requests(alice, "auto", None) == [Request(network_id=net["id"])]
    _net(net_api, alice, "second", "10.5.0.0/24")
    assert _err(net_api.resolve_requests, alice, "auto", None).status == 409
    err = _err(net_api.resolve_requests, bob, [{"uuid": net["id"]}], None)
    assert (err.status, err.message) == (400, f"Network {net['id']} could not be found.")
    assert _err(net_api.resolve_requests, alice, [{"port": "nope"}], None).message == \
        "Port nope could not be found."
    err = _err(net_api.resolve_requests, alice, [{"uuid": net["id"], "fixed_ip": "10.9.0.5"}],
               None)
    assert err.message == f"Fixed IP 10.9.0.5 is not a valid ip address for network {net['id']}."
    assert _err(net_api.resolve_requests, alice, [{"uuid": net["id"], "fixed_ip": "10.0.0.2"}],
                None).status == 409  # the DHCP port's
    err = _err(net_api.resolve_requests, alice, [{"uuid": net["id"]}], ["nope"])
    assert err.message == "Unable to find security_group with name or id 'nope'"
    # a port of the project, bound, is still in use
    port = net_api.create_port(alice, {"port": {"network_id": net["id"]}})
    reqs = net_api.resolve_requests(alice, [{"port": port["id"]}], None)
    with net_api.db.session() as s:
        assert net_api.allocate_for_instance(alice, s, "inst-2", "host-a", reqs, None,
                                             "vm2") == [port["id"]]
    assert _err(net_api.resolve_requests, alice, [{"port": port["id"]}], None).status == 409
    # a preserved port is unbound, not deleted, with its instance
    net_api.deallocate_for_instance(alice, "inst-2")
    kept = net_api.show_port(make_ctx("p-admin", admin=True), port["id"])
    assert (kept["device_id"], kept["device_owner"], kept["binding:host_id"]) == ("", "", "")
    # the binding is the operator's business: members do not see it
    assert "binding:host_id" not in net_api.show_port(alice, port["id"])
    assert "binding:vnic_type" in net_api.show_port(alice, port["id"])


def test_unavailable_refuses_changes(netdb, netconf, alice: RequestContext) -> None:  # type: ignore[no-untyped-def]
    from strato.policy import Enforcer

    api = NetworkAPI(netdb, Enforcer(), netconf, None, "no namespaces here")
    assert api.list_networks(alice) == []
    err = _err(api.create_network, alice, {"network": {"name": "n"}})
    assert (err.status, err.neutron_type) == (503, "ServiceUnavailable")
    assert "no namespaces here" in err.message
    assert api.create_security_group(alice, {"security_group": {"name": "ok"}})["name"] == "ok"
    assert api.resolve_requests(alice, "auto", None) == []
    err = _err(api.resolve_requests, alice, [{"uuid": "x"}], None)
    assert err.message == "Networking is not available on this host: no namespaces here"


def test_sync_host_reapplies_and_removes_strays(net_api: NetworkAPI, admin: RequestContext,
                                                alice: RequestContext,
                                                dataplane: RecordingDataplane) -> None:
    t = _topology(net_api, admin, alice)
    dataplane.networks.pop(t["net"]["id"])
    from strato.network.dataplane import NetworkPlan, RouterPlan

    dataplane.networks["stray"] = NetworkPlan(id="stray")
    dataplane.routers["stray-r"] = RouterPlan(id="stray-r")
    net_api.sync_host()
    assert set(dataplane.networks) == {t["net"]["id"], t["public"]["id"]}
    assert set(dataplane.routers) == {t["router"]["id"]}


def test_listing_filters_sort_pages() -> None:
    views = [{"id": f"id{i}", "name": n, "admin_state_up": i % 2 == 0, "tags": ["a"] if i
              else []} for i, n in enumerate(["c", "a", "b", "a"])]
    got = listing(views, [("name", "a"), ("name", "b")], "networks", "http://x/n")
    assert [v["id"] for v in got["networks"]] == ["id1", "id2", "id3"]
    got = listing(views, [("admin_state_up", "True")], "networks", "u")
    assert [v["id"] for v in got["networks"]] == ["id0", "id2"]
    got = listing(views, [("sort_key", "name"), ("sort_dir", "desc"), ("sort_key", "id"),
                          ("sort_dir", "asc"), ("fields", "id")], "networks", "u")
    assert got["networks"] == [{"id": "id0"}, {"id": "id2"}, {"id": "id1"}, {"id": "id3"}]
    page = listing(views, [("limit", "2")], "networks", "http://x/n")
    assert [v["id"] for v in page["networks"]] == ["id0", "id1"]
    assert page["networks_links"][0]["rel"] == "next"
    assert "marker=id1" in page["networks_links"][0]["href"]
    page = listing(views, [("limit", "2"), ("marker", "id1")], "networks", "http://x/n")
    assert [v["id"] for v in page["networks"]] == ["id2", "id3"]
    assert [link["rel"] for link in page["networks_links"]] == ["previous"]
    assert [v["id"] for v in listing(views, [("tags", "a")], "n", "u")["n"]] == [
        "id1", "id2", "id3"]
    with pytest.raises(exc.BadRequest):
        listing(views, [("limit", "x")], "n", "u")
    with pytest.raises(exc.BadRequest):
        listing(views, [("sort_key", "nope")], "n", "u")


def test_network_models_registered(netdb) -> None:  # type: ignore[no-untyped-def]
    with netdb.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Network)) == 0
    assert make_ctx("x").project_id == "x"


def test_interface_attach_detach(net_api: NetworkAPI, alice: RequestContext,
                                 dataplane: RecordingDataplane) -> None:
    net, _ = _net(net_api, alice)
    other, _ = _net(net_api, alice, "other", "10.6.0.0/24")
    with net_api.db.session() as s:
        first = net_api.allocate_for_instance(alice, s, "inst-3", "host-a",
                                              [Request(network_id=net["id"])], None, "vm3")
    net_api.plug(first[0])
    second = net_api.create_port_for_instance(alice, "inst-3", "host-a",
                                              Request(network_id=other["id"],
                                                      fixed_ip="10.6.0.50"))
    nics = net_api.instance_nics("inst-3")
    assert [n.port_id for n in nics] == [first[0], second]
    net_api.plug(second)
    assert any(p.ips == ("10.6.0.50",) for p in dataplane.networks[other["id"]].ports)
    assert _err(net_api.detach_port, alice, "inst-3", "nope").status == 404
    net_api.detach_port(alice, "inst-3", second)
    assert not dataplane.networks[other["id"]].ports
    assert [n.port_id for n in net_api.instance_nics("inst-3")] == [first[0]]
    net_api.unplug(first[0])
    assert not dataplane.networks[net["id"]].ports
    assert net_api.show_port(alice, first[0])["status"] == "DOWN"
    net_api.deallocate_for_instance(alice, "inst-3")
    net_api.deallocate_for_instance(alice, "inst-3")  # again: nothing left, no error
    assert net_api.instance_nics("inst-3") == []


def test_instance_ports_over_quota_is_compute_overlimit(net_api: NetworkAPI,
                                                        admin: RequestContext,
                                                        alice: RequestContext) -> None:
    net, _ = _net(net_api, alice)  # the DHCP port is the network owner's: 1 port used
    net_api.update_quota(admin, "p-alice", {"quota": {"port": 2}})
    reqs = [Request(network_id=net["id"]), Request(network_id=net["id"])]
    with pytest.raises(exc.OverLimit) as info, net_api.db.session() as s:
        net_api.allocate_for_instance(alice, s, "inst-q", "host-a", reqs, None, "q")
    assert info.value.message == "Quota exceeded for resources: ['port']."
    assert net_api.instance_nics("inst-q") == []
