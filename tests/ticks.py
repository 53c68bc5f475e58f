"""A guest that counts on its serial console, and a reader of that count: how the
live-migration tests and ``bench/migrate.py`` see that a moved guest never stopped,
restarted or lost a step."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

#: a whole line only: a kernel message printed on the console can land inside a line
#: the guest's tty is sending ("TICK 46[ 20.1] ...\n3"), which is not tick 46
TICK = re.compile(rb"^TICK (\d+)\r?$", re.M)


def ticker(disk: bool = True, every: float = 0.02) -> str:
    """The guest's shell loop: ``TICK n`` on the console every ``every`` s (and ``n`` in
    /mnt/root/ticks, synced every 10th, with ``disk``).  ``dmesg -n 2`` first: only
    alerts and emergencies (an oops, a panic) still reach the console, so a warning a
    loaded host provokes (a stall, an unstable clock) does not cut a tick in two."""
    store = "echo $i >/mnt/root/ticks; [ $((i % 10)) = 0 ] && sync; " if disk else ""
    return ("dmesg -n 2; i=0; while :; do i=$((i+1)); echo \"TICK $i\" >/dev/ttyS0; "
            f"{store}sleep {every}; done")


TICKER = ticker()


class Ticks:
    """Every TICK number seen on the given console logs, with when it was first seen."""

    def __init__(self, *logs: Path, poll: float = 0.005) -> None:
        self.offsets = {p: 0 for p in logs}
        self.seen: dict[int, float] = {}
        self.poll = poll
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def add(self, log: Path) -> None:
        self.offsets.setdefault(log, 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for p, off in list(self.offsets.items()):
                try:
                    with open(p, "rb") as f:
                        f.seek(off)
                        data = f.read()
                except FileNotFoundError:
                    continue
                cut = data.rfind(b"\n") + 1
                self.offsets[p] = off + cut
                for m in TICK.finditer(data[:cut]):
                    self.seen.setdefault(int(m.group(1)), now)
            time.sleep(self.poll)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def last(self) -> int:
        return max(self.seen, default=0)

    def unbroken(self) -> bool:
        """No number skipped between the first and the last seen."""
        nums = sorted(self.seen)
        return nums == list(range(nums[0], nums[-1] + 1)) if nums else False

    def largest_gap(self) -> float:
        """Seconds between the first sightings of two consecutive numbers, at most."""
        items = sorted(self.seen.items())
        return max((b[1] - a[1] for a, b in zip(items, items[1:], strict=False)),
                   default=0.0)

    def wait_past(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.last() < n:
            assert time.monotonic() < deadline, f"the guest stopped ticking at {self.last()}"
            time.sleep(0.05)
