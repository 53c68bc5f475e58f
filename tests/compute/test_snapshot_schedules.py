"""Snapshot schedules (issue 18): the API, the ``strato schedule`` commands, and the
runs on a real running guest — retention, bounded chain depth, and a ``kill -9`` of the
server in the middle that neither runs a slot twice nor stops the schedule.

One server for the module (job leases of 5 s, so work a killed server held is taken
over quickly) and one tiny guest; the API checks use instance rows of their own.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from strato.compute.models import Instance
from strato.compute.schedule_models import SnapshotSchedule
from strato.config import load
from strato.db import Database
from strato.events import Event
from strato.image.models import Image, ImageProperty
from strato.jobs.models import PENDING, RUNNING, Job
from strato.storage import open_engine
from strato.storage.crash import ENV as CRASH_ENV
from strato.storage.local import LocalEngine
from tests.api_schemas import (
    BOOLEAN,
    NULLABLE_STRING,
    STRING,
    UUID,
    assert_shape,
    list_of,
    strict,
)
from tests.compute.conftest import boot_ready, guest_server
from tests.support import BIN, Server
from tests.tenants import make_tenant

V = {"OpenStack-API-Version": "compute 2.79"}
STAMP = "%Y-%m-%dT%H:%M:%SZ"
NULLABLE_TIME = {"type": ["string", "null"], "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
TIME = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
SCHEDULE = strict({
    "id": UUID, "server_id": UUID, "name": STRING,
    "schedule": {"oneOf": [strict({"cron": STRING}), strict({"interval": {"type": "integer"}})]},
    "retention": {"type": "object", "additionalProperties": False, "minProperties": 1,
                  "properties": {"count": {"type": "integer"},
                                 "max_age": {"type": "integer"}}},
    "quiesce": {"enum": ["required", "preferred", "never"]}, "enabled": BOOLEAN,
    "next_run_at": NULLABLE_TIME, "last_run_at": NULLABLE_TIME,
    "last_result": {"oneOf": [{"type": "null"}, strict({
        "status": {"enum": ["success", "error", "skipped"]}, "message": NULLABLE_STRING,
        "image_id": {"type": ["string", "null"]}})]},
    "created_at": TIME, "updated_at": NULLABLE_TIME,
})


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with guest_server(tmp_path_factory.mktemp("sch"), {
            "jobs": {"lease_seconds": "5", "workers": "4"},
            "compute": {"sync_power_state_interval": "1"}}) as server:
        yield server


@pytest.fixture(scope="module")
def db(srv: Server) -> Iterator[Database]:
    database = Database(load(srv.conf).database.connection)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def row(srv: Server, db: Database) -> str:
    """One instance row for the API checks (each leaves no schedule behind): rows
    count against the host's capacity like real servers do."""
    return _row_instance(srv, db)


@pytest.fixture(scope="module")
def guest(srv: Server) -> str:
    return boot_ready(srv, "--image", "strato-guest", prefix="sched")


def _client(srv: Server) -> httpx.Client:
    c = srv.client(srv.token())
    c.headers.update(V)
    return c


def _base(sid: str) -> str:
    return f"/compute/v2.1/servers/{sid}/snapshot-schedules"


def _row_instance(srv: Server, db: Database) -> str:
    """An ACTIVE server row of the admin project (the API part needs no guest)."""
    with srv.client(srv.token()) as c:
        token = c.headers["X-Auth-Token"]
        project = c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]
    sid = str(uuid.uuid4())
    with db.session() as session:
        session.add(Instance(
            id=sid, name="sched-row", project_id=project, user_id=None,
            host=load(srv.conf).DEFAULT.host, image_ref=str(uuid.uuid4()),
            flavor_id="m1.tiny", flavor={"root_gb": 1, "memory_mb": 64, "vcpus": 1},
            vm_state="active", task_state=None, power_state=1))
    return sid


def _jobs(db: Database, schedule_id: str, states: tuple[str, ...] = (PENDING,)) -> list[Job]:
    with db.session(readonly=True) as session:
        jobs = [j for j in session.scalars(select(Job).where(
            Job.name == "schedule.run", Job.state.in_(states)))
            if j.payload.get("schedule_id") == schedule_id]
        session.expunge_all()
        return jobs


