"""Cinder backups against a real ``strato serve``: the real client for create (full,
incremental, --snapshot, --force), list/show/set/delete, restore into a new and an
existing volume checked byte for byte, record export/import, quotas, errors and shapes,
and a ``kill -9`` in the middle of a backup and of a restore."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from strato.backup.store import object_name
from strato.storage import open_engine
from tests.api_schemas import (
    BOOLEAN,
    DATETIME,
    INTEGER,
    LINKS,
    METADATA,
    NULLABLE_STRING,
    STRING,
    UUID,
    assert_shape,
    strict,
)
from tests.support import Server, free_port
from tests.tenants import make_tenant

GiB, MiB = 1 << 30, 1 << 20
V = "volume 3.64"


def _engine(server: Server):  # type: ignore[no-untyped-def]
    return open_engine("local", root=server.state / "blocks", repair=False)


def _backups_engine(server: Server):  # type: ignore[no-untyped-def]
    return open_engine("local", root=server.state / "backups", pools=("backups",),
                       repair=False)


def _write(server: Server, volume_id: str, offset: int, data: bytes) -> None:
    with _engine(server).open("volumes", f"volume-{volume_id}") as image:
        image.write(data, offset)


def _read(server: Server, volume_id: str, offset: int, length: int) -> bytes:
    with _engine(server).open("volumes", f"volume-{volume_id}", read_only=True) as image:
        return image.read(offset, length)


def _snaps(server: Server, volume_id: str) -> list[str]:
    with _engine(server).open("volumes", f"volume-{volume_id}", read_only=True) as image:
        return [s.name for s in image.list_snaps()]


def _pattern(seed: int, length: int) -> bytes:
    return (seed.to_bytes(4, "big") * (length // 4 + 1))[:length]


def _import(cinder: Cinder, record: dict) -> httpx.Response:
    return cinder.c.post(f"{cinder.base}/backups/import_record", json={"backup-record": {
        "backup_service": record["backup_service"], "backup_url": record["backup_url"]}})


class Cinder:
    def __init__(self, server: Server, token: str, project_id: str,
                 version: str = V) -> None:
        self.c = server.client(token)
        self.c.headers["OpenStack-API-Version"] = version
        self.base = f"/volume/v3/{project_id}"

    def wait(self, kind: str, row_id: str, want: str, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            r = self.c.get(f"{self.base}/{kind}s/{row_id}")
            if r.status_code == 404 and want == "gone":
                return {}
            assert r.status_code == 200, r.text
            body = r.json()[kind]
            if body["status"] == want:
                return body
            time.sleep(0.1)
        raise AssertionError(f"{kind} {row_id} did not reach {want}: {body}")

    def volume(self, size: int = 1) -> str:
        r = self.c.post(f"{self.base}/volumes", json={"volume": {
            "size": size, "name": f"v-{uuid.uuid4().hex[:6]}"}})
        assert r.status_code == 202, r.text
        return self.wait("volume", r.json()["volume"]["id"], "available")["id"]

    def backup(self, volume_id: str, expect: int = 202, **fields) -> dict:  # type: ignore[no-untyped-def]
        r = self.c.post(f"{self.base}/backups", json={"backup": {"volume_id": volume_id,
                                                                 **fields}})
        assert r.status_code == expect, r.text
        return r.json()


@pytest.fixture(scope="module")
def cinder(server: Server, admin_token: str) -> Cinder:
    pid = httpx.get(f"{server.url}/identity/v3/auth/tokens", headers={
        "X-Auth-Token": admin_token, "X-Subject-Token": admin_token}).json()[
        "token"]["project"]["id"]
    return Cinder(server, admin_token, pid)


def test_cli_full_incremental_restore_byte_for_byte(server: Server,
                                                    cinder: Cinder) -> None:
    vol = cinder.volume(1)
    _write(server, vol, 0, _pattern(1, 8 * MiB))
    _write(server, vol, 700 * MiB, _pattern(2, 3 * MiB))
    server.openstack("volume", "set", "--property", "kept=yes", vol)
    full = server.openstack_json("volume", "backup", "create", "--name", "full",
                                 "--container", "box", vol)
    assert full["name"] == "full"
    got = cinder.wait("backup", full["id"], "available")
    assert got["is_incremental"] is False and got["container"] == "box"
    assert got["size"] == 1 and got["object_count"] > 0
    assert cinder.wait("volume", vol, "available")
    assert _snaps(server, vol) == [f"backup.{full['id']}"]
    # the volume grows with the newest backup's hidden snapshot on it (os-extend)
    server.openstack("volume", "set", "--size", "2", vol)
    assert cinder.wait("volume", vol, "available")["size"] == 2
    # change 4 MiB, and 1 MiB past the old end: the incremental holds only that
    _write(server, vol, 4 * MiB, _pattern(3, 4 * MiB))
    _write(server, vol, 1500 * MiB, _pattern(4, MiB))
    inc = server.openstack_json("volume", "backup", "create", "--incremental",
                                "--name", "inc", vol)
    got = cinder.wait("backup", inc["id"], "available")
    assert got["is_incremental"] is True
    assert got["object_count"] < cinder.wait("backup", full["id"], "available")[
        "object_count"]
    assert _snaps(server, vol) == [f"backup.{inc['id']}"]  # the older base went
    shown = server.openstack_json("volume", "backup", "show", full["id"])
    assert shown["has_dependent_backups"] is True
    listed = server.openstack_json("volume", "backup", "list", "--volume", vol)
    assert {b["ID"] for b in listed} == {full["id"], inc["id"]}
    # restore the incremental into a new volume: the data as of the incremental
    restored = server.openstack_json("volume", "backup", "restore", inc["id"],
                                     f"r-{uuid.uuid4().hex[:6]}")
    new_id = restored["volume_id"]
    cinder.wait("volume", new_id, "available")
    cinder.wait("backup", inc["id"], "available")
    got = cinder.wait("volume", new_id, "available")
    assert got["size"] == 2 and got["metadata"] == {"kept": "yes"}  # the volume's, too
    for off, length in ((0, 8 * MiB), (700 * MiB, 3 * MiB), (100 * MiB, MiB),
                        (1500 * MiB, MiB)):
        assert _read(server, new_id, off, length) == _read(server, vol, off, length)
    # restore the full one over an existing volume: its own data is gone
    target = cinder.volume(3)
    _write(server, target, 300 * MiB, b"\xff" * MiB)
    server.openstack("volume", "backup", "restore", "--force", full["id"], target)
    cinder.wait("backup", full["id"], "available")
    cinder.wait("volume", target, "available")
    assert _read(server, target, 0, 4 * MiB) == _pattern(1, 4 * MiB)
    assert _read(server, target, 4 * MiB, 4 * MiB) == _pattern(1, 8 * MiB)[4 * MiB:]
    assert _read(server, target, 300 * MiB, MiB) == bytes(MiB)
    # set, delete: the parent cannot go before its incremental
    server.openstack("--os-volume-api-version", "3.43", "volume", "backup", "set",
                     "--name", "renamed", "--description", "d", "--property", "k=v",
                     full["id"])
    shown = server.openstack_json("--os-volume-api-version", "3.43", "volume", "backup",
                                  "show", full["id"])
    assert shown["name"] == "renamed" and shown["metadata"] == {"k": "v"}
    bad = server.openstack("volume", "backup", "delete", full["id"], check=False)
    assert bad.returncode != 0 and "Incremental backups exist" in bad.stderr
    server.openstack("volume", "backup", "delete", inc["id"])
    cinder.wait("backup", inc["id"], "gone")
    assert not _backups_engine(server).exists("backups", inc["id"])
    assert _snaps(server, vol) == []  # the newest backup's base went with it
    server.openstack("volume", "backup", "delete", full["id"])
    cinder.wait("backup", full["id"], "gone")
    assert not _backups_engine(server).exists("backups", full["id"])
    for v in (vol, new_id, target):
        server.openstack("volume", "delete", v)


def test_snapshot_backup_force_and_errors(server: Server, cinder: Cinder) -> None:
    vol = cinder.volume(1)
    _write(server, vol, 0, _pattern(7, MiB))
    snap = cinder.c.post(f"{cinder.base}/snapshots", json={"snapshot": {
        "volume_id": vol, "name": "s"}}).json()["snapshot"]
    cinder.wait("snapshot", snap["id"], "available")
    _write(server, vol, 0, _pattern(8, MiB))  # after the snapshot: not in its backup
    b = server.openstack_json("volume", "backup", "create", "--snapshot", snap["id"], vol)
    got = cinder.wait("backup", b["id"], "available")
    assert got["snapshot_id"] == snap["id"]
    cinder.wait("snapshot", snap["id"], "available")
    assert not any(n.startswith("backup.") for n in _snaps(server, vol))
    r = cinder.c.post(f"{cinder.base}/backups/{b['id']}/restore", json={"restore": None})
    assert r.status_code == 202, r.text
    assert_shape(r.json(), strict({"restore": strict({
        "backup_id": UUID, "volume_id": UUID, "volume_name": STRING})}))
    new_id = r.json()["restore"]["volume_id"]
    assert r.json()["restore"]["volume_name"] == f"restore_backup_{b['id']}"
    cinder.wait("volume", new_id, "available")
    assert _read(server, new_id, 0, MiB) == _pattern(7, MiB)
    # a volume created from the backup (3.47), bigger than it
    made = server.openstack_json("--os-volume-api-version", "3.47", "volume", "create",
                                 "--backup", b["id"], "--size", "2", "from-backup")
    got = cinder.wait("volume", made["id"], "available")
    assert got["size"] == 2 and got["name"] == "from-backup"
    assert _read(server, made["id"], 0, MiB) == _pattern(7, MiB)
    cinder.wait("backup", b["id"], "available")
    server.openstack("volume", "delete", made["id"])
    # errors: 404, 400s
    assert cinder.backup(str(uuid.uuid4()), expect=404)
    assert "No backups available" in str(cinder.backup(new_id, expect=400,
                                                       incremental=True))
    assert cinder.c.post(f"{cinder.base}/backups", json={"backup": {
        "volume_id": vol, "bogus": 1}}).status_code == 400
    assert cinder.c.post(f"{cinder.base}/backups", json={"backup": {
        "volume_id": vol, "metadata": {"a": "b"}}},
        headers={"OpenStack-API-Version": "volume 3.42"}).status_code == 400
    assert cinder.c.get(f"{cinder.base}/backups/{uuid.uuid4()}").status_code == 404
    r = cinder.c.post(f"{cinder.base}/backups/{b['id']}/restore", json={"restore": {
        "volume_id": str(uuid.uuid4())}})
    assert r.status_code == 404
    for v in (new_id,):
        server.openstack("volume", "delete", v)
    cinder.c.delete(f"{cinder.base}/backups/{b['id']}")
    cinder.wait("backup", b["id"], "gone")
    cinder.c.delete(f"{cinder.base}/snapshots/{snap['id']}")
    cinder.wait("snapshot", snap["id"], "gone")
    server.openstack("volume", "delete", vol)


def test_shapes_per_microversion(server: Server, cinder: Cinder) -> None:
    vol = cinder.volume(1)
    created = cinder.backup(vol, name="shape", metadata={"a": "1"})
    assert_shape(created, strict({"backup": strict({"id": UUID, "name": STRING, "links": LINKS,
                                                    "metadata": METADATA})}))
    bid = created["backup"]["id"]
    cinder.wait("backup", bid, "available")
    base = {"id": UUID, "status": STRING, "size": INTEGER, "object_count": INTEGER,
            "availability_zone": STRING, "container": NULLABLE_STRING,
            "created_at": DATETIME, "updated_at": DATETIME, "name": STRING,
            "description": NULLABLE_STRING, "fail_reason": NULLABLE_STRING,
            "volume_id": UUID, "links": LINKS, "is_incremental": BOOLEAN,
            "has_dependent_backups": BOOLEAN, "snapshot_id": NULLABLE_STRING,
            "data_timestamp": DATETIME}
    null = {"type": "null"}
    for version, extra in (
            ("3.0", {}),
            ("3.18", {"os-backup-project-attr:project_id": STRING}),
            ("3.43", {"os-backup-project-attr:project_id": STRING, "metadata": METADATA}),
            ("3.56", {"os-backup-project-attr:project_id": STRING, "metadata": METADATA,
                      "user_id": STRING}),
            ("3.64", {"os-backup-project-attr:project_id": STRING, "metadata": METADATA,
                      "user_id": STRING, "encryption_key_id": null})):
        r = cinder.c.get(f"{cinder.base}/backups/{bid}",
                         headers={"OpenStack-API-Version": f"volume {version}"})
        assert_shape(r.json(), strict({"backup": strict({**base, **extra})}))
    r = cinder.c.get(f"{cinder.base}/backups", params={"with_count": "true"},
                     headers={"OpenStack-API-Version": "volume 3.45"})
    assert r.json()["count"] == len(r.json()["backups"]) >= 1
    assert_shape(r.json()["backups"][0], strict({"id": UUID, "name": NULLABLE_STRING,
                                                 "links": LINKS}))
    r = cinder.c.put(f"{cinder.base}/backups/{bid}", json={"backup": {"name": "x"}},
                     headers={"OpenStack-API-Version": "volume 3.8"})
    assert r.status_code == 404
    r = cinder.c.put(f"{cinder.base}/backups/{bid}", json={"backup": {"name": "x"}},
                     headers={"OpenStack-API-Version": "volume 3.9"})
    assert_shape(r.json(), strict({"backup": strict({"id": UUID, "name": STRING,
                                                     "links": LINKS})}))
    cinder.c.delete(f"{cinder.base}/backups/{bid}")
    cinder.wait("backup", bid, "gone")
    server.openstack("volume", "delete", vol)


def test_export_import_reset_force_delete(server: Server, cinder: Cinder) -> None:
    vol = cinder.volume(1)
    _write(server, vol, 0, _pattern(9, MiB))
    b = server.openstack_json("volume", "backup", "create", vol)
    cinder.wait("backup", b["id"], "available")
    record = server.openstack_json("volume", "backup", "record", "export", b["id"])
    assert record["backup_service"] and record["backup_url"]
    # gone from the database, kept in the store: the import brings it back
    cinder.c.post(f"{cinder.base}/backups/{b['id']}/action",
                  json={"os-reset_status": {"status": "error"}})
    assert cinder.wait("backup", b["id"], "error")
    from strato.backup.models import Backup
    from strato.config import load
    from strato.db import Database

    db = Database(load(server.conf).database.connection)
    with db.session() as session:
        session.delete(session.get(Backup, b["id"]))
    db.dispose()
    # (openstacksdk's import_record posts to /backups/export_record with that path as
    # the backup_url, so `openstack volume backup record import` cannot work against
    # any Cinder; the import is sent as cinderclient and the API reference send it)
    imported = _import(cinder, record)
    assert imported.status_code == 201, imported.text
    assert_shape(imported.json(), strict({"backup": strict({
        "id": UUID, "name": NULLABLE_STRING, "links": LINKS})}))
    cinder.wait("backup", b["id"], "available")
    r = cinder.c.post(f"{cinder.base}/backups/{b['id']}/restore", json={"restore": {}})
    new_id = r.json()["restore"]["volume_id"]
    cinder.wait("volume", new_id, "available")
    assert _read(server, new_id, 0, MiB) == _pattern(9, MiB)
    again = _import(cinder, record)
    assert again.status_code == 400 and "already exists" in again.text
    # force delete (admin) of an errored backup; then an import finds no data: error
    cinder.c.post(f"{cinder.base}/backups/{b['id']}/action",
                  json={"os-reset_status": {"status": "error"}})
    r = cinder.c.post(f"{cinder.base}/backups/{b['id']}/action",
                      json={"os-force_delete": {}})
    assert r.status_code == 202, r.text
    cinder.wait("backup", b["id"], "gone")
    assert _import(cinder, record).status_code == 201
    got = cinder.wait("backup", b["id"], "error")
    assert "not in the backup store" in got["fail_reason"]
    cinder.c.delete(f"{cinder.base}/backups/{b['id']}")
    cinder.wait("backup", b["id"], "gone")
    for v in (vol, new_id):
        server.openstack("volume", "delete", v)


def test_quota_policy_and_usage(server: Server, cinder: Cinder) -> None:
    tenant = make_tenant(server, "bq")
    mine = Cinder(server, tenant.token(), tenant.project_id)
    vol = mine.volume(1)
    admin = cinder
    r = admin.c.put(f"{admin.base}/os-quota-sets/{tenant.project_id}",
                    json={"quota_set": {"backups": 1}})
    assert r.status_code == 200 and r.json()["quota_set"]["backups"] == 1
    first = mine.backup(vol)["backup"]["id"]
    mine.wait("backup", first, "available")
    over = mine.backup(vol, expect=413)
    assert "backups" in str(over)
    usage = admin.c.get(f"{admin.base}/os-quota-sets/{tenant.project_id}",
                        params={"usage": "true"}).json()["quota_set"]
    assert usage["backups"]["in_use"] == 1 and usage["backup_gigabytes"]["in_use"] == 1
    limits = mine.c.get(f"{mine.base}/limits").json()["limits"]["absolute"]
    assert limits["totalBackupsUsed"] == 1 and limits["maxTotalBackups"] == 1
    assert limits["totalBackupGigabytesUsed"] == 1
    # a member may not force-delete, reset, export or import
    assert mine.c.post(f"{mine.base}/backups/{first}/action",
                       json={"os-force_delete": {}}).status_code == 403
    assert mine.c.post(f"{mine.base}/backups/{first}/action",
                       json={"os-reset_status": {"status": "error"}}).status_code == 403
    assert mine.c.get(f"{mine.base}/backups/{first}/export_record").status_code == 403
    # another project sees nothing of it
    other = make_tenant(server, "bq2")
    theirs = Cinder(server, other.token(), other.project_id)
    assert theirs.c.get(f"{theirs.base}/backups/{first}").status_code == 404
    assert theirs.c.get(f"{theirs.base}/backups").json()["backups"] == []
    seen = admin.c.get(f"{admin.base}/backups", params={"all_tenants": "1"}).json()
    assert first in {b["id"] for b in seen["backups"]}
    mine.c.delete(f"{mine.base}/backups/{first}")
    mine.wait("backup", first, "gone")
    usage = admin.c.get(f"{admin.base}/os-quota-sets/{tenant.project_id}",
                        params={"usage": "true"}).json()["quota_set"]
    assert usage["backups"]["in_use"] == 0 and usage["backup_gigabytes"]["in_use"] == 0


# ------------------------------------------------------------------ crash convergence
@pytest.fixture
def crash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("bk"), free_port(),
                 extra_conf={"jobs": {"lease_seconds": "2"}})
    srv.setup()
    yield srv
    srv.stop()


@pytest.mark.parametrize("point", ["backup:after-snapshot", "backup:after-write",
                                   "backup:restore-after-create",
                                   "backup:delete-after-store"])
def test_kill9_mid_backup_and_restore_converges(crash_server: Server, point: str) -> None:
    """The server dies (SIGKILL) at the point; restarted, the job runs again and the
    backup (or restore) finishes with nothing left over."""
    srv = crash_server
    srv.start()
    token = srv.token()
    pid = httpx.get(f"{srv.url}/identity/v3/auth/tokens", headers={
        "X-Auth-Token": token, "X-Subject-Token": token}).json()["token"]["project"]["id"]
    cinder = Cinder(srv, token, pid)
    vol = cinder.volume(1)
    _write(srv, vol, 0, _pattern(5, 2 * MiB))
    backup_id = None
    if point.startswith(("backup:restore", "backup:delete")):
        backup_id = cinder.backup(vol)["backup"]["id"]
        cinder.wait("backup", backup_id, "available")
    srv.stop()
    os.environ["STRATO_STORAGE_CRASHPOINT"] = point
    try:
        srv.start()
    finally:
        del os.environ["STRATO_STORAGE_CRASHPOINT"]
    cinder = Cinder(srv, srv.token(), pid)
    if backup_id is None:
        backup_id = cinder.backup(vol)["backup"]["id"]
    elif point.startswith("backup:delete"):
        assert cinder.c.delete(f"{cinder.base}/backups/{backup_id}").status_code == 202
    else:
        r = cinder.c.post(f"{cinder.base}/backups/{backup_id}/restore",
                          json={"restore": {"name": "r"}})
        assert r.status_code == 202, r.text
        new_id = r.json()["restore"]["volume_id"]
    assert srv.proc is not None
    srv.proc.wait(60)  # it killed itself at the point
    assert srv.proc.returncode == -9
    srv.start()
    cinder = Cinder(srv, srv.token(), pid)
    if point.startswith("backup:delete"):
        cinder.wait("backup", backup_id, "gone")
        assert _snaps(srv, vol) == [] and _backups_engine(srv).list("backups") == []
        return
    cinder.wait("backup", backup_id, "available")
    cinder.wait("volume", vol, "available")
    assert _snaps(srv, vol) == [f"backup.{backup_id}"]
    assert _backups_engine(srv).list("backups") == [object_name(backup_id)]
    if point.startswith("backup:restore"):
        cinder.wait("volume", new_id, "available")
        assert _read(srv, new_id, 0, 2 * MiB) == _pattern(5, 2 * MiB)


def test_failed_backup_and_given_up_job_end_in_error(crash_server: Server,
                                                     tmp_path_factory: pytest.TempPathFactory
                                                     ) -> None:
    """A failure mid-backup (an injected one after the snapshot) leaves the backup
    ``error`` with its reason, the volume as it was, no hidden snapshot and no store
    object; a backup whose job is gone (it gave up) ends so at the next start."""
    from sqlalchemy import select

    from strato.backup.models import Backup
    from strato.config import load
    from strato.db import Database
    from strato.events import Event
    from strato.jobs.models import Job
    from strato.storage.crash import FAULT_FILE_ENV

    srv = crash_server
    fault = tmp_path_factory.mktemp("fault") / "fault"
    os.environ[FAULT_FILE_ENV] = str(fault)
    try:
        srv.start()
    finally:
        del os.environ[FAULT_FILE_ENV]
    token = srv.token()
    pid = httpx.get(f"{srv.url}/identity/v3/auth/tokens", headers={
        "X-Auth-Token": token, "X-Subject-Token": token}).json()["token"]["project"]["id"]
    cinder = Cinder(srv, token, pid)
    vol = cinder.volume(1)
    fault.write_text("fail backup:after-snapshot")
    bid = cinder.backup(vol)["backup"]["id"]
    got = cinder.wait("backup", bid, "error")
    assert "injected fault" in got["fail_reason"]
    cinder.wait("volume", vol, "available")
    assert _snaps(srv, vol) == [] and _backups_engine(srv).list("backups") == []
    ok = cinder.backup(vol)["backup"]["id"]
    cinder.wait("backup", ok, "available")
    db = Database(load(srv.conf).database.connection)
    with db.session(readonly=True) as session:
        kinds = [e.event_type for e in session.scalars(select(Event).where(
            Event.resource_id.in_((bid, ok))).order_by(Event.id))]
    assert kinds == ["backup.create.start", "backup.create.error", "backup.create.start",
                     "backup.create.end"]
    srv.stop()
    # what a job that gave up leaves: the backup creating, the volume backing-up
    from strato.volume.models import Volume

    stuck = str(uuid.uuid4())
    with db.session() as session:
        host = session.get(Backup, ok).host
        session.add(Backup(id=stuck, volume_id=vol, project_id=pid, status="creating",
                           size=1, object_count=0, incremental=False, metadata_={},
                           previous_status="available", host=host,
                           reservations=[], quota_committed=True))
        session.get(Volume, vol).status = "backing-up"
        assert not [j for j in session.scalars(select(Job)) if
                    (j.payload or {}).get("backup_id") == stuck]
    srv.start()
    cinder = Cinder(srv, srv.token(), pid)
    got = cinder.wait("backup", stuck, "error")
    assert "gave up" in got["fail_reason"]
    cinder.wait("volume", vol, "available")
    db.dispose()
