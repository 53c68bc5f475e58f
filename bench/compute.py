"""Compute: boot-to-guest-ready time, and ``GET /servers/detail`` latency at 1,000 servers.

* boot: ``POST /servers`` (tiny guest, m1.nano) to ``ACTIVE`` and to the guest's
  ``STRATO-GUEST-READY`` on its serial console — median of 3, informational;
* list: 1,000 instances written straight into the database (on a host no agent
  runs, so nothing boots), then ``GET /compute/v2.1/servers/detail`` (all 1,000 in
  one page, microversion 2.79) 30 times — p50 goal < 50 ms; p95 informational.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from strato.compute.models import Instance
from strato.config import load
from strato.db import Database
from strato.virt.qemu import QemuDriver
from tests.support import Server, free_port, strato

BOOTS = 3
LISTS = 30
N = 1000


def _seed(conf_path: Path, project_id: str, user_id: str) -> None:
    db = Database.from_config(load(conf_path))
    start = datetime.now(UTC) - timedelta(hours=1)
    flavor = {"id": "1", "name": "m1.tiny", "memory_mb": 512, "vcpus": 1, "root_gb": 1,
              "ephemeral_gb": 0, "swap": 0, "extra_specs": {}}
    with db.session() as session:
        for i in range(N):
            iid = str(uuid.uuid4())
            session.add(Instance(
                id=iid, name=f"bench-{i:04d}", project_id=project_id, user_id=user_id,
                host="bench-elsewhere", image_ref=str(uuid.uuid4()), flavor_id="1",
                flavor=flavor, vm_state="active", task_state=None, power_state=1,
                metadata_={"i": str(i)}, tags=[], network="none",
                mac=f"fa:16:3e:{iid[0:2]}:{iid[2:4]}:{iid[4:6]}", reservation_id="r-bench",
                reservations=[], quota_committed=True, launched_at=start,
                created_at=start + timedelta(seconds=i), updated_at=start))
    db.dispose()


def run() -> Iterator[dict]:
    work = Path(tempfile.mkdtemp(prefix="strato-bench-compute-", dir="/var/tmp"))
    srv = Server(work / "state", free_port(), extra_conf={"compute": {
        "quota_instances": "-1", "quota_cores": "-1", "quota_ram": "-1"}})
    try:
        srv.setup()
        strato("guest", "--config", str(srv.conf))
        srv.start()
        token = srv.token()
        c = srv.client(token)
        c.headers["OpenStack-API-Version"] = "compute 2.79"
        tok = c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": token}).json()
        project, user = tok["token"]["project"]["id"], tok["token"]["user"]["id"]
        image = c.get("/image/v2/images?name=strato-guest").json()["images"][0]["id"]
        drv = QemuDriver(srv.state / "instances")
        active, ready = [], []
        for i in range(BOOTS):
            started = time.perf_counter()
            sid = c.post("/compute/v2.1/servers", json={"server": {
                "name": f"boot-{i}", "imageRef": image, "flavorRef": "42",
                "networks": "none"}}).json()["server"]["id"]
            while c.get(f"/compute/v2.1/servers/{sid}").json()["server"]["status"] != "ACTIVE":
                time.sleep(0.02)
            active.append(time.perf_counter() - started)
            while "STRATO-GUEST-READY" not in drv.console_output(sid):
                time.sleep(0.02)
            ready.append(time.perf_counter() - started)
            c.delete(f"/compute/v2.1/servers/{sid}")
            while c.get(f"/compute/v2.1/servers/{sid}").status_code != 404:
                time.sleep(0.05)
        _seed(srv.conf, project, user)
        lat = []
        for _ in range(LISTS + 3):
            started = time.perf_counter()
            r = c.get("/compute/v2.1/servers/detail")
            lat.append(time.perf_counter() - started)
            assert r.status_code == 200 and len(r.json()["servers"]) == N, r.text[:200]
        lat = sorted(lat[3:])  # the first requests warm caches
        c.close()
    finally:
        srv.stop()
        drv = QemuDriver(work / "state" / "instances")
        for uuid_ in drv.list_instances():
            drv.destroy(uuid_)
        shutil.rmtree(work, ignore_errors=True)
    yield {"bench": "compute", "metric": "boot_to_active_seconds",
           "value": round(statistics.median(active), 3), "unit": "s", "goal": "info"}
    yield {"bench": "compute", "metric": "boot_to_guest_ready_seconds",
           "value": round(statistics.median(ready), 3), "unit": "s", "goal": "info"}
    yield {"bench": "compute", "metric": "servers_detail_1000_p50_ms",
           "value": round(lat[len(lat) // 2] * 1000, 1), "unit": "ms", "goal": "< 50"}
    yield {"bench": "compute", "metric": "servers_detail_1000_p95_ms",
           "value": round(lat[int(len(lat) * 0.95)] * 1000, 1), "unit": "ms", "goal": "info"}
