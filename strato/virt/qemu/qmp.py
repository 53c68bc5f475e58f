"""The hypervisor's QMP session: ``strato.qmp.Monitor`` raising the driver's QMPError."""

from __future__ import annotations

from strato import qmp

from .errors import QMPError


class Monitor(qmp.Monitor):
    error = QMPError

    def send_fd(self, fd: int, name: str) -> None:
        """Hand QEMU an open fd under ``name`` (``getfd`` with SCM_RIGHTS): a tap for
        ``netdev_add`` of a hot-plugged NIC."""
        try:
            self._client.send_fd_scm(fd)
        except Exception as exc:  # OSError, a closed or non-unix transport
            raise self.error(f"getfd {name}: cannot send the fd: {exc}") from exc
        self.execute("getfd", {"fdname": name})


__all__ = ["Monitor", "QMPError"]
