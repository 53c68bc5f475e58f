"""Two workers never run the same slot of a snapshot schedule: concurrent claims on
one database (SQLite and PostgreSQL), and the claim's next job in the same commit."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

from sqlalchemy import select

from strato.compute.schedule_models import SnapshotSchedule
from strato.compute.schedule_runner import claim
from strato.compute.schedules import slot_text
from strato.db import Database, utcnow
from strato.events import Event
from strato.jobs.models import Job

CLAIMERS = 8


def _schedule(db: Database, slot_ago: float) -> tuple[str, object]:
    now = utcnow().replace(microsecond=0)
    slot = now - timedelta(seconds=slot_ago)
    sid = str(uuid.uuid4())
    with db.session() as s:
        s.add(SnapshotSchedule(
            id=sid, server_id=str(uuid.uuid4()), project_id="p", user_id="u", name="n",
            schedule={"interval": 5}, retention={"count": 1}, quiesce="never",
            enabled=True, anchor_at=slot - timedelta(seconds=5), next_run_at=slot,
            created_at=now))
    return sid, slot


def test_concurrent_claims_of_one_slot_have_one_winner(db: Database) -> None:
    sid, slot = _schedule(db, 0.0)
    barrier = threading.Barrier(CLAIMERS)
    results: list[object] = []
    lock = threading.Lock()

    def claimer() -> None:
        barrier.wait()
        got = claim(db, sid, slot)  # type: ignore[arg-type]
        with lock:
            results.append(got)

    threads = [threading.Thread(target=claimer) for _ in range(CLAIMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [r for r in results if r is not None]
    assert len(results) == CLAIMERS and len(winners) == 1, results
    with db.session(readonly=True) as s:
        row = s.get(SnapshotSchedule, sid)
        assert row.last_run_at == slot and row.next_run_at == winners[0]
        jobs = [j.payload for j in s.scalars(select(Job).where(Job.name == "schedule.run"))]
        assert jobs == [{"schedule_id": sid, "slot": slot_text(winners[0])}]
        starts = list(s.scalars(select(Event).where(
            Event.event_type == "compute.snapshot_schedule.run.start")))
        assert [e.payload["slot"] for e in starts] == [slot_text(slot)]
    # the same slot cannot be claimed again later either
    assert claim(db, sid, slot) is None  # type: ignore[arg-type]


def test_a_missed_stretch_collapses_into_one_run(db: Database) -> None:
    """Down for 10 slots: the first missed slot is claimed once, the next one is the
    first slot after now; the ones between are never claimed."""
    sid, slot = _schedule(db, 50.0)
    following = claim(db, sid, slot)  # type: ignore[arg-type]
    assert following is not None
    assert following > utcnow() and following - utcnow() <= timedelta(seconds=5)
    assert (following - slot).total_seconds() % 5 == 0  # type: ignore[operator]
    assert claim(db, sid, slot) is None  # type: ignore[arg-type]
    with db.session(readonly=True) as s:
        assert len(list(s.scalars(select(Job).where(Job.name == "schedule.run")))) == 1


def test_a_disabled_or_changed_schedule_is_not_claimed(db: Database) -> None:
    sid, slot = _schedule(db, 0.0)
    with db.session() as s:
        s.get(SnapshotSchedule, sid).enabled = False
    assert claim(db, sid, slot) is None  # type: ignore[arg-type]
    with db.session() as s:
        row = s.get(SnapshotSchedule, sid)
        row.enabled, row.next_run_at = True, slot + timedelta(seconds=5)  # type: ignore[operator]
    assert claim(db, sid, slot) is None  # type: ignore[arg-type]
