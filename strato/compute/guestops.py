"""Server actions that reach into a running guest: ``changePassword`` (the QEMU guest
agent's ``guest-set-user-password``) and ``trigger_crash_dump`` (an NMI through QMP),
plus the dispatch of ``lock``/``unlock`` (``strato.compute.locks``).

``changePassword`` answers after the password is set, as Nova's (an RPC *call*): the
password is never written anywhere (no job row holds it).  ``updating_password`` is
committed first; a process killed meanwhile leaves that task state without a job, which
the compute agent's restart ``reconcile`` resolves (back to ACTIVE).  The failures are
Nova's: agent silent → 501 "Unable to set password on instance"; agent refusing, image
without ``hw_qemu_guest_agent``, guest not running → 409 with an instance fault.

``trigger_crash_dump`` (2.17) is Nova's cast: the action is recorded and a durable job
injects the NMI on the guest's host (a restart runs the job again; a second NMI is as
harmless as the first).
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from oslo_policy.policy import RuleDefault
from sqlalchemy import update

from strato import events
from strato.compute import hostcalls, locks, states
from strato.compute.api import ComputeAPI, now, state_message
from strato.compute.manager import _event, _load, _set, instance_lock
from strato.compute.models import Instance
from strato.compute.views import iso
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound, NotSupported
from strato.image.models import Image as ImageRow
from strato.jobs.queue import enqueue
from strato.jobs.worker import JobContext, handler
from strato.storage import crash
from strato.validation import Obj, Str
from strato.virt.qemu import PowerState
from strato.virt.qemu.errors import AgentError, AgentUnavailable

LOG = logging.getLogger(__name__)
P = "os_compute_api:"
MEMBER = "rule:admin_or_member"
RULES = [
    *locks.RULES,
    RuleDefault(f"{P}os-admin-password", MEMBER),
    RuleDefault(f"{P}servers:trigger_crash_dump", MEMBER),
]
ACTIONS = locks.ACTIONS | {"changePassword", "trigger_crash_dump"}

#: vm_states Nova lets ``trigger_crash_dump`` run in (``ALLOW_TRIGGER_CRASH_DUMP``)
CRASH_DUMP_STATES = (states.ACTIVE, states.PAUSED, states.RESCUED, states.RESIZED,
                     states.ERROR)
_CHANGE_PASSWORD = Obj({"adminPass": Str(2 ** 31)}, required=("adminPass",), extra=None)
_YES = ("yes", "true", "1", "on", "y", "t")
#: QEMU's chardev behind the guest's ``org.qemu.guest_agent.0`` port
AGENT_CHARDEV = "qga0"
#: how long a booting guest's agent may take to come up (TCG boots take seconds)
AGENT_BOOT_WAIT = 30.0
SET_PASSWORD_EVENT = "compute_set_admin_password"
CRASH_DUMP_EVENT = "compute_trigger_crash_dump"


class PasswordSetFailed(Conflict):
    """Nova's ``InstancePasswordSetFailed`` (409)."""


def _sealed(key_data: str | None, password: str) -> str | None:
    """The new password encrypted to the server's ``ssh-rsa`` key (PKCS#1 v1.5, base64),
    as Nova's libvirt driver keeps it for ``os-server-password``; None without one."""
    if not key_data or not key_data.startswith("ssh-rsa"):
        return None
    try:
        key = serialization.load_ssh_public_key(key_data.encode())
    except ValueError:
        return None
    if not isinstance(key, rsa.RSAPublicKey):
        return None
    return base64.b64encode(key.encrypt(password.encode(), padding.PKCS1v15())).decode()


def _public(server_id: str, error: Exception) -> str:
    """What the client (and the instance fault) may read of a failed password change:
    Nova's words, never the agent's (they might echo the password)."""
    if isinstance(error, AgentUnavailable):
        return "Unable to set password on instance"
    if isinstance(error, PasswordSetFailed):
        return error.message
    return f"Failed to set admin password on {server_id} because error setting admin password"


