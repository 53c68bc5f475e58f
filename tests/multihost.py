"""Several compute hosts with real processes, on one machine: one ``strato serve
--no-compute`` (the API with its embedded workers for ``any`` and the volume backends'
jobs, no compute agent) and N ``strato worker`` processes, each with its own
``[DEFAULT] host``, instances directory (guests' QMP sockets, consoles, pid files),
snapshot staging and network state, all on one PostgreSQL.

What the hosts share stands for what Ceph gives a real deployment: the API's
``state_path`` (block store ``[storage] local_path``, Glance's file store, the fernet
keys).  On the ``rbd`` engine the same harness needs only the Ceph options in the API's
conf (every worker copies it): the instance disks are then truly shared, which live
migration and evacuation need (a spike: see /work/prompts/i20-H-findings.md).
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from strato.virt.qemu import QemuDriver
from tests.support import BIN, Server, free_port, strato


@dataclass
class Host:
    """A ``strato worker`` process: one compute host."""

    name: str
    root: Path
    conf: Path
    proc: subprocess.Popen | None = None

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    def driver(self) -> QemuDriver:
        return QemuDriver(self.instances)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "strato"), "worker", "--config", str(self.conf)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def destroy_guests(self) -> None:
        drv = self.driver()
        for sid in drv.list_instances():
            drv.destroy(sid)


class Cluster:
    """The API process and its compute hosts (``hosts`` by name)."""

    def __init__(self, root: Path, db_url: str, hosts: int = 3,
                 extra_conf: dict[str, dict[str, str]] | None = None) -> None:
        extra = {k: dict(v) for k, v in (extra_conf or {}).items()}
        extra.setdefault("database", {})["connection"] = db_url
        extra.setdefault("DEFAULT", {}).setdefault("host", "api")
        self.root = root
        self.api = Server(root / "api", free_port(), extra_conf=extra)
        self.hosts = {f"host{i}": Host(f"host{i}", root / f"host{i}",
                                       root / f"host{i}" / "strato.conf")
                      for i in range(1, hosts + 1)}

    def setup(self, guest: bool = True) -> None:
        self.api.setup()
        if guest:
            strato("guest", "--config", str(self.api.conf))
        text = self.api.conf.read_text()
        for h in self.hosts.values():
            h.root.mkdir(parents=True, exist_ok=True)
            own = {"DEFAULT": {"host": h.name},
                   "compute": {"instances_path": str(h.instances),
                               "snapshots_directory": str(h.root / "snapshots")},
                   "network": {"state_path": str(h.root / "network")},
                   "volume": {"image_conversion_dir": str(h.root / "conversion")}}
            mine = text
            for section, values in own.items():
                # the API's conf sets [DEFAULT] host first in its section: replace it
                mine = mine.replace("host = api\n", "", 1) if section == "DEFAULT" else mine
                lines = "".join(f"{k} = {v}\n" for k, v in values.items())
                mine = mine.replace(f"[{section}]\n", f"[{section}]\n{lines}", 1)
            h.conf.write_text(mine)

    def start(self) -> None:
        self.api.start("--no-compute")
        for h in self.hosts.values():
            h.start()

    def stop(self) -> None:
        for h in self.hosts.values():
            h.stop()
        self.api.stop()
        for h in self.hosts.values():
            h.destroy_guests()

    def host_of(self, server_id: str) -> Host:
        for h in self.hosts.values():
            if server_id in h.driver().list_instances():
                return h
        raise AssertionError(f"no host runs {server_id}")

    def wait_hosts_up(self, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        rows: list = []
        while time.monotonic() < deadline:
            rows = self.api.openstack_json("hypervisor", "list")  # type: ignore[assignment]
            if sorted(r["Hypervisor Hostname"] for r in rows if r["State"] == "up") \
                    == sorted(self.hosts):
                return rows
            time.sleep(0.5)
        raise AssertionError(f"hosts not all up: {rows}")
