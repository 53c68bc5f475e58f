"""Durable jobs on SQLite and PostgreSQL: atomic enqueue, leases, retries, crashes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from strato.db import Database, utcnow
from strato.identity.models import Domain
from strato.jobs import queue
from strato.jobs.models import DONE, FAILED, PENDING, RUNNING, Job
from strato.jobs.worker import JobContext, PermanentError, Worker
from tests.support import ROOT


def _jobs(db: Database) -> list[Job]:
    with db.session() as s:
        jobs = list(s.scalars(select(Job).order_by(Job.id)))
        s.expunge_all()
        return jobs


def test_enqueue_is_atomic_with_the_state_change(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        s.add(Domain(id="d1", name="one"))
        queue.enqueue(s, "record", {"x": 1})
        raise RuntimeError("the request fails after both writes")
    with db.session() as s:
        assert s.get(Domain, "d1") is None
    assert _jobs(db) == []

    with db.session() as s:
        s.add(Domain(id="d2", name="two"))
        job = queue.enqueue(s, "record", {"x": 2})
        job_id = job.id
    with db.session() as s:
        assert s.get(Domain, "d2") is not None
    assert [(j.id, j.state, j.payload) for j in _jobs(db)] == [(job_id, PENDING, {"x": 2})]


def test_worker_runs_only_its_handlers_and_targets(db: Database) -> None:
    ran: list[tuple[str, Any]] = []

    def record(ctx: JobContext) -> dict:
        ran.append((ctx.target, ctx.payload["n"]))
        return {"n": ctx.payload["n"]}

    with db.session() as s:
        queue.enqueue(s, "record", {"n": 1}, target="host:a")
        queue.enqueue(s, "record", {"n": 2}, target="host:b")
        queue.enqueue(s, "other", {"n": 3}, target="host:a")
        queue.enqueue(s, "record", {"n": 4}, target="host:a", delay=3600)
    worker = Worker(db, ["host:a"], handlers={"record": record}, lease=5)
    while worker.run_once():
        pass
    assert ran == [("host:a", 1)]
    states = {j.payload["n"]: (j.state, j.result) for j in _jobs(db)}
    assert states == {1: (DONE, {"n": 1}), 2: (PENDING, None), 3: (PENDING, None),
                      4: (PENDING, None)}


def test_failures_retry_with_backoff_then_succeed(db: Database) -> None:
    calls: list[int] = []

    def flaky(ctx: JobContext) -> dict:
        calls.append(ctx.attempt)
        if ctx.attempt < 3:
            raise OSError(f"transient failure {ctx.attempt}")
        return {"ok": True}

    with db.session() as s:
        queue.enqueue(s, "flaky", max_attempts=5)
    worker = Worker(db, handlers={"flaky": flaky}, lease=5, retry_backoff=1.0)
    assert worker.run_once()
    job = _jobs(db)[0]
    assert (job.state, job.attempts, job.error) == (PENDING, 1, "OSError: transient failure 1")
    first_delay = (job.run_after - job.updated_at).total_seconds()
    assert not worker.run_once(), "a job waiting for its backoff must not run"
    time.sleep(1.1)
    assert worker.run_once()
    job = _jobs(db)[0]
    second_delay = (job.run_after - job.updated_at).total_seconds()
    assert 0.9 < first_delay < 1.2 and 1.9 < second_delay < 2.2  # doubled
    time.sleep(2.1)
    assert worker.run_once()
    job = _jobs(db)[0]
    assert (job.state, job.attempts, job.result, job.error) == (DONE, 3, {"ok": True}, None)
    assert calls == [1, 2, 3]


def test_permanent_error_and_exhausted_attempts_fail_the_job(db: Database) -> None:
    def broken(ctx: JobContext) -> None:
        raise PermanentError("the volume is gone")

    def always(ctx: JobContext) -> None:
        raise ValueError("nope")

    with db.session() as s:
        queue.enqueue(s, "broken", max_attempts=5)
        queue.enqueue(s, "always", max_attempts=2)
    worker = Worker(db, handlers={"broken": broken, "always": always}, lease=5,
                    retry_backoff=0.01)
    for _ in range(3):
        worker.run_once()
        time.sleep(0.03)
    jobs = {j.name: j for j in _jobs(db)}
    assert (jobs["broken"].state, jobs["broken"].attempts) == (FAILED, 1)
    assert "the volume is gone" in jobs["broken"].error
    assert (jobs["always"].state, jobs["always"].attempts) == (FAILED, 2)
    assert jobs["always"].finished_at is not None


def test_a_lapsed_lease_is_taken_over_and_the_old_owner_is_fenced(db: Database) -> None:
    with db.session() as s:
        job_id = queue.enqueue(s, "record").id
    first = queue.claim(db, "worker-a", ["record"], ["any"], lease=60)
    assert first is not None and first.id == job_id
    assert queue.claim(db, "worker-b", ["record"], ["any"], lease=60) is None
    with db.session() as s:  # worker-a goes silent: its lease runs out
        s.execute(update(Job).values(lease_expires=utcnow() - timedelta(seconds=1)))
    second = queue.claim(db, "worker-b", ["record"], ["any"], lease=60)
    assert second is not None and second.attempts == 2
    assert not queue.complete(db, job_id, "worker-a", {"by": "a"})
    assert not queue.renew(db, job_id, "worker-a", 60)
    assert queue.complete(db, job_id, "worker-b", {"by": "b"})
    job = queue.get(db, job_id)
    assert (job.state, job.result, job.lease_owner) == (DONE, {"by": "b"}, None)


def test_lapsed_lease_on_the_last_attempt_fails_the_job(db: Database) -> None:
    with db.session() as s:
        job_id = queue.enqueue(s, "record", max_attempts=1).id
    assert queue.claim(db, "worker-a", ["record"], ["any"], lease=60)
    with db.session() as s:
        s.execute(update(Job).values(lease_expires=utcnow() - timedelta(seconds=1)))
    assert queue.claim(db, "worker-b", ["record"], ["any"], lease=60) is None
    job = queue.get(db, job_id)
    assert job.state == FAILED and "lapsed" in job.error


def test_stopping_worker_releases_the_job_at_a_checkpoint(db: Database) -> None:
    steps: list[int] = []
    worker: Worker

    def stepper(ctx: JobContext) -> dict:
        for step in range(ctx.progress.get("step", 0), 4):
            steps.append(step)
            if step == 1:
                worker.stop()  # SIGTERM arrives during step 1
            ctx.checkpoint(step=step + 1)
        return {"steps": 4}

    with db.session() as s:
        job_id = queue.enqueue(s, "stepper").id
    worker = Worker(db, handlers={"stepper": stepper}, lease=5)
    worker.run_once()
    job = queue.get(db, job_id)
    assert steps == [0, 1], "step 1 is finished, step 2 is not started"
    assert (job.state, job.attempts, job.progress, job.lease_owner) == (
        PENDING, 0, {"step": 2}, None)
    worker = Worker(db, handlers={"stepper": stepper}, lease=5)
    worker.run_once()
    assert steps == [0, 1, 2, 3]
    assert queue.get(db, job_id).state == DONE


# ---------------------------------------------------------------- real processes
def _spawn(db_url: str, owner: str, lease: float, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.job_worker", db_url, owner, str(lease), str(log)],
        cwd=ROOT,
    )


def _events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def _wait(predicate, timeout: float = 30, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_killed_mid_job_is_finished_by_another(db: Database, db_url: str,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    with db.session() as s:
        job_id = queue.enqueue(s, "sleepy", {"steps": 6, "step_seconds": 0.3}).id
    victim = _spawn(db_url, "victim", 1.5, log)
    try:
        _wait(lambda: (queue.get(db, job_id).progress or {}).get("step", 0) >= 2,
              what="the victim to checkpoint two steps")
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        victim.kill()
    killed = queue.get(db, job_id)
    assert killed.state == RUNNING  # still leased by the dead worker
    saved = killed.progress["step"]  # the last checkpoint that reached the database
    killed_at = time.time()
    rescuer = _spawn(db_url, "rescuer", 1.5, log)
    try:
        _wait(lambda: queue.get(db, job_id).state == DONE, what="the job to finish")
    finally:
        rescuer.send_signal(signal.SIGTERM)
        rescuer.wait(10)
    job = queue.get(db, job_id)
    assert job.result == {"by": "rescuer"} and job.attempts == 2
    starts = [e for e in _events(log) if e["event"] == "start"]
    assert [s["owner"] for s in starts] == ["victim", "rescuer"]
    assert starts[1]["step"] == saved >= 2, "the rescuer resumes from the last checkpoint"
    assert starts[1]["t"] >= killed_at, "taken over only after the lease ran out"


def test_sigterm_finishes_the_current_step_then_exits(db: Database, db_url: str,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    with db.session() as s:
        job_id = queue.enqueue(s, "sleepy", {"steps": 50, "step_seconds": 0.3}).id
    proc = _spawn(db_url, "w1", 10, log)
    try:
        _wait(lambda: any(e["event"] == "start" for e in _events(log)), what="job start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    events = _events(log)
    assert events[-1]["event"] == "exit"
    steps = [e["step"] for e in events if e["event"] == "step"]
    job = queue.get(db, job_id)
    assert (job.state, job.lease_owner) == (PENDING, None)
    assert job.progress == {"step": steps[-1] + 1}, "the step in hand was finished and saved"
    assert len(steps) < 50


def test_many_workers_never_run_the_same_job(db: Database, db_url: str,
                                             tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    n = 60
    with db.session() as s:
        for i in range(n):
            queue.enqueue(s, "record", {"i": i, "seconds": 0.01})
    workers = [_spawn(db_url, f"w{i}", 30, log) for i in range(4)]
    try:
        _wait(lambda: all(j.state == DONE for j in _jobs(db)), timeout=90,
              what="all jobs done")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(10)
    runs = [e for e in _events(log) if e["event"] == "ran"]
    counts = Counter(e["job"] for e in runs)
    assert len(counts) == n and set(counts.values()) == {1}, counts.most_common(3)
    assert {j.attempts for j in _jobs(db)} == {1}
    assert len({e["owner"] for e in runs}) > 1, "the work was shared between workers"


def test_a_commit_wakes_idle_workers_in_the_process(db: Database) -> None:
    """Workers poll rarely; a job committed in-process starts at once all the same."""
    import threading

    done = threading.Event()

    def quick(ctx: JobContext) -> None:
        done.set()

    worker = Worker(db, handlers={"quick": quick}, lease=5, poll_interval=60)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        time.sleep(0.3)  # the worker found nothing and sleeps for up to 60 s
        with db.session() as s:
            queue.enqueue(s, "quick")
        assert done.wait(10), "the worker was not woken by the commit"
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