def _events(db: Database, schedule_id: str, kind: str) -> list[dict[str, Any]]:
    with db.session(readonly=True) as session:
        return [dict(e.payload) for e in session.scalars(select(Event).where(
            Event.resource_id == schedule_id,
            Event.event_type == f"compute.snapshot_schedule.run.{kind}").order_by(Event.id))]


def _images(db: Database, schedule_id: str, status: str = "active") -> list[str]:
    with db.session(readonly=True) as session:
        return list(session.scalars(select(Image.id).join(
            ImageProperty, ImageProperty.image_id == Image.id).where(
            ImageProperty.name == "strato_schedule_id", ImageProperty.value == schedule_id,
            Image.status == status)))


def _slot(text: str) -> datetime:
    return datetime.strptime(text, STAMP).replace(tzinfo=UTC)


def _until(what: str, fn: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _quiet(db: Database, schedule_id: str) -> bool:
    """No run of this schedule in flight: no run job running, no finish job left."""
    with db.session(readonly=True) as session:
        return not [j for j in session.scalars(select(Job).where(
            Job.name.in_(("schedule.run", "schedule.finish", "compute.snapshot")),
            Job.state.in_((PENDING, RUNNING))))
            if j.payload.get("schedule_id", schedule_id) == schedule_id
            and not (j.name == "schedule.run" and j.state == PENDING)]


def _depth(srv: Server, disk: str) -> int | None:
    """Layers of the guest's root disk; None while a merge is still on its way."""
    engine = open_engine("local", root=srv.state / "blocks", repair=False)
    assert isinstance(engine, LocalEngine)
    meta = engine.load("vms", disk)
    if any(s.get("removed") for s in meta["snaps"]):
        return None
    return len(meta["layers"])


# ---------------------------------------------------------------- API
def test_api_create_show_list_update_delete(srv: Server, db: Database, row: str) -> None:
    sid = row
    with _client(srv) as c:
        r = c.post(_base(sid), json={"snapshot_schedule": {
            "name": "hourly", "schedule": {"cron": "0  *  * * *"},
            "retention": {"count": 24, "max_age": 86400}, "quiesce": "required"}})
        assert r.status_code == 201, r.text
        sched = r.json()["snapshot_schedule"]
        assert_shape(sched, SCHEDULE)
        assert sched["schedule"] == {"cron": "0 * * * *"} and sched["enabled"] is True
        assert sched["last_run_at"] is None and sched["last_result"] is None
        nxt = _slot(sched["next_run_at"])
        assert nxt.minute == 0 and nxt.second == 0
        assert timedelta(0) < nxt - datetime.now(UTC) <= timedelta(hours=1)
        # one pending job, due at the slot
        jobs = _jobs(db, sched["id"])
        assert [j.payload["slot"] for j in jobs] == [sched["next_run_at"]]

        listed = c.get(_base(sid)).json()
        assert_shape(listed, list_of("snapshot_schedules", SCHEDULE))
        assert [s["id"] for s in listed["snapshot_schedules"]] == [sched["id"]]
        assert c.get(f"{_base(sid)}/{sched['id']}").json()["snapshot_schedule"] == sched

        # disable: no next run, no job; enable with an interval: one job again
        r = c.put(f"{_base(sid)}/{sched['id']}", json={"snapshot_schedule": {
            "enabled": False}})
        assert r.status_code == 200, r.text
        off = r.json()["snapshot_schedule"]
        assert_shape(off, SCHEDULE)
        assert off["enabled"] is False and off["next_run_at"] is None
        assert off["updated_at"] is not None
        assert _jobs(db, sched["id"]) == []
        r = c.put(f"{_base(sid)}/{sched['id']}", json={"snapshot_schedule": {
            "enabled": True, "schedule": {"interval": 3600}, "retention": {"count": 2},
            "name": "renamed", "quiesce": "never"}})
        on = r.json()["snapshot_schedule"]
        assert (on["name"], on["schedule"], on["retention"], on["quiesce"]) == (
            "renamed", {"interval": 3600}, {"count": 2}, "never")
        assert [j.payload["slot"] for j in _jobs(db, sched["id"])] == [on["next_run_at"]]

        assert c.delete(f"{_base(sid)}/{sched['id']}").status_code == 204
        assert _jobs(db, sched["id"]) == []
        assert c.get(f"{_base(sid)}/{sched['id']}").status_code == 404
        assert c.get(_base(sid)).json() == {"snapshot_schedules": []}


@pytest.mark.parametrize("body", [
    None, [], {}, {"snapshot_schedule": {}},
    {"snapshot_schedule": {"retention": {"count": 1}}},
    {"snapshot_schedule": {"schedule": {"interval": 10}}},
    {"snapshot_schedule": {"schedule": {"interval": 0}, "retention": {"count": 1}}},
    {"snapshot_schedule": {"schedule": {"interval": "10"}, "retention": {"count": 1}}},
    {"snapshot_schedule": {"schedule": {"cron": "* * * *"}, "retention": {"count": 1}}},
    {"snapshot_schedule": {"schedule": {"cron": "61 * * * *"}, "retention": {"count": 1}}},
    {"snapshot_schedule": {"schedule": {"cron": "0 0 30 2 *"}, "retention": {"count": 1}}},
    {"snapshot_schedule": {"schedule": {"cron": "* * * * *", "interval": 5},
                           "retention": {"count": 1}}},
    {"snapshot_schedule": {"schedule": {"interval": 5}, "retention": {}}},
    {"snapshot_schedule": {"schedule": {"interval": 5}, "retention": {"count": 0}}},
    {"snapshot_schedule": {"schedule": {"interval": 5}, "retention": {"keep": 1}}},
    {"snapshot_schedule": {"schedule": {"interval": 5}, "retention": {"count": 1},
                           "quiesce": "sometimes"}},
    {"snapshot_schedule": {"schedule": {"interval": 5}, "retention": {"count": 1},
                           "name": "  "}},
    {"snapshot_schedule": {"schedule": {"interval": 5}, "retention": {"count": 1},
                           "enabled": "yes"}},
    {"snapshot_schedule": {"schedule": {"interval": 5}, "retention": {"count": 1},
                           "extra": 1}},
])
def test_api_bad_bodies_are_400(srv: Server, db: Database, row: str, body: Any) -> None:
    sid = row
    with _client(srv) as c:
        r = c.post(_base(sid), json=body)
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"badRequest"}
        assert c.get(_base(sid)).json() == {"snapshot_schedules": []}


