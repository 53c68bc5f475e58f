"""Server sub-resources: volume attachments, console output, instance actions, quotas."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, select

from strato.compute import hostcalls, routing, states
from strato.compute.api import ComputeAPI, P, ctx_payload, now
from strato.compute.models import BlockDevice, Instance, InstanceAction, InstanceActionEvent
from strato.compute.views import Version, attachment_view, iso_us
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound, StratoError
from strato.jobs.queue import enqueue
from strato.quota.models import QuotaLimit

ATTACH_STATES = (states.ACTIVE, states.PAUSED, states.STOPPED, states.SHELVED,
                 states.SHELVED_OFFLOADED)
QUOTAS = ("instances", "cores", "ram", "key_pairs")  # the quota sets strato enforces
# The rest of Nova's quota set, with Nova's defaults: shown and stored as Nova does (the
# network ones until 2.36, the injected files until 2.57); ``metadata_items`` is the
# configured limit strato checks server and image metadata against.
NOVA_DEFAULTS = {"metadata_items": 128, "server_groups": 10, "server_group_members": 10,
                 "floating_ips": 10, "fixed_ips": -1, "security_groups": 10,
                 "security_group_rules": 20, "injected_files": 5,
                 "injected_file_content_bytes": 10240, "injected_file_path_bytes": 255}
_NETWORK_QUOTAS = ("floating_ips", "fixed_ips", "security_groups", "security_group_rules")


class PerUserQuota(StratoError):
    """Per-user quotas (``?user_id=``): strato keeps quotas per project only."""

    status = 501
    message = "Per-user quotas are not implemented: strato's quotas are per project."


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f]")


def nova_console_text(text: str, length: int | None) -> str:
    """The console log as Nova's API returns it: control characters (the serial
    line's carriage returns) removed, and with ``length`` the last ``length`` items of
    the log split on newlines (Nova's ``_tail_log``)."""
    text = _CONTROL.sub("", text)
    if length is None:
        return text
    lines = text.split("\n")
    return "\n".join(lines[-length:]) if length > 0 else ""


class ServerExtras:
    def __init__(self, api: ComputeAPI) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy

    # ------------------------------------------------------------ volume attachments
    def list_attachments(self, ctx: RequestContext, server_id: str,
                         version: Version) -> list[dict[str, Any]]:
        with self.db.session(readonly=True) as session:
            inst = self.api.get_row(session, ctx, server_id,
                                    P + "os-volumes-attachments:index")
            return [attachment_view(b, version) for b in self.api.bdms(
                session, [inst.id])[inst.id] if b.volume_id and b.status == "attached"]

    def show_attachment(self, ctx: RequestContext, server_id: str, volume_id: str,
                        version: Version) -> dict[str, Any]:
        for a in self.list_attachments(ctx, server_id, version):
            if a["volumeId"] == volume_id:
                return a
        raise NotFound(f"Volume {volume_id} is not attached to the server {server_id}.")

    def attach(self, ctx: RequestContext, server_id: str, body: Any,
               version: Version) -> dict[str, Any]:
        ref = body.get("volumeAttachment") if isinstance(body, dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("volumeId"), str):
            raise BadRequest("Missing required element 'volumeAttachment' with a volumeId.")
        volume_id = ref["volumeId"]
        dot = ref.get("delete_on_termination", False)
        if "delete_on_termination" in ref and version < (2, 79):
            raise BadRequest("delete_on_termination needs microversion 2.79.")
        with self.db.session(readonly=True) as session:
            inst = self.api.get_row(session, ctx, server_id,
                                    P + "os-volumes-attachments:create")
            self.api._check_lock(ctx, inst)
            if inst.vm_state not in ATTACH_STATES or inst.task_state is not None:
                raise Conflict(f"Cannot 'attach_volume' instance {inst.id} while it is in "
                               f"vm_state {inst.vm_state}")
            used = {b.device_name for b in self.api.bdms(session, [inst.id])[inst.id]}
            if any(b.volume_id == volume_id for b in self.api.bdms(
                    session, [inst.id])[inst.id]):
                raise BadRequest(f"Invalid volume: volume {volume_id} is already attached "
                                 "to this server.")
            host = inst.host
        device = next((f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz"
                       if f"vd{c}" not in used), None)
        if device is None:
            raise BadRequest("No free disk device names left on the server.")
        try:
            self.api.volumes.show(ctx, volume_id, (3, 0))
        except NotFound:
            raise NotFound(f"Volume {volume_id} could not be found.") from None
        with self.db.session() as session:
            # The volume's reservation, the mapping, the action and the job: one
            # transaction, so a crash leaves no volume reserved for nothing.
            inst = self.api.get_row(session, ctx, server_id)
            if inst.vm_state not in ATTACH_STATES or inst.task_state is not None:
                raise Conflict(f"Cannot 'attach_volume' instance {inst.id} while it is "
                               f"in vm_state {inst.vm_state}")
            try:
                att = self.api.volume_actions.create_attachment(ctx, {"attachment": {
                    "volume_id": volume_id, "instance_uuid": server_id}}, session)
            except BadRequest as exc:
                raise BadRequest(f"Invalid volume: {exc.message}") from None
            b = BlockDevice(instance_uuid=server_id, device_name=device,
                            source_type="volume", destination_type="volume",
                            source_id=volume_id, volume_id=volume_id,
                            delete_on_termination=bool(dot), attachment_id=att["id"],
                            status="attaching", tag=ref.get("tag"), created_at=now())
            session.add(b)
            self.api.record_action(session, ctx, inst, "attach_volume")
            offloaded = inst.vm_state == states.SHELVED_OFFLOADED
            if offloaded:  # no host: recorded now, connected by the unshelve (Nova)
                b.status = "attached"
            session.flush()
            if not offloaded:
                enqueue(session, "compute.attach_volume", {
                    "instance_id": server_id, "bdm_id": b.id, "ctx": ctx_payload(ctx),
                    "request_id": ctx.request_id}, target=f"host:{host}", max_attempts=3)
            view = attachment_view(b, version)
        if offloaded:
            self.api.volume_actions.complete_attachment(ctx, att["id"])
        return view

    def update_attachment(self, ctx: RequestContext, server_id: str, volume_id: str,
                          body: dict[str, Any], version: Version) -> None:
        """2.85: change ``delete_on_termination``; the other fields of the attachment
        may be sent back unchanged. Another ``volumeId`` (and any PUT before 2.85) asks
        for a swap, which is admin-only and which strato does not do."""
        ref = body["volumeAttachment"]
        with self.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id)
            if version < (2, 85) or ref["volumeId"] != volume_id:
                self.policy.enforce(ctx, P + "os-volumes-attachments:swap", {})
                raise BadRequest("Swapping an attached volume for another is not "
                                 "supported.")
            self.policy.enforce(ctx, P + "os-volumes-attachments:update",
                                {"project_id": inst.project_id})
            b = next((b for b in self.api.bdms(session, [inst.id])[inst.id]
                      if b.volume_id == volume_id and b.status == "attached"), None)
            if b is None:
                raise NotFound(f"No volume Block Device Mapping with id {volume_id}.")
            for key, now_value in (("id", volume_id), ("serverId", inst.id),
                                   ("device", f"/dev/{b.device_name}"), ("tag", b.tag)):
                if key in ref and ref[key] != now_value:
                    raise BadRequest(f"The {key} property is not mutable")
            if "delete_on_termination" in ref:
                value = ref["delete_on_termination"]
                b.delete_on_termination = value if isinstance(value, bool) else \
                    str(value).strip().lower() in ("true", "1", "yes", "on", "t", "y")

    def detach(self, ctx: RequestContext, server_id: str, volume_id: str) -> None:
        with self.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id,
                                    P + "os-volumes-attachments:delete")
            self.api._check_lock(ctx, inst)
            b = next((b for b in self.api.bdms(session, [inst.id])[inst.id]
                      if b.volume_id == volume_id), None)
            if b is None:
                raise NotFound(f"Volume {volume_id} is not attached to the server "
                               f"{server_id}.")
            if b.boot_index == 0:
                raise BadRequest("Can't detach root device volume")
            if b.status != "attached":
                raise Conflict(f"Volume {volume_id} is {b.status}, not attached.")
            if inst.vm_state not in ATTACH_STATES or inst.task_state is not None:
                raise Conflict(f"Cannot 'detach_volume' instance {inst.id} while it is in "
                               f"vm_state {inst.vm_state}")
            b.status = "detaching"
            self.api.record_action(session, ctx, inst, "detach_volume")
            # with the job, not after it: a worker may take the job at commit
            self.api.volume_actions.begin_detaching(ctx, volume_id, session)
            enqueue(session, "compute.detach_volume", {
                "instance_id": server_id, "bdm_id": b.id, "ctx": ctx_payload(ctx),
                "request_id": ctx.request_id}, max_attempts=3,
                target=routing.target_for(inst))  # offloaded: any

    # ------------------------------------------------------------ console
    def console_output(self, ctx: RequestContext, server_id: str, args: Any,
                       driver: Any) -> dict[str, str]:
        length = args.get("length") if isinstance(args, dict) else None
        if length is not None:
            try:
                length = int(length)
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid input for field/attribute length: {length}") \
                    from None
            if length < -1:
                raise BadRequest("length must be >= -1")
            if length == -1:
                length = None
        with self.db.session(readonly=True) as session:
            inst = self.api.get_row(session, ctx, server_id, P + "os-console-output")
            if inst.vm_state == states.BUILDING:
                raise Conflict(f"Cannot 'get_console_output' instance {inst.id} while it "
                               f"is in vm_state {inst.vm_state}")
            session.expunge(inst)
        # one line more than asked: a log ending in a newline ends in an empty "line"
        lines = None if length is None else length + 1
        if hostcalls.runs_here(self.api.conf, inst):
            text = driver.console_output(server_id, lines)
        else:  # the log is on the guest's host: its worker reads it
            text = hostcalls.call(self.db, self.api.conf, inst, "compute.console_output",
                                  {"length": lines}, "get_console_output")["output"]
        return {"output": nova_console_text(text, length)}

    # ------------------------------------------------------------ instance actions
    def action_view(self, a: InstanceAction, version: Version) -> dict[str, Any]:
        body = {"action": a.action, "instance_uuid": a.instance_uuid,
                "request_id": a.request_id, "user_id": a.user_id,
                "project_id": a.project_id, "start_time": iso_us(a.start_time),
                "message": a.message}
        if version >= (2, 58):
            body["updated_at"] = iso_us(a.updated_at or a.start_time)
        return body

    def _actions_row(self, session: Any, ctx: RequestContext, server_id: str) -> None:
        inst = session.get(Instance, server_id)
        if inst is None or not (ctx.is_admin or inst.project_id == ctx.project_id):
            raise NotFound(f"Instance {server_id} could not be found.")
        self.policy.enforce(ctx, P + "os-instance-actions:list",
                            {"project_id": inst.project_id})

    def list_actions(self, ctx: RequestContext, server_id: str,
                     version: Version) -> list[dict[str, Any]]:
        with self.db.session(readonly=True) as session:
            self._actions_row(session, ctx, server_id)
            return [self.action_view(a, version) for a in session.scalars(
                select(InstanceAction).where(InstanceAction.instance_uuid == server_id)
                .order_by(InstanceAction.start_time.desc(), InstanceAction.id.desc()))]

    def show_action(self, ctx: RequestContext, server_id: str, request_id: str,
                    version: Version) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            self._actions_row(session, ctx, server_id)
            a = session.scalars(select(InstanceAction).where(
                InstanceAction.instance_uuid == server_id,
                InstanceAction.request_id == request_id)).first()
            if a is None:
                raise NotFound(f"Action for request_id {request_id} on instance "
                               f"{server_id} not found")
            body = self.action_view(a, version)
            if version >= (2, 51) or self.policy.allowed(ctx, P + "os-instance-actions:events"):
                details = self.policy.allowed(ctx, P + "os-instance-actions:events:details")
                events = []
                for e in session.scalars(select(InstanceActionEvent).where(
                        InstanceActionEvent.action_id == a.id).order_by(
                        InstanceActionEvent.id)):
                    ev: dict[str, Any] = {"event": e.event,
                                          "start_time": iso_us(e.start_time),
                                          "finish_time": iso_us(e.finish_time),
                                          "result": e.result}
                    if details:
                        ev["traceback"] = e.traceback
                    if version >= (2, 62):
                        ev["hostId"] = ""
                        if details:
                            ev["host"] = e.host
                    if version >= (2, 84) and details:
                        ev["details"] = e.details
                    events.append(ev)
                body["events"] = events
            return body

    # ------------------------------------------------------------ quotas
    def _defaults(self) -> dict[str, int]:
        """Every resource of Nova's quota set with its default: strato's configured
        limits for what it enforces, Nova's own defaults for the rest."""
        out = dict(NOVA_DEFAULTS)
        out["metadata_items"] = self.api.conf.compute.quota_metadata_items
        out.update({r: self.api.quota.default_for(r) for r in QUOTAS})
        return out

    def quota_set(self, ctx: RequestContext, project_id: str, detail: bool,
                  version: Version = (2, 1), defaults: bool = False) -> dict[str, Any]:
        """The project's quota set with the resources of ``version`` (2.36 drops the
        network ones, 2.57 the injected files); ``defaults``: the defaults only."""
        self.policy.enforce(ctx, P + ("os-quota-sets:defaults" if defaults else
                                      "os-quota-sets:show"), {"project_id": project_id})
        quota = self.api.quota
        limits = self._defaults()
        used: dict[str, Any] = {}
        if not defaults:
            with self.db.session(readonly=True) as session:
                stored = quota.limits(session, project_id)
                used = quota.usage(session, project_id)
            limits.update({r: v for r, v in stored.items() if r in limits})
        body: dict[str, Any] = {"id": project_id}
        for r in quota_resources(version):
            if detail:
                # key_pairs count per user: Nova shows no project usage for them
                row = used.get(r) if r != "key_pairs" else None
                body[r] = {"limit": limits[r], "in_use": row.in_use if row else 0,
                           "reserved": row.reserved if row else 0}
            else:
                body[r] = limits[r]
        return body

    def update_quota(self, ctx: RequestContext, project_id: str, body: Any,
                     version: Version = (2, 1)) -> dict[str, Any]:
        self.policy.enforce(ctx, P + "os-quota-sets:update", {"project_id": project_id})
        ref = body.get("quota_set") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Missing required element 'quota_set' in request body.")
        known = quota_resources(version)
        extra = set(ref) - set(known) - {"force"}
        if extra:
            raise BadRequest("Invalid input for field/attribute quota_set. Additional "
                             f"properties are not allowed ({', '.join(sorted(extra))} "
                             "were unexpected)")
        with self.db.session() as session:
            for r, value in ref.items():
                if r == "force":
                    continue
                if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                    value = int(value)
                if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                    raise BadRequest(f"Quota limit for {r} must be an integer >= -1.")
                self.api.quota.set_limit(session, project_id, r, value)
        out = self.quota_set(ctx, project_id, False, version)
        out.pop("id")  # the update response has no id (Nova)
        return out

    def delete_quota(self, ctx: RequestContext, project_id: str) -> None:
        """Back to the defaults: every stored compute limit of the project goes."""
        self.policy.enforce(ctx, P + "os-quota-sets:delete", {"project_id": project_id})
        with self.db.session() as session:
            session.execute(delete(QuotaLimit).where(
                QuotaLimit.project_id == project_id,
                QuotaLimit.resource.in_(list(NOVA_DEFAULTS) + list(QUOTAS))))


def quota_resources(version: Version) -> tuple[str, ...]:
    """Nova's quota-set resources at ``version``."""
    out = [r for r in (*QUOTAS, *NOVA_DEFAULTS)
           if not (version >= (2, 36) and r in _NETWORK_QUOTAS)
           and not (version >= (2, 57) and r.startswith("injected_file"))]
    return tuple(out)
