"""Where a guest's jobs run: on the host the guest is on when the job *starts*.

A compute job is enqueued for ``host:<inst.host>`` as the instance row says at that
moment; by the time a worker claims it the guest may have moved (live or cold
migration, evacuation) or never got a host at all (NoValidHost).  Two rules keep every
job on the guest's side:

- ``target_for(inst)``: the target of a new job — the guest's host, or ``any`` when the
  instance has none (a server in ERROR without a host, a shelved-offloaded one): a
  worker for ``any`` runs everywhere, an API started ``--no-compute`` included, so such
  work never waits for a host nobody serves.
- ``on_guest_host``: the guard every job of :data:`GUEST_JOBS` passes when it starts.
  When the instance is no longer on this worker's host, the job is handed to the host
  it is on now (same name, same payload) and this run ends without touching anything:
  no handler ever acts on a guest that is not here.

Jobs that run on a host *other* than the instance's on purpose (a build on the host the
scheduler picked, a resize or migration's destination steps, an unshelve, an
evacuation's rebuild) are not in :data:`GUEST_JOBS`: their target is the move's.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from strato.compute.models import Instance
from strato.exceptions import Conflict
from strato.jobs.models import PENDING, RUNNING, Job
from strato.jobs.queue import ANY, enqueue
from strato.jobs.worker import Handler, JobContext

LOG = logging.getLogger(__name__)

#: jobs that act on a guest where it runs now (their payload names ``instance_id``)
GUEST_JOBS = frozenset({
    "compute.power", "compute.attach_volume", "compute.detach_volume", "compute.delete",
    "compute.attach_interface", "compute.detach_interface", "compute.snapshot",
    "compute.volume_snapshot", "compute.backup", "compute.rescue", "compute.unrescue",
    "compute.shelve", "compute.shelve_offload", "compute.trigger_crash_dump",
})


def target_for(inst: Instance) -> str:
    """The target of a job for ``inst``: its host, or ``any`` when it has none."""
    return f"host:{inst.host}" if inst.host else ANY


def require_host(inst: Instance) -> None:
    """Nova's ``check_instance_host``: an action that needs the guest's host is 409
    ``InstanceNotReady`` on a server that never got one (its job would wait for a host
    that does not exist)."""
    if not inst.host:
        raise Conflict(f"Instance {inst.id} is not ready")


def delete_target(session: Session, conf: Any, inst: Instance) -> str:
    """Where a delete runs: the guest's host, or -- when it has none, or its compute
    service is down -- ``any`` (Nova's local delete: the records, volumes, ports and
    disk are released without the host; the host reaps the guest if it comes back,
    ``evacuate.destroy_strays`` at its agent's start)."""
    from strato.compute.hosts import host_is_up

    if inst.host and host_is_up(session, conf, inst.host):
        return f"host:{inst.host}"
    return ANY


def _host_of(session: Session, instance_id: str) -> tuple[bool, str | None]:
    """(the instance exists and is not deleted, its host)."""
    row = session.execute(select(Instance.host, Instance.deleted).where(
        Instance.id == instance_id)).first()
    if row is None or row.deleted:
        return False, None
    return True, row.host


def hand_over(ctx: JobContext) -> str | None:
    """If the job's guest is on another host than the job's target, enqueue the job
    there (once: a rerun of this job finds its copy) and return that host; else None."""
    instance_id = ctx.payload.get("instance_id")
    if not instance_id or not ctx.target.startswith("host:"):
        return None
    here = ctx.target.split(":", 1)[1]
    with ctx.services.db.session() as session:
        alive, host = _host_of(session, str(instance_id))
        # gone: the handler skips it; hostless: whoever holds the job may do it
        if not alive or host is None or host == here:
            return None
        target = f"host:{host}"
        copies = session.scalars(select(Job).where(
            Job.name == ctx.name, Job.target == target,
            Job.state.in_((PENDING, RUNNING)))).all()
        if not any(j.payload == ctx.payload for j in copies):
            job = session.get(Job, ctx.job_id)
            enqueue(session, ctx.name, dict(ctx.payload), target=target,
                    max_attempts=job.max_attempts if job is not None else 5)
    LOG.info("job %s %s: instance %s is on %s now, not %s: handed over", ctx.job_id,
             ctx.name, instance_id, host, here)
    return host


def on_guest_host(fn: Handler) -> Handler:
    """The guard of a guest job: run ``fn`` only where the guest is."""
    if getattr(fn, "_on_guest_host", False):
        return fn

    @functools.wraps(fn)
    def guarded(ctx: JobContext) -> dict[str, Any] | None:
        host = hand_over(ctx)
        if host is not None:
            return {"handed_to": host}
        return fn(ctx)

    guarded._on_guest_host = True  # type: ignore[attr-defined]
    return guarded


def install(handlers: dict[str, Handler]) -> None:
    """Put the guard on every registered handler of :data:`GUEST_JOBS` (idempotent)."""
    for name in GUEST_JOBS & handlers.keys():
        handlers[name] = on_guest_host(handlers[name])


def retarget_pending(session: Session, instance_id: str, host: str) -> int:
    """Point the instance's queued guest jobs at ``host`` (a move that ends on another
    host: the old host may never run them, an evacuated one is down).  Returns how
    many; running jobs are left to their worker, whose guard hands them over."""
    jobs = [j for j in session.scalars(select(Job).where(
        Job.name.in_(GUEST_JOBS), Job.state == PENDING, Job.target != f"host:{host}"))
        if (j.payload or {}).get("instance_id") == instance_id]
    for j in jobs:
        session.execute(update(Job).where(Job.id == j.id, Job.state == PENDING).values(
            target=f"host:{host}"))
    return len(jobs)