def test_api_404s_and_403s(srv: Server, db: Database, row: str) -> None:
    sid = row
    good = {"snapshot_schedule": {"schedule": {"interval": 3600}, "retention": {"count": 1}}}
    with _client(srv) as c:
        missing = str(uuid.uuid4())
        for method, path in (("GET", _base(missing)), ("POST", _base(missing)),
                             ("GET", f"{_base(sid)}/{missing}"),
                             ("PUT", f"{_base(sid)}/{missing}"),
                             ("DELETE", f"{_base(sid)}/{missing}")):
            r = c.request(method, path, json=good if method in ("POST", "PUT") else None)
            assert r.status_code == 404, (method, path, r.text)
            assert set(r.json()) == {"itemNotFound"}
        sched = c.post(_base(sid), json=good).json()["snapshot_schedule"]
        # a schedule is found only under its own server
        other = _row_instance(srv, db)
        assert c.get(f"{_base(other)}/{sched['id']}").status_code == 404
    # another project's member does not see the server at all
    stranger = make_tenant(srv, "sched-other")
    with srv.client(stranger.token()) as c:
        assert c.get(_base(sid), headers=V).status_code == 404
        assert c.post(_base(sid), json=good, headers=V).status_code == 404
    # a reader of the server's project may look, not change
    reader = make_tenant(srv, "sched-reader", role="reader")
    srv.openstack("role", "add", "--project", "admin", "--user", reader.user, "reader")
    with srv.client(srv.token(reader.user, reader.password, "admin")) as c:
        assert c.get(_base(sid), headers=V).status_code == 200
        assert c.get(f"{_base(sid)}/{sched['id']}", headers=V).status_code == 200
        for method, path in (("POST", _base(sid)), ("PUT", f"{_base(sid)}/{sched['id']}"),
                             ("DELETE", f"{_base(sid)}/{sched['id']}")):
            r = c.request(method, path, json=good if method != "DELETE" else None,
                          headers=V)
            assert r.status_code == 403, (method, r.text)
            assert set(r.json()) == {"forbidden"}
    with _client(srv) as c:
        assert c.delete(f"{_base(sid)}/{sched['id']}").status_code == 204


