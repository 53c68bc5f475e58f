"""Errors of the QEMU driver (all derive from ``VirtError``)."""

from __future__ import annotations

from strato import qmp


class VirtError(Exception):
    """Base of every hypervisor driver error."""


class InstanceNotFound(VirtError):
    """No instance directory (never spawned here, or destroyed)."""


class InstanceNotRunning(VirtError):
    """The operation needs a running QEMU process and there is none."""


class InstanceRunning(VirtError):
    """The operation needs the instance off (e.g. spawn over a live process)."""


class SpawnError(VirtError):
    """QEMU refused to start; the message carries its stderr."""


class QMPError(VirtError, qmp.QMPError):
    """A QMP command failed (``klass`` is QEMU's error class) or QMP is unreachable."""


class AgentUnavailable(VirtError):
    """The guest agent does not answer (not booted yet, not installed, or wedged)."""


class AgentError(VirtError):
    """The guest agent answered a command with an error."""

    def __init__(self, command: str, klass: str, desc: str) -> None:
        super().__init__(f"{command}: {klass}: {desc}")
        self.command = command
        self.klass = klass
        self.desc = desc
