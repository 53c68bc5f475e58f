"""The scheduler's filters, weighers and claims against real rows (SQLite and
PostgreSQL): compute nodes, service records, aggregates, server groups, servers and
unfinished migrations, as the API and the agents write them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from strato import config
from strato.compute.migration_models import Migration
from strato.compute.models import ComputeNode, Instance
from strato.compute.reads_models import (
    Aggregate,
    ServerGroup,
    ServerGroupMember,
    ServiceRecord,
)
from strato.compute.scheduler import (
    NO_HOST,
    NoValidHost,
    RequestSpec,
    Want,
    host_states,
    select_destination,
    select_hosts,
    spec_for_instance,
)
from strato.compute.scheduler_filters import match
from strato.db import Database
from strato.db.base import utcnow

TINY = {"id": "1", "memory_mb": 512, "vcpus": 1, "root_gb": 1, "ephemeral_gb": 0,
        "swap": 0, "extra_specs": {}}
BIG = {"id": "big", "memory_mb": 4096, "vcpus": 2, "root_gb": 10, "ephemeral_gb": 0,
       "swap": 0, "extra_specs": {}}


@pytest.fixture
def conf() -> Any:
    # no reserved RAM: each host below has exactly 8 GiB to give
    return config.load(None, [("compute", "reserved_host_memory_mb", "0"),
                              ("compute", "cpu_allocation_ratio", "1.0")])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sched_db(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One database per engine for the module: every test rolls its rows back."""
    from strato.db import migrate
    from tests.conftest import pg_database

    with contextlib.ExitStack() as stack:
        url = (f"sqlite:///{tmp_path_factory.mktemp('sched')}/strato.db"
               if request.param == "sqlite" else stack.enter_context(pg_database()))
        migrate.upgrade(url)
        database = Database(url)
        yield database
        database.dispose()


@pytest.fixture
def session(sched_db: Database) -> Iterator[Session]:
    with sched_db.session() as s:
        for h in ("h1", "h2", "h3"):
            s.add(ComputeNode(host=h, memory_mb=8192, vcpus=4, local_gb=100,
                              updated_at=utcnow()))
        s.flush()
        yield s
        s.rollback()


def server(s: Session, host: str | None, flavor: dict = TINY, **kw: Any) -> str:
    iid = str(uuid.uuid4())
    s.add(Instance(id=iid, name=iid[:8], project_id="p", host=host, image_ref="img",
                   flavor_id=str(flavor["id"]), flavor=dict(flavor),
                   vm_state=kw.pop("vm_state", "active"), **kw))
    s.flush()
    return iid


def spec(flavor: dict = TINY, **kw: Any) -> RequestSpec:
    return RequestSpec(want=Want(flavor["memory_mb"], flavor["vcpus"], flavor["root_gb"]),
                       extra_specs=flavor.get("extra_specs") or {}, **kw)


def free(s: Session, conf: Any, **kw: Any) -> dict[str, float]:
    return {h.host: h.free_ram_mb for h in host_states(s, conf, **kw)}


def group(s: Session, policy: str, *members: str, **rules: Any) -> str:
    g = ServerGroup(name="g", project_id="p", user_id="u", policy=policy, rules=rules,
                    created_at=utcnow())
    s.add(g)
    s.flush()
    for m in members:
        s.add(ServerGroupMember(group_id=g.id, instance_uuid=m))
    s.flush()
    return str(g.id)


def test_spread_by_free_ram_and_resource_filters(session: Session, conf: Any) -> None:
    s = session
    server(s, "h1", BIG)
    server(s, "h2")
    assert free(s, conf) == {"h1": 4096, "h2": 7680, "h3": 8192}
    assert select_hosts(s, conf, spec()) == ["h3", "h2", "h1"]
    # a flavor bigger than any host's free RAM: Nova's message, the RamFilter named
    huge = dict(BIG, memory_mb=8193)
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(huge))
    assert str(err.value) == NO_HOST and err.value.filter == "RamFilter"
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(dict(TINY, vcpus=5)))
    assert err.value.filter == "CoreFilter"
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(dict(TINY, root_gb=101)))
    assert err.value.filter == "DiskFilter"
    # an ERROR server holds nothing; a deleted one neither
    server(s, "h3", BIG, vm_state="error")
    server(s, "h3", BIG, deleted=True)
    assert free(s, conf)["h3"] == 8192


def test_allocation_ratios_and_aggregate_override(session: Session, conf: Any) -> None:
    s = session
    conf.compute.ram_allocation_ratio = 1.5
    assert free(s, conf)["h1"] == 8192 * 1.5
    s.add(Aggregate(name="dense", hosts=["h2"], created_at=utcnow(),
                    metadata_={"ram_allocation_ratio": "0.5", "cpu_allocation_ratio": "2"}))
    s.flush()
    states = {h.host: h for h in host_states(s, conf)}
    assert states["h2"].free_ram_mb == 4096 and states["h2"].free_vcpus == 8
    assert states["h1"].free_vcpus == 4
    # the host's own reserved RAM, as its agent reported it, beats this process's
    node = s.get(ComputeNode, "h3")
    assert node is not None
    node.facts = {"reserved_host_memory_mb": 1024}
    s.flush()
    assert free(s, conf)["h3"] == 8192 * 1.5 - 1024