def test_server_delete_takes_its_schedules_and_jobs(srv: Server, db: Database) -> None:
    sid = _row_instance(srv, db)
    with _client(srv) as c:
        ids = [c.post(_base(sid), json={"snapshot_schedule": {
            "schedule": {"interval": 3600}, "retention": {"count": 1}}}).json()[
            "snapshot_schedule"]["id"] for _ in range(2)]
        assert all(_jobs(db, i) for i in ids)
        assert c.delete(f"/compute/v2.1/servers/{sid}").status_code == 204
    with db.session(readonly=True) as session:
        assert not list(session.scalars(select(SnapshotSchedule).where(
            SnapshotSchedule.server_id == sid)))
    assert all(_jobs(db, i) == [] for i in ids)


def test_start_up_gives_a_jobless_schedule_its_job(srv: Server, db: Database,
                                                  row: str) -> None:
    """A schedule left without a job (lost between a claim and its next job in an older
    version, or a job row removed by hand) gets one at start-up, for its slot; a
    schedule of a server deleted behind the API's back goes."""
    gone = _row_instance(srv, db)
    with _client(srv) as c:
        kept = c.post(_base(row), json={"snapshot_schedule": {
            "schedule": {"interval": 3600}, "retention": {"count": 1}}}).json()[
            "snapshot_schedule"]
        orphan = c.post(_base(gone), json={"snapshot_schedule": {
            "schedule": {"interval": 3600}, "retention": {"count": 1}}}).json()[
            "snapshot_schedule"]
    with db.session() as session:
        for job in _jobs(db, kept["id"]):
            session.delete(session.get(Job, job.id))
        session.get(Instance, gone).deleted = True
    srv.stop(teardown=False)
    srv.start()
    assert [j.payload["slot"] for j in _jobs(db, kept["id"])] == [kept["next_run_at"]]
    assert _jobs(db, orphan["id"]) == []
    with db.session(readonly=True) as session:
        assert session.get(SnapshotSchedule, orphan["id"]) is None
    with _client(srv) as c:
        assert c.delete(f"{_base(row)}/{kept['id']}").status_code == 204