class GuestOps:
    def __init__(self, api: ComputeAPI, driver: Any) -> None:
        """``driver``: this host's hypervisor driver (``services.virt``)."""
        self.api = api
        self.driver = driver

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: tuple[int, int]) -> None:
        if name in locks.ACTIONS:
            locks.Locks(self.api).action(ctx, server_id, name, args, version)
        elif name == "changePassword":
            self.change_password(ctx, server_id, args)
        else:
            self.trigger_crash_dump(ctx, server_id, args, version)

    # ------------------------------------------------------------ changePassword
    def change_password(self, ctx: RequestContext, server_id: str, args: Any) -> None:
        _CHANGE_PASSWORD(args, "changePassword")
        password = args["adminPass"]
        with self.api.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, P + "os-admin-password")
            locks.ensure_unlocked(ctx, inst)
            if inst.vm_state != states.ACTIVE or inst.task_state is not None:
                raise Conflict(state_message("changePassword", inst))
            if not hostcalls.runs_here(self.api.conf, inst):
                # the agent's socket is on the guest's host, and the password may not
                # travel in a job row: refused before any state changes (scale-out gap)
                raise NotSupported(f"Unable to set password on instance: its host "
                                   f"{inst.host} is not this API's host.")
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.vm_state == states.ACTIVE,
                Instance.task_state.is_(None)).values(
                task_state=states.UPDATING_PASSWORD, updated_at=now())).rowcount
            if not done:
                raise Conflict(state_message("changePassword", inst))
            self.api.record_action(session, ctx, inst, "changePassword")
            image_ref, key_data = inst.image_ref, inst.key_data
        crash.point("changePassword", "before-agent")
        services = _Services(self.api)
        with instance_lock(server_id):
            _event(services, server_id, ctx.request_id, SET_PASSWORD_EVENT)
            error: Exception | None = None
            try:
                self._set_password(server_id, image_ref, password)
            except Exception as exc:  # noqa: BLE001 - the task state is always resolved
                error = exc
            with self.api.db.session() as session:
                values: dict[str, Any] = {"task_state": None}
                if error is None and (sealed := _sealed(key_data, password)):
                    values["guest_password"] = sealed  # for GET os-server-password
                if error is not None:  # Nova's wrap_instance_fault, without the agent's words
                    values["fault"] = {"code": 501 if isinstance(error, AgentUnavailable)
                                       else 409, "message": _public(server_id, error),
                                       "created": iso(now()), "details": ""}
                _set(session, server_id, states.UPDATING_PASSWORD, **values)
                if error is None:
                    events.emit(session, "compute", "compute.instance.set_admin_password",
                                server_id, ctx.project_id)
        _event(services, server_id, ctx.request_id, SET_PASSWORD_EVENT,
               "Error" if error else "Success",
               None if error is None else f"{type(error).__name__}: {error}")
        if error is None:
            return
        LOG.warning("instance %s: set admin password failed: %s", server_id,
                    type(error).__name__)
        if isinstance(error, AgentUnavailable):
            raise NotSupported(_public(server_id, error))
        raise PasswordSetFailed(_public(server_id, error))

    def _set_password(self, server_id: str, image_ref: str | None, password: str) -> None:
        props = self._image_props(image_ref)
        if props is not None and props.get("hw_qemu_guest_agent", "").lower() not in _YES:
            raise PasswordSetFailed(f"Failed to set admin password on {server_id} because "
                                    "QEMU guest agent is not enabled")
        if self.driver.power_state(server_id) != PowerState.RUNNING:
            raise PasswordSetFailed(f"Failed to set admin password on {server_id} because "
                                    f"instance {server_id} is not running")
        user = (props or {}).get("os_admin_user") or "root"
        self._wait_for_agent_port(server_id)
        encoded = base64.b64encode(password.encode()).decode()
        with self.driver.agent(server_id) as ga:
            try:
                ga.execute("guest-set-user-password", {
                    "username": user, "password": encoded, "crypted": False})
            except AgentError as exc:
                raise RuntimeError(f"guest agent refused: {exc.__class__.__name__}") \
                    from None

    def _wait_for_agent_port(self, server_id: str) -> None:
        """A guest that just went ACTIVE is still booting: give its agent up to
        ``AGENT_BOOT_WAIT`` seconds to open its port (QMP ``query-chardev`` says when the
        guest side is open).  An agent that never comes is the caller's 501."""
        deadline = time.monotonic() + AGENT_BOOT_WAIT
        while True:
            chardevs = self.driver.qmp(server_id, "query-chardev") or []
            if any(c.get("label") == AGENT_CHARDEV and c.get("frontend-open")
                   for c in chardevs):
                return
            if time.monotonic() >= deadline:
                raise AgentUnavailable(f"the guest agent of {server_id} never opened "
                                       "its port")
            time.sleep(0.25)

    def _image_props(self, image_ref: str | None) -> dict[str, str] | None:
        """The server's image's properties; None when the image is gone (then the
        agent is simply tried)."""
        if not image_ref:
            return None
        with self.api.db.session(readonly=True) as session:
            image = session.get(ImageRow, image_ref)
            if image is None:
                return None
            return {p.name: p.value for p in image.properties}

    # ------------------------------------------------------------ trigger_crash_dump
    def trigger_crash_dump(self, ctx: RequestContext, server_id: str, args: Any,
                           version: tuple[int, int]) -> None:
        if version < (2, 17):
            raise NotFound("The resource could not be found.")
        if args is not None:
            raise BadRequest("Invalid input for field/attribute trigger_crash_dump. "
                             f"Value: {args!r}. {args!r} is not of type 'null'")
        with self.api.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id,
                                    P + "servers:trigger_crash_dump")
            locks.ensure_unlocked(ctx, inst)
            if not inst.host:
                raise Conflict(f"Instance {inst.id} is not ready")
            if inst.vm_state not in CRASH_DUMP_STATES or inst.task_state is not None:
                raise Conflict(state_message("trigger_crash_dump", inst))
            self.api.record_action(session, ctx, inst, "trigger_crash_dump")
            enqueue(session, "compute.trigger_crash_dump", {
                "instance_id": inst.id, "request_id": ctx.request_id},
                target=f"host:{inst.host}", max_attempts=3)


