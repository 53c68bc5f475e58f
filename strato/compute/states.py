"""Nova's instance states and the API ``status`` they show as."""

from __future__ import annotations

from strato.virt.qemu import PowerState

BUILDING, ACTIVE, STOPPED, PAUSED, SUSPENDED = (
    "building", "active", "stopped", "paused", "suspended")
ERROR, DELETED = "error", "deleted"
RESIZED, RESCUED, SHELVED, SHELVED_OFFLOADED = (
    "resized", "rescued", "shelved", "shelved_offloaded")

SPAWNING, POWERING_OFF, POWERING_ON = "spawning", "powering-off", "powering-on"
REBOOTING, REBOOTING_HARD = "rebooting", "rebooting_hard"
PAUSING, UNPAUSING, SUSPENDING, RESUMING = "pausing", "unpausing", "suspending", "resuming"
DELETING = "deleting"
REBUILDING, REBUILD_BLOCK_DEVICE_MAPPING, REBUILD_SPAWNING = (
    "rebuilding", "rebuild_block_device_mapping", "rebuild_spawning")
RESIZE_PREP, RESIZE_MIGRATING, RESIZE_MIGRATED, RESIZE_FINISH = (
    "resize_prep", "resize_migrating", "resize_migrated", "resize_finish")
RESIZE_REVERTING, RESIZE_CONFIRMING = "resize_reverting", "resize_confirming"
RESCUING, UNRESCUING = "rescuing", "unrescuing"
SHELVING, SHELVING_IMAGE_PENDING_UPLOAD, SHELVING_IMAGE_UPLOADING = (
    "shelving", "shelving_image_pending_upload", "shelving_image_uploading")
SHELVING_OFFLOADING, UNSHELVING, SPAWNING_UNSHELVE = (
    "shelving_offloading", "unshelving", "spawning")
UPDATING_PASSWORD = "updating_password"
MIGRATING = "migrating"  # live migration
IMAGE_SNAPSHOT_PENDING, IMAGE_SNAPSHOT = "image_snapshot_pending", "image_snapshot"
IMAGE_PENDING_UPLOAD, IMAGE_UPLOADING = "image_pending_upload", "image_uploading"
IMAGE_BACKUP = "image_backup"
#: createBackup's task states, in order (Nova's backup skips image_snapshot)
BACKUP_TASKS = (IMAGE_BACKUP, IMAGE_PENDING_UPLOAD, IMAGE_UPLOADING)
#: the task states of an image being made from the instance (createImage's, in order,
#: then createBackup's first): a restart with no job behind one abandons its image
SNAPSHOT_TASKS = (IMAGE_SNAPSHOT_PENDING, IMAGE_SNAPSHOT, IMAGE_PENDING_UPLOAD, IMAGE_UPLOADING,
                  IMAGE_BACKUP)
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
           SUSPENDED: "SUSPENDED", ERROR: "ERROR", DELETED: "DELETED",
           RESIZED: "VERIFY_RESIZE", RESCUED: "RESCUE", SHELVED: "SHELVED",
           SHELVED_OFFLOADED: "SHELVED_OFFLOADED"}
#: task states that show as another status while the vm_state is ACTIVE or STOPPED
_TASK_STATUS = {
    REBUILDING: "REBUILD", REBUILD_BLOCK_DEVICE_MAPPING: "REBUILD",
    REBUILD_SPAWNING: "REBUILD", UPDATING_PASSWORD: "PASSWORD",
    RESIZE_PREP: "RESIZE", RESIZE_MIGRATING: "RESIZE", RESIZE_MIGRATED: "RESIZE",
    RESIZE_FINISH: "RESIZE", MIGRATING: "MIGRATING",
}


def status(vm_state: str, task_state: str | None) -> str:
    """Nova's ``status`` (``nova.api.openstack.common._STATE_MAP``)."""
    if vm_state in (ACTIVE, STOPPED) and task_state == REBOOTING:
        return "REBOOT"
    if vm_state in (ACTIVE, STOPPED) and task_state == REBOOTING_HARD:
        return "HARD_REBOOT"
    if vm_state in (ACTIVE, STOPPED) and task_state in _TASK_STATUS:
        return _TASK_STATUS[task_state]
    if vm_state == RESIZED and task_state == RESIZE_REVERTING:
        return "REVERT_RESIZE"
    return _STATUS.get(vm_state, "UNKNOWN")


#: status filter -> vm_states
STATUS_FILTER = {
    "ACTIVE": (ACTIVE,), "BUILD": (BUILDING,), "SHUTOFF": (STOPPED,), "PAUSED": (PAUSED,),
    "SUSPENDED": (SUSPENDED,), "ERROR": (ERROR,), "DELETED": (DELETED,),
    "VERIFY_RESIZE": (RESIZED,), "RESCUE": (RESCUED,), "SHELVED": (SHELVED,),
    "SHELVED_OFFLOADED": (SHELVED_OFFLOADED,), "REBUILD": (ACTIVE, STOPPED),
    "RESIZE": (ACTIVE, STOPPED), "REVERT_RESIZE": (RESIZED,), "PASSWORD": (ACTIVE,),
    "REBOOT": (ACTIVE, STOPPED), "HARD_REBOOT": (ACTIVE, STOPPED),
}
#: status filter -> the task states it also needs (Nova filters on both)
STATUS_TASKS: dict[str, tuple[str, ...]] = {
    "REBOOT": (REBOOTING,), "HARD_REBOOT": (REBOOTING_HARD,),
    "REVERT_RESIZE": (RESIZE_REVERTING,), "PASSWORD": (UPDATING_PASSWORD,),
    "REBUILD": tuple(t for t, st in _TASK_STATUS.items() if st == "REBUILD"),
    "RESIZE": tuple(t for t, st in _TASK_STATUS.items() if st == "RESIZE"),
}
