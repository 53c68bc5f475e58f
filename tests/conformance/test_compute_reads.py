"""Nova's everyday read APIs against a real server: exact shapes per microversion
(tests/api_schemas/compute_reads.py), real figures, the operator's switches taking
effect, and the real ``openstack`` CLI commands over them.

One guest boots for the whole module (a hand-assembled boot sector that halts): the
member of an anti-affinity group whose second member the scheduler must refuse."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api_schemas import assert_shape
from tests.api_schemas import compute_reads as S
from tests.bootimages import mbr_disk
from tests.support import Server
from tests.tenants import Tenant, make_tenant


class Nova:
    def __init__(self, server: Server, token: str) -> None:
        self.c = server.client(token)

    def __call__(self, method: str, path: str, version: str = "2.1",
                 expect: int | None = 200, **kw: Any) -> httpx.Response:
        r = self.c.request(method, f"/compute/v2.1{path}",
                           headers={"OpenStack-API-Version": f"compute {version}"}, **kw)
        if expect is not None:
            assert r.status_code == expect, f"{method} {path} @{version}: {r.text}"
        return r


def v(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


@pytest.fixture(scope="module")
def admin(server: Server, admin_token: str) -> Nova:
    return Nova(server, admin_token)


@pytest.fixture(scope="module")
def member(server: Server) -> Tenant:
    return make_tenant(server, "reads")


@pytest.fixture(scope="module")
def member_api(server: Server, member: Tenant) -> Nova:
    return Nova(server, member.token())


def compute_service(admin: Nova) -> dict:
    services = admin("GET", "/os-services", "2.53").json()["services"]
    return next(s for s in services if s["binary"] == "nova-compute")


# ------------------------------------------------------------------ availability zones
def test_availability_zones(admin: Nova, member_api: Nova) -> None:
    for api in (admin, member_api):
        body = api("GET", "/os-availability-zone").json()
        assert_shape(body, S.availability_zones(False))
        assert {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None} in \
            body["availabilityZoneInfo"]
    detail = admin("GET", "/os-availability-zone/detail").json()
    assert_shape(detail, S.availability_zones(True))
    zones = {z["zoneName"]: z for z in detail["availabilityZoneInfo"]}
    assert set(zones["internal"]["hosts"]["localhost"]) == {"nova-scheduler",
                                                            "nova-conductor"}
    compute = zones["nova"]["hosts"]["localhost"]["nova-compute"]
    assert compute["available"] is True and compute["active"] is True
    member_api("GET", "/os-availability-zone/detail", expect=403)


# ------------------------------------------------------------------ limits
@pytest.mark.parametrize("version", ["2.1", "2.35", "2.36", "2.39", "2.57", "2.92"])
def test_limits_shape_per_version(member_api: Nova, version: str) -> None:
    body = member_api("GET", "/limits", version).json()
    assert_shape(body, S.limits(v(version)))
    absolute = body["limits"]["absolute"]
    assert absolute["maxTotalInstances"] == 10 and absolute["maxTotalCores"] == 20


def test_limits_of_another_project_for_admin_only(server: Server, admin: Nova,
                                                  member: Tenant, member_api: Nova
                                                  ) -> None:
    server.openstack("quota", "set", "--instances", "7", member.project_id)
    try:
        theirs = admin("GET", f"/limits?tenant_id={member.project_id}").json()
        assert theirs["limits"]["absolute"]["maxTotalInstances"] == 7
        own = admin("GET", "/limits").json()["limits"]["absolute"]
        assert own["maxTotalInstances"] == 10
        admin_project = admin.c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": admin.c.headers["X-Auth-Token"]}).json()["token"][
            "project"]["id"]
        # a member's tenant_id is ignored: their own limits, never another project's
        mine = member_api("GET", f"/limits?tenant_id={admin_project}").json()
        assert mine["limits"]["absolute"]["maxTotalInstances"] == 7
    finally:
        server.openstack("quota", "set", "--instances", "10", member.project_id)


# ------------------------------------------------------------------ services
@pytest.mark.parametrize("version", ["2.1", "2.11", "2.53"])
def test_services_list(admin: Nova, version: str) -> None:
    body = admin("GET", "/os-services", version).json()
    assert_shape(body, S.services(v(version)))
    rows = {s["binary"]: s for s in body["services"]}
    assert set(rows) == {"nova-compute", "nova-scheduler", "nova-conductor"}
    assert rows["nova-compute"]["state"] == "up" and rows["nova-compute"]["zone"] == "nova"
    assert rows["nova-scheduler"]["zone"] == "internal"
    only = admin("GET", "/os-services?binary=nova-compute", version).json()["services"]
    assert [s["binary"] for s in only] == ["nova-compute"]


def test_service_delete_is_not_implemented(admin: Nova) -> None:
    svc = compute_service(admin)
    r = admin("DELETE", f"/os-services/{svc['id']}", "2.53", expect=501)
    assert r.json()["notImplemented"]["code"] == 501
    admin("DELETE", f"/os-services/{uuid.uuid4()}", "2.53", expect=404)
    admin("DELETE", "/os-services/not-a-uuid", "2.53", expect=400)
    admin("DELETE", "/os-services/12345", "2.1", expect=404)


def test_services_need_admin(member_api: Nova) -> None:
    member_api("GET", "/os-services", expect=403)
    member_api("GET", "/os-hypervisors", expect=403)


def test_disabled_compute_service_takes_no_servers(admin: Nova, halting_image: str,
                                                  tiny: str) -> None:
    """2.53: disable with a reason; the zone shows unavailable, the hypervisor
    disabled, and a new server fails with NoValidHost (no guest boots)."""
    svc = compute_service(admin)
    r = admin("PUT", f"/os-services/{svc['id']}", "2.53",
              json={"status": "disabled", "disabled_reason": "maintenance"}).json()
    try:
        assert_shape(r, {"type": "object", "required": ["service"], "properties": {
            "service": S.service((2, 53))}, "additionalProperties": False})
        assert r["service"]["status"] == "disabled"
        assert r["service"]["disabled_reason"] == "maintenance"
        zones = admin("GET", "/os-availability-zone").json()["availabilityZoneInfo"]
        assert {"zoneName": "nova", "zoneState": {"available": False},
                "hosts": None} in zones
        hyp = admin("GET", "/os-hypervisors", "2.53").json()["hypervisors"][0]
        assert hyp["status"] == "disabled"
        created = admin("POST", "/servers", "2.37", expect=202, json={"server": {
            "name": "nowhere", "flavorRef": tiny, "networks": "none",
            "imageRef": halting_image}}).json()["server"]
        try:
            body = admin("GET", f"/servers/{created['id']}").json()["server"]
            assert body["status"] == "ERROR" and "No valid host" in body["fault"]["message"]
        finally:
            admin("DELETE", f"/servers/{created['id']}", expect=204)
        admin("PUT", f"/os-services/{svc['id']}", "2.53", expect=400,
              json={"status": "enabled", "disabled_reason": "x"})
        admin("PUT", f"/os-services/{uuid.uuid4()}", "2.53", expect=404,
              json={"status": "enabled"})
    finally:
        back = admin("PUT", f"/os-services/{svc['id']}", "2.53",
                     json={"status": "enabled"}).json()["service"]
    assert back["status"] == "enabled" and back["disabled_reason"] is None


def test_services_legacy_actions(admin: Nova) -> None:
    ref = {"host": "localhost", "binary": "nova-compute"}
    try:
        body = admin("PUT", "/os-services/disable-log-reason", "2.1",
                     json={**ref, "disabled_reason": "legacy"}).json()
        assert_shape(body, S.LEGACY_DISABLE_REASON)
        body = admin("PUT", "/os-services/enable", "2.1", json=ref).json()
        assert_shape(body, S.LEGACY_ENABLE)
        assert body["service"]["status"] == "enabled"
        body = admin("PUT", "/os-services/force-down", "2.11",
                     json={**ref, "forced_down": True}).json()
        assert_shape(body, S.LEGACY_FORCE_DOWN)
        assert compute_service(admin)["state"] == "down"
        admin("PUT", "/os-services/force-down", "2.1", expect=404,
              json={**ref, "forced_down": True})
        admin("PUT", "/os-services/enable", "2.1", expect=404,
              json={"host": "elsewhere", "binary": "nova-compute"})
    finally:
        admin("PUT", "/os-services/force-down", "2.11", json={**ref, "forced_down": False})
        admin("PUT", "/os-services/enable", "2.1", json=ref)
    assert compute_service(admin)["state"] == "up"


# ------------------------------------------------------------------ hypervisors
@pytest.mark.parametrize("version", ["2.1", "2.28", "2.33", "2.53", "2.88"])
def test_hypervisors_per_version(admin: Nova, version: str) -> None:
    ver = v(version)
    listed = admin("GET", "/os-hypervisors", version).json()
    assert_shape(listed, S.hypervisors(ver, False))
    detail = admin("GET", "/os-hypervisors/detail", version).json()
    assert_shape(detail, S.hypervisors(ver, True))
    hyp = detail["hypervisors"][0]
    assert hyp["hypervisor_hostname"] == "localhost" and hyp["hypervisor_type"] == "QEMU"
    shown = admin("GET", f"/os-hypervisors/{hyp['id']}", version).json()
    assert_shape(shown, {"type": "object", "additionalProperties": False,
                         "required": ["hypervisor"],
                         "properties": {"hypervisor": S.hypervisor(ver, True)}})
    if ver < (2, 88):
        # the host's own figures
        assert hyp["vcpus"] == os.cpu_count()
        with open("/proc/meminfo") as f:
            total = int(f.readline().split()[1]) // 1024
        assert hyp["memory_mb"] == total
        stats = admin("GET", "/os-hypervisors/statistics", version).json()
        assert_shape(stats, S.HYPERVISOR_STATISTICS)
        assert stats["hypervisor_statistics"]["count"] == 1
        assert stats["hypervisor_statistics"]["vcpus"] == hyp["vcpus"]
        up = admin("GET", f"/os-hypervisors/{hyp['id']}/uptime", version).json()
        assert_shape(up, S.hypervisor_uptime(ver))
        assert " up " in up["hypervisor"]["uptime"]
    else:
        assert " up " in shown["hypervisor"]["uptime"]
        admin("GET", "/os-hypervisors/statistics", version, expect=404)
        admin("GET", f"/os-hypervisors/{hyp['id']}/uptime", version, expect=404)


def test_hypervisor_search_and_paging(admin: Nova) -> None:
    found = admin("GET", "/os-hypervisors/local/search", "2.1").json()
    assert [h["hypervisor_hostname"] for h in found["hypervisors"]] == ["localhost"]
    admin("GET", "/os-hypervisors/nomatch/search", "2.1", expect=404)
    admin("GET", "/os-hypervisors/local/search", "2.53", expect=404)
    by_pattern = admin("GET", "/os-hypervisors?hypervisor_hostname_pattern=calh",
                       "2.53").json()
    assert len(by_pattern["hypervisors"]) == 1
    admin("GET", "/os-hypervisors?hypervisor_hostname_pattern=zzz", "2.53", expect=404)
    admin("GET", "/os-hypervisors?bogus=1", "2.53", expect=400)
    admin("GET", "/os-hypervisors/not-a-uuid", "2.53", expect=400)
    admin("GET", f"/os-hypervisors/{uuid.uuid4()}", "2.53", expect=404)
    admin("GET", "/os-hypervisors/99999", "2.1", expect=404)
    page = admin("GET", "/os-hypervisors?limit=1", "2.33").json()
    assert len(page["hypervisors"]) == 1
    marker = page["hypervisors"][0]["id"]
    assert admin("GET", f"/os-hypervisors?marker={marker}", "2.33").json() == \
        {"hypervisors": []}
    admin("GET", "/os-hypervisors?marker=12345", "2.33", expect=400)


# ------------------------------------------------------------------ os-hosts
def test_os_hosts_until_2_42(admin: Nova, member_api: Nova) -> None:
    listed = admin("GET", "/os-hosts").json()
    assert_shape(listed, S.HOSTS)
    assert {"host_name": "localhost", "service": "compute", "zone": "nova"} in \
        listed["hosts"]
    assert admin("GET", "/os-hosts?zone=nova").json()["hosts"] == [
        {"host_name": "localhost", "service": "compute", "zone": "nova"}]
    assert admin("GET", "/os-hosts?zone=xxx").json() == {"hosts": []}
    assert len(admin("GET", "/os-hosts?zone=").json()["hosts"]) == 3
    shown = admin("GET", "/os-hosts/localhost").json()
    assert_shape(shown, S.HOST)
    total = shown["host"][0]["resource"]
    assert total["project"] == "(total)" and total["cpu"] == os.cpu_count()
    admin("GET", "/os-hosts/nohost", expect=404)
    member_api("GET", "/os-hosts", expect=403)
    admin("GET", "/os-hosts", "2.43", expect=404)
    try:
        body = admin("PUT", "/os-hosts/localhost", json={"status": "disable"}).json()
        assert_shape(body, S.HOST_STATUS)
        assert compute_service(admin)["status"] == "disabled"
    finally:
        admin("PUT", "/os-hosts/localhost", json={"status": "enable"})
    assert compute_service(admin)["status"] == "enabled"
    admin("PUT", "/os-hosts/localhost", json={"status": "bogus"}, expect=400)
    admin("PUT", "/os-hosts/localhost", json={}, expect=400)
    admin("PUT", "/os-hosts/nohost", json={"status": "enable"}, expect=404)
    admin("PUT", "/os-hosts/localhost", json={"maintenance_mode": "enable"}, expect=501)
    admin("GET", "/os-hosts/localhost/reboot", expect=501)
    admin("GET", "/os-hosts/nohost/startup", expect=404)
    member_api("GET", "/os-hosts/localhost/shutdown", expect=403)


# ------------------------------------------------------------------ quota classes
@pytest.mark.parametrize("version", ["2.1", "2.50", "2.57"])
def test_quota_class_shapes(admin: Nova, version: str) -> None:
    body = admin("GET", "/os-quota-class-sets/default", version).json()
    assert_shape(body, S.quota_class(v(version)))
    assert body["quota_class_set"]["id"] == "default"


def test_default_quota_class_is_every_projects_default(admin: Nova, member_api: Nova,
                                                       ) -> None:
    try:
        body = admin("PUT", "/os-quota-class-sets/default", "2.57",
                     json={"quota_class_set": {"instances": 13}}).json()
        assert_shape(body, S.quota_class((2, 57), with_id=False))
        assert body["quota_class_set"]["instances"] == 13
        # a project without a limit of its own (the admin's) gets the class's
        absolute = admin("GET", "/limits").json()["limits"]["absolute"]
        assert absolute["maxTotalInstances"] == 13
        admin("PUT", "/os-quota-class-sets/default", "2.57", expect=400,
              json={"quota_class_set": {"injected_files": 3}})
        admin("PUT", "/os-quota-class-sets/default", "2.57", expect=400,
              json={"quota_class_set": {"instances": -2}})
        member_api("GET", "/os-quota-class-sets/default", expect=403)
    finally:
        admin("PUT", "/os-quota-class-sets/default", "2.57",
              json={"quota_class_set": {"instances": 10}})


# ------------------------------------------------------------------ aggregates
def test_aggregates_and_their_zone(admin: Nova, member_api: Nova) -> None:
    name = f"agg-{uuid.uuid4().hex[:6]}"
    created = admin("POST", "/os-aggregates", "2.41",
                    json={"aggregate": {"name": name, "availability_zone": "zone-r"}}
                    ).json()
    assert_shape(created, {"type": "object", "additionalProperties": False,
                           "required": ["aggregate"], "properties": {
                               "aggregate": S.aggregate((2, 41), full=False)}})
    agg = created["aggregate"]["id"]
    try:
        admin("POST", "/os-aggregates", "2.41", expect=409,
              json={"aggregate": {"name": name}})
        one = {"type": "object", "additionalProperties": False, "required": ["aggregate"],
               "properties": {"aggregate": S.aggregate((2, 1))}}
        added = admin("POST", f"/os-aggregates/{agg}/action",
                      json={"add_host": {"host": "localhost"}}).json()
        assert_shape(added, one)
        admin("POST", f"/os-aggregates/{agg}/action", expect=409,
              json={"add_host": {"host": "localhost"}})
        admin("POST", f"/os-aggregates/{agg}/action", expect=404,
              json={"add_host": {"host": "no-such-host"}})
        zones = admin("GET", "/os-availability-zone").json()["availabilityZoneInfo"]
        assert [z["zoneName"] for z in zones] == ["zone-r"]
        assert compute_service(admin)["zone"] == "zone-r"
        meta = admin("POST", f"/os-aggregates/{agg}/action", json={
            "set_metadata": {"metadata": {"ssd": "true", "availability_zone": None}}}
        ).json()["aggregate"]
        assert meta["metadata"] == {"ssd": "true"} and meta["availability_zone"] is None
        updated = admin("PUT", f"/os-aggregates/{agg}", "2.41",
                        json={"aggregate": {"name": name + "-x"}}).json()
        assert_shape(updated, {"type": "object", "additionalProperties": False,
                               "required": ["aggregate"], "properties": {
                                   "aggregate": S.aggregate((2, 41))}})
        assert updated["aggregate"]["updated_at"] is not None
        listed = admin("GET", "/os-aggregates", "2.41").json()
        assert_shape(listed, S.list_of("aggregates", S.aggregate((2, 41))))
        admin("DELETE", f"/os-aggregates/{agg}", expect=400)  # it has a host
        member_api("GET", "/os-aggregates", expect=403)
        admin("GET", "/os-aggregates/99999", expect=404)
        admin("GET", "/os-aggregates/abc", expect=400)
        admin("GET", "/os-aggregates/-1", expect=404)
    finally:
        admin("POST", f"/os-aggregates/{agg}/action", expect=None,
              json={"remove_host": {"host": "localhost"}})
        admin("DELETE", f"/os-aggregates/{agg}")
    zones = admin("GET", "/os-availability-zone").json()["availabilityZoneInfo"]
    assert [z["zoneName"] for z in zones] == ["nova"]


# ------------------------------------------------------------------ server groups
@pytest.mark.parametrize("version", ["2.1", "2.13", "2.15", "2.64"])
def test_server_group_crud_shapes(member_api: Nova, admin: Nova, version: str) -> None:
    ver = v(version)
    ref: dict[str, Any] = {"name": "grp"}
    if ver >= (2, 64):
        ref.update(policy="anti-affinity", rules={"max_server_per_host": 1})
    else:
        ref["policies"] = ["soft-affinity" if ver >= (2, 15) else "affinity"]
    one = {"type": "object", "additionalProperties": False, "required": ["server_group"],
           "properties": {"server_group": S.server_group(ver)}}
    created = member_api("POST", "/os-server-groups", version,
                         json={"server_group": ref}).json()
    assert_shape(created, one)
    gid = created["server_group"]["id"]
    try:
        assert_shape(member_api("GET", f"/os-server-groups/{gid}", version).json(), one)
        listed = member_api("GET", "/os-server-groups", version).json()
        assert_shape(listed, S.list_of("server_groups", S.server_group(ver)))
        assert gid in [g["id"] for g in listed["server_groups"]]
        # another project's group is not there for a member, but is for an admin
        admin("GET", f"/os-server-groups/{gid}", version)
        everyone = admin("GET", "/os-server-groups?all_projects=true", version).json()
        assert gid in [g["id"] for g in everyone["server_groups"]]
        mine = admin("GET", "/os-server-groups", version).json()
        assert gid not in [g["id"] for g in mine["server_groups"]]
    finally:
        member_api("DELETE", f"/os-server-groups/{gid}", version, expect=204)
    member_api("GET", f"/os-server-groups/{gid}", version, expect=404)


@pytest.mark.parametrize(("version", "ref"), [
    ("2.1", {"name": "g", "policies": ["soft-affinity"]}),  # soft-* from 2.15
    ("2.1", {"name": "g", "policies": ["affinity", "anti-affinity"]}),
    ("2.1", {"name": "g", "policy": "affinity"}),
    ("2.64", {"name": "g", "policies": ["affinity"]}),
    ("2.64", {"name": "g", "policy": "affinity", "rules": {"max_server_per_host": 2}}),
    ("2.64", {"name": "g", "policy": "anti-affinity", "rules": {"max_server_per_host": 0}}),
    ("2.64", {"name": "", "policy": "affinity"}),
    ("2.64", {"name": "g", "policy": "spread"}),
])
def test_server_group_bad_requests(member_api: Nova, version: str, ref: dict) -> None:
    member_api("POST", "/os-server-groups", version, json={"server_group": ref},
               expect=400)


def test_server_group_quota(member_api: Nova, member: Tenant, server: Server) -> None:
    server.openstack("quota", "set", "--server-groups", "1", member.project_id,
                     check=False)
    made = []
    try:
        limit = member_api("GET", "/limits").json()["limits"]["absolute"]["maxServerGroups"]
        for _ in range(limit):
            made.append(member_api("POST", "/os-server-groups", "2.64", json={
                "server_group": {"name": "q", "policy": "affinity"}}).json()[
                "server_group"]["id"])
        member_api("POST", "/os-server-groups", "2.64", expect=403,
                   json={"server_group": {"name": "q", "policy": "affinity"}})
        used = member_api("GET", "/limits").json()["limits"]["absolute"]
        assert used["totalServerGroupsUsed"] == limit
    finally:
        for gid in made:
            member_api("DELETE", f"/os-server-groups/{gid}", expect=204)


# ------------------------------------------------------------------ one guest
@pytest.fixture(scope="module")
def halting_image(server: Server, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[str]:
    raw = mbr_disk(Path(tmp_path_factory.mktemp("reads")) / "mbr.raw")
    image = server.openstack_json("image", "create", "--file", str(raw), "--disk-format",
                                  "raw", "--container-format", "bare", "--public",
                                  f"reads-{uuid.uuid4().hex[:6]}")
    yield str(image["id"])  # type: ignore[index]
    server.openstack("image", "delete", str(image["id"]), check=False)  # type: ignore[index]


@pytest.fixture(scope="module")
def tiny(admin: Nova) -> str:
    flavors = admin("GET", "/flavors").json()["flavors"]
    return next(f["id"] for f in flavors if f["name"] == "m1.tiny")


@pytest.fixture(scope="module")
def huge_flavor(admin: Nova) -> Iterator[str]:
    """A flavor no host has room for (a 16 PiB root disk; disk has no quota)."""
    name = f"huge-{uuid.uuid4().hex[:6]}"
    admin("POST", "/flavors", json={"flavor": {"name": name, "ram": 64, "vcpus": 1,
                                               "disk": 1 << 24, "id": name}})
    yield name
    admin("DELETE", f"/flavors/{name}", expect=202)


def wait_status(api: Nova, sid: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = api("GET", f"/servers/{sid}").json()["server"]
        if body["status"] == status and body["OS-EXT-STS:task_state"] is None:
            return body
        time.sleep(0.3)
    raise AssertionError(f"server {sid} not {status}: {body}")


def test_anti_affinity_group_on_one_host(admin: Nova, member_api: Nova, member: Tenant,
                                         halting_image: str, tiny: str) -> None:
    """The first member lands; the second has nowhere to go (one host): ERROR with
    NoValidHost, as Nova's scheduler answers. The running member shows in the
    hypervisor's figures and servers, and in the project's usage."""
    group = member_api("POST", "/os-server-groups", "2.64", json={"server_group": {
        "name": "anti", "policy": "anti-affinity"}}).json()["server_group"]
    hints = {"os:scheduler_hints": {"group": group["id"]}}
    ids: list[str] = []
    try:
        first = member_api("POST", "/servers", "2.37", expect=202, json={
            "server": {"name": "anti-1", "imageRef": halting_image, "flavorRef": tiny,
                       "networks": "none",
                       "accessIPv6": "0000:0000:0000:0000:0000:babe:220.12.22.2"},
            **hints}).json()["server"]
        ids.append(first["id"])
        second = member_api("POST", "/servers", "2.37", expect=202, json={
            "server": {"name": "anti-2", "imageRef": halting_image, "flavorRef": tiny,
                       "networks": "none"}, **hints}).json()["server"]
        ids.append(second["id"])
        body = wait_status(member_api, first["id"], "ACTIVE")
        assert body["accessIPv6"] == "::babe:dc0c:1602"
        refused = wait_status(member_api, second["id"], "ERROR")
        assert "No valid host" in refused["fault"]["message"]
        shown = member_api("GET", f"/os-server-groups/{group['id']}", "2.64").json()
        assert shown["server_group"]["members"] == ids

        hyp = admin("GET", "/os-hypervisors/detail?with_servers=true", "2.53").json()[
            "hypervisors"][0]
        assert_shape(hyp, S.hypervisor((2, 53), True))
        assert first["id"] in [s["uuid"] for s in hyp["servers"]]
        assert hyp["running_vms"] >= 1 and hyp["memory_mb_used"] >= 512
        servers = admin("GET", "/os-hypervisors/local/servers", "2.1").json()
        assert first["id"] in [s["uuid"] for s in servers["hypervisors"][0]["servers"]]

        q = "?detailed=1&start=2000-01-01T00:00:00"
        listed = admin("GET", "/os-simple-tenant-usage" + q).json()
        assert_shape(listed, S.tenant_usage_list(True))
        theirs = next(u for u in listed["tenant_usages"]
                      if u["tenant_id"] == member.project_id)
        assert {s["instance_id"] for s in theirs["server_usages"]} == set(ids)
        own = member_api("GET", f"/os-simple-tenant-usage/{member.project_id}" + q).json()
        assert_shape(own, S.tenant_usage_show())
        assert own["tenant_usage"]["total_hours"] > 0
        member_api("GET", "/os-simple-tenant-usage", expect=403)
        admin("GET", "/os-simple-tenant-usage/" + q, expect=404)
        member_api("GET", "/os-simple-tenant-usage/someone-else", expect=403)
        admin("GET", "/os-simple-tenant-usage?start=2030-01-01T00:00:00"
              "&end=2020-01-01T00:00:00", expect=400)
        used = member_api("GET", "/limits").json()["limits"]["absolute"]
        assert used["totalInstancesUsed"] >= 1 and used["totalServerGroupsUsed"] == 1
    finally:
        for sid in ids:
            member_api("DELETE", f"/servers/{sid}", expect=None)
        for sid in ids:
            deadline = time.monotonic() + 60
            while member_api("GET", f"/servers/{sid}", expect=None).status_code != 404:
                assert time.monotonic() < deadline, f"{sid} not deleted"
                time.sleep(0.3)
        member_api("DELETE", f"/os-server-groups/{group['id']}", expect=204)
    # deleted servers still count for the window they lived in
    listed = admin("GET", "/os-simple-tenant-usage?detailed=1&start=2000-01-01T00:00:00"
                   ).json()
    theirs = next(u for u in listed["tenant_usages"] if u["tenant_id"] == member.project_id)
    assert {s["state"] for s in theirs["server_usages"]} == {"terminated"}


# ------------------------------------------------------------------ access IPs
@pytest.mark.parametrize(("field", "given", "stored"), [
    ("accessIPv6", "0000:0000:0000:0000:0000:babe:220.12.22.2", "::babe:dc0c:1602"),
    ("accessIPv6", "2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("accessIPv4", "192.168.1.7", "192.168.1.7"),
])
def test_access_ips_are_normalized_on_update(admin: Nova, field: str, given: str,
                                             stored: str, halting_image: str,
                                             huge_flavor: str) -> None:
    # a server no host takes (its flavor is larger than the host): no guest boots
    created = admin("POST", "/servers", "2.37", expect=202, json={"server": {
        "name": "ip", "flavorRef": huge_flavor, "networks": "none", field: given,
        "imageRef": halting_image}}).json()["server"]
    sid = created["id"]
    try:
        assert admin("GET", f"/servers/{sid}").json()["server"][field] == stored
        admin("PUT", f"/servers/{sid}", json={"server": {field: ""}})
        admin("PUT", f"/servers/{sid}", json={"server": {field: given}})
        assert admin("GET", f"/servers/{sid}").json()["server"][field] == stored
        admin("PUT", f"/servers/{sid}", expect=400,
              json={"server": {field: "not-an-address"}})
        other = "accessIPv4" if field == "accessIPv6" else "accessIPv6"
        admin("PUT", f"/servers/{sid}", expect=400, json={"server": {other: given}})
    finally:
        admin("DELETE", f"/servers/{sid}", expect=204)


# ------------------------------------------------------------------ the real CLI
def test_openstack_cli_read_commands(server: Server, member: Tenant, admin: Nova) -> None:
    zones = server.openstack_json("availability", "zone", "list", "--compute")
    assert {"Zone Name": "nova", "Zone Status": "available"} in zones
    server.openstack_json("usage", "list")
    services = server.openstack_json("compute", "service", "list")
    assert {s["Binary"] for s in services} == {"nova-compute", "nova-scheduler",
                                               "nova-conductor"}
    hyps = server.openstack_json("hypervisor", "list")
    assert [h["Hypervisor Hostname"] for h in hyps] == ["localhost"]
    shown = server.openstack_json("hypervisor", "show", "localhost")
    assert shown["hypervisor_type"] == "QEMU"
    stats = server.openstack_json("hypervisor", "stats", "show")
    assert stats["count"] == 1
    group = member.openstack_json("server", "group", "create", "--policy",
                                  "anti-affinity", "cli-group")
    assert member.openstack_json("server", "group", "show", "cli-group")["id"] == \
        group["id"]
    assert group["id"] in [g["ID"] for g in member.openstack_json("server", "group",
                                                                  "list")]
    member.openstack("server", "group", "delete", "cli-group")
    name = f"cli-agg-{uuid.uuid4().hex[:6]}"
    server.openstack_json("aggregate", "create", "--zone", "cli-zone", name)
    try:
        server.openstack_json("aggregate", "add", "host", name, "localhost")
        agg = server.openstack_json("aggregate", "show", name)
        assert agg["hosts"] == ["localhost"] and agg["availability_zone"] == "cli-zone"
    finally:
        server.openstack("aggregate", "remove", "host", name, "localhost", check=False)
        server.openstack("aggregate", "delete", name, check=False)
    # this client sets quota classes (``quota show --class`` is gone from it)
    try:
        server.openstack("quota", "set", "--class", "--cores", "21", "default")
        shown = admin("GET", "/os-quota-class-sets/default").json()["quota_class_set"]
        assert shown["cores"] == 21
    finally:
        server.openstack("quota", "set", "--class", "--cores", "20", "default")


def test_openstack_cli_limits_show(member: Tenant) -> None:
    """``limits show --absolute`` asks compute and block storage (Cinder's /limits)."""
    limits = member.openstack_json("limits", "show", "--absolute")
    assert {"Name": "instances", "Value": 10} in limits  # the SDK's names


def test_server_metadata_over_the_limit_is_refused(admin: Nova, tiny: str,
                                                   halting_image: str) -> None:
    limit = admin("GET", "/limits").json()["limits"]["absolute"]["maxServerMeta"]
    meta = {f"k{i}": "v" for i in range(limit + 1)}
    r = admin("POST", "/servers", "2.37", expect=403, json={"server": {
        "name": "meta", "flavorRef": tiny, "networks": "none", "imageRef": halting_image,
        "metadata": meta}})
    assert "metadata items" in r.json()["forbidden"]["message"]


def test_server_zone_must_exist_and_is_the_hosts(admin: Nova, member_api: Nova, tiny: str,
                                                huge_flavor: str, halting_image: str) -> None:
    body = {"name": "az", "flavorRef": huge_flavor, "networks": "none",
            "imageRef": halting_image}
    admin("POST", "/servers", "2.37", expect=400,
          json={"server": {**body, "availability_zone": "no-such-zone"}})
    member_api("POST", "/servers", "2.37", expect=403,
               json={"server": {**body, "availability_zone": "nova:localhost"}})
    name = f"agg-{uuid.uuid4().hex[:6]}"
    agg = admin("POST", "/os-aggregates", json={"aggregate": {
        "name": name, "availability_zone": "zone-s"}}).json()["aggregate"]["id"]
    ids = []
    try:
        admin("POST", f"/os-aggregates/{agg}/action", json={"add_host": {"host": "localhost"}})
        # no room (the flavor is too big): scheduled in the zone, ERROR, no guest
        sid = admin("POST", "/servers", "2.37", expect=202, json={"server": {
            **body, "availability_zone": "zone-s"}}).json()["server"]["id"]
        ids.append(sid)
        shown = admin("GET", f"/servers/{sid}").json()["server"]
        assert shown["OS-EXT-AZ:availability_zone"] == "zone-s"
        admin("POST", "/servers", "2.37", expect=400,
              json={"server": {**body, "availability_zone": "nova"}})
    finally:
        for sid in ids:
            admin("DELETE", f"/servers/{sid}", expect=204)
        admin("POST", f"/os-aggregates/{agg}/action", expect=None,
              json={"remove_host": {"host": "localhost"}})
        admin("DELETE", f"/os-aggregates/{agg}")
