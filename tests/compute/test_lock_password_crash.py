"""SIGKILL in the middle of changePassword and of trigger_crash_dump converges after a
restart: no task state left, no job left, the action's event finished.  No guest
needed: the instances are rows on this host (the kill comes before the guest would be
reached)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from strato.compute.models import Instance, InstanceAction, InstanceActionEvent
from strato.config import load
from strato.db import Database
from strato.jobs.models import DONE, FAILED, Job
from strato.storage.crash import ENV as CRASH_ENV
from tests.support import Server, free_port

V = {"OpenStack-API-Version": "compute 2.73"}


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, free_port(), extra_conf={"jobs": {"lease_seconds": "2"}})
    server.setup()
    try:
        yield server
    finally:
        server.stop()


def _start(srv: Server, crashpoint: str | None) -> None:
    if crashpoint:
        os.environ[CRASH_ENV] = crashpoint
    try:
        srv.start()
    finally:
        os.environ.pop(CRASH_ENV, None)


def _instance(srv: Server, db: Database, project_id: str) -> str:
    sid = str(uuid.uuid4())
    with db.session() as session:
        session.add(Instance(
            id=sid, name="pw", project_id=project_id, user_id=None,
            host=load(srv.conf).DEFAULT.host, image_ref=str(uuid.uuid4()),
            flavor_id="m1.tiny", flavor={"root_gb": 1, "memory_mb": 64, "vcpus": 1},
            vm_state="active", task_state=None, power_state=1))
    return sid


def _project(srv: Server, token: str) -> str:
    with srv.client(token) as c:
        return str(c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"])


def _events(db: Database, sid: str, action: str) -> list[tuple[str, str | None]]:
    with db.session(readonly=True) as session:
        row = session.scalars(select(InstanceAction).where(
            InstanceAction.instance_uuid == sid, InstanceAction.action == action)).one()
        return [(e.event, e.result) for e in session.scalars(select(
            InstanceActionEvent).where(InstanceActionEvent.action_id == row.id))]


def test_kill_inside_change_password_and_crash_dump_converges(srv: Server) -> None:
    db = Database(load(srv.conf).database.connection)
    # --- changePassword: killed after updating_password is committed
    _start(srv, "changePassword:before-agent")
    token = srv.token()
    sid = _instance(srv, db, _project(srv, token))
    with srv.client(token) as c, pytest.raises(httpx.TransportError):
        c.post(f"/compute/v2.1/servers/{sid}/action", headers=V,
               json={"changePassword": {"adminPass": "never-stored"}})
    assert srv.proc is not None and srv.proc.wait(30) == -9
    with db.session(readonly=True) as session:
        assert session.get(Instance, sid).task_state == "updating_password"
        assert not list(session.scalars(select(Job)))  # the password is in no job
    _start(srv, None)  # the compute agent's reconcile resolves the task state
    with db.session(readonly=True) as session:
        inst = session.get(Instance, sid)
        # the vm_state the hypervisor says: no guest here, so SHUTOFF
        assert (inst.vm_state, inst.task_state) == ("stopped", None)
    with srv.client(srv.token()) as c:
        body = c.get(f"/compute/v2.1/servers/{sid}", headers=V).json()["server"]
        assert body["status"] == "SHUTOFF" and body["OS-EXT-STS:task_state"] is None
    assert _events(db, sid, "changePassword") == []  # killed before its event began
    srv.stop()
    with db.session() as session:  # ERROR takes a dump (and the power sync leaves it)
        session.get(Instance, sid).vm_state = "error"

    # --- trigger_crash_dump: killed in the job, before the NMI; the job runs again
    _start(srv, "trigger_crash_dump:before-nmi")
    with srv.client(srv.token()) as c:
        r = c.post(f"/compute/v2.1/servers/{sid}/action", headers=V,
                   json={"trigger_crash_dump": None})
        assert r.status_code == 202, r.text
    assert srv.proc is not None and srv.proc.wait(30) == -9
    assert _events(db, sid, "trigger_crash_dump") == [("compute_trigger_crash_dump", None)]
    _start(srv, None)
    deadline = time.monotonic() + 30
    while True:
        with db.session(readonly=True) as session:
            jobs = [j.state for j in session.scalars(select(Job).where(
                Job.name == "compute.trigger_crash_dump"))]
        if jobs and all(s in (DONE, FAILED) for s in jobs):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.2)
    assert jobs == [DONE]
    # no guest to take the NMI: the event says so, finished; the server is untouched
    assert _events(db, sid, "trigger_crash_dump") == [("compute_trigger_crash_dump", "Error")]
    with db.session(readonly=True) as session:
        inst = session.get(Instance, sid)
        assert (inst.vm_state, inst.task_state) == ("error", None)
    db.dispose()
