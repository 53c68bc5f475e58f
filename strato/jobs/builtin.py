"""Housekeeping jobs every worker can run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete

from strato.db import utcnow
from strato.identity.models import RevokedToken
from strato.jobs.models import DONE, Job
from strato.jobs.worker import JobContext, handler


@handler("purge")
def purge(ctx: JobContext) -> dict[str, Any]:
    """Drop finished jobs older than ``keep_days`` and revocations of expired tokens."""
    keep = timedelta(days=float(ctx.payload.get("keep_days", 7)))
    with ctx.services.db.session() as session:
        jobs = session.execute(delete(Job).where(
            Job.state == DONE, Job.finished_at < utcnow() - keep)).rowcount
        tokens = session.execute(delete(RevokedToken).where(
            RevokedToken.expires_at < utcnow())).rowcount
    return {"jobs": jobs, "revocations": tokens}
