"""The hypervisor's QMP session: ``strato.qmp.Monitor`` raising the driver's QMPError."""

from __future__ import annotations

from strato import qmp

from .errors import QMPError


class Monitor(qmp.Monitor):
    error = QMPError


__all__ = ["Monitor", "QMPError"]
