"""Server locks (Nova's ``os-lock-server``) and the one rule every change obeys.

A locked server refuses changes from non-admins with 409 "Instance <id> is locked",
exactly where Nova's ``check_instance_lock`` applies.  Server actions are checked in one
place (``strato.api.compute.server_action`` asks ``check_action`` before dispatching,
so actions added later are covered without knowing about locks); the other entry
points (delete, metadata, volume and interface attach/detach) call ``ensure_unlocked``.

Who locked is kept as Nova's ``locked_by`` (``owner`` when the locker's project owns
the server, else ``admin``) in the instance's system metadata: an owner cannot undo an
admin's lock without ``os-lock-server:unlock:unlock_override``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from oslo_policy.policy import RuleDefault
from sqlalchemy import select

from strato import events
from strato.compute.models import Instance, InstanceAction, InstanceActionEvent
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict
from strato.validation import Obj, Str

if TYPE_CHECKING:
    from strato.compute.api import ComputeAPI

P = "os_compute_api:"
RULES = [
    RuleDefault(f"{P}os-lock-server:lock", "rule:admin_or_member"),
    RuleDefault(f"{P}os-lock-server:unlock", "rule:admin_or_member"),
    RuleDefault(f"{P}os-lock-server:unlock:unlock_override", "rule:admin_required"),
]

ACTIONS = frozenset({"lock", "unlock"})
#: Server actions Nova runs without ``check_instance_lock`` (read its compute API's
#: decorators): a locked server still takes these from its owner.  Everything else of
#: Nova's action list is refused while locked.
NOT_LOCK_CHECKED = frozenset({
    "lock", "unlock",
    "createImage", "createBackup",  # snapshot()/backup(): state-checked only
    "resume",  # resume(): state-checked only (suspend is lock-checked)
    "os-getConsoleOutput", "os-getVNCConsole", "os-getSPICEConsole", "os-getRDPConsole",
    "os-getSerialConsole",
    "addSecurityGroup", "removeSecurityGroup",  # the network API, no lock check
    "os-resetState", "evacuate",  # admin-only, never lock-checked
    "addFloatingIp", "removeFloatingIp", "resetNetwork",  # removed (410) in Nova
})

#: Lock-checked actions whose handlers call ``ensure_unlocked`` themselves, after their
#: body check and policy, so the order of refusals is Nova's (400, 404, 403, then 409).
SELF_CHECKED = frozenset({"changePassword", "trigger_crash_dump"})

_LOCK_273 = Obj({"locked_reason": Str(255, min=1)}, extra=None, nullable=True)


def lock_refusal(ctx: RequestContext, inst: Instance) -> Conflict | None:
    """The error Nova's ``check_instance_lock`` answers (None: not refused); shared with
    the lineage API's delete blockers."""
    if inst.locked and not ctx.is_admin:
        return Conflict(f"Instance {inst.id} is locked")
    return None


def ensure_unlocked(ctx: RequestContext, inst: Instance) -> None:
    """Nova's ``check_instance_lock``: only an admin changes a locked server."""
    refused = lock_refusal(ctx, inst)
    if refused is not None:
        raise refused


def check_action(api: ComputeAPI, ctx: RequestContext, server_id: str, name: str,
                 known: Collection[str]) -> None:
    """Before a server action runs: 404 for a server the caller cannot see, 409 when it
    is locked and ``name`` is one Nova lock-checks (``known``: Nova's actions; an
    unknown one is the dispatcher's 400)."""
    if ctx.is_admin or name not in known or name in NOT_LOCK_CHECKED or name in SELF_CHECKED:
        return  # an admin is never refused for a lock; the handler finds the server
    with api.db.session(readonly=True) as session:
        ensure_unlocked(ctx, api.get_row(session, ctx, server_id))


_TRUE, _FALSE = ("1", "t", "true", "on", "y", "yes"), ("0", "f", "false", "off", "n", "no")


def locked_filter(value: str) -> bool:
    """The 2.73 ``locked`` list filter, a strict boolean as Nova parses it."""
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise BadRequest(f"Unrecognized value '{value}', acceptable values are: '0', '1', "
                     "'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'")


def locked_by(ctx: RequestContext, inst: Instance) -> str:
    return "owner" if inst.project_id == ctx.project_id else "admin"


def api_action(session: Any, api: ComputeAPI, ctx: RequestContext, inst: Instance,
               action: str, event: str) -> None:
    """An instance action done in the API itself (Nova's ``wrap_instance_event(prefix=
    'api')``): the action and its one finished event, in the caller's transaction."""
    from strato.compute.api import now

    api.record_action(session, ctx, inst, action)
    session.flush()
    row = session.scalars(select(InstanceAction).where(
        InstanceAction.instance_uuid == inst.id, InstanceAction.request_id == ctx.request_id,
        InstanceAction.action == action).order_by(InstanceAction.id.desc())).first()
    at = now()
    session.add(InstanceActionEvent(action_id=row.id, event=event, host=api.conf.DEFAULT.host,
                                    start_time=at, finish_time=at, result="Success"))
    row.finish_time = row.updated_at = at


class Locks:
    def __init__(self, api: ComputeAPI) -> None:
        self.api = api

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: tuple[int, int]) -> None:
        if name == "lock":
            self.lock(ctx, server_id, args, version)
        else:
            self.unlock(ctx, server_id)

    def lock(self, ctx: RequestContext, server_id: str, args: Any,
             version: tuple[int, int]) -> None:
        reason = None
        if version >= (2, 73):  # before 2.73 Nova takes any value for ``lock``
            _LOCK_273(args, "lock")
            if isinstance(args, dict):
                reason = args.get("locked_reason")
        elif isinstance(args, dict) and "locked_reason" in args:
            raise BadRequest("Invalid input for field/attribute lock. locked_reason needs "
                             "microversion 2.73.")
        with self.api.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, P + "os-lock-server:lock")
            by = locked_by(ctx, inst)
            if inst.locked and by == "owner":
                return  # Nova: an owner's second lock changes nothing
            inst.locked = True
            if reason:
                inst.locked_reason = reason
            inst.system_metadata = {**(inst.system_metadata or {}), "locked_by": by}
            api_action(session, self.api, ctx, inst, "lock", "api_lock")
            events.emit(session, "compute", "compute.instance.lock", inst.id,
                        inst.project_id, locked_by=by, locked_reason=inst.locked_reason)

    def unlock(self, ctx: RequestContext, server_id: str) -> None:
        with self.api.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, P + "os-lock-server:unlock")
            by = (inst.system_metadata or {}).get("locked_by")
            if by and by != locked_by(ctx, inst):  # an owner undoing an admin's lock
                self.api.policy.enforce(ctx, P + "os-lock-server:unlock:unlock_override",
                                        {"project_id": inst.project_id})
            inst.locked, inst.locked_reason = False, None
            inst.system_metadata = {k: v for k, v in (inst.system_metadata or {}).items()
                                    if k != "locked_by"}
            api_action(session, self.api, ctx, inst, "unlock", "api_unlock")
            events.emit(session, "compute", "compute.instance.unlock", inst.id,
                        inst.project_id)