def test_compute_filter_disabled_forced_down_and_stale(session: Session, conf: Any) -> None:
    s = session
    s.add(ServiceRecord(host="h1", binary="nova-compute", disabled=True,
                        disabled_reason="maintenance"))
    s.add(ServiceRecord(host="h2", binary="nova-compute", forced_down=True))
    s.flush()
    assert select_hosts(s, conf, spec()) == ["h3"]
    # h3's heartbeat is older than service_down_time: down, no host left
    node = s.get(ComputeNode, "h3")
    assert node is not None
    node.updated_at = utcnow() - timedelta(seconds=conf.DEFAULT.service_down_time + 1)
    s.flush()
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec())
    assert err.value.filter == "ComputeFilter"


def test_zone_and_aggregate_extra_specs(session: Session, conf: Any) -> None:
    s = session
    s.add(Aggregate(name="fast", hosts=["h1", "h2"], created_at=utcnow(),
                    metadata_={"availability_zone": "az1", "ssd": "true", "gen": "3"}))
    s.add(Aggregate(name="gpu", hosts=["h2"], created_at=utcnow(), metadata_={"gpu": "a"}))
    s.flush()
    assert select_hosts(s, conf, spec(zone="az1")) == ["h1", "h2"]
    assert select_hosts(s, conf, spec(zone="nova")) == ["h3"]
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(zone="nowhere"))
    assert err.value.filter == "AvailabilityZoneFilter"
    scoped = dict(TINY, extra_specs={"aggregate_instance_extra_specs:ssd": "true"})
    assert select_hosts(s, conf, spec(scoped)) == ["h1", "h2"]
    both = dict(TINY, extra_specs={"aggregate_instance_extra_specs:ssd": "true",
                                   "gpu": "<or> a <or> b",
                                   "hw:cpu_policy": "shared"})  # other scopes ignored
    assert select_hosts(s, conf, spec(both)) == ["h2"]
    newer = dict(TINY, extra_specs={"aggregate_instance_extra_specs:gen": ">= 4"})
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(newer))
    assert err.value.filter == "AggregateInstanceExtraSpecsFilter"


def test_extra_spec_operators() -> None:
    assert match("true", "True") and match("abc", "abc") and not match("abc", "abd")
    assert match("4", "= 2") and not match("1", "= 2") and match("2", "== 2")
    assert match("a", "<or> a <or> b") and not match("c", "<or> a <or> b")
    assert match("avx sse", "<in> sse") and match("x", "s== x") and match("5", ">= 4")


def test_affinity_filters_before_weighing(session: Session, conf: Any) -> None:
    """The known bug: spreading chose first, then the group check failed the second
    member of an affinity group; now the filter keeps only the group's host."""
    s = session
    conf.compute.cpu_allocation_ratio = 4.0
    first = server(s, "h1", BIG)  # h1 has the least free RAM
    gid = group(s, "affinity", first)
    assert select_destination(s, conf, spec(group_id=gid)) == "h1"
    anti = group(s, "anti-affinity", server(s, "h2"), server(s, "h3"))
    assert select_hosts(s, conf, spec(group_id=anti)) == ["h1"]
    server(s, "h1")
    s.add(ServerGroupMember(group_id=anti, instance_uuid=server(s, "h1")))
    s.flush()
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(group_id=anti))
    assert err.value.filter == "ServerGroupAntiAffinityFilter"
    # 2.64 max_server_per_host: two members per host are fine
    two = group(s, "anti-affinity", server(s, "h1"), server(s, "h2"), server(s, "h3"),
                max_server_per_host=2)
    assert len(select_hosts(s, conf, spec(group_id=two))) == 3


def test_soft_policies_weigh(session: Session, conf: Any) -> None:
    s = session
    a = server(s, "h1", BIG)
    soft = group(s, "soft-affinity", a)
    # h1 has the least free RAM, yet the soft-affinity weigher keeps the group there
    assert select_hosts(s, conf, spec(group_id=soft))[0] == "h1"
    soft_anti = group(s, "soft-anti-affinity", server(s, "h3"))
    # h3 has the most free RAM; the group's member there sends the next elsewhere
    assert select_hosts(s, conf, spec(group_id=soft_anti))[0] == "h2"
    # a full soft-affinity host is no hard rule: the next member goes elsewhere
    server(s, "h1", dict(BIG, memory_mb=4000))
    assert select_destination(s, conf, spec(BIG, group_id=soft)) in ("h2", "h3")


def test_same_and_different_host_hints(session: Session, conf: Any) -> None:
    s = session
    a, b = server(s, "h1"), server(s, "h2")
    assert select_hosts(s, conf, spec(hints={"same_host": a})) == ["h1"]
    assert select_hosts(s, conf, spec(hints={"same_host": [a, b]})) == ["h1", "h2"]
    assert select_hosts(s, conf, spec(hints={"different_host": [a, b]})) == ["h3"]
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(hints={"same_host": str(uuid.uuid4())}))
    assert err.value.filter == "SameHostFilter"


