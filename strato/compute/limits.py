"""``limits`` (a project's absolute limits and what it uses) and
``os-quota-class-sets`` (the ``default`` class: the limits of every project without
its own), with Nova's fields per microversion."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from strato.compute.reads_models import QuotaClassLimit, ServerGroup
from strato.compute.views import Version
from strato.context import RequestContext
from strato.exceptions import BadRequest, NotFound

P = "os_compute_api:"

#: Nova's defaults of the limits strato does not enforce itself (injected files were
#: never supported here; security groups and floating IPs belong to the network
#: service, whose own quotas count them)
FIXED = {"injected_files": 5, "injected_file_content_bytes": 10240,
         "injected_file_path_bytes": 255, "security_groups": 10,
         "security_group_rules": 20, "floating_ips": 10, "fixed_ips": -1}
#: what an admin may set on a quota class, with the microversions that have it
CLASS_KEYS: dict[str, tuple[Version, Version]] = {
    "instances": ((2, 1), (9, 9)), "cores": ((2, 1), (9, 9)), "ram": ((2, 1), (9, 9)),
    "metadata_items": ((2, 1), (9, 9)), "key_pairs": ((2, 1), (9, 9)),
    "server_groups": ((2, 50), (9, 9)), "server_group_members": ((2, 50), (9, 9)),
    "injected_files": ((2, 1), (2, 56)), "injected_file_content_bytes": ((2, 1), (2, 56)),
    "injected_file_path_bytes": ((2, 1), (2, 56)), "fixed_ips": ((2, 1), (2, 49)),
    "floating_ips": ((2, 1), (2, 49)), "security_groups": ((2, 1), (2, 49)),
    "security_group_rules": ((2, 1), (2, 49)),
}


def class_limits(session: Session, class_name: str = "default") -> dict[str, int]:
    return {r.resource: r.hard_limit for r in session.scalars(select(QuotaClassLimit).where(
        QuotaClassLimit.class_name == class_name))}


class Limits:
    def __init__(self, api: Any) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy
        c = api.conf.compute
        self.defaults = {"instances": c.quota_instances, "cores": c.quota_cores,
                         "ram": c.quota_ram, "key_pairs": c.quota_key_pairs,
                         "metadata_items": c.quota_metadata_items, "server_groups": 10,
                         "server_group_members": 10, **FIXED}

    def class_defaults(self, session: Session) -> dict[str, int]:
        """The default class: the configured defaults with an admin's changes."""
        return {**self.defaults, **class_limits(session)}

    def project_limits(self, session: Session, project_id: str) -> dict[str, int]:
        out = self.class_defaults(session)
        out.update(self.api.quota.limits(session, project_id))
        return out

    # ------------------------------------------------------------ limits
    def show(self, ctx: RequestContext, q: dict[str, str], version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "limits", {"project_id": ctx.project_id})
        project_id = ctx.project_id or ""
        tenant = q.get("tenant_id")
        if tenant is not None and tenant != project_id and version >= (2, 1):
            # Nova ignores the parameter for a caller who may not use it
            if self.policy.allowed(ctx, P + "limits:other_project",
                                   {"project_id": tenant}):
                project_id = tenant
        with self.db.session(readonly=True) as session:
            lim = self.project_limits(session, project_id)
            # ?reserved=1: what is held for operations in flight counts as used
            reserved = q.get("reserved", "0").strip().lower() in ("1", "true", "yes")
            used = {r: u.in_use + (u.reserved if reserved else 0) for r, u in
                    self.api.quota.usage(session, project_id).items()}
            groups = session.scalar(select(func.count()).select_from(ServerGroup).where(
                ServerGroup.project_id == project_id)) or 0
        a: dict[str, Any] = {
            "maxServerMeta": lim["metadata_items"], "maxImageMeta": lim["metadata_items"],
            "maxPersonality": lim["injected_files"],
            "maxPersonalitySize": lim["injected_file_content_bytes"],
            "maxTotalKeypairs": lim["key_pairs"],
            "maxSecurityGroups": lim["security_groups"],
            "maxSecurityGroupRules": lim["security_group_rules"],
            "maxTotalFloatingIps": lim["floating_ips"],
            "totalFloatingIpsUsed": 0, "totalSecurityGroupsUsed": 0,
            "maxTotalInstances": lim["instances"], "maxTotalCores": lim["cores"],
            "maxTotalRAMSize": lim["ram"],
            "totalInstancesUsed": used.get("instances", 0),
            "totalCoresUsed": used.get("cores", 0), "totalRAMUsed": used.get("ram", 0),
            "maxServerGroups": lim["server_groups"],
            "maxServerGroupMembers": lim["server_group_members"],
            "totalServerGroupsUsed": int(groups)}
        if version >= (2, 36):
            for k in ("maxSecurityGroups", "maxSecurityGroupRules", "maxTotalFloatingIps",
                      "totalFloatingIpsUsed", "totalSecurityGroupsUsed"):
                del a[k]
        if version >= (2, 39):
            del a["maxImageMeta"]
        if version >= (2, 57):
            del a["maxPersonality"], a["maxPersonalitySize"]
        return {"limits": {"absolute": a, "rate": []}}

    # ------------------------------------------------------------ quota classes
    def _class_view(self, session: Session, class_name: str,
                    version: Version) -> dict[str, int]:
        values = {**self.defaults, **class_limits(session, class_name)}
        return {k: values[k] for k, (lo, hi) in CLASS_KEYS.items() if lo <= version <= hi}

    def show_class(self, ctx: RequestContext, class_name: str,
                   version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-quota-class-sets:show", {})
        _check_name(class_name)
        with self.db.session(readonly=True) as session:
            return {"id": class_name, **self._class_view(session, class_name, version)}

    def update_class(self, ctx: RequestContext, class_name: str, body: Any,
                     version: Version) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-quota-class-sets:update", {})
        _check_name(class_name)
        ref = body.get("quota_class_set") if isinstance(body, dict) else None
        if not isinstance(ref, dict) or set(body) != {"quota_class_set"}:
            raise BadRequest("Missing required element 'quota_class_set' in request body.")
        for key, value in ref.items():
            span = CLASS_KEYS.get(key)
            if span is None or not span[0] <= version <= span[1]:
                raise BadRequest(f"Additional properties are not allowed ('{key}' was "
                                 "unexpected).")
            if isinstance(value, str) and value.lstrip("-").isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not -1 <= value <= 2**31 - 1:
                raise BadRequest(f"Invalid input for field/attribute {key}: must be an "
                                 "integer from -1 to 2147483647.")
            ref[key] = value
        with self.db.session() as session:
            for key, value in ref.items():
                row = session.get(QuotaClassLimit, (class_name, key))
                if row is None:
                    session.add(QuotaClassLimit(class_name=class_name, resource=key,
                                                hard_limit=value))
                else:
                    row.hard_limit = value
            session.flush()
            return self._class_view(session, class_name, version)


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= 255:
        raise NotFound(f"Quota class {name} could not be found.")
