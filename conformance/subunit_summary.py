"""Read a subunit v2 stream (stdin) and print one JSON object per test: id, status,
seconds and, for skips and failures, the reason (first lines of the traceback).

Runs under the Tempest venv's Python (it has python-subunit and testtools); strato's
own code never imports it.
"""

from __future__ import annotations

import json
import sys

import subunit
import testtools


def _reason(details: dict) -> str:
    for key in ("reason", "traceback"):
        if key in details:
            text = b"".join(bytes(part) for part in details[key].iter_bytes()).decode(
                "utf-8", "replace")
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            if key == "traceback":
                return " | ".join(lines[-4:])[-600:]
            return " ".join(lines)[:300]
    return ""


def main() -> None:
    out: list[dict] = []

    def on_test(test: dict) -> None:
        if test["status"] == "exists":  # the listing before the run, not a result
            return
        # a class-level failure is ``setUpClass (tempest...Class)``: kept as it comes
        tid = test["id"].split("[", 1)[0]
        start, stop = test["timestamps"]
        seconds = (stop - start).total_seconds() if start and stop else 0.0
        out.append({"id": tid, "status": test["status"], "seconds": round(seconds, 2),
                    "reason": "" if test["status"] == "success" else _reason(test["details"])})

    stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        stream.run(result)
    finally:
        result.stopTestRun()
    for row in out:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
