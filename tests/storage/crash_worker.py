"""Run one block store operation in a child process, for the crash tests.

Usage: crash_worker.py ROOT OP JSON-ARGS.  The test sets STRATO_STORAGE_CRASHPOINT so
the engine SIGKILLs this process at a named point, or kills it from outside.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from strato.storage.local import LocalEngine


def main() -> None:
    root, op, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    a = json.loads(raw)
    eng = LocalEngine(Path(root))
    if op == "create":
        eng.create(a["pool"], a["name"], a["size"])
    elif op == "import":
        eng.import_from(a["pool"], a["name"], Path(a["path"]))
    elif op == "remove":
        eng.remove(a["pool"], a["name"])
    elif op == "clone":
        eng.clone(a["pool"], a["name"], a["snap"], a["c_pool"], a["c_name"])
    else:
        with eng.open(a["pool"], a["name"]) as img:
            if op == "snapshot":
                img.create_snap(a["snap"])
            elif op == "remove_snap":
                img.remove_snap(a["snap"])
            elif op == "rollback":
                img.rollback_to_snap(a["snap"])
            elif op == "flatten":
                img.flatten()
            elif op == "resize":
                img.resize(a["size"])
            elif op == "copy":
                img.copy(a["dest_pool"], a["dest_name"])
            elif op == "deep_copy":
                img.deep_copy(a["dest_pool"], a["dest_name"])
            elif op == "live_snapshot":
                live = img.prepare_live_snapshot(a["snap"])
                if a.get("make_overlay"):  # what QEMU's blockdev-snapshot-sync does
                    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                                    str(live.backing), "-F", live.backing_format,
                                    str(live.overlay), str(img_size(eng, a))], check=True)
                import os
                import signal

                os.kill(os.getpid(), signal.SIGKILL)  # the agent dies before committing
            else:
                raise SystemExit(f"unknown op {op}")
    print("done", flush=True)


def img_size(eng: LocalEngine, a: dict) -> int:
    return int(eng.load(a["pool"], a["name"])["size"])


if __name__ == "__main__":
    main()
