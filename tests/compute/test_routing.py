"""Jobs go to the guest's host (strato.compute.routing, strato.compute.hostcalls), on
the real job queue and both database engines; the handlers are stand-ins (what the
guard decides is under test, not what a handler does: tests/compute/test_multihost.py
runs the real ones on three hosts)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from strato.compute import hostcalls, routing
from strato.compute.models import ComputeNode, Instance
from strato.config import load
from strato.db import Database, utcnow
from strato.exceptions import Conflict, ServiceUnavailable
from strato.jobs.models import DONE, PENDING, Job
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, Worker


class _Services:
    def __init__(self, db: Database) -> None:
        self.db = db


def _instance(db: Database, host: str | None) -> str:
    with db.session() as session:
        inst = Instance(id=str(uuid.uuid4()), name="r", project_id="p", user_id="u",
                        flavor_id="1", host=host)
        session.add(inst)
        return inst.id


def _worker(db: Database, host: str, ran: list[tuple[str, str]]) -> Worker:
    def power(ctx: JobContext) -> dict[str, Any]:
        ran.append((host, ctx.payload["instance_id"]))
        return {"ran_on": host}

    handlers = {"compute.power": power}
    routing.install(handlers)
    return Worker(db, [f"host:{host}"], handlers=handlers, services=_Services(db),
                  retry_backoff=0.01)


def test_a_job_for_the_wrong_host_is_handed_over(db: Database) -> None:
    ran: list[tuple[str, str]] = []
    sid = _instance(db, "b")
    with db.session() as session:
        first = enqueue(session, "compute.power", {"instance_id": sid}, target="host:a",
                        max_attempts=3).id
    a, b = _worker(db, "a", ran), _worker(db, "b", ran)
    assert a.run_once() and not a.run_once()  # handed over, nothing else for a
    assert ran == []  # host a never acted on a guest that is not there
    assert b.run_once()
    assert ran == [("b", sid)]
    with db.session(readonly=True) as session:
        jobs = {j.id: (j.target, j.state, j.result, j.max_attempts)
                for j in session.scalars(select(Job))}
    assert jobs[first] == ("host:a", DONE, {"handed_to": "b"}, 3)
    (copy,) = [v for k, v in jobs.items() if k != first]
    assert copy == ("host:b", DONE, {"ran_on": "b"}, 3)


def test_right_host_hostless_and_gone_run_where_claimed(db: Database) -> None:
    ran: list[tuple[str, str]] = []
    here, hostless = _instance(db, "a"), _instance(db, None)
    with db.session() as session:
        for sid in (here, hostless, "no-such-instance"):
            enqueue(session, "compute.power", {"instance_id": sid}, target="host:a")
    a = _worker(db, "a", ran)
    while a.run_once():
        pass
    assert ran == [("a", here), ("a", hostless), ("a", "no-such-instance")]


def test_install_is_idempotent_and_leaves_move_jobs_alone() -> None:
    def build(ctx: JobContext) -> None:
        return None

    handlers = {"compute.power": build, "compute.build": build}
    routing.install(handlers)
    guarded = handlers["compute.power"]
    routing.install(handlers)
    assert handlers["compute.power"] is guarded is not build
    assert handlers["compute.build"] is build  # placed by the scheduler: its own target


def test_targets_and_retarget(db: Database) -> None:
    conf = load(None, [("database", "connection", "sqlite://"),
                       ("DEFAULT", "service_down_time", "60")])
    up, down, nohost = _instance(db, "up"), _instance(db, "down"), _instance(db, None)
    with db.session() as session:
        session.add(ComputeNode(host="up", memory_mb=1, vcpus=1, local_gb=1,
                                updated_at=utcnow()))
        rows = {i.id: i for i in session.scalars(select(Instance))}
        assert routing.target_for(rows[up]) == "host:up"
        assert routing.target_for(rows[nohost]) == "any"
        assert routing.delete_target(session, conf, rows[up]) == "host:up"
        assert routing.delete_target(session, conf, rows[down]) == "any"  # local delete
        assert routing.delete_target(session, conf, rows[nohost]) == "any"
        with pytest.raises(Conflict):
            routing.require_host(rows[nohost])
        enqueue(session, "compute.power", {"instance_id": down}, target="host:down")
        enqueue(session, "compute.build", {"instance_id": down}, target="host:down")
    with db.session() as session:
        assert routing.retarget_pending(session, down, "up") == 1
    with db.session(readonly=True) as session:
        assert sorted((j.name, j.target) for j in session.scalars(select(Job))) == [
            ("compute.build", "host:down"), ("compute.power", "host:up")]


def test_host_call_answers_refuses_and_times_out(db: Database) -> None:
    conf = load(None, [("database", "connection", "sqlite://"),
                       ("DEFAULT", "service_down_time", "60")])
    sid = _instance(db, "h")
    with db.session() as session:
        inst = session.get(Instance, sid)
        session.expunge(inst)
    with pytest.raises(Conflict, match="host h is down"):  # no heartbeat: down
        hostcalls.call(db, conf, inst, "compute.console_output", {}, "get_console_output")
    with db.session() as session:
        session.add(ComputeNode(host="h", memory_mb=1, vcpus=1, local_gb=1,
                                updated_at=utcnow()))
    with pytest.raises(ServiceUnavailable, match="did not answer"):  # up, but no worker
        hostcalls.call(db, conf, inst, "compute.console_output", {}, "get_console_output",
                       timeout=0.5)
    with db.session(readonly=True) as session:
        assert not list(session.scalars(select(Job).where(Job.state == PENDING)))

    def console(ctx: JobContext) -> dict[str, Any]:
        return {"output": f"log of {ctx.payload['instance_id']} {ctx.payload['length']}"}

    w = Worker(db, ["host:h"], handlers={"compute.console_output": console,
                                         "compute.host_uptime": hostcalls.host_uptime},
               services=_Services(db), poll_interval=0.05)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        out = hostcalls.call(db, conf, inst, "compute.console_output", {"length": 3},
                             "get_console_output")
        up = hostcalls.call_host(db, conf, "h", "compute.host_uptime", {}, "uptime")
    finally:
        w.stop()
        t.join(5)
    assert out == {"output": f"log of {sid} 3"}
    assert " up " in up["uptime"] and "load average" in up["uptime"], up
    with db.session(readonly=True) as session:  # the answer is not kept
        assert list(session.scalars(select(Job))) == []
