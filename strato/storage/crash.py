"""Named crash points for the crash tests.

``STRATO_STORAGE_CRASHPOINT=snapshot:after-overlay`` makes the process SIGKILL itself
when the engine reaches that point, exactly as an OOM kill or power cut would stop it.
Unset (always, outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "STRATO_STORAGE_CRASHPOINT"


def point(op: str, where: str) -> None:
    want = os.environ.get(ENV)
    if want and want == f"{op}:{where}":
        os.kill(os.getpid(), signal.SIGKILL)
