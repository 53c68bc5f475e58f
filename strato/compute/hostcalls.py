"""Calls the API makes to a guest's host and waits for (Nova's RPC *calls*): a short
job for ``host:<inst.host>`` whose ``result`` the API polls, bounded in time.

The API process reads nothing of a guest itself unless the guest runs on its own host
(the embedded one-box case): on a scale-out deployment the guest's files (console log,
QMP sockets) are on another machine, and only that host's worker can read them.  A host
that is down is refused at once (409, the guest cannot answer); one that is up but does
not answer in time is a 503 and its job is withdrawn.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, update

from strato.compute.hosts import host_is_up
from strato.compute.models import Instance
from strato.exceptions import Conflict, ServiceUnavailable
from strato.jobs.models import DONE, FAILED, PENDING, Job
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, PermanentError, handler
from strato.virt.qemu.errors import InstanceNotFound

#: how long the API waits for a host's answer (Nova's rpc_response_timeout is 60 s;
#: these calls read a file or a QMP query: seconds at most on a live host)
CALL_TIMEOUT = 20.0
_POLL = 0.05


def runs_here(conf: Any, inst: Instance) -> bool:
    """Does this process's host run the guest (so its driver can read it directly)?"""
    return bool(inst.host) and inst.host == conf.DEFAULT.host


def call(db: Any, conf: Any, inst: Instance, name: str, payload: dict[str, Any],
         what: str, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
    """Run job ``name`` on ``inst``'s host and return its result.  ``what`` names the
    operation in faults (Nova's words: ``Cannot 'get_console_output' instance …``)."""
    if not inst.host:
        raise Conflict(f"Instance {inst.id} is not ready")
    return call_host(db, conf, inst.host, name, {"instance_id": inst.id, **payload},
                     f"Cannot '{what}' instance {inst.id}", timeout)


def call_host(db: Any, conf: Any, host: str, name: str, payload: dict[str, Any],
              subject: str, timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
    """Run job ``name`` on compute host ``host`` and return its result; ``subject``
    opens the faults' messages."""
    with db.session() as session:
        if not host_is_up(session, conf, host):
            raise Conflict(f"{subject}: the compute service of its host {host} is down.")
        job_id = enqueue(session, name, payload, target=f"host:{host}",
                         max_attempts=1).id
    deadline = time.monotonic() + timeout
    try:
        while True:
            with db.session(readonly=True) as session:
                job = session.get(Job, job_id)
                state, result, error = (job.state, job.result, job.error) if job else \
                    (FAILED, None, "the job is gone")
            if state == DONE:
                return dict(result or {})
            if state == FAILED:
                raise ServiceUnavailable(f"{subject}: its host {host} failed to answer "
                                         f"({error}).")
            if time.monotonic() >= deadline:
                with db.session() as session:  # not started yet: it never will be
                    session.execute(update(Job).where(
                        Job.id == job_id, Job.state == PENDING).values(
                        state=FAILED, error="the API stopped waiting"))
                raise ServiceUnavailable(f"{subject}: its host {host} did not answer in "
                                         f"{timeout:.0f}s.")
            time.sleep(_POLL)
    finally:
        with db.session() as session:  # an answer is read once: keep no copy of it
            session.execute(delete(Job).where(Job.id == job_id, Job.state.in_(
                (DONE, FAILED))))


@handler("compute.host_uptime")
def host_uptime(ctx: JobContext) -> dict[str, Any]:
    """This host's ``uptime`` line (os-hypervisors' uptime of a host that is not the
    API's: ``call_host(..., "compute.host_uptime", {}, ...)["uptime"]``)."""
    from strato.compute.hosts import uptime_text

    return {"uptime": uptime_text()}


@handler("compute.console_output")
def console_output(ctx: JobContext) -> dict[str, Any]:
    """The guest's serial console log on this host (``length`` lines, None: all)."""
    length = ctx.payload.get("length")
    try:
        return {"output": ctx.services.virt.console_output(ctx.payload["instance_id"],
                                                            length)}
    except InstanceNotFound:  # moved meanwhile: the caller asks again
        raise PermanentError(f"instance {ctx.payload['instance_id']} is not on this "
                             "host") from None
