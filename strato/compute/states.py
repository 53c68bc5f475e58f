"""Nova's instance states and the API ``status`` they show as."""

from __future__ import annotations

from strato.virt.qemu import PowerState

BUILDING, ACTIVE, STOPPED, PAUSED, SUSPENDED = (
    "building", "active", "stopped", "paused", "suspended")
ERROR, DELETED = "error", "deleted"

SPAWNING, POWERING_OFF, POWERING_ON = "spawning", "powering-off", "powering-on"
REBOOTING, REBOOTING_HARD = "rebooting", "rebooting_hard"
PAUSING, UNPAUSING, SUSPENDING, RESUMING = "pausing", "unpausing", "suspending", "resuming"
DELETING = "deleting"
IMAGE_SNAPSHOT_PENDING, IMAGE_SNAPSHOT = "image_snapshot_pending", "image_snapshot"
IMAGE_PENDING_UPLOAD, IMAGE_UPLOADING = "image_pending_upload", "image_uploading"
#: createImage's task states, in order
SNAPSHOT_TASKS = (IMAGE_SNAPSHOT_PENDING, IMAGE_SNAPSHOT, IMAGE_PENDING_UPLOAD, IMAGE_UPLOADING)
SNAPSHOT_VM_STATES = (ACTIVE, STOPPED, PAUSED, SUSPENDED)

#: action -> (vm_states it needs, task_state while it runs, vm_state after, power after)
POWER_ACTIONS: dict[str, tuple[tuple[str, ...], str, str, int]] = {
    "stop": ((ACTIVE, ERROR), POWERING_OFF, STOPPED, PowerState.SHUTDOWN),
    "start": ((STOPPED,), POWERING_ON, ACTIVE, PowerState.RUNNING),
    "reboot": ((ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR), REBOOTING, ACTIVE,
               PowerState.RUNNING),
    "reboot_hard": ((ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR), REBOOTING_HARD, ACTIVE,
                    PowerState.RUNNING),
    "pause": ((ACTIVE,), PAUSING, PAUSED, PowerState.PAUSED),
    "unpause": ((PAUSED,), UNPAUSING, ACTIVE, PowerState.RUNNING),
    "suspend": ((ACTIVE,), SUSPENDING, SUSPENDED, PowerState.SUSPENDED),
    "resume": ((SUSPENDED,), RESUMING, ACTIVE, PowerState.RUNNING),
}

_STATUS = {BUILDING: "BUILD", ACTIVE: "ACTIVE", STOPPED: "SHUTOFF", PAUSED: "PAUSED",
           SUSPENDED: "SUSPENDED", ERROR: "ERROR", DELETED: "DELETED"}


def status(vm_state: str, task_state: str | None) -> str:
    """Nova's ``status`` (``nova.api.openstack.common._STATE_MAP``)."""
    if vm_state in (ACTIVE, STOPPED) and task_state == REBOOTING:
        return "REBOOT"
    if vm_state in (ACTIVE, STOPPED) and task_state == REBOOTING_HARD:
        return "HARD_REBOOT"
    return _STATUS.get(vm_state, "UNKNOWN")


#: status filter -> vm_states
STATUS_FILTER = {
    "ACTIVE": (ACTIVE,), "BUILD": (BUILDING,), "SHUTOFF": (STOPPED,), "PAUSED": (PAUSED,),
    "SUSPENDED": (SUSPENDED,), "ERROR": (ERROR,), "DELETED": (DELETED,),
    "REBOOT": (ACTIVE, STOPPED), "HARD_REBOOT": (ACTIVE, STOPPED),
}
