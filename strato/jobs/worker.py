"""Workers: claim jobs for their targets, run the named handler, record the outcome.

A handler is ``fn(ctx: JobContext) -> dict | None``.  It must be idempotent: a job may
run again after a crash, so a handler looks at where its resource is and continues
from there.  Long handlers call ``ctx.checkpoint(step=...)`` between steps: that saves
progress, and when the worker is stopping (SIGTERM) it ends the job there — the step
in hand is finished, the job goes back to the queue and resumes on the next start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from strato.db import Database
from strato.jobs import queue

LOG = logging.getLogger(__name__)

Handler = Callable[["JobContext"], "dict[str, Any] | None"]

#: Handlers by job name, filled by ``@handler`` in each service's manager module.
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of jobs called ``name``."""

    def register(fn: Handler) -> Handler:
        if name in HANDLERS and HANDLERS[name] is not fn:
            raise ValueError(f"job handler {name!r} registered twice")
        HANDLERS[name] = fn
        return fn

    return register


class Interrupted(Exception):  # noqa: N818 - a signal, not an error
    """Raised at a checkpoint when the worker is stopping: the job is released."""


class LeaseLost(Exception):  # noqa: N818
    """Raised at a checkpoint when another worker has taken the job over."""


class PermanentError(Exception):
    """A failure that retrying cannot mend: the job fails at once."""


@dataclass
class JobContext:
    """What a handler sees of its job, and its way to checkpoint."""

    job_id: int
    name: str
    target: str
    payload: dict[str, Any]
    attempt: int
    progress: dict[str, Any]
    services: Any
    _worker: Worker = field(repr=False)

    @property
    def stopping(self) -> bool:
        return self._worker.stopping.is_set()

    def checkpoint(self, **progress: Any) -> None:
        """Save progress; end the job here if the worker is stopping or lost it."""
        self.progress.update(progress)
        if not queue.save_progress(
            self._worker.db, self.job_id, self._worker.owner, self.progress,
            self._worker.lease,
        ):
            raise LeaseLost(f"job {self.job_id} was taken over")
        if self.stopping:
            raise Interrupted(f"worker {self._worker.owner} is stopping")


class Worker:
    """Runs jobs whose name has a handler here and whose target is one of ``targets``."""

    def __init__(
        self,
        db: Database,
        targets: Iterable[str] = (queue.ANY,),
        *,
        handlers: dict[str, Handler] | None = None,
        services: Any = None,
        lease: float = 30.0,
        poll_interval: float = 0.5,
        retry_backoff: float = 2.0,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.targets = list(targets)
        self.handlers = HANDLERS if handlers is None else handlers
        self.services = services
        self.lease = lease
        self.poll_interval = poll_interval
        self.retry_backoff = retry_backoff
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()
        with queue.WAKE:
            queue.WAKE.notify_all()

    def run_once(self) -> bool:
        """Claim and run one job; False when there was none."""
        job = queue.claim(self.db, self.owner, self.handlers, self.targets, self.lease)
        if job is None:
            return False
        ctx = JobContext(
            job_id=job.id, name=job.name, target=job.target, payload=dict(job.payload),
            attempt=job.attempts, progress=dict(job.progress or {}),
            services=self.services, _worker=self,
        )
        LOG.info("job %s %s (attempt %s/%s) started by %s", job.id, job.name,
                 job.attempts, job.max_attempts, self.owner)
        beat = _Heartbeat(self, job.id)
        beat.start()
        try:
            result = self.handlers[job.name](ctx)
        except Interrupted:
            beat.stop()
            queue.release(self.db, job.id, self.owner)
            LOG.info("job %s %s released at a checkpoint: worker stopping", job.id, job.name)
        except LeaseLost:
            beat.stop()
            LOG.warning("job %s %s: lease lost, leaving it to its new owner", job.id, job.name)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
            beat.stop()
            error = f"{type(exc).__name__}: {exc}"
            last = isinstance(exc, PermanentError) or job.attempts >= job.max_attempts
            retry_in = None if last else self.retry_backoff * 2 ** (job.attempts - 1)
            queue.fail(self.db, job.id, self.owner, error, retry_in)
            LOG.warning("job %s %s failed (%s)%s\n%s", job.id, job.name, error,
                        "" if last else f"; retry in {retry_in:.1f}s",
                        traceback.format_exc() if LOG.isEnabledFor(logging.DEBUG) else "")
        else:
            beat.stop()
            if queue.complete(self.db, job.id, self.owner, result):
                LOG.info("job %s %s done", job.id, job.name)
            else:
                LOG.warning("job %s %s finished after its lease was lost", job.id, job.name)
        return True

    def run(self) -> None:
        """Loop until :meth:`stop`; a job in hand is taken to its next checkpoint."""
        while not self.stopping.is_set():
            try:
                busy = self.run_once()
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker
                LOG.exception("worker %s: error while claiming", self.owner)
                busy = False
            if not busy and not self.stopping.is_set():
                queue.wait_for_work(self.poll_interval)


class _Heartbeat:
    """Renews a job's lease every third of it while the handler runs."""

    def __init__(self, worker: Worker, job_id: int) -> None:
        self.worker = worker
        self.job_id = job_id
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"lease-{job_id}")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.done.wait(self.worker.lease / 3):
            try:
                if not queue.renew(self.worker.db, self.job_id, self.worker.owner,
                                   self.worker.lease):
                    return
            except Exception:  # noqa: BLE001
                LOG.exception("job %s: lease renewal failed", self.job_id)


class WorkerPool:
    """``n`` worker threads sharing a database (what ``strato serve`` runs)."""

    def __init__(self, n: int, make: Callable[[int], Worker]) -> None:
        self.workers = [make(i) for i in range(n)]
        self.threads = [
            threading.Thread(target=w.run, name=f"worker-{i}", daemon=True)
            for i, w in enumerate(self.workers)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self, timeout: float | None = None) -> None:
        for w in self.workers:
            w.stop()
        for t in self.threads:
            t.join(timeout)