# ---------------------------------------------------------------- the CLI
def _cli(srv: Server, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(srv.clouds), OS_CLOUD="strato")
    return subprocess.run([str(BIN / "strato"), "schedule", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_cli_commands(srv: Server, db: Database, row: str) -> None:
    import json

    sid = row
    r = _cli(srv, "create", sid, "--cron", "30 2 * * *", "--keep", "7", "--max-age", "2w",
             "--quiesce", "never", "--name", "nightly", "-f", "json")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert_shape(made, SCHEDULE)
    assert (made["name"], made["schedule"], made["retention"], made["quiesce"]) == (
        "nightly", {"cron": "30 2 * * *"}, {"count": 7, "max_age": 14 * 86400}, "never")
    listed = json.loads(_cli(srv, "list", sid, "-f", "json").stdout)
    assert [s["id"] for s in listed] == [made["id"]]
    shown = _cli(srv, "show", sid, made["id"])
    assert shown.returncode == 0 and "nightly" in shown.stdout
    off = json.loads(_cli(srv, "set", sid, made["id"], "--disable", "--interval", "60",
                          "-f", "json").stdout)
    assert (off["enabled"], off["next_run_at"], off["schedule"]) == (False, None,
                                                                    {"interval": 60})
    bad = _cli(srv, "create", sid, "--cron", "nope", "--keep", "1")
    assert bad.returncode != 0 and "cron" in bad.stderr.lower()
    missing = _cli(srv, "create", sid, "--interval", "5")
    assert missing.returncode != 0 and "--keep" in missing.stderr
    assert _cli(srv, "delete", sid, made["id"]).returncode == 0
    assert json.loads(_cli(srv, "list", sid, "-f", "json").stdout) == []


# ---------------------------------------------------------------- runs on a guest
def test_runs_keep_count_bound_the_chain_and_survive_a_kill(
        srv: Server, db: Database, guest: str) -> None:
    """The issue's proof, scaled: every 6 s for about a minute, keep 3, ``kill -9`` of
    the server in the middle (down for ~15 s, over two slots)."""
    disk = f"{guest}_disk"
    start_depth = _until("a settled chain", lambda: _depth(srv, disk))
    with _client(srv) as c:
        r = c.post(_base(guest), json={"snapshot_schedule": {
            "name": "proof", "schedule": {"interval": 6}, "retention": {"count": 3}}})
        assert r.status_code == 201, r.text
        sched = r.json()["snapshot_schedule"]
    sch_id = sched["id"]
    began = time.monotonic()
    depths: list[int] = []

    def runs_ended(n: int) -> bool:
        d = _depth(srv, disk)
        if d is not None:
            depths.append(d)
        return len(_events(db, sch_id, "end")) >= n

    _until("three runs", lambda: runs_ended(3), 60)
    assert srv.proc is not None
    killed_at = datetime.now(UTC)
    srv.proc.kill()
    assert srv.proc.wait(30) == -9
    time.sleep(15)  # the downtime: two or three slots pass while strato is down
    srv.start()
    up_at = datetime.now(UTC)
    _until("the minute to pass", lambda: runs_ended(10**6) or
           time.monotonic() - began > 60, 90)
    with _client(srv) as c:
        r = c.put(f"{_base(guest)}/{sch_id}", json={"snapshot_schedule": {"enabled": False}})
        assert r.status_code == 200, r.text
    _until("the last run to finish", lambda: _quiet(db, sch_id), 90)
    with _client(srv) as c:
        final = c.get(f"{_base(guest)}/{sch_id}").json()["snapshot_schedule"]

    started = _events(db, sch_id, "start")
    ended = _events(db, sch_id, "end")
    slots = [_slot(e["slot"]) for e in started]
    anchor = _slot(sched["next_run_at"]) - timedelta(seconds=6)
    # each slot claimed once, on the grid, in order
    assert len(set(slots)) == len(slots) and slots == sorted(slots), slots
    assert all((s - anchor).total_seconds() % 6 == 0 for s in slots), slots
    assert len(slots) >= 6, slots
    # no slot skipped except those inside the downtime, and those collapse into one run
    grid = [slots[0] + timedelta(seconds=6 * k)
            for k in range(int((slots[-1] - slots[0]).total_seconds() // 6) + 1)]
    missed = [g for g in grid if g not in slots]
    assert missed, "the downtime skipped no slot: the test did not test it"
    assert all(killed_at < m <= up_at + timedelta(seconds=2) for m in missed), (
        missed, killed_at, up_at)
    during = [s for s in slots if killed_at < s <= up_at]
    assert len(during) == 1, (during, killed_at, up_at)
    # each run ended once, with one image per slot; every run made its snapshot
    assert Counter(e["slot"] for e in ended) == Counter(e["slot"] for e in started)
    # a run whose slot comes while the server is still busy with a snapshot (one
    # resumed after the restart) is skipped, as any createImage would be refused
    busy = [e for e in ended if e["status"] == "skipped" and "task_state" in e["message"]]
    good = [e for e in ended if e["status"] == "success"]
    assert len(good) + len(busy) == len(ended) and len(busy) <= 2, ended
    made = [e["image_id"] for e in good]
    assert len(set(made)) == len(made)
    # exactly the three newest remain
    kept = sorted(_images(db, sch_id))
    newest = sorted(e["image_id"] for e in sorted(good, key=lambda e: e["slot"])[-3:])
    assert kept == newest
    assert final["last_result"]["status"] in ("success", "skipped")
    assert final["last_run_at"] == started[-1]["slot"]
    with _client(srv) as c:
        names = {c.get(f"/image/v2/images/{i}").json()["name"] for i in kept}
    assert names == {"proof-" + _slot(e["slot"]).strftime("%Y%m%dT%H%M%SZ")
                     for e in good if e["image_id"] in kept}
    # the root disk's chain stays bounded: the base layers plus one per kept snapshot
    # (plus one being taken or merged at a time)
    assert max(depths) <= start_depth + 3 + 2, (start_depth, depths)
    assert _until("a settled chain", lambda: _depth(srv, disk)) <= start_depth + 3
    with _client(srv) as c:
        assert c.delete(f"{_base(guest)}/{sch_id}").status_code == 204
        for image_id in kept:
            assert c.delete(f"/image/v2/images/{image_id}").status_code == 204
    assert _until("the chain back", lambda: _depth(srv, disk) == start_depth)


@pytest.mark.parametrize("point", ["after-claim", "after-create-image"])
def test_run_cut_off_resumes_once(srv: Server, db: Database, guest: str, point: str) -> None:
    """``kill -9`` right after a run claimed its slot, or between its createImage and
    its hand-over: after the restart the run's job (lease lapsed) goes on from there —
    the slot is not claimed again, and its image is made once, never twice."""
    with db.session(readonly=True) as session:
        marker = max(session.scalars(select(Event.id)), default=0)
    srv.stop(teardown=False)
    os.environ[CRASH_ENV] = f"schedule:{point}"
    try:
        srv.start()
    finally:
        os.environ.pop(CRASH_ENV)
    with _client(srv) as c:
        r = c.post(_base(guest), json={"snapshot_schedule": {
            "name": "crash", "schedule": {"interval": 2}, "retention": {"count": 1}}})
        assert r.status_code == 201, r.text
        sch_id = r.json()["snapshot_schedule"]["id"]
    assert srv.proc is not None and srv.proc.wait(30) == -9
    started = _events(db, sch_id, "start")
    assert len(started) == 1 and _events(db, sch_id, "end") == []
    with db.session(readonly=True) as session:  # made already, or not yet
        assert len([e for e in session.scalars(select(Event).where(
            Event.resource_id == guest, Event.id > marker,
            Event.event_type == "compute.instance.snapshot.start"))]) == (
            point == "after-create-image")
    first = started[0]["slot"]
    srv.start()
    _until("the cut-off run to end", lambda: [
        e for e in _events(db, sch_id, "end") if e["slot"] == first], 60)
    with _client(srv) as c:
        assert c.put(f"{_base(guest)}/{sch_id}", json={"snapshot_schedule": {
            "enabled": False}}).status_code == 200
    _until("quiet", lambda: _quiet(db, sch_id), 60)
    ends = [e for e in _events(db, sch_id, "end") if e["slot"] == first]
    assert len(ends) == 1 and ends[0]["status"] == "success", ends
    slots = [e["slot"] for e in _events(db, sch_id, "start")]
    assert len(slots) == len(set(slots))
    # one createImage per run, the cut-off one included: no second image for its slot
    with db.session(readonly=True) as session:
        asked = [e.payload["image_id"] for e in session.scalars(select(Event).where(
            Event.resource_id == guest, Event.id > marker,
            Event.event_type == "compute.instance.snapshot.start"))]
    ended = _events(db, sch_id, "end")
    made = [e["image_id"] for e in ended if e["image_id"]]
    assert sorted(asked) == sorted(made) and len(set(made)) == len(made)
    assert sorted(e["slot"] for e in ended) == sorted(slots)
    # a run whose slot came while the resumed snapshot was still being taken: 409, skipped
    assert all(e["status"] == "success" or (e["status"] == "skipped" and "task_state"
                                            in e["message"]) for e in ended), ended
    kept = _images(db, sch_id)
    assert len(kept) == 1
    assert _images(db, sch_id, "queued") == [] and _images(db, sch_id, "saving") == []
    with _client(srv) as c:
        assert c.delete(f"{_base(guest)}/{sch_id}").status_code == 204
        for image_id in kept:
            assert c.delete(f"/image/v2/images/{image_id}").status_code == 204


def test_run_on_a_busy_server_is_skipped_and_the_next_slot_comes(
        srv: Server, db: Database, guest: str) -> None:
    with db.session() as session:
        session.get(Instance, guest).vm_state = "error"
    try:
        with _client(srv) as c:
            sch_id = c.post(_base(guest), json={"snapshot_schedule": {
                "schedule": {"interval": 1}, "retention": {"count": 1}}}).json()[
                "snapshot_schedule"]["id"]
        ended = _until("two skipped runs", lambda: (lambda e: e if len(e) >= 2 else None)(
            _events(db, sch_id, "end")), 30)
        assert {e["status"] for e in ended} == {"skipped"}
        assert "vm_state error" in ended[0]["message"]
        assert len({e["slot"] for e in ended}) == len(ended)
        with _client(srv) as c:
            shown = c.get(f"{_base(guest)}/{sch_id}").json()["snapshot_schedule"]
            assert shown["last_result"]["status"] == "skipped"
            assert shown["next_run_at"] is not None
            assert c.delete(f"{_base(guest)}/{sch_id}").status_code == 204
        assert _images(db, sch_id, "queued") == [] and _images(db, sch_id) == []
    finally:
        with db.session() as session:
            session.get(Instance, guest).vm_state = "active"


def test_volume_backed_runs_prune_their_volume_snapshots(srv: Server, db: Database) -> None:
    """A volume-backed server's run is its createImage (volume snapshots + an image
    mapping them); pruning an image deletes the volume snapshots behind it."""
    sid = boot_ready(srv, "--image", "strato-guest", "--boot-from-volume", "1",
                     prefix="sched-bfv")
    with _client(srv) as c:
        vol_id = c.get(f"/compute/v2.1/servers/{sid}").json()["server"][
            "os-extended-volumes:volumes_attached"][0]["id"]
        sch_id = c.post(_base(sid), json={"snapshot_schedule": {
            "schedule": {"interval": 3}, "retention": {"count": 1},
            "quiesce": "preferred"}}).json()["snapshot_schedule"]["id"]
    _until("three successful runs", lambda: len([
        e for e in _events(db, sch_id, "end") if e["status"] == "success"]) >= 3, 90)
    with _client(srv) as c:
        assert c.put(f"{_base(sid)}/{sch_id}", json={"snapshot_schedule": {
            "enabled": False}}).status_code == 200
    _until("quiet", lambda: _quiet(db, sch_id), 60)

    def snapshots() -> list[dict]:
        listed = srv.openstack_json("volume", "snapshot", "list", "--volume", vol_id,
                                    "--long")
        return [s for s in listed if s["Status"] != "deleting"]  # type: ignore[union-attr]

    kept = _images(db, sch_id)
    assert len(kept) == 1
    with _client(srv) as c:
        image = c.get(f"/image/v2/images/{kept[0]}").json()
    import json

    mapping = json.loads(image["block_device_mapping"])
    assert [m["source_type"] for m in mapping] == ["snapshot"]
    left = _until("the pruned volume snapshots to go",
                  lambda: (lambda s: s if len(s) == 1 else None)(snapshots()), 60)
    assert left[0]["ID"] == mapping[0]["snapshot_id"]
    with _client(srv) as c:
        assert c.delete(f"{_base(sid)}/{sch_id}").status_code == 204
        assert c.delete(f"/image/v2/images/{kept[0]}").status_code == 204
    srv.openstack("volume", "snapshot", "delete", left[0]["ID"])
    _until("no snapshot left", lambda: srv.openstack_json(
        "volume", "snapshot", "list", "--volume", vol_id) == [], 60)
    srv.openstack("server", "delete", "--wait", sid)


def test_quiesce_required_preferred_never(srv: Server, db: Database, guest: str) -> None:
    """``required``: frozen, or the run fails (recorded, the image undone) when the
    agent cannot answer; ``never``: not frozen even though it could be."""
    from strato.virt.qemu import QemuDriver

    drv = QemuDriver(srv.state / "instances")

    def one_run(quiesce: str) -> dict[str, Any]:
        with _client(srv) as c:
            sch_id = c.post(_base(guest), json={"snapshot_schedule": {
                "schedule": {"interval": 2}, "retention": {"count": 1},
                "quiesce": quiesce}}).json()["snapshot_schedule"]["id"]
        end = _until(f"a {quiesce} run", lambda: [  # later slots: skipped meanwhile
            e for e in _events(db, sch_id, "end") if e["status"] != "skipped"], 90)[0]
        with _client(srv) as c:
            assert c.delete(f"{_base(guest)}/{sch_id}").status_code == 204
        _until("quiet", lambda: _quiet(db, sch_id), 60)
        for image_id in _images(db, sch_id):
            with _client(srv) as c:
                c.delete(f"/image/v2/images/{image_id}")
        return end

    def quiesced(end: dict[str, Any]) -> str:
        with db.session(readonly=True) as session:
            prop = session.get(ImageProperty, (end["image_id"], "strato_quiesced"))
            return prop.value if prop is not None else "?"

    def only_success(end: dict[str, Any]) -> dict[str, Any]:
        assert end["status"] == "success", end
        return end

    with _client(srv) as c:
        sch_id = c.post(_base(guest), json={"snapshot_schedule": {
            "schedule": {"interval": 2}, "retention": {"count": 5},
            "quiesce": "required"}}).json()["snapshot_schedule"]["id"]
    end = _until("a required run", lambda: [
        e for e in _events(db, sch_id, "end") if e["status"] != "skipped"], 60)[0]
    assert only_success(end) and quiesced(end) == "true"
    with _client(srv) as c:
        r = c.put(f"{_base(guest)}/{sch_id}", json={"snapshot_schedule": {
            "quiesce": "never"}})
        assert r.status_code == 200
    after = _until("a never run", lambda: [
        e for e in _events(db, sch_id, "end") if e["slot"] > end["slot"]
        and e["status"] == "success" and e["image_id"]
        and _slot(e["slot"]) > _slot(r.json()["snapshot_schedule"]["updated_at"])], 60)[0]
    assert quiesced(after) == "false"
    with _client(srv) as c:
        assert c.delete(f"{_base(guest)}/{sch_id}").status_code == 204
    _until("quiet", lambda: _quiet(db, sch_id), 60)
    for image_id in _images(db, sch_id):
        with _client(srv) as c:
            assert c.delete(f"/image/v2/images/{image_id}").status_code == 204

    drv.qmp(guest, "stop")  # the agent cannot answer: vCPUs stopped behind strato's back
    try:
        failed = one_run("required")
        assert failed["status"] == "error" and failed["message"].startswith(
            "createImage failed"), failed
    finally:
        drv.qmp(guest, "cont")
    with drv.agent(guest) as ga:
        assert ga.fsfreeze_status() == "thawed"
    with db.session(readonly=True) as session:  # the failed run's image was undone
        assert session.get(Image, failed["image_id"]) is None or session.get(
            Image, failed["image_id"]).status in ("deleted", "killed")


def test_retention_by_age(srv: Server, db: Database, guest: str) -> None:
    """``max_age`` alone: each run deletes the schedule's snapshots older than it."""
    with _client(srv) as c:
        sch_id = c.post(_base(guest), json={"snapshot_schedule": {
            "schedule": {"interval": 2}, "retention": {"max_age": 3}}}).json()[
            "snapshot_schedule"]["id"]
    _until("five successful runs", lambda: len([
        e for e in _events(db, sch_id, "end") if e["status"] == "success"]) >= 5, 90)
    with _client(srv) as c:
        assert c.put(f"{_base(guest)}/{sch_id}", json={"snapshot_schedule": {
            "enabled": False}}).status_code == 200
    _until("quiet", lambda: _quiet(db, sch_id), 60)
    kept = _images(db, sch_id)
    made = {e["image_id"] for e in _events(db, sch_id, "end") if e["image_id"]}
    assert 1 <= len(kept) <= 2 < len(made), (kept, made)
    with db.session(readonly=True) as session:
        newest = max(session.get(Image, i).created_at for i in kept)
        assert all(newest - session.get(Image, i).created_at <= timedelta(seconds=3)
                   for i in kept)
    with _client(srv) as c:
        assert c.delete(f"{_base(guest)}/{sch_id}").status_code == 204
        for image_id in kept:
            assert c.delete(f"/image/v2/images/{image_id}").status_code == 204
