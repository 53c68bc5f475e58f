"""Which QEMU guests may outlive the test module that started them.

``tests/conftest.py`` fails a module that leaves a guest of this run running (a leaked
guest spins a core for the rest of CI).  A session fixture that boots guests on purpose
for several modules registers the directory they run under with ``keep_for_session``;
the session fixture must still destroy them at the end of the run (checked too).
"""

from __future__ import annotations

from pathlib import Path

#: directories (as they appear in a QEMU command line) of guests kept for the session
SESSION_GUESTS: set[str] = set()


def keep_for_session(directory: Path) -> None:
    """Guests whose command line names ``directory`` may span modules."""
    SESSION_GUESTS.add(f"{Path(directory).absolute()}/")


def kept(cmdline: str) -> bool:
    return any(d in cmdline for d in SESSION_GUESTS)
