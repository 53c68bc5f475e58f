"""Volumes from images and snapshots copy nothing; the download-and-convert path vs dd.

* volume from image (raw, block store): create time for an image with 8 GiB written
  vs one with 64 MiB written — goal <= 1.5 (a clone costs the same whatever the data);
* volume from snapshot: the same for a volume with 8 GiB vs 64 MiB written;
* volume from a qcow2 image (download, `qemu-img convert`, import): throughput vs
  `dd bs=8M conv=fsync` of the same bytes on the same disk — informational.
Times are API request to status ``available``, best of 3, measured side by side.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from strato.storage import open_engine
from tests.support import Server, free_port

BIG, SMALL = 8 << 30, 64 << 20
ROUNDS = 5


def _fill(path: Path, size: int) -> None:
    piece = os.urandom(8 << 20)
    with open(path, "wb") as fh:
        for i in range(size // len(piece)):
            fh.write(i.to_bytes(8, "big") + piece[8:])


def _wait(c: httpx.Client, url: str, key: str, want: str = "available") -> None:
    while True:
        status = c.get(url).json()[key]["status"]
        if status == want:
            return
        if status == "error":
            raise RuntimeError(f"{url} went to error")
        time.sleep(0.02)


def run() -> Iterator[dict]:
    work = Path(tempfile.mkdtemp(prefix="strato-bench-volume-", dir="/var/tmp"))
    srv = Server(work / "state", free_port(), extra_conf={
        "volume": {"quota_gigabytes": "-1", "quota_volumes": "-1"}})
    try:
        srv.setup()
        srv.start()
        token = srv.token()
        c = srv.client(token)
        c.headers["OpenStack-API-Version"] = "volume 3.65"
        project = c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]
        base = f"/volume/v3/{project}"

        def image_of(size: int, fmt: str = "raw") -> str:
            src = work / f"src-{size}.{fmt}"
            if fmt == "raw":
                _fill(src, size)
            else:
                raw = work / "tmp.raw"
                _fill(raw, size)
                subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(src)],
                               check=True)
                raw.unlink()
            img = c.post("/image/v2/images", json={"name": f"b{size}", "disk_format": fmt,
                                                   "container_format": "bare"}).json()
            subprocess.run(["curl", "-sS", "-f", "-T", str(src), "-H", f"X-Auth-Token: {token}",
                            "-H", "Content-Type: application/octet-stream",
                            f"{srv.url}/image/v2/images/{img['id']}/file"], check=True)
            src.unlink()
            return img["id"]

        def timed_create(**fields) -> tuple[float, str]:  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            vol = c.post(f"{base}/volumes", json={"volume": {"size": 9, **fields}}).json()
            _wait(c, f"{base}/volumes/{vol['volume']['id']}", "volume")
            return time.perf_counter() - started, vol["volume"]["id"]

        times: dict[str, list[float]] = {k: [] for k in (
            "image_big", "image_small", "snap_big", "snap_small", "convert", "dd")}
        images = {"big": image_of(BIG), "small": image_of(SMALL)}
        # Volumes with data written into them (not through a parent), then snapshots.
        blocks = open_engine("local", root=srv.state / "blocks", repair=False)
        snaps = {}
        for label, size in (("big", BIG), ("small", SMALL)):
            _, vid = timed_create()
            with blocks.open("volumes", f"volume-{vid}") as vol:
                piece = os.urandom(8 << 20)
                for off in range(0, size, len(piece)):
                    vol.write(piece, off)
            r = c.post(f"{base}/snapshots", json={"snapshot": {"volume_id": vid}}).json()
            _wait(c, f"{base}/snapshots/{r['snapshot']['id']}", "snapshot")
            snaps[label] = r["snapshot"]["id"]
        qcow = image_of(2 << 30, "qcow2")
        src = work / "dd-src"
        _fill(src, 2 << 30)
        for _ in range(ROUNDS):
            for label in ("big", "small"):
                t, _ = timed_create(imageRef=images[label])
                times[f"image_{label}"].append(t)
                t, _ = timed_create(snapshot_id=snaps[label])
                times[f"snap_{label}"].append(t)
        for _ in range(2):
            t, _ = timed_create(imageRef=qcow)
            times["convert"].append(t)
            started = time.perf_counter()
            subprocess.run(["dd", f"if={src}", f"of={work / 'dd-out'}", "bs=8M",
                            "conv=fsync", "status=none"], check=True)
            times["dd"].append(time.perf_counter() - started)
            (work / "dd-out").unlink()
        c.close()
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    for what in ("image", "snap"):
        yield {"bench": "volume", "metric": f"from_{what}_8GiB_vs_64MiB_time",
               "value": round(best[f"{what}_big"] / best[f"{what}_small"], 3),
               "unit": "ratio", "goal": "<= 1.5"}
        yield {"bench": "volume", "metric": f"from_{what}_8GiB_seconds",
               "value": round(best[f"{what}_big"], 3), "unit": "s", "goal": "info"}
    yield {"bench": "volume", "metric": "download_convert_throughput_vs_dd",
           "value": round(best["dd"] / best["convert"], 3), "unit": "ratio", "goal": "info"}
