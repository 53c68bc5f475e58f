"""A process counts as gone only when all its threads are: a killed QEMU's leader
turns zombie first while its vCPU threads, which share its fd table (taps, disks),
are still on their way out."""

from __future__ import annotations

import subprocess
import sys
import time

from strato.virt.qemu import process

# the main thread leaves with a bare exit(2) (not exit_group): it becomes a zombie
# leader while the other thread still holds the process's files for a moment
_LEADER_FIRST = """
import ctypes, threading, time
def linger():
    time.sleep(1.5)
threading.Thread(target=linger).start()
print("up", flush=True)
ctypes.CDLL(None, use_errno=True).syscall(60, 0)  # SYS_exit on x86-64
"""


def test_zombie_leader_with_a_live_thread_is_still_exiting() -> None:
    child = subprocess.Popen([sys.executable, "-c", _LEADER_FIRST], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        deadline = time.monotonic() + 5
        while process._state_of(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process._state_of(child.pid) == "Z"  # the leader is out ...
        assert process._proc(child.pid) == (b"", "Z")  # ... its thread is not
        deadline = time.monotonic() + 5
        while process._proc(child.pid) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process._proc(child.pid) is None  # the last thread out: gone
    finally:
        child.kill()
        child.wait()
