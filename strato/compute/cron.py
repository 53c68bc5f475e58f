"""Five-field cron expressions (minute hour day-of-month month day-of-week), in UTC.

A small parser of our own for snapshot schedules: ``*``, numbers, lists (``1,5``),
ranges (``1-5``), steps (``*/15``, ``10-50/10``), month and weekday names (``jan``,
``mon``), and ``7`` for Sunday.  As in Vixie cron, when both day fields are restricted
a day matches if either does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_NAMES = {
    3: {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul",
                                         "aug", "sep", "oct", "nov", "dec"))},
    4: {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_FIELDS = ("minute", "hour", "day of month", "month", "day of week")


class CronError(ValueError):
    """An expression that is not a valid five-field cron line."""


def _value(text: str, index: int) -> int:
    names = _NAMES.get(index, {})
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise CronError(f"{_FIELDS[index]}: {text!r} is not a number")
    low, high = _BOUNDS[index]
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{_FIELDS[index]}: {number} is outside {low}-{high}")
    return number


def _field(text: str, index: int) -> frozenset[int]:
    low, high = _BOUNDS[index]
    out: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{_FIELDS[index]}: empty list item")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{_FIELDS[index]}: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, index), _value(b, index)
            if start > end:
                raise CronError(f"{_FIELDS[index]}: range {base!r} runs backwards")
        else:
            start = _value(base, index)
            end = high if step_text else start  # "5/15": from 5 to the end, as cron does
        out.update(range(start, end + 1, step))
    if index == 4 and 7 in out:  # 7 is Sunday too
        out.discard(7)
        out.add(0)
    return frozenset(out)


@dataclass(frozen=True)
class Cron:
    """A parsed expression; :meth:`next_after` gives the next matching minute."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        parts = expression.split()
        if len(parts) != 5:
            raise CronError(f"a cron expression has 5 fields, {expression!r} has "
                            f"{len(parts)}")
        f = [_field(p, i) for i, p in enumerate(parts)]
        cron = cls(expression, f[0], f[1], f[2], f[3], f[4],
                   parts[2].startswith("*"), parts[4].startswith("*"))
        if not any(cron._day_ok(datetime(2000 + y, m, 1, tzinfo=UTC) + timedelta(days=d))
                   for y in range(0, 28, 4) for m in cron.months for d in range(31)):
            raise CronError(f"{expression!r} never matches a date")
        return cron

    def _day_ok(self, when: datetime) -> bool:
        if when.month not in self.months:
            return False
        day = when.day in self.days
        weekday = (when.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday
        if self.any_weekday:
            return day
        return day or weekday

    def next_after(self, when: datetime) -> datetime:
        """The first matching minute strictly after ``when`` (aware, UTC)."""
        t = when.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = t + timedelta(days=366 * 8)  # Feb 29 on a given weekday: within 28 years
        while t < limit:
            if not self._day_ok(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t
        raise CronError(f"{self.expression!r} has no match within 8 years")  # pragma: no cover
