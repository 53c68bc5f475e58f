"""A worker process for the job tests: ``python -m tests.job_worker DB_URL OWNER LEASE LOG``.

Its handlers write JSON lines to LOG, so the test can see who ran what and when.
SIGTERM stops it after the current step, as `strato worker` does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from strato.db import Database
from strato.jobs.worker import JobContext, Worker


def main() -> None:
    db_url, owner, lease, log_path = sys.argv[1:5]

    def log(**record: Any) -> None:
        line = json.dumps({"owner": owner, "t": time.time(), **record}) + "\n"
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, line.encode())
        os.close(fd)

    def sleepy(ctx: JobContext) -> dict:
        first = ctx.progress.get("step", 0)
        log(event="start", job=ctx.job_id, step=first, attempt=ctx.attempt)
        for step in range(first, ctx.payload["steps"]):
            time.sleep(ctx.payload.get("step_seconds", 0.2))
            log(event="step", job=ctx.job_id, step=step)
            ctx.checkpoint(step=step + 1)
        log(event="done", job=ctx.job_id)
        return {"by": owner}

    def record(ctx: JobContext) -> dict:
        started = time.time()
        time.sleep(ctx.payload.get("seconds", 0.02))
        log(event="ran", job=ctx.job_id, start=started, end=time.time(), attempt=ctx.attempt)
        return {"by": owner}

    worker = Worker(Database(db_url), handlers={"sleepy": sleepy, "record": record},
                    lease=float(lease), poll_interval=0.05, retry_backoff=0.1, owner=owner)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    log(event="ready")
    worker.run()
    log(event="exit")


if __name__ == "__main__":
    main()
