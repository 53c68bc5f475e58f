"""Named crash points for the crash tests, and injected faults.

``STRATO_STORAGE_CRASHPOINT=snapshot:after-overlay`` makes the process SIGKILL itself
when the engine reaches that point, exactly as an OOM kill or power cut would stop it.
Unset (always, outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "STRATO_STORAGE_CRASHPOINT"


def during(subcommand: str) -> float | None:
    """Seconds after starting ``qemu-img <subcommand>`` at which to die, if asked to.

    ``STRATO_STORAGE_CRASHPOINT=qemu-img:rebase:10`` kills the engine 10 ms into a
    rebase, while qemu-img is copying (the child dies with us: PR_SET_PDEATHSIG).
    """
    want = os.environ.get(ENV, "")
    parts = want.split(":")
    if len(parts) == 3 and parts[0] == "qemu-img" and parts[1] == subcommand:
        return float(parts[2]) / 1000
    return None


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def point(op: str, where: str) -> None:
    """Die here when ``STRATO_STORAGE_CRASHPOINT`` names this point; a running server
    can also be told to (``kill``) or to fail here through its fault file (``fault``)."""
    want = os.environ.get(ENV)
    if want and want == f"{op}:{where}":
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(FAULT_FILE_ENV):
        fault(op, where)


FAULT_FILE_ENV = "STRATO_FAULT_FILE"


class InjectedFault(RuntimeError):
    """A failure a test asked for (``fault``)."""


def fault(op: str, where: str) -> None:
    """Fail (or die) here once, when the file named by ``STRATO_FAULT_FILE`` says
    ``fail <op>:<where>`` (or ``kill``, or ``sleep=<seconds>``); the file is consumed.  Lets a test
    inject a failure into a running server.  Unset outside tests: one dict lookup."""
    path = os.environ.get(FAULT_FILE_ENV)
    if not path:
        return
    try:
        with open(path) as f:
            words = f.read().split()
    except FileNotFoundError:
        return
    if len(words) != 2 or words[1] != f"{op}:{where}":
        return
    os.unlink(path)
    if words[0] == "kill":
        die()
    if words[0].startswith("sleep="):  # hold here, so a test can act meanwhile
        time.sleep(float(words[0].removeprefix("sleep=")))
        return
    raise InjectedFault(f"injected fault at {op}:{where}")
