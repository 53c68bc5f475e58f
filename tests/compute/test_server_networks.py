"""The Nova side of networking over HTTP, in process, against a network service test
double (``FakeNetwork``: tests only; after the merge these also run against the real
``strato.network.api.NetworkAPI``).

What is proven: ``networks``' microversion rules and Nova's 400 messages, the network
service's errors in compute's fault format before any record exists, ports allocated
in the transaction that records the server (a failed create leaves none), addresses
and security groups of the views (show, detail, ``ips``), the security group actions,
``os-interface``, and the delete job handing the ports back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import event, select
from starlette.testclient import TestClient

from strato.compute.models import ComputeNode, Instance, InstanceAction
from strato.context import RequestContext
from strato.exceptions import BadRequest, NotFound, OverLimit
from strato.jobs.models import Job
from strato.network.instance import Nic, Request
from tests.support import Server, free_port, strato

NET_A, NET_B = str(uuid.uuid4()), str(uuid.uuid4())
NAMES = {NET_A: "private-a", NET_B: "private-b"}
GROUPS = ("default", "web")


@dataclass
class FakePort:
    port_id: str
    network_id: str
    mac: str
    ip: str
    instance_id: str = ""
    groups: list[str] = field(default_factory=list)
    created: bool = True  # made for the instance (deleted with it)


class FakeNetwork:
    """The NetworkAPI methods compute calls, with the real one's messages; ports become
    visible only when the caller's transaction commits (as rows would)."""

    enabled = True
    disabled_reason = ""

    def __init__(self) -> None:
        self.ports: dict[str, FakePort] = {}
        self.port_quota: int | None = None
        self.calls: list[tuple[str, Any]] = []
        self._ip = 10

    def _new(self, network_id: str, fixed_ip: str | None) -> FakePort:
        self._ip += 1
        pid = str(uuid.uuid4())
        return FakePort(pid, network_id, f"fa:16:3e:00:01:{self._ip:02x}",
                        fixed_ip or f"10.0.0.{self._ip}")

    def resolve_requests(self, ctx: RequestContext, networks: Any,
                         security_groups: list[str] | None) -> list[Request]:
        self.calls.append(("resolve", networks))
        for g in security_groups or []:
            if g not in GROUPS:
                raise BadRequest(f"Unable to find security_group with name or id '{g}'")
        if networks == "none":
            return []
        if networks == "auto":
            return [Request(NET_A)]
        out = []
        for e in networks:
            if "port" in e:
                if e["port"] not in self.ports:
                    raise BadRequest(f"Port {e['port']} could not be found.")
                out.append(Request(port_id=e["port"], tag=e.get("tag")))
            else:
                if e["uuid"] not in NAMES:
                    raise BadRequest(f"Network {e['uuid']} could not be found.")
                out.append(Request(e["uuid"], fixed_ip=e.get("fixed_ip"), tag=e.get("tag")))
        return out

    def allocate_for_instance(self, ctx: RequestContext, session: Any, instance_id: str,
                              host: str, requests: list[Request],
                              security_groups: list[str] | None,
                              hostname: str) -> list[str]:
        pending: list[FakePort] = []
        for r in requests:
            if self.port_quota is not None and len(self.ports) + len(pending) >= \
                    self.port_quota:
                raise OverLimit("Quota exceeded for resources: ['port'].")
            if r.port_id:
                p = self.ports[r.port_id]
                p = FakePort(p.port_id, p.network_id, p.mac, p.ip, created=False)
            else:
                p = self._new(r.network_id or "", r.fixed_ip)
            p.instance_id, p.groups = instance_id, list(security_groups or ["default"])
            pending.append(p)

        def committed(_session: Any) -> None:
            self.ports.update({p.port_id: p for p in pending})

        event.listen(session, "after_commit", committed, once=True)
        return [p.port_id for p in pending]

    def _of(self, instance_id: str) -> list[FakePort]:
        return [p for p in self.ports.values() if p.instance_id == instance_id]

    def instance_nics(self, instance_id: str) -> list[Nic]:
        return [Nic(p.port_id, p.network_id, p.mac, "tap" + p.port_id[:11])
                for p in self._of(instance_id)]

    def addresses(self, instance_ids: list[str]) -> dict[str, dict[str, list[dict]]]:
        out: dict[str, dict[str, list[dict]]] = {}
        for i in instance_ids:
            for p in self._of(i):
                out.setdefault(i, {}).setdefault(NAMES[p.network_id], []).append({
                    "version": 4, "addr": p.ip, "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": p.mac})
        return out

    def instance_security_groups(self, instance_ids: list[str]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for i in instance_ids:
            names = dict.fromkeys(g for p in self._of(i) for g in p.groups)
            if names:
                out[i] = [{"name": n} for n in names]
        return out

    def add_security_group(self, ctx: RequestContext, instance_id: str, name: str) -> None:
        if name not in GROUPS:
            raise NotFound(f"Security group {name} not found.")
        for p in self._of(instance_id):
            if name not in p.groups:
                p.groups.append(name)

    def remove_security_group(self, ctx: RequestContext, instance_id: str,
                              name: str) -> None:
        for p in self._of(instance_id):
            if name in p.groups:
                p.groups.remove(name)

    def network_data(self, instance_id: str) -> dict:
        links, nets = [], []
        for i, p in enumerate(self._of(instance_id)):
            tap = "tap" + p.port_id[:11]
            links.append({"id": tap, "vif_id": p.port_id, "type": "ovs", "mtu": 1500,
                          "ethernet_mac_address": p.mac})
            nets.append({"id": f"network{i}", "type": "ipv4_dhcp", "link": tap,
                         "network_id": p.network_id, "ip_address": p.ip,
                         "subnet_id": "sub-" + p.network_id[:8]})
        return {"links": links, "networks": nets, "services": []}

    def create_port_for_instance(self, ctx: RequestContext, instance_id: str, host: str,
                                 request: Request) -> str:
        self.calls.append(("create_port", request))
        p = self._new(request.network_id or "", request.fixed_ip)
        p.instance_id, p.groups = instance_id, ["default"]
        self.ports[p.port_id] = p
        return p.port_id

    def detach_port(self, ctx: RequestContext, instance_id: str, port_id: str) -> None:
        self.calls.append(("detach_port", port_id))
        self.ports.pop(port_id, None)

    def deallocate_for_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self.calls.append(("deallocate", instance_id))
        for p in self._of(instance_id):
            if p.created:
                del self.ports[p.port_id]
            else:
                p.instance_id = ""

    def plug(self, port_id: str) -> Nic:
        p = self.ports[port_id]
        return Nic(p.port_id, p.network_id, p.mac, "tap" + p.port_id[:11])

    def metadata_networks(self) -> list[str]:
        return []


@dataclass
class Cloud:
    client: TestClient
    services: Any
    net: FakeNetwork
    image: str
    headers: dict[str, str]

    def req(self, method: str, path: str, version: str = "2.79", **kw: Any) -> Any:
        headers = {**self.headers, "OpenStack-API-Version": f"compute {version}"}
        return self.client.request(method, f"/compute/v2.1{path}", headers=headers, **kw)

    def create(self, version: str = "2.79", **server: Any) -> Any:
        body = {"name": f"n-{uuid.uuid4().hex[:6]}", "flavorRef": "1",
                "imageRef": self.image, **server}
        return self.req("POST", "/servers", version, json={"server": body})

    def count(self) -> int:
        with self.services.db.session(readonly=True) as s:
            return len(list(s.scalars(select(Instance.id))))


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    from strato.api.app import build_app
    from strato.config import load
    from strato.service import Services

    root = tmp_path_factory.mktemp("nets")
    # the double stands in for the network service: no data plane of its own
    srv = Server(root, free_port(), extra_conf={"network": {"dataplane": "usermode"}})
    srv.setup()
    strato("guest", "--config", str(srv.conf))
    conf = load(srv.conf)
    services = Services.build(conf)
    net = FakeNetwork()
    services.compute.network = net
    services.network = net  # type: ignore[attr-defined]
    with services.db.session() as s:  # a host to schedule to (no agent runs here)
        s.merge(ComputeNode(host=conf.DEFAULT.host, memory_mb=1 << 20, vcpus=256,
                            local_gb=1 << 12))
    client = TestClient(build_app(services))
    r = client.post("/identity/v3/auth/tokens", json={"auth": {"identity": {
        "methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": srv.password}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
    assert r.status_code == 201, r.text
    headers = {"X-Auth-Token": r.headers["X-Subject-Token"]}
    images = client.get("/image/v2/images?name=strato-guest", headers=headers).json()
    try:
        yield Cloud(client, services, net, images["images"][0]["id"], headers)
    finally:
        client.close()
        services.close()


def _activate(cloud: Cloud, sid: str) -> None:
    """What the build job would do (no agent runs in this test)."""
    with cloud.services.db.session() as s:
        row = s.get(Instance, sid)
        row.vm_state, row.task_state = "active", None


def test_networks_follow_the_microversions(cloud: Cloud) -> None:
    r = cloud.create("2.37")
    assert r.status_code == 400 and "networks" in r.json()["badRequest"]["message"]
    r = cloud.create("2.36", networks="none")
    assert r.status_code == 400 and "'none' is not of type 'array'" in r.text
    r = cloud.create("2.37", networks=[{"uuid": NET_A, "tag": "t"}])
    assert r.status_code == 400 and "'tag' was unexpected" in r.text
    r = cloud.create("2.31", networks=[{"uuid": NET_A, "tag": "t"}])
    assert r.status_code == 400 and "'tag' was unexpected" in r.text
    for version in ("2.32", "2.42"):
        assert cloud.create(version, networks=[{"uuid": NET_A, "tag": "t"}]).status_code \
            == 202
    r = cloud.create(networks=[{"uuid": "not-a-uuid"}])
    assert r.json()["badRequest"]["message"] == \
        "Bad networks format: network uuid is not in proper format (not-a-uuid)"
    r = cloud.create(networks=[{"fixed_ip": "10.0.0.5"}])
    assert r.status_code == 400 and "missing uuid" in r.text
    r = cloud.create(networks=[{"uuid": NET_A, "fixed_ip": "10.0.0.300"}])
    assert r.status_code == 400 and "fixed_ip" in r.text
    # before 2.37 an absent ``networks`` is "auto": the project's one network
    before = len(cloud.net.ports)
    r = cloud.create("2.36")
    assert r.status_code == 202, r.text
    assert len(cloud.net.ports) == before + 1
    assert cloud.net.calls[-1] == ("resolve", "auto")


def test_network_service_errors_surface_before_any_record(cloud: Cloud) -> None:
    before, ports = cloud.count(), len(cloud.net.ports)
    missing = str(uuid.uuid4())
    r = cloud.create(networks=[{"uuid": missing}])
    assert r.status_code == 400
    assert r.json() == {"badRequest": {"code": 400,
                                       "message": f"Network {missing} could not be found."}}
    r = cloud.create(networks=[{"port": missing}])
    assert r.json()["badRequest"]["message"] == f"Port {missing} could not be found."
    r = cloud.create(networks="auto", security_groups=[{"name": "nope"}])
    assert r.json()["badRequest"]["message"] == \
        "Unable to find security_group with name or id 'nope'"
    assert cloud.count() == before and len(cloud.net.ports) == ports


def test_ports_are_allocated_in_the_create_transaction(cloud: Cloud) -> None:
    before, ports = cloud.count(), len(cloud.net.ports)
    cloud.net.port_quota = len(cloud.net.ports) + 1  # the second port is over quota
    try:
        r = cloud.create(networks=[{"uuid": NET_A}, {"uuid": NET_B}])
    finally:
        cloud.net.port_quota = None
    assert r.status_code == 413 and "port" in r.text
    # nothing committed: no server, no build job, no port (not even the first)
    assert cloud.count() == before and len(cloud.net.ports) == ports
    r = cloud.create(networks=[{"uuid": NET_A}, {"uuid": NET_B, "fixed_ip": "10.0.0.99"}],
                     security_groups=[{"name": "web"}])
    assert r.status_code == 202, r.text
    body = r.json()["server"]
    assert body["security_groups"] == [{"name": "web"}]
    sid = body["id"]
    mine = cloud.net._of(sid)
    assert [p.network_id for p in mine] == [NET_A, NET_B]
    assert mine[1].ip == "10.0.0.99" and mine[0].groups == ["web"]
    with cloud.services.db.session(readonly=True) as s:
        inst = s.get(Instance, sid)
        assert inst.mac == "" and inst.network == "ports"  # no user-mode NIC
        jobs = list(s.scalars(select(Job).where(Job.name == "compute.build")))
        assert any(j.payload["instance_id"] == sid for j in jobs)


def test_addresses_and_security_groups_in_the_views(cloud: Cloud) -> None:
    sid = cloud.create(networks=[{"uuid": NET_A}, {"uuid": NET_B}]).json()["server"]["id"]
    a, b = cloud.net._of(sid)
    show = cloud.req("GET", f"/servers/{sid}").json()["server"]
    assert show["addresses"] == {
        "private-a": [{"version": 4, "addr": a.ip, "OS-EXT-IPS:type": "fixed",
                       "OS-EXT-IPS-MAC:mac_addr": a.mac}],
        "private-b": [{"version": 4, "addr": b.ip, "OS-EXT-IPS:type": "fixed",
                       "OS-EXT-IPS-MAC:mac_addr": b.mac}]}
    assert show["security_groups"] == [{"name": "default"}]
    detail = cloud.req("GET", "/servers/detail").json()["servers"]
    assert next(s for s in detail if s["id"] == sid)["addresses"] == show["addresses"]
    # the memo of rendered servers notices a change the server row does not show
    cloud.net.add_security_group(RequestContext(), sid, "web")
    detail = cloud.req("GET", "/servers/detail").json()["servers"]
    assert next(s for s in detail if s["id"] == sid)["security_groups"] == [
        {"name": "default"}, {"name": "web"}]
    ips = cloud.req("GET", f"/servers/{sid}/ips").json()
    assert ips == {"addresses": {"private-a": [{"version": 4, "addr": a.ip}],
                                 "private-b": [{"version": 4, "addr": b.ip}]}}
    assert cloud.req("GET", f"/servers/{sid}/ips/private-b").json() == {
        "private-b": [{"version": 4, "addr": b.ip}]}
    r = cloud.req("GET", f"/servers/{sid}/ips/nowhere")
    assert r.status_code == 404 and "itemNotFound" in r.json()
    # "none": no NIC at all (Nova gives none), so no address
    uid = cloud.create(networks="none").json()["server"]["id"]
    _activate(cloud, uid)
    view = cloud.req("GET", f"/servers/{uid}").json()["server"]
    assert view["addresses"] == {}


def test_security_group_actions(cloud: Cloud) -> None:
    sid = cloud.create(networks="auto").json()["server"]["id"]
    r = cloud.req("POST", f"/servers/{sid}/action", json={"addSecurityGroup": {"name": "web"}})
    assert r.status_code == 202, r.text
    groups = cloud.req("GET", f"/servers/{sid}/os-security-groups").json()
    assert [g["name"] for g in groups["security_groups"]] == ["default", "web"]
    assert set(groups["security_groups"][0]) == {"id", "name", "description", "tenant_id",
                                                 "rules"}
    r = cloud.req("POST", f"/servers/{sid}/action", json={"addSecurityGroup": {"name": "x"}})
    assert r.status_code == 404 and r.json()["itemNotFound"]["message"] == \
        "Security group x not found."
    r = cloud.req("POST", f"/servers/{sid}/action",
                  json={"removeSecurityGroup": {"name": "default"}})
    assert r.status_code == 202
    assert cloud.req("GET", f"/servers/{sid}").json()["server"]["security_groups"] == [
        {"name": "web"}]
    r = cloud.req("POST", f"/servers/{sid}/action", json={"addSecurityGroup": {}})
    assert r.status_code == 400


def test_os_interface(cloud: Cloud) -> None:
    sid = cloud.create(networks=[{"uuid": NET_A}]).json()["server"]["id"]
    (a,) = cloud.net._of(sid)
    r = cloud.req("GET", f"/servers/{sid}/os-interface", "2.70")
    assert r.json() == {"interfaceAttachments": [{
        "port_state": "DOWN", "fixed_ips": [{"subnet_id": "sub-" + NET_A[:8],
                                             "ip_address": a.ip}],
        "port_id": a.port_id, "net_id": NET_A, "mac_addr": a.mac, "tag": None}]}
    assert "tag" not in cloud.req("GET", f"/servers/{sid}/os-interface/{a.port_id}",
                                  "2.69").json()["interfaceAttachment"]
    r = cloud.req("POST", f"/servers/{sid}/os-interface",
                  json={"interfaceAttachment": {"net_id": NET_B}})
    assert r.status_code == 409  # still building
    _activate(cloud, sid)
    r = cloud.req("POST", f"/servers/{sid}/os-interface", json={"interfaceAttachment": {
        "net_id": NET_B, "port_id": a.port_id}})
    assert r.status_code == 400 and "both" in r.text
    r = cloud.req("POST", f"/servers/{sid}/os-interface", "2.48", json={
        "interfaceAttachment": {"net_id": NET_B, "tag": "x"}})
    assert r.status_code == 400
    r = cloud.req("POST", f"/servers/{sid}/os-interface", "2.70", json={
        "interfaceAttachment": {"net_id": NET_B, "fixed_ips": [{"ip_address": "10.0.0.77"}],
                                "tag": "eth1"}})
    assert r.status_code == 200, r.text
    att = r.json()["interfaceAttachment"]
    assert att["net_id"] == NET_B and att["tag"] == "eth1"
    assert att["fixed_ips"][0]["ip_address"] == "10.0.0.77"
    new = att["port_id"]
    with cloud.services.db.session(readonly=True) as s:
        jobs = [j.payload for j in s.scalars(select(Job).where(
            Job.name == "compute.attach_interface"))]
        actions = [a.action for a in s.scalars(select(InstanceAction).where(
            InstanceAction.instance_uuid == sid))]
    assert {"instance_id": sid, "port_id": new}.items() <= jobs[-1].items()
    assert "attach_interface" in actions
    r = cloud.req("DELETE", f"/servers/{sid}/os-interface/{uuid.uuid4()}")
    assert r.status_code == 404
    r = cloud.req("DELETE", f"/servers/{sid}/os-interface/{new}")
    assert r.status_code == 202
    with cloud.services.db.session(readonly=True) as s:
        assert any(j.payload["port_id"] == new for j in s.scalars(select(Job).where(
            Job.name == "compute.detach_interface")))


def test_delete_job_hands_the_ports_back(cloud: Cloud) -> None:
    from strato.compute import manager
    from strato.jobs.worker import JobContext

    given = cloud.net._new(NET_B, None)  # a port the user made: unbound, not deleted
    cloud.net.ports[given.port_id] = given
    sid = cloud.create(networks=[{"uuid": NET_A}, {"port": given.port_id}]).json()[
        "server"]["id"]
    assert len(cloud.net._of(sid)) == 2
    assert cloud.req("DELETE", f"/servers/{sid}").status_code == 204
    with cloud.services.db.session(readonly=True) as s:
        job = next(j for j in s.scalars(select(Job).where(Job.name == "compute.delete"))
                   if j.payload["instance_id"] == sid)
        payload = dict(job.payload)
    ctx = JobContext(job.id, "compute.delete", "host:x", payload, 1, {}, cloud.services,
                     None)  # type: ignore[arg-type]
    assert manager.delete(ctx) == {"deleted": sid}
    assert cloud.net._of(sid) == []
    assert given.port_id in cloud.net.ports and cloud.net.ports[given.port_id].instance_id \
        == ""
    assert ("deallocate", sid) in cloud.net.calls
