"""Instance snapshots: createImage to ``active`` does not grow with what the guest wrote.

Four running guests (KVM when the host has it): image-backed and volume-backed, each
once with 64 MiB and once with 8 GiB written by the guest itself (random data ``dd``'d to its
disk, ``conv=fsync``).  For each, ``POST /servers/{id}/action {"createImage"}`` (2.45) until
the image is ``active`` and the task state is cleared — median of 3.  Goals: 8 GiB /
64 MiB <= 1.5 and p50 < 1 s, for both kinds.  Between runs the image's hash pass
(a background job reading the data) is awaited, so it never overlaps a measurement.

The same run then restarts the server with ``snapshot_image_format = qcow2`` (the
standard path: extract with qemu-img into ``snapshots_directory`` and upload) and times
one createImage of each image-backed guest, for comparison.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from strato.virt.qemu import QemuDriver
from tests.support import Server, free_port, strato

REPS = 3
SMALL_MB, LARGE_MB = 64, 8192
DISK_GB = 10


def _wait(pred, timeout: float = 1200, step: float = 0.01) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("bench step did not finish")
        time.sleep(step)


class Cloud:
    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.c: httpx.Client = srv.client(srv.token())
        self.c.headers["OpenStack-API-Version"] = "compute 2.79"
        self.c.timeout = 120

    def server(self, sid: str) -> dict:
        return self.c.get(f"/compute/v2.1/servers/{sid}").json()["server"]

    def image(self, image_id: str) -> dict:
        return self.c.get(f"/image/v2/images/{image_id}").json()

    def boot(self, drv: QemuDriver, name: str, volume_backed: bool, image: str) -> str:
        body: dict = {"name": name, "flavorRef": "bench-snap", "networks": "none"}
        if volume_backed:
            body["block_device_mapping_v2"] = [{
                "uuid": image, "source_type": "image", "destination_type": "volume",
                "boot_index": 0, "volume_size": DISK_GB, "delete_on_termination": True}]
        else:
            body["imageRef"] = image
        r = self.c.post("/compute/v2.1/servers", json={"server": body})
        assert r.status_code == 202, r.text
        sid = str(r.json()["server"]["id"])
        _wait(lambda: self.server(sid)["status"] == "ACTIVE", step=0.2)
        _wait(lambda: "STRATO-GUEST-READY" in drv.console_output(sid), step=0.2)
        drv.wait_for_agent(sid)
        return sid

    def snapshot(self, sid: str, hashed: bool) -> tuple[float, str]:
        started = time.perf_counter()
        r = self.c.post(f"/compute/v2.1/servers/{sid}/action",
                        json={"createImage": {"name": f"bench-{sid[:8]}"}})
        assert r.status_code == 202, r.text
        image_id = r.json()["image_id"]
        _wait(lambda: self.image(image_id)["status"] == "active"
              and self.server(sid)["OS-EXT-STS:task_state"] is None)
        took = time.perf_counter() - started
        status = self.image(image_id)["status"]
        assert status == "active", status
        if hashed:  # the background hash pass, outside the measurement
            _wait(lambda: self.image(image_id)["checksum"] is not None, step=0.2)
        return took, image_id


def _write(drv: QemuDriver, sid: str, mb: int) -> None:
    """The guest writes ``mb`` MiB of incompressible, non-zero data to its own disk,
    past its 64 MiB filesystem (one random 4 MiB block, repeated: nothing dedupes)."""
    with drv.agent(sid, timeout=1800) as ga:
        r = ga.sh("dd if=/dev/urandom of=/tmp/block bs=4M count=1 2>/dev/null && "
                  f"i=0; while [ $i -lt {mb // 4} ]; do cat /tmp/block; i=$((i+1)); done | "
                  "dd of=/dev/vda bs=4M seek=32 iflag=fullblock conv=fsync 2>&1",
                  timeout=1800)
        assert r.exitcode == 0, r.stdout


def run() -> Iterator[dict]:
    work = Path(tempfile.mkdtemp(prefix="strato-bench-snapshot-", dir="/var/tmp"))
    srv = Server(work / "state", free_port(), extra_conf={"compute": {
        "quota_instances": "-1", "quota_cores": "-1", "quota_ram": "-1"}})
    drv = QemuDriver(work / "state" / "instances")
    times: dict[tuple[str, int], list[float]] = {}
    standard: dict[int, float] = {}
    try:
        srv.setup()
        strato("guest", "--config", str(srv.conf))
        srv.start()
        cloud = Cloud(srv)
        r = cloud.c.post("/compute/v2.1/flavors", json={"flavor": {
            "name": "bench-snap", "id": "bench-snap", "ram": 256, "vcpus": 1,
            "disk": DISK_GB}})
        assert r.status_code == 200, r.text
        image = cloud.c.get("/image/v2/images?name=strato-guest").json()["images"][0]["id"]
        guests: dict[tuple[str, int], str] = {}
        for kind in ("image", "volume"):
            for mb in (SMALL_MB, LARGE_MB):
                sid = cloud.boot(drv, f"{kind}-{mb}", kind == "volume", image)
                _write(drv, sid, mb)
                guests[(kind, mb)] = sid
        for _ in range(REPS):  # interleaved, so drift hits both sizes alike
            for (kind, mb), sid in guests.items():
                took, _ = cloud.snapshot(sid, hashed=kind == "image")
                times.setdefault((kind, mb), []).append(took)
        cloud.c.close()
        conf = srv.conf.read_text()
        srv.stop()
        srv.conf.write_text(conf.replace("[compute]\n",
                                          "[compute]\nsnapshot_image_format = qcow2\n", 1))
        srv.start()
        cloud = Cloud(srv)
        for mb in (SMALL_MB, LARGE_MB):
            standard[mb], _ = cloud.snapshot(guests[("image", mb)], hashed=False)
        cloud.c.close()
    finally:
        srv.stop()
        for uuid_ in drv.list_instances():
            drv.destroy(uuid_)
        shutil.rmtree(work, ignore_errors=True)
    for kind in ("image", "volume"):
        small = statistics.median(times[(kind, SMALL_MB)])
        large = statistics.median(times[(kind, LARGE_MB)])
        yield {"bench": "snapshot", "metric": f"{kind}_backed_8g_vs_64m_ratio",
               "value": round(large / small, 3), "unit": "x", "goal": "<= 1.5"}
        yield {"bench": "snapshot", "metric": f"{kind}_backed_8g_p50_seconds",
               "value": round(large, 3), "unit": "s", "goal": "< 1"}
        yield {"bench": "snapshot", "metric": f"{kind}_backed_64m_p50_seconds",
               "value": round(small, 3), "unit": "s", "goal": "< 1"}
    yield {"bench": "snapshot", "metric": "standard_path_8g_seconds",
           "value": round(standard[LARGE_MB], 3), "unit": "s", "goal": "info"}
    yield {"bench": "snapshot", "metric": "standard_path_64m_seconds",
           "value": round(standard[SMALL_MB], 3), "unit": "s", "goal": "info"}
    yield {"bench": "snapshot", "metric": "direct_vs_standard_8g_ratio",
           "value": round(statistics.median(times[("image", LARGE_MB)])
                          / standard[LARGE_MB], 4), "unit": "x", "goal": "info"}
