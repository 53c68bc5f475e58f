"""Enqueue, claim, renew and finish jobs; every write after the claim is fenced by the lease.

A worker owns a job only while ``lease_owner`` is its id and the lease has not run
out; each update after the claim says ``WHERE lease_owner = :me``, so a worker that
lost its lease (paused, partitioned) cannot overwrite the work of the one that took
the job over.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, event, or_, select, update
from sqlalchemy.orm import Session

from strato.db import Database, utcnow
from strato.jobs.models import DONE, FAILED, PENDING, RUNNING, Job

ANY = "any"

# Workers in this process sleep on this between polls; a commit that enqueued a job
# wakes them at once, so in-process work starts without waiting for the next poll.
WAKE = threading.Condition()


@event.listens_for(Session, "after_commit")
def _wake_workers(session: Session) -> None:
    if session.info.pop("strato_enqueued", False):
        with WAKE:
            WAKE.notify_all()


def wait_for_work(timeout: float) -> None:
    with WAKE:
        WAKE.wait(timeout)


def enqueue(
    session: Session,
    name: str,
    payload: dict[str, Any] | None = None,
    *,
    target: str = ANY,
    max_attempts: int = 5,
    delay: float = 0.0,
) -> Job:
    """Add a job to the caller's transaction: it exists only if that transaction commits."""
    job = Job(
        name=name,
        target=target,
        payload=payload or {},
        state=PENDING,
        max_attempts=max_attempts,
        run_after=utcnow() + timedelta(seconds=delay),
    )
    session.add(job)
    session.flush()
    session.info["strato_enqueued"] = True
    return job


def claim(
    db: Database, owner: str, names: Iterable[str], targets: Iterable[str], lease: float
) -> Job | None:
    """Take the oldest runnable job for these handlers and targets, or None.

    Runnable: pending and due, or running with a lapsed lease (its worker died).
    PostgreSQL skips rows other workers are claiming (``SKIP LOCKED``); SQLite
    serializes writers at BEGIN, so the select-then-update is atomic there too.
    A lapsed job with no attempts left is marked failed instead of run again.
    """
    names, targets = list(names), list(targets)
    while True:
        now = utcnow()
        with db.session() as session:
            query = (
                select(Job)
                .where(
                    Job.name.in_(names),
                    Job.target.in_(targets),
                    or_(
                        and_(Job.state == PENDING, Job.run_after <= now),
                        and_(Job.state == RUNNING, Job.lease_expires < now),
                    ),
                )
                .order_by(Job.run_after, Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            job = session.scalars(query).first()
            if job is None:
                return None
            if job.state == RUNNING and job.attempts >= job.max_attempts:
                job.state = FAILED
                job.error = (job.error or "") + (
                    f"lease of {job.lease_owner} lapsed on the last attempt"
                )
                job.lease_owner = None
                job.lease_expires = None
                job.finished_at = now
                continue
            job.state = RUNNING
            job.lease_owner = owner
            job.lease_expires = now + timedelta(seconds=lease)
            job.attempts += 1
            session.flush()
            session.expunge(job)
            return job


def _fenced(session: Session, job_id: int, owner: str, **values: Any) -> bool:
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.state == RUNNING)
        .values(updated_at=utcnow(), **values)
    )
    return result.rowcount == 1


def renew(db: Database, job_id: int, owner: str, lease: float) -> bool:
    """Extend the lease; False means it was lost to another worker."""
    with db.session() as session:
        return _fenced(
            session, job_id, owner, lease_expires=utcnow() + timedelta(seconds=lease)
        )


def save_progress(
    db: Database, job_id: int, owner: str, progress: dict[str, Any], lease: float
) -> bool:
    """Record how far the job got (and renew); False means the lease was lost."""
    with db.session() as session:
        return _fenced(
            session, job_id, owner, progress=progress,
            lease_expires=utcnow() + timedelta(seconds=lease),
        )


def complete(db: Database, job_id: int, owner: str, result: dict[str, Any] | None) -> bool:
    with db.session() as session:
        return _fenced(
            session, job_id, owner, state=DONE, result=result, lease_owner=None,
            lease_expires=None, finished_at=utcnow(), error=None,
        )


def fail(
    db: Database, job_id: int, owner: str, error: str, retry_in: float | None
) -> bool:
    """Record an error: back to pending after ``retry_in`` seconds, or failed for good."""
    now = utcnow()
    with db.session() as session:
        if retry_in is None:
            return _fenced(
                session, job_id, owner, state=FAILED, error=error, lease_owner=None,
                lease_expires=None, finished_at=now,
            )
        return _fenced(
            session, job_id, owner, state=PENDING, error=error, lease_owner=None,
            lease_expires=None, run_after=now + timedelta(seconds=retry_in),
        )


def release(db: Database, job_id: int, owner: str) -> bool:
    """Give a job back untouched (worker stopping): this attempt does not count."""
    with db.session() as session:
        return _fenced(
            session, job_id, owner, state=PENDING, lease_owner=None, lease_expires=None,
            attempts=Job.attempts - 1,
        )


def get(db: Database, job_id: int) -> Job | None:
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is not None:
            session.expunge(job)
        return job
