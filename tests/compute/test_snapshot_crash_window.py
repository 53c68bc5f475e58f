"""createImage's records commit in one transaction: a SIGKILL after the image record is
added (and before the job) leaves no image, task state or action behind; and the sweep
at start ends snapshot images an older, two-transaction createImage left queued with no
job.  No guest needed: the instance is a row on this host."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from strato.compute.models import Instance, InstanceAction, InstanceActionEvent
from strato.config import load
from strato.db import Database
from strato.image.models import Image, ImageProperty
from strato.jobs.models import Job
from strato.storage.crash import ENV as CRASH_ENV
from tests.support import Server, free_port


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, free_port())
    server.setup()
    try:
        yield server
    finally:
        server.stop()


def _db(server: Server) -> Database:
    return Database(load(server.conf).database.connection)


def _instance(server: Server, db: Database, project_id: str) -> str:
    """An ACTIVE server on this host (its row; createImage's API part needs no guest)."""
    sid = str(uuid.uuid4())
    with db.session() as session:
        session.add(Instance(
            id=sid, name="window", project_id=project_id, user_id=None,
            host=load(server.conf).DEFAULT.host, image_ref=str(uuid.uuid4()),
            flavor_id="m1.tiny", flavor={"root_gb": 1, "memory_mb": 64, "vcpus": 1},
            vm_state="active", task_state=None, power_state=1))
    return sid


def _project(server: Server, token: str) -> str:
    with server.client(token) as c:
        return str(c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"])


def _snapshot_images(db: Database, sid: str) -> list[tuple[str, str]]:
    with db.session(readonly=True) as session:
        return list(session.execute(select(Image.id, Image.status).join(
            ImageProperty, ImageProperty.image_id == Image.id).where(
            ImageProperty.name == "instance_uuid", ImageProperty.value == sid)))


def test_kill_inside_create_image_leaves_nothing(srv: Server) -> None:
    os.environ[CRASH_ENV] = "createImage:before-job"  # after the image and task state
    try:
        srv.start()
    finally:
        os.environ.pop(CRASH_ENV)
    token = srv.token()
    db = _db(srv)
    sid = _instance(srv, db, _project(srv, token))
    with srv.client(token) as c, pytest.raises(httpx.TransportError):
        c.post(f"/compute/v2.1/servers/{sid}/action", json={"createImage": {"name": "w"}},
               headers={"OpenStack-API-Version": "compute 2.79"})
    assert srv.proc is not None and srv.proc.wait(30) == -9
    # Two transactions (the image first) would have left a queued image here.
    assert _snapshot_images(db, sid) == []
    with db.session(readonly=True) as session:
        assert session.get(Instance, sid).task_state is None
        assert not list(session.scalars(select(InstanceAction).where(
            InstanceAction.instance_uuid == sid)))
        assert not list(session.scalars(select(Job).where(Job.name == "compute.snapshot")))
    srv.start()  # and the server works on: createImage commits all four together now
    with srv.client(srv.token()) as c:
        r = c.post(f"/compute/v2.1/servers/{sid}/action", json={"createImage": {
            "name": "w2"}}, headers={"OpenStack-API-Version": "compute 2.79"})
    assert r.status_code == 202, r.text
    image_id = r.json()["image_id"]
    with db.session(readonly=True) as session:
        jobs = [j.payload["image_id"] for j in session.scalars(select(Job).where(
            Job.name == "compute.snapshot"))]
        assert jobs == [image_id]
        assert session.scalars(select(InstanceAction).where(
            InstanceAction.instance_uuid == sid)).one().action == "createImage"
    db.dispose()


def test_queued_snapshot_image_without_job_is_swept_at_start(srv: Server) -> None:
    srv.start()
    token = srv.token()
    project = _project(srv, token)
    db = _db(srv)
    sid = _instance(srv, db, project)
    srv.stop()
    # What the older createImage left when killed between its two transactions: the
    # image record committed, no task state, no action, no job.
    orphan = str(uuid.uuid4())
    with db.session() as session:
        session.add(Image(id=orphan, name="orphan", status="queued", visibility="private",
                          owner=project, properties=[
                              ImageProperty(name="image_type", value="snapshot"),
                              ImageProperty(name="instance_uuid", value=sid)], tags=[]))
        # a user's own queued image that names the instance is not a snapshot: kept
        session.add(Image(id=str(uuid.uuid4()), name="mine", status="queued",
                          visibility="private", owner=project, properties=[
                              ImageProperty(name="instance_uuid", value=sid)], tags=[]))
    srv.start()
    with srv.client(srv.token()) as c:
        assert c.get(f"/image/v2/images/{orphan}").status_code == 404
    assert [s for _, s in _snapshot_images(db, sid)] == ["queued"]  # "mine"
    with db.session(readonly=True) as session:
        action = session.scalars(select(InstanceAction).where(
            InstanceAction.instance_uuid == sid)).one()
        assert action.action == "createImage" and action.message == "Error"
        event = session.scalars(select(InstanceActionEvent).where(
            InstanceActionEvent.action_id == action.id)).one()
        assert event.event == "compute_snapshot_instance" and event.result == "Error"
        assert orphan in (event.traceback or "")
        assert session.get(Instance, sid).task_state is None
    db.dispose()