class _Services:
    """What ``manager._event`` reads of the services (db and this host's name)."""

    def __init__(self, api: ComputeAPI) -> None:
        self.db = api.db
        self.conf = api.conf


@handler("compute.trigger_crash_dump")
def crash_dump(ctx: JobContext) -> dict[str, Any]:
    """Inject an NMI into the guest (QMP ``inject-nmi``); the action event says how it
    went.  Nova changes no state for it: what the guest does is its configuration's."""
    services, instance_id = ctx.services, ctx.payload["instance_id"]
    request_id = ctx.payload.get("request_id")
    with instance_lock(instance_id):
        inst, _ = _load(services, instance_id)
        if inst is None or inst.deleted:
            return {"skipped": "gone"}
        _event(services, instance_id, request_id, CRASH_DUMP_EVENT)
        with services.db.session() as session:
            events.emit(session, "compute", "compute.instance.trigger_crash_dump.start",
                        instance_id, inst.project_id)
        crash.point("trigger_crash_dump", "before-nmi")
        error: Exception | None = None
        try:
            services.virt.qmp(instance_id, "inject-nmi")
        except Exception as exc:  # noqa: BLE001 - recorded on the action
            LOG.warning("instance %s: inject-nmi failed: %s", instance_id, exc)
            error = exc
        with services.db.session() as session:
            events.emit(session, "compute", "compute.instance.trigger_crash_dump."
                        + ("error" if error else "end"), instance_id, inst.project_id)
    _event(services, instance_id, request_id, CRASH_DUMP_EVENT,
           "Error" if error else "Success",
           None if error is None else f"{type(error).__name__}: {error}")
    return {"error": str(error) if error else None}
