"""The issue's proof at full length (``make test-schedules-long``, not in ``make test``):
a schedule every minute (``* * * * *``) on a running guest for 10 minutes with retention
3, and a ``kill -9`` + restart of strato in the middle, down across a minute boundary.

Exactly the expected snapshots exist at the end, the guest's chain depth stays bounded,
and the restart neither skipped the schedule for good nor ran a slot twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from strato.db import Database
from tests.compute.conftest import boot_ready, guest_server
from tests.compute.test_snapshot_schedules import (
    _base,
    _client,
    _depth,
    _events,
    _images,
    _quiet,
    _slot,
    _until,
)
from tests.support import Server

MINUTES = 10


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with guest_server(tmp_path_factory.mktemp("long"), {"jobs": {"lease_seconds": "10"}}) \
            as server:
        yield server


def test_every_minute_for_ten_minutes_keep_three_with_a_restart(srv: Server) -> None:
    from strato.config import load

    db = Database(load(srv.conf).database.connection)
    guest = boot_ready(srv, "--image", "strato-guest", prefix="long")
    disk = f"{guest}_disk"
    start_depth = _until("a settled chain", lambda: _depth(srv, disk))
    with _client(srv) as c:
        sched = c.post(_base(guest), json={"snapshot_schedule": {
            "name": "minutely", "schedule": {"cron": "* * * * *"},
            "retention": {"count": 3}}}).json()["snapshot_schedule"]
    sch_id = sched["id"]
    end = time.monotonic() + MINUTES * 60
    depths: list[int] = []

    def watch(until: float) -> None:
        while time.monotonic() < until:
            d = _depth(srv, disk)
            if d is not None:
                depths.append(d)
            time.sleep(1)

    watch(time.monotonic() + 4.5 * 60)
    assert srv.proc is not None
    killed_at = datetime.now(UTC)
    srv.proc.kill()
    assert srv.proc.wait(30) == -9
    # down across two minute boundaries: the first missed slot runs once at the
    # restart, the second is skipped for good
    boundary = killed_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    time.sleep((boundary + timedelta(seconds=65) - datetime.now(UTC)).total_seconds())
    srv.start()
    up_at = datetime.now(UTC)
    watch(end)
    with _client(srv) as c:
        c.put(f"{_base(guest)}/{sch_id}", json={"snapshot_schedule": {"enabled": False}})
    _until("the last run to finish", lambda: _quiet(db, sch_id), 120)

    started, ended = _events(db, sch_id, "start"), _events(db, sch_id, "end")
    slots = [_slot(e["slot"]) for e in started]
    assert len(set(slots)) == len(slots) and all(s.second == 0 for s in slots), slots
    grid = [slots[0] + timedelta(minutes=k)
            for k in range(int((slots[-1] - slots[0]).total_seconds() // 60) + 1)]
    missed = [g for g in grid if g not in slots]
    assert missed and all(killed_at < m <= up_at + timedelta(seconds=2) for m in missed)
    assert len([s for s in slots if killed_at < s <= up_at]) == 1
    assert len(slots) >= MINUTES - 3, slots
    assert Counter(e["slot"] for e in ended) == Counter(e["slot"] for e in started)
    good = [e for e in ended if e["status"] == "success"]
    assert len(good) >= len(ended) - 1, ended  # one may find the server busy (restart)
    kept = sorted(_images(db, sch_id))
    assert kept == sorted(e["image_id"] for e in sorted(good, key=lambda e: e["slot"])[-3:])
    assert max(depths) <= start_depth + 3 + 2, (start_depth, depths)
    with _client(srv) as c:
        assert c.delete(f"{_base(guest)}/{sch_id}").status_code == 204
        for image_id in kept:
            assert c.delete(f"/image/v2/images/{image_id}").status_code == 204
    assert _until("the chain back", lambda: _depth(srv, disk) == start_depth)
    srv.openstack("server", "delete", "--wait", guest)
    db.dispose()
