"""Several compute hosts with real processes, on one machine: one ``strato serve
--no-compute`` (the API with its embedded workers for ``any`` and the volume backends'
jobs, no compute agent) and N ``strato worker`` processes, each with its own
``[DEFAULT] host``, instances directory (guests' QMP sockets, consoles, pid files),
snapshot staging and network state, all on one PostgreSQL.

What the hosts share stands for what Ceph gives a real deployment: the API's
``state_path`` (block store ``[storage] local_path``, Glance's file store, the fernet
keys).  ``Cluster(ceph=...)`` puts images, volumes and instance disks on the Ceph
cluster instead (the rbd options go into the API's conf, which every worker copies):
the instance disks are then truly shared, as live migration and evacuation need.

A dead host is ``Host.kill9()``: its worker AND the QEMUs it ran die at once (a machine
that loses power takes its guests with it); ``Host.start()`` brings it back.  Every
process logs to its own file (``api/server.log``, ``hostN/worker.log``).  ``stop()``
leaves no process and no guest behind, whatever state a failed test left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from strato.virt.qemu import QemuDriver
from tests.support import BIN, Server, free_port, strato, terminate


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
        if self.proc is not None:
            terminate(self.proc)

    def kill_worker(self) -> None:
        """The worker process alone dies (SIGKILL): its guests run on (QEMU is
        daemonized), as when strato crashes or is upgraded."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def kill9(self) -> None:
        """The host dies: its worker and every guest it runs, SIGKILL, no clean-up (the
        guests' directories stay, as on a machine that lost power)."""
        self.kill_worker()
        drv = self.driver()
        for sid in drv.list_instances():
            pid = drv.pid(sid)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while drv.list_running():  # SIGKILL is asynchronous: until they are gone
            assert time.monotonic() < deadline, drv.list_running()
            time.sleep(0.05)

    def guests(self) -> list[str]:
        """The instances whose QEMU runs on this host."""
        return self.driver().list_running()

    def destroy_guests(self) -> None:
        drv = self.driver()
        for sid in drv.list_instances():
            drv.destroy(sid)


class Cluster:
    """The API process and its compute hosts (``hosts`` by name)."""

    def __init__(self, root: Path, db_url: str, hosts: int = 3,
                 extra_conf: dict[str, dict[str, str]] | None = None,
                 ceph: str | None = None) -> None:
        """``ceph``: a ceph.conf; images, volumes and instance disks go on that cluster
        (as tests/compute/test_ceph_e2e.py runs one host)."""
        extra: dict[str, dict[str, str]] = {}
        if ceph:
            extra = {"storage": {"engine": "rbd"},
                     "glance_store": {"rbd_store_ceph_conf": ceph},
                     "volume": {"rbd_ceph_conf": ceph, "enabled_backends": "ceph:volumes"},
                     "compute": {"images_rbd_ceph_conf": ceph}}
        for k, v in (extra_conf or {}).items():
            extra.setdefault(k, {}).update(v)
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
        """Every process and guest gone, even after a failed test: workers first (no
        job starts a guest meanwhile), the API, then whatever QEMU is left."""
        errors: list[BaseException] = []
        for step in [*(h.stop for h in self.hosts.values()), self.api.stop,
                     *(h.destroy_guests for h in self.hosts.values())]:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - clean up the rest, then raise
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def host_of(self, server_id: str) -> Host:
        """The host whose QEMU runs the server (exactly one)."""
        found = [h for h in self.hosts.values() if server_id in h.guests()]
        assert len(found) == 1, f"{server_id} runs on {[h.name for h in found]}"
        return found[0]

    def wait_host_state(self, host: str, state: str, timeout: float = 60) -> float:
        """Until os-hypervisors says ``host`` is ``state``; the seconds it took (polled
        over REST every 0.2 s: a CLI process per poll would blur the measure)."""
        t0 = time.monotonic()
        with self.api.client(self.api.token()) as c:
            while True:
                r = c.get("/compute/v2.1/os-hypervisors",
                          headers={"OpenStack-API-Version": "compute 2.53"})
                assert r.status_code == 200, r.text
                rows = {h["hypervisor_hostname"]: h["state"]
                        for h in r.json()["hypervisors"]}
                if rows.get(host) == state:
                    return time.monotonic() - t0
                assert time.monotonic() - t0 < timeout, rows
                time.sleep(0.2)

    def wait_hosts_up(self, timeout: float = 60) -> list[dict]:
        """Until ``hypervisor list`` (the client) shows every host up; its rows."""
        deadline = time.monotonic() + timeout
        rows: list = []
        while time.monotonic() < deadline:
            rows = self.api.openstack_json("hypervisor", "list")  # type: ignore[assignment]
            if sorted(r["Hypervisor Hostname"] for r in rows if r["State"] == "up") \
                    == sorted(self.hosts):
                return rows
            time.sleep(0.5)
        raise AssertionError(f"hosts not all up: {rows}")


def jobs_of(db_url: str, instance_id: str) -> list[tuple[int, str, str, str, Any]]:
    """(id, name, target, state, result) of every job about this instance, in order."""
    url = make_url(db_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         dbname=url.database) as conn:
        return list(conn.execute(
            "SELECT id, name, target, state, result FROM jobs "
            "WHERE payload->>'instance_id' = %s ORDER BY id", (instance_id,)))


def ran_on(cluster: Cluster, job_id: int, name: str) -> list[str]:
    """The hosts whose worker log says it started this job."""
    pat = re.compile(rf"job {job_id} {re.escape(name)} \(attempt")
    return [h.name for h in cluster.hosts.values()
            if h.log.exists() and pat.search(h.log.read_text())]
