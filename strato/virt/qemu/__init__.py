"""strato's QEMU hypervisor driver (QMP via ``qemu.qmp``, plus the guest agent).

Entry point: ``QemuDriver(state_dir)``; see ``driver`` for the life-cycle choices and
``spec`` for the disk node-name convention shared with ``strato.storage``.
"""

from .agent import ExecResult, GuestAgent
from .driver import QemuDriver, Resolver, storage_resolver
from .errors import (
    AgentError,
    AgentUnavailable,
    InstanceNotFound,
    InstanceNotRunning,
    InstanceRunning,
    QMPError,
    SpawnError,
    VirtError,
)
from .spec import CdromSpec, DiskSpec, GuestSpec, NicSpec, PowerState, node_prefix

__all__ = [
    "CdromSpec",
    "AgentError", "AgentUnavailable", "DiskSpec", "ExecResult", "GuestAgent", "GuestSpec",
    "InstanceNotFound", "InstanceNotRunning", "InstanceRunning", "NicSpec", "PowerState",
    "QMPError",
    "QemuDriver", "Resolver", "SpawnError", "VirtError", "node_prefix", "storage_resolver",
]
