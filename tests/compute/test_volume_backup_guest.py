"""The proof of issue 18's Cinder backups: ``openstack volume backup create --force`` of
an in-use volume while the guest writes files on an ext4 filesystem on it (the local
engine: the guest's QEMU takes the hidden snapshot), then an ``--incremental`` one the
same way; the incremental restored into a new volume passes ``e2fsck -fn`` on the host
(after the journal replay a mount would do: a crash-consistent copy)."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from strato.config import load
from strato.db import Database
from strato.jobs.models import Job
from strato.storage import open_engine
from strato.virt.qemu import QemuDriver
from tests.compute.conftest import Nova, boot_ready, wait_guest_serial, wait_volume
from tests.support import Server

MiB = 1 << 20
FS_MB = 64


def _wait_backup(nova: Nova, backup_id: str, status: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = nova.c.get(f"/volume/v3/{nova.project_id}/backups/{backup_id}")
        if r.status_code == 404 and status == "gone":
            return {}
        body = r.json()["backup"]
        if body["status"] == status:
            return body
        assert body["status"] != "error", body
        time.sleep(0.3)
    raise AssertionError(f"backup {backup_id} not {status}: {body}")


def _files(driver: QemuDriver, sid: str) -> int:
    with driver.agent(sid) as ga:
        # the writer rewrites the file: a read between its truncate and its write is empty
        out = ga.sh("cat /mnt/count 2>/dev/null").stdout.decode().split()
        return int(out[0]) if out else 0


def test_forced_backups_of_a_written_volume_restore_to_a_clean_filesystem(
        compute_server: Server, nova: Nova, driver: QemuDriver, tmp_path: Path) -> None:
    srv = compute_server
    engine = open_engine("local", root=srv.state / "blocks", repair=False)
    vol = str(srv.openstack_json("volume", "create", "--size", "1",
                                 f"bk-{uuid.uuid4().hex[:6]}")["id"])  # type: ignore[index]
    wait_volume(nova, vol, "available")
    # an ext4 filesystem made on the host, written into the volume before it is attached
    fs = tmp_path / "fs.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", str(fs), f"{FS_MB}M"], check=True)
    with engine.open("volumes", f"volume-{vol}") as image:
        image.write(fs.read_bytes(), 0)

    sid = boot_ready(srv, "--image", "strato-guest", prefix="bk")
    try:
        srv.openstack("server", "add", "volume", sid, vol)
        wait_volume(nova, vol, "in-use")
        wait_guest_serial(driver, sid, vol[:20])
        writer = (
            f"for d in /sys/block/vd*; do [ \"$(cat $d/serial)\" = {vol[:20]} ] && "
            "dev=/dev/${d##*/}; done; mkdir -p /mnt && mount -t ext4 $dev /mnt || exit 7; "
            "setsid sh -c 'i=0; while true; do "
            "dd if=/dev/urandom of=/mnt/f$((i % 40)).tmp bs=16k count=$((i % 7 + 1)) "
            "2>/dev/null; mv /mnt/f$((i % 40)).tmp /mnt/f$((i % 40)); mkdir -p /mnt/d$((i % 9)); "
            "echo $i > /mnt/d$((i % 9))/n; i=$((i + 1)); echo $i > /mnt/count; "
            "[ $((i % 25)) = 0 ] && sync; done' </dev/null >/dev/null 2>&1 &"
        )
        with driver.agent(sid) as ga:
            res = ga.sh(writer, timeout=30)
        assert res.exitcode == 0, (res.exitcode, res.stdout, res.stderr)
        deadline = time.monotonic() + 30
        while _files(driver, sid) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _files(driver, sid) >= 20  # the guest writes

        # without --force an in-use volume is refused
        refused = srv.openstack("volume", "backup", "create", vol, check=False)
        assert refused.returncode != 0 and "force" in refused.stderr
        full = srv.openstack_json("volume", "backup", "create", "--force", "--name", "live",
                                  vol)
        _wait_backup(nova, str(full["id"]), "available")  # type: ignore[index]
        assert wait_volume(nova, vol, "in-use")["status"] == "in-use"
        before = _files(driver, sid)
        deadline = time.monotonic() + 30
        while _files(driver, sid) < before + 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _files(driver, sid) >= before + 20  # still writing, on the new overlay
        inc = srv.openstack_json("volume", "backup", "create", "--force", "--incremental",
                                 "--name", "live-inc", vol)
        inc_id = str(inc["id"])  # type: ignore[index]
        got = _wait_backup(nova, inc_id, "available")
        assert got["is_incremental"] is True
        with engine.open("volumes", f"volume-{vol}", read_only=True) as image:
            assert [s.name for s in image.list_snaps()] == [f"backup.{inc_id}"]
        # both were taken by the guest's QEMU: the job was handed to the compute host
        db = Database(load(srv.conf).database.connection)
        with db.session(readonly=True) as session:
            targets = {j.payload["backup_id"]: j.target for j in session.scalars(select(
                Job).where(Job.name == "backup.create")) if j.target.startswith("host:")}
        db.dispose()
        assert {inc_id, str(full["id"])} <= set(targets)  # type: ignore[index]

        restored = srv.openstack_json("volume", "backup", "restore", inc_id,
                                      f"rs-{uuid.uuid4().hex[:6]}")
        new_id = str(restored["volume_id"])  # type: ignore[index]
        wait_volume(nova, new_id, "available")
        _wait_backup(nova, inc_id, "available")
        out = tmp_path / "restored.img"
        with engine.open("volumes", f"volume-{new_id}", read_only=True) as image, \
                out.open("wb") as fh:
            fh.write(image.read(0, FS_MB * MiB))
        # what a mount does first: replay the journal; then a full, read-only check
        replay = subprocess.run(["e2fsck", "-fy", "-E", "journal_only", str(out)],
                                capture_output=True, text=True)
        assert replay.returncode in (0, 1), replay.stdout + replay.stderr
        check = subprocess.run(["e2fsck", "-fn", str(out)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        listing = subprocess.run(["debugfs", "-R", "ls -l /", str(out)], capture_output=True,
                                 text=True, check=True).stdout
        assert "count" in listing and "f0" in listing

    finally:
        srv.openstack("server", "delete", "--wait", sid)
    wait_volume(nova, vol, "available")
    for backup in (inc_id, str(full["id"])):  # type: ignore[index]
        srv.openstack("volume", "backup", "delete", backup)
        _wait_backup(nova, backup, "gone")
    srv.openstack("volume", "delete", vol, new_id)
