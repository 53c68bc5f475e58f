"""The compute agent of one host: registers the host's capacity, re-attaches to the
guests still running after a restart, resolves half-finished tasks, and keeps every
instance's power state in step with QMP ``query-status``."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from typing import Any

from sqlalchemy import select, update

from strato.compute import evacuate, resize, states
from strato.compute.api import now
from strato.compute.manager import instance_lock, vm_state_for
from strato.compute.metadata_server import MetadataServer
from strato.compute.models import ComputeNode, Instance
from strato.compute.views import iso
from strato.jobs.models import PENDING, RUNNING, Job
from strato.jobs.queue import enqueue
from strato.virt.qemu import PowerState
from strato.virt.qemu.process import accel

LOG = logging.getLogger(__name__)
_POWER_TASKS = {t for _, t, _, _ in states.POWER_ACTIONS.values()}
REBUILD_TASKS = (states.REBUILDING, states.REBUILD_BLOCK_DEVICE_MAPPING,
                 states.REBUILD_SPAWNING)


def _host_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


class ComputeAgent:
    def __init__(self, services: Any) -> None:
        self.services = services
        self.host = services.conf.DEFAULT.host
        self.driver = services.virt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.metadata: MetadataServer | None = None
        #: servers evacuated from this host: their guests here were destroyed at start
        self.evacuated: set[str] = set()

    def start(self) -> None:
        self.register()
        # before anything looks at the guests: the ones evacuated while this host was
        # down run elsewhere now (Nova's _destroy_evacuated_instances)
        self.evacuated = evacuate.destroy_evacuated(self.services, self.host)
        evacuate.destroy_strays(self.services, self.host)
        found = self.driver.reattach()
        # the guests' metadata sockets, at the paths their QEMU already forwards to
        self.metadata = MetadataServer(self.services)
        self.metadata.start()
        self.services.metadata_server = self.metadata
        LOG.info("compute agent on %s: %d guests found, %d running", self.host, len(found),
                 sum(1 for p in found.values() if p == PowerState.RUNNING))
        choice = accel()
        LOG.info("compute agent on %s: guests run under %s: %s", self.host, choice.name,
                 choice.reason)
        self.reconcile()
        # the heartbeat os-services and os-hypervisors read this service's state from
        threading.Thread(target=self._heartbeat, name="compute-heartbeat",
                         daemon=True).start()
        resize.start_auto_confirm(self.services, self.host, self._stop)
        interval = self.services.conf.compute.sync_power_state_interval
        if interval > 0:
            self._thread = threading.Thread(target=self._loop, args=(interval,),
                                            name="compute-power-sync", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.metadata is not None:
            self.services.metadata_server = None
            self.metadata.stop()

    def register(self) -> None:
        """This host's capacity, for the scheduler, and its facts (os-hypervisors)."""
        from strato.compute.hosts import host_facts

        path = self.services.conf.compute.instances_path
        os.makedirs(path, exist_ok=True)
        disk_gb = shutil.disk_usage(path).total >> 30
        with self.services.db.session() as session:
            node = session.get(ComputeNode, self.host)
            if node is None:
                node = ComputeNode(host=self.host, memory_mb=0, vcpus=0, local_gb=0)
                session.add(node)
            node.memory_mb, node.vcpus = _host_memory_mb(), os.cpu_count() or 1
            node.local_gb, node.updated_at = disk_gb, now()
            node.facts = host_facts(self.services.conf)

    def _instances(self) -> list[Instance]:
        with self.services.db.session(readonly=True) as session:
            rows = list(session.scalars(select(Instance).where(
                Instance.host == self.host, Instance.deleted.is_(False))))
            session.expunge_all()
            return rows

    def _with_jobs(self) -> set[str]:
        """Instances that still have a job queued or running for this host."""
        with self.services.db.session(readonly=True) as session:
            return {str(j.payload.get("instance_id")) for j in session.scalars(select(Job).where(
                Job.target == f"host:{self.host}", Job.state.in_((PENDING, RUNNING))))}

    def reconcile(self) -> None:
        """After a restart: no task state is left half done without a job to finish it."""
        busy = self._with_jobs()
        for inst in self._instances():
            if inst.task_state is None or inst.id in busy or inst.id in self.evacuated:
                continue
            LOG.info("instance %s: resolving task %s left by a restart", inst.id,
                     inst.task_state)
            if resize.reconcile(self.services, inst):
                continue
            from strato.compute import live_migration_manager

            if live_migration_manager.reconcile(self.services, inst):
                continue
            if inst.task_state in states.SNAPSHOT_TASKS:
                from strato.compute.snapshot_manager import abandon

                abandon(self.services, inst)  # then the task state is resolved below
            with self.services.db.session() as session:
                if inst.task_state == states.DELETING:
                    enqueue(session, "compute.delete", {"instance_id": inst.id, "ctx": {
                        "user_id": inst.user_id, "project_id": inst.project_id,
                        "roles": ["admin"], "request_id": None}}, target=f"host:{self.host}")
                elif inst.task_state in REBUILD_TASKS:  # its job is gone: run it again
                    enqueue(session, "compute.rebuild", {"instance_id": inst.id, "ctx": {
                        "user_id": inst.user_id, "project_id": inst.project_id,
                        "roles": ["admin"], "request_id": None}}, target=f"host:{self.host}")
                elif inst.task_state == states.SPAWNING:
                    # the build job is gone: ERROR, quota back; a delete cleans the rest
                    reservations = list(inst.reservations or [])  # before the UPDATE
                    done = session.execute(update(Instance).where(
                        Instance.id == inst.id, Instance.task_state == states.SPAWNING)
                        .values(vm_state=states.ERROR, task_state=None, updated_at=now(),
                                reservations=[], fault={
                                    "code": 500, "message": "The build was interrupted.",
                                    "created": iso(now())}))
                    if done.rowcount:
                        self.services.compute.quota.rollback(session, reservations)
                else:
                    p = self.driver.power_state(inst.id)
                    session.execute(update(Instance).where(
                        Instance.id == inst.id, Instance.task_state == inst.task_state)
                        .values(task_state=None, power_state=int(p), updated_at=now(),
                                vm_state=vm_state_for(p, inst.vm_state)))
        from strato.compute.snapshot_manager import sweep_orphan_snapshots

        sweep_orphan_snapshots(self.services, self.host)
        self.sync_power_states()

    def sync_power_states(self) -> int:
        """Nova's ``_sync_power_states``: the hypervisor is the truth for power state; a
        guest that went away while ACTIVE/PAUSED is SHUTOFF now.  Returns changes."""
        changed = 0
        for inst in self._instances():
            if inst.task_state is not None or inst.vm_state in (states.BUILDING,
                                                                 states.ERROR):
                continue
            with instance_lock(inst.id):
                p = self.driver.power_state(inst.id)
                if p == PowerState.NOSTATE and self.driver.pid(inst.id) is None:
                    p = PowerState.SHUTDOWN
                vm_state = inst.vm_state
                if vm_state in (states.ACTIVE, states.PAUSED) and p in (
                        PowerState.SHUTDOWN, PowerState.CRASHED):
                    vm_state = states.STOPPED
                if int(p) == inst.power_state and vm_state == inst.vm_state:
                    continue
                with self.services.db.session() as session:
                    changed += session.execute(update(Instance).where(
                        Instance.id == inst.id, Instance.task_state.is_(None),
                        Instance.vm_state == inst.vm_state).values(
                        power_state=int(p), vm_state=vm_state, updated_at=now())).rowcount
                LOG.info("instance %s: power state %s (was %s), vm_state %s", inst.id,
                         p.name, inst.power_state, vm_state)
        return changed

    def _heartbeat(self) -> None:
        from strato.compute.hosts import heartbeat

        # [DEFAULT] report_interval; os-services reads [DEFAULT] service_down_time
        while not self._stop.wait(self.services.conf.DEFAULT.report_interval):
            try:
                heartbeat(self.services.db, self.host, self.services.conf)
            except Exception:  # noqa: BLE001 - the next beat tries again
                LOG.exception("compute heartbeat failed")

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync_power_states()
            except Exception:  # noqa: BLE001 - the next round tries again
                LOG.exception("power state sync failed")
