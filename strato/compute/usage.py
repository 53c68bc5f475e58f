"""os-simple-tenant-usage: what each project's servers used in a window, from the
instance records (deleted ones included: a server that lived in the window counts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select

from strato.compute.models import Instance
from strato.compute.views import Version
from strato.context import RequestContext
from strato.db.base import utcnow
from strato.exceptions import BadRequest
from strato.validation import query_int

P = "os_compute_api:"
_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f")


def _when(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1]
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise BadRequest(f"Invalid input for query parameters start/end: {value!r} is not a "
                     "valid time (use %Y-%m-%dT%H:%M:%S[.%f]).")


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat()


class TenantUsage:
    def __init__(self, api: Any) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy

    def _window(self, q: dict[str, str]) -> tuple[datetime, datetime, bool]:
        start, end = _when(q.get("start")), _when(q.get("end"))
        if start > end:
            raise BadRequest("Invalid start time. The start time cannot occur after the "
                             "end time.")
        detailed = q.get("detailed", "0").strip().lower() in ("1", "true", "yes")
        return start, end, detailed

    def _servers(self, project_id: str | None, start: datetime, end: datetime,
                 q: dict[str, str], version: Version) -> list[Instance]:
        with self.db.session(readonly=True) as session:
            stmt = select(Instance).where(
                Instance.created_at < end,
                or_(Instance.terminated_at.is_(None), Instance.terminated_at > start))
            if project_id is not None:
                stmt = stmt.where(Instance.project_id == project_id)
            rows = list(session.scalars(stmt.order_by(Instance.created_at, Instance.id)))
            session.expunge_all()
        if version >= (2, 40):
            marker = q.get("marker")
            if marker is not None:
                ids = [i.id for i in rows]
                if marker not in ids:
                    raise BadRequest(f"marker [{marker}] not found")
                rows = rows[ids.index(marker) + 1:]
            if "limit" in q:
                rows = rows[:query_int("limit", q["limit"])]
        return rows

    @staticmethod
    def _server_usage(i: Instance, start: datetime, end: datetime) -> dict[str, Any]:
        f = i.flavor or {}
        began = i.launched_at or i.created_at
        ended = i.terminated_at
        lo, hi = max(began, start), min(ended or end, end)
        hours = max((hi - lo).total_seconds(), 0) / 3600
        return {"instance_id": i.id, "name": i.name or "", "tenant_id": i.project_id,
                "flavor": str(f.get("name") or i.flavor_id),
                "memory_mb": int(f.get("memory_mb") or 0), "vcpus": int(f.get("vcpus") or 0),
                "local_gb": int(f.get("root_gb") or 0) + int(f.get("ephemeral_gb") or 0),
                "hours": hours, "started_at": _iso(began),
                "ended_at": _iso(ended) if ended else None,
                "state": "terminated" if i.deleted else i.vm_state,
                "uptime": int(((ended or utcnow()) - began).total_seconds())}

    def _summary(self, project_id: str, usages: list[dict[str, Any]], start: datetime,
                 end: datetime, detailed: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "tenant_id": project_id, "start": _iso(start), "stop": _iso(end),
            "total_hours": sum(u["hours"] for u in usages),
            "total_memory_mb_usage": sum(u["hours"] * u["memory_mb"] for u in usages),
            "total_vcpus_usage": sum(u["hours"] * u["vcpus"] for u in usages),
            "total_local_gb_usage": sum(u["hours"] * u["local_gb"] for u in usages)}
        if detailed:
            body["server_usages"] = usages
        return body

    def _links(self, path: str, rows: list[Instance], q: dict[str, str], key: str,
               version: Version) -> dict[str, Any]:
        if version < (2, 40) or "limit" not in q or not rows or \
                len(rows) < int(q["limit"]):
            return {}
        params = {k: v for k, v in q.items() if k != "marker"}
        params["marker"] = rows[-1].id
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return {key: [{"rel": "next", "href":
                       f"{self.api.base}/compute/v2.1/{path}?{query}"}]}

    def list(self, ctx: RequestContext, q: dict[str, str], version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-simple-tenant-usage:list", {})
        start, end, detailed = self._window(q)
        rows = self._servers(None, start, end, q, version)
        by_project: dict[str, list[dict[str, Any]]] = {}
        for i in rows:
            by_project.setdefault(i.project_id, []).append(self._server_usage(i, start, end))
        body: dict[str, Any] = {"tenant_usages": [
            self._summary(p, u, start, end, detailed) for p, u in by_project.items()]}
        body.update(self._links("os-simple-tenant-usage", rows, q, "tenant_usages_links",
                                version))
        return body

    def show(self, ctx: RequestContext, project_id: str, q: dict[str, str],
             version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-simple-tenant-usage:show",
                            {"project_id": project_id})
        start, end, _ = self._window(q)
        rows = self._servers(project_id, start, end, q, version)
        usages = [self._server_usage(i, start, end) for i in rows]
        body: dict[str, Any] = {"tenant_usage": self._summary(
            project_id, usages, start, end, True) if usages else {}}
        body.update(self._links(f"os-simple-tenant-usage/{project_id}", rows, q,
                                "tenant_usage_links", version))
        return body
