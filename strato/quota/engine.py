"""Reserve, commit, roll back: exact under concurrent requests on both databases.

``reserve`` locks the project's usage rows (``SELECT … FOR UPDATE`` on PostgreSQL;
SQLite's writers are serialized at BEGIN), checks ``in_use + reserved + delta`` against
the limit, and adds to ``reserved`` in the caller's transaction, so the reservation
exists exactly when the record that needs it does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from strato.exceptions import OverLimit
from strato.quota.models import QuotaLimit, QuotaUsage, Reservation


class QuotaEngine:
    def __init__(self, defaults: Mapping[str, int],
                 class_defaults: Callable[[Session], Mapping[str, int]] | None = None
                 ) -> None:
        """``class_defaults``: an admin's changes to the defaults (Nova's quota class
        ``default``), read in the caller's transaction."""
        self.defaults = dict(defaults)
        self.class_defaults = class_defaults

    def default_for(self, resource: str) -> int:
        if resource in self.defaults:
            return self.defaults[resource]
        base = resource.split("_", 1)[0]  # volumes_<type> falls back to unlimited
        return -1 if base != resource else self.defaults.get(base, -1)

    def limits(self, session: Session, project_id: str) -> dict[str, int]:
        limits = dict(self.defaults)
        if self.class_defaults is not None:
            limits.update({r: v for r, v in self.class_defaults(session).items()
                           if r in self.defaults})
        for row in session.scalars(select(QuotaLimit).where(
                QuotaLimit.project_id == project_id)):
            limits[row.resource] = row.hard_limit
        return limits

    def set_limit(self, session: Session, project_id: str, resource: str, limit: int) -> None:
        row = session.get(QuotaLimit, (project_id, resource))
        if row is None:
            session.add(QuotaLimit(project_id=project_id, resource=resource, hard_limit=limit))
        else:
            row.hard_limit = limit

    def usage(self, session: Session, project_id: str) -> dict[str, QuotaUsage]:
        return {u.resource: u for u in session.scalars(select(QuotaUsage).where(
            QuotaUsage.project_id == project_id))}

    def _usage_rows(self, session: Session, project_id: str,
                    resources: list[str]) -> dict[str, QuotaUsage]:
        """The project's usage rows for ``resources``, created if missing, locked.

        ``INSERT … ON CONFLICT DO NOTHING`` first: two requests creating the same row
        at once do not fail, the second waits for the first and finds it.
        """
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else \
            sqlite_insert
        session.execute(insert(QuotaUsage).values([
            {"project_id": project_id, "resource": r, "in_use": 0, "reserved": 0}
            for r in resources]).on_conflict_do_nothing())
        return {u.resource: u for u in session.scalars(
            select(QuotaUsage).where(QuotaUsage.project_id == project_id,
                                     QuotaUsage.resource.in_(resources))
            .with_for_update().execution_options(populate_existing=True))}

    def reserve(self, session: Session, project_id: str,
                deltas: Mapping[str, int]) -> list[int]:
        """Hold ``deltas``; OverLimit (413) naming the resource when one does not fit."""
        deltas = {r: d for r, d in deltas.items() if d}
        if not deltas:
            return []
        limits = self.limits(session, project_id)
        rows = self._usage_rows(session, project_id, sorted(deltas))
        for resource, delta in deltas.items():
            limit = limits.get(resource, self.default_for(resource))
            row = rows[resource]
            if delta > 0 and limit >= 0 and row.in_use + row.reserved + delta > limit:
                raise OverLimit(
                    f"Requested {resource} of {delta} exceeds the quota: limit {limit}, "
                    f"in use {row.in_use}, reserved {row.reserved}.")
        ids = []
        for resource, delta in deltas.items():
            rows[resource].reserved += delta
            res = Reservation(project_id=project_id, resource=resource, delta=delta)
            session.add(res)
            session.flush()
            ids.append(res.id)
        return ids

    def _finish(self, session: Session, ids: list[int], commit: bool) -> None:
        if not ids:
            return
        reservations = list(session.scalars(select(Reservation).where(
            Reservation.id.in_(ids))))
        if not reservations:
            return  # already finished: commit and rollback are idempotent
        project = reservations[0].project_id
        rows = self._usage_rows(session, project, sorted({r.resource for r in reservations}))
        for res in reservations:
            row = rows[res.resource]
            row.reserved -= res.delta
            if commit:
                row.in_use += res.delta
            session.delete(res)

    def commit(self, session: Session, ids: list[int]) -> None:
        """The operation succeeded: reserved becomes in use."""
        self._finish(session, ids, commit=True)

    def rollback(self, session: Session, ids: list[int]) -> None:
        """The operation failed: the reservation is released."""
        self._finish(session, ids, commit=False)

    def release(self, session: Session, project_id: str, deltas: Mapping[str, int]) -> None:
        """A resource went away: lower in_use (never below zero)."""
        rows = self._usage_rows(session, project_id, sorted(deltas))
        for resource, delta in deltas.items():
            rows[resource].in_use = max(0, rows[resource].in_use - delta)
