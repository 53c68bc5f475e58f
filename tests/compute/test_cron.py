"""strato's five-field cron parser (snapshot schedules), and the interval grid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from strato.compute.cron import Cron, CronError
from strato.compute.schedules import next_slot


def _t(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("expr", "after", "expect"), [
    ("* * * * *", _t(2026, 12, 3, 0, 0, 30), _t(2026, 12, 3, 0, 1)),
    ("* * * * *", _t(2026, 12, 3, 0, 1), _t(2026, 12, 3, 0, 2)),  # strictly after
    ("0 * * * *", _t(2026, 12, 3, 0, 1), _t(2026, 12, 3, 1, 0)),
    ("*/15 * * * *", _t(2026, 12, 3, 0, 16), _t(2026, 12, 3, 0, 30)),
    ("10-50/20 * * * *", _t(2026, 12, 3, 0, 31), _t(2026, 12, 3, 0, 50)),
    ("5/20 * * * *", _t(2026, 12, 3, 0, 46), _t(2026, 12, 3, 1, 5)),
    ("0 0 1,15 * *", _t(2026, 12, 2), _t(2026, 12, 15)),
    ("30 2 * * mon-fri", _t(2026, 12, 4, 3), _t(2026, 12, 7, 2, 30)),  # Fri -> Mon
    ("0 0 * * 7", _t(2026, 12, 3), _t(2026, 12, 6)),  # 7 is Sunday
    ("0 0 * * sun", _t(2026, 12, 3), _t(2026, 12, 6)),
    ("0 12 * feb *", _t(2026, 12, 3), _t(2027, 2, 1, 12)),
    ("0 0 29 2 *", _t(2026, 3, 1), _t(2028, 2, 29)),  # leap day
    ("0 0 31 * *", _t(2026, 4, 1), _t(2026, 5, 31)),  # skips April
    ("59 23 31 12 *", _t(2026, 12, 31, 23, 59), _t(2027, 12, 31, 23, 59)),
    # both day fields restricted: either matches (Vixie cron)
    ("0 0 13 * fri", _t(2026, 12, 3), _t(2026, 12, 4)),
    ("0 0 13 * fri", _t(2026, 12, 11, 1), _t(2026, 12, 13)),
])
def test_next_after(expr: str, after: datetime, expect: datetime) -> None:
    assert Cron.parse(expr).next_after(after) == expect


@pytest.mark.parametrize("expr", [
    "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * 32 * *",
    "* * * 13 *", "* * * * 8", "*/0 * * * *", "5-1 * * * *", "a * * * *", "1,,2 * * * *",
    "0 0 30 2 *", "-1 * * * *", "* * * foo *",
])
def test_invalid(expr: str) -> None:
    with pytest.raises(CronError):
        Cron.parse(expr)


def test_lists_ranges_and_steps_combined() -> None:
    cron = Cron.parse("1,10-12,*/30 * * * *")
    assert sorted(cron.minutes) == [0, 1, 10, 11, 12, 30]


def test_interval_grid_is_anchored_and_strictly_after() -> None:
    anchor = _t(2026, 12, 3, 0, 0, 0)
    spec = {"interval": 6}
    assert next_slot(spec, anchor, anchor) == anchor + timedelta(seconds=6)
    assert next_slot(spec, anchor, anchor + timedelta(seconds=5.9)) == \
        anchor + timedelta(seconds=6)
    assert next_slot(spec, anchor, anchor + timedelta(seconds=6)) == \
        anchor + timedelta(seconds=12)
    # after a long downtime: the next point of the grid, once (not every missed one)
    assert next_slot(spec, anchor, anchor + timedelta(seconds=100.5)) == \
        anchor + timedelta(seconds=102)
    assert next_slot({"cron": "* * * * *"}, anchor, anchor) == anchor + timedelta(minutes=1)
