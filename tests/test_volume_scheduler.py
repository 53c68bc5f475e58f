"""The volume scheduler: filters and weighers alone, then two backends in a real server."""

from __future__ import annotations

import time

import pytest

from strato.volume.scheduler import Backend, BackendState, NoValidBackend, Request, choose
from tests.support import Server, free_port
from tests.test_volume import Cinder

MULT = {"capacity_weight_multiplier": 1.0, "allocated_capacity_weight_multiplier": -1.0}
FILTERS = ["AvailabilityZoneFilter", "CapacityFilter", "CapabilitiesFilter"]


def _state(name: str, capacity: float, allocated: float, zone: str = "nova") -> BackendState:
    return BackendState(Backend(name, name, capacity, zone, {"volume_backend_name": name,
                                                             "thin_provisioning_support": True}),
                        allocated, 0, max_over_subscription_ratio=1.0)


def test_filters_and_weighers() -> None:
    states = [_state("a", 100, 90), _state("b", 100, 10), _state("c", 500, 0, zone="z2")]
    req = Request(5, "nova", {})
    assert choose(states, req, FILTERS, ["CapacityWeigher"], MULT).name == "b"
    # Stacking: a negative capacity multiplier fills the fullest backend first.
    assert choose(states, req, FILTERS, ["CapacityWeigher"],
                  {**MULT, "capacity_weight_multiplier": -1.0}).name == "a"
    assert choose(states, Request(5, "z2", {}), FILTERS, ["CapacityWeigher"], MULT).name == "c"
    assert choose(states, Request(50, "nova", {}), FILTERS, ["CapacityWeigher"],
                  MULT).name == "b"  # a has only 10 free
    assert choose(states, Request(5, None, {"volume_backend_name": "a"}), FILTERS,
                  ["CapacityWeigher"], MULT).name == "a"
    assert choose(states, Request(5, None, {"capabilities:thin_provisioning_support":
                                            "<is> True"}), FILTERS, [], MULT).name == "a"
    with pytest.raises(NoValidBackend, match="No valid backend"):
        choose(states, Request(5, None, {"volume_backend_name": "x"}), FILTERS, [], MULT)
    with pytest.raises(NoValidBackend):
        choose(states, Request(600, None, {}), FILTERS, [], MULT)
    # Thin provisioning: 20x the capacity may be promised.
    thin = BackendState(states[0].backend, 90, 0, max_over_subscription_ratio=20.0)
    assert thin.free_gb == 100 * 20 - 90
    assert choose([thin], Request(1000, None, {}), FILTERS, [], MULT).name == "a"
    # The allocated-capacity weigher alone spreads: the least allocated wins.
    assert choose(states[:2], req, FILTERS, ["AllocatedCapacityWeigher"], MULT).name == "b"


@pytest.fixture(scope="module")
def two_backends(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = Server(tmp_path_factory.mktemp("backends"), free_port(), extra_conf={
        "volume": {"enabled_backends": "fast:volumes-fast:20,slow:volumes:1000"}})
    srv.setup()
    srv.start()
    yield srv
    srv.stop()


def test_types_route_volumes_to_backends(two_backends: Server) -> None:
    srv = two_backends
    srv.openstack("volume", "type", "create", "--property", "volume_backend_name=fast", "fast")
    srv.openstack("volume", "type", "set", "--property",
                  "capabilities:thin_provisioning_support=<is> True", "fast")
    shown = srv.openstack_json("volume", "type", "show", "fast")
    assert shown["properties"] == {"volume_backend_name": "fast",
                                   "capabilities:thin_provisioning_support": "<is> True"}
    srv.openstack("volume", "create", "--type", "fast", "--size", "1", "onfast")
    srv.openstack("volume", "create", "--size", "1", "ondefault")
    token = srv.token()
    with srv.client(token) as c:
        project = c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]
    cinder = Cinder(srv, token, project)
    vols = {v["name"]: v for v in cinder.c.get(f"{cinder.base}/volumes/detail").json()[
        "volumes"]}
    fast = cinder.wait(vols["onfast"]["id"], "available")
    default = cinder.wait(vols["ondefault"]["id"], "available")
    assert fast["os-vol-host-attr:host"].endswith("@fast#volumes-fast")
    assert default["os-vol-host-attr:host"].endswith("@slow#volumes")  # more free space
    from strato.storage import open_engine

    blocks = open_engine("local", root=srv.state / "blocks", repair=False,
                         pools=("images", "vms", "volumes", "volumes-fast"))
    assert f"volume-{fast['id']}" in blocks.list("volumes-fast")
    assert f"volume-{default['id']}" in blocks.list("volumes")
    # Too big for the fast backend even thin (20 GiB x 20): error, with the reason; as
    # in Cinder the errored volume counts against the quota until it is deleted.
    big = cinder.create(wait="error", size=500, volume_type="fast")
    # Cinder's view has no reason field: the user message says why.
    r = cinder.c.get(f"{cinder.base}/messages", params={"resource_uuid": big["id"]},
                     headers={"OpenStack-API-Version": "volume 3.3"})
    assert "Could not find any available weighted backend" in \
        r.json()["messages"][0]["user_message"]
    usage = cinder.c.get(f"{cinder.base}/os-quota-sets/{project}",
                         params={"usage": "true"}).json()["quota_set"]
    assert usage["gigabytes_fast"]["in_use"] == 501
    assert usage["gigabytes_fast"]["reserved"] == 0
    # A snapshot's clone stays on its source's backend.
    snap = cinder.snapshot(fast["id"])
    clone = cinder.create(snapshot_id=snap["id"])
    assert clone["os-vol-host-attr:host"].endswith("@fast#volumes-fast")
    for vid in (clone["id"], big["id"]):
        cinder.delete(vid)
    cinder.delete_snapshot(snap["id"])
    for vid in (fast["id"], default["id"]):
        cinder.delete(vid)
    deadline = time.monotonic() + 10
    while blocks.list("volumes-fast") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert blocks.list("volumes-fast") == []
    in_use = srv.openstack("volume", "type", "delete", "fast", check=False)
    assert in_use.returncode == 0
