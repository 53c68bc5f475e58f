"""Named crash points for the crash tests.

``STRATO_STORAGE_CRASHPOINT=snapshot:after-overlay`` makes the process SIGKILL itself
when the engine reaches that point, exactly as an OOM kill or power cut would stop it.
Unset (always, outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

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
    want = os.environ.get(ENV)
    if want and want == f"{op}:{where}":
        os.kill(os.getpid(), signal.SIGKILL)