def test_requested_host_force_and_ignore(session: Session, conf: Any) -> None:
    s = session
    s.add(ServiceRecord(host="h1", binary="nova-compute", disabled=True))
    s.flush()
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(requested_host="h1"))
    assert err.value.filter == "ComputeFilter"
    # forced (admin's zone:host): the filters are skipped, but not the room
    assert select_destination(s, conf, spec(requested_host="h1", force=True)) == "h1"
    with pytest.raises(NoValidHost):
        select_destination(s, conf, spec(dict(BIG, memory_mb=9000), requested_host="h1",
                                          force=True))
    with pytest.raises(NoValidHost) as err:
        select_destination(s, conf, spec(requested_host="nope"))
    assert "No valid host was found." in str(err.value)
    assert select_hosts(s, conf, spec(ignore_hosts=frozenset({"h3"}))) == ["h2"]


def test_unfinished_migrations_claim_their_destination(session: Session,
                                                       conf: Any) -> None:
    s = session
    moving = server(s, "h1", BIG)
    s.add(Migration(instance_uuid=moving, source_compute="h1", dest_compute="h2",
                    old_flavor_id="big", new_flavor_id="big", status="migrating",
                    migration_type="live-migration"))
    done = server(s, "h3", BIG)
    s.add(Migration(instance_uuid=done, source_compute="h1", dest_compute="h3",
                    old_flavor_id="big", new_flavor_id="big", status="completed",
                    migration_type="migration"))
    s.flush()
    # in flight: on its source (its row) and its destination (the claim)
    assert free(s, conf) == {"h1": 4096, "h2": 4096, "h3": 4096}
    # a resize that finished (row on the destination, new flavor) keeps the old
    # flavor claimed on its source until confirmed
    resized = server(s, "h2", TINY, system_metadata={"old_flavor": BIG,
                                                     "new_flavor": TINY})
    mig = Migration(instance_uuid=resized, source_compute="h3", dest_compute="h2",
                    old_flavor_id="big", new_flavor_id="1", status="finished",
                    migration_type="resize")
    s.add(mig)
    s.flush()
    assert free(s, conf) == {"h1": 4096, "h2": 3584, "h3": 0}
    mig.status = "confirmed"
    s.flush()
    assert free(s, conf)["h3"] == 4096
    # the server being moved does not count against its own move
    assert free(s, conf, exclude=moving) == {"h1": 8192, "h2": 7680, "h3": 4096}
    inst = s.get(Instance, moving)
    sp = spec_for_instance(s, inst)
    assert sp.ignore_hosts == {"h1"} and sp.want == Want(4096, 2, 10)
    assert select_hosts(s, conf, sp) == ["h2", "h3"]


def test_spec_for_instance_remembers_create(session: Session, conf: Any) -> None:
    s = session
    s.add(Aggregate(name="z", hosts=["h2", "h3"], created_at=utcnow(),
                    metadata_={"availability_zone": "az2"}))
    other = server(s, "h3")
    iid = server(s, "h2", system_metadata={
        "requested_zone": "az2", "scheduler_hints": {"different_host": [other]}})
    gid = group(s, "anti-affinity", iid)
    inst = s.get(Instance, iid)
    sp = spec_for_instance(s, inst)
    assert (sp.zone, sp.group_id, dict(sp.hints)) == ("az2", gid,
                                                      {"different_host": [other]})
    with pytest.raises(NoValidHost):  # az2 is h2 (its source) and h3 (the other)
        select_destination(s, conf, sp)
    assert select_destination(s, conf, spec_for_instance(s, inst, ignore_source=False)) \
        == "h2"


def test_scheduler_hints_schema() -> None:
    """Nova's schema for os:scheduler_hints: known keys checked, others kept."""
    from strato.compute.scheduler_hints import parse
    from strato.exceptions import BadRequest

    g, a = str(uuid.uuid4()), str(uuid.uuid4())
    assert parse({"os:scheduler_hints": {"group": g, "same_host": a, "x": [1]}}) == {
        "group": g, "same_host": a, "x": [1]}
    assert parse({"OS-SCH-HNT:scheduler_hints": {"group": [g],
                                                 "different_host": [a, g]}}) == {
        "group": g, "different_host": [a, g]}
    assert parse({"server": {}}) == {}
    assert parse({"os:scheduler_hints": {"query": '[">=", "$free_ram_mb", 1024]',
                                         "cidr": "/24", "build_near_host_ip": "10.0.0.1",
                                         "target_cell": "cell1"}})["cidr"] == "/24"
    for bad in ([], {"group": "x"}, {"group": 1}, {"same_host": [a, "x"]},
                {"different_host": 3}, {"query": 5}, {"cidr": "10.0.0.0/8"},
                {"build_near_host_ip": "300.1.1.1"}, {"target_cell": ""}):
        with pytest.raises(BadRequest):
            parse({"os:scheduler_hints": bad})
