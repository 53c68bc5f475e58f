"""Where strato must behave as OpenStack does (issue 13): key names, cascade deletes,
errored volumes and the quota, the attachments API's fields, and Cinder's user
messages for asynchronous failures — through the real client and raw HTTP."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from strato.context import RequestContext
from strato.db import Database
from strato.policy import Enforcer
from strato.volume.messages import Action, Detail, Message, Resource, UserMessages, record
from tests.bootimages import mbr_bytes
from tests.support import Server, free_port
from tests.test_volume import Cinder, _blocks, _upload_image, _wait

BUSY = "delete snapshot:Snapshot is busy."
NO_BACKEND = "schedule allocate volume:Could not find any available weighted backend."


def _project(server: Server, token: str) -> str:
    with server.client(token) as c:
        return c.get("/identity/v3/auth/tokens", headers={
            "X-Subject-Token": token}).json()["token"]["project"]["id"]


@pytest.fixture
def cinder(server: Server) -> Cinder:
    token = server.token()
    return Cinder(server, token, _project(server, token))


def _messages(cinder: Cinder, **params: str) -> list[dict]:
    r = cinder.c.get(f"{cinder.base}/messages", params=params,
                     headers={"OpenStack-API-Version": "volume 3.5"})
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def _wait_messages(cinder: Cinder, resource_uuid: str, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = _messages(cinder, resource_uuid=resource_uuid)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no message for {resource_uuid}")


def _flavor(server: Server, token: str) -> str:
    """A flavor no host here can hold (more vCPUs than 2 cores x cpu_allocation_ratio,
    within the default quota): a server that goes to ERROR without a guest."""
    with server.client(token) as c:
        headers = {"OpenStack-API-Version": "compute 2.79"}
        if c.get("/compute/v2.1/flavors/huge-sem", headers=headers).status_code == 404:
            r = c.post("/compute/v2.1/flavors", headers=headers, json={"flavor": {
                "name": "huge-sem", "id": "huge-sem", "ram": 64, "vcpus": 20,
                "disk": 1}})
            assert r.status_code == 200, r.text
    return "huge-sem"


# ------------------------------------------------------------------ key_name
def test_server_create_with_unknown_key_name_is_400(server: Server) -> None:
    token = server.token()
    flavor = _flavor(server, token)
    image = _upload_image(server, mbr_bytes(1 << 20))
    name = f"key-{uuid.uuid4().hex[:6]}"
    proc = server.openstack("server", "create", "--image", image["id"], "--flavor", flavor,
                            "--nic", "none", "--key-name", "k1", name, check=False)
    assert proc.returncode != 0
    assert "Invalid key_name provided." in proc.stderr and "400" in proc.stderr, proc.stderr
    with server.client(token) as c:
        headers = {"OpenStack-API-Version": "compute 2.79"}
        r = c.post("/compute/v2.1/servers", headers=headers, json={"server": {
            "name": name, "flavorRef": flavor, "imageRef": image["id"],
            "networks": "none", "key_name": "k1"}})
        assert r.status_code == 400
        assert r.json() == {"badRequest": {"code": 400,
                                           "message": "Invalid key_name provided."}}
        listed = c.get("/compute/v2.1/servers", params={"name": name},
                       headers=headers).json()["servers"]
        assert listed == []  # nothing was recorded
        # Without key_name the same request is accepted (the server errors: no host).
        r = c.post("/compute/v2.1/servers", headers=headers, json={"server": {
            "name": name, "flavorRef": flavor, "imageRef": image["id"],
            "networks": "none"}})
        assert r.status_code == 202, r.text
        sid = r.json()["server"]["id"]
        assert c.delete(f"/compute/v2.1/servers/{sid}", headers=headers).status_code == 204


# ------------------------------------------------------------------ attachments API
def test_cli_attachment_create_sends_volume_uuid(server: Server, cinder: Cinder) -> None:
    token = server.token()
    image = _upload_image(server, mbr_bytes(1 << 20))
    with server.client(token) as c:
        headers = {"OpenStack-API-Version": "compute 2.79"}
        r = c.post("/compute/v2.1/servers", headers=headers, json={"server": {
            "name": f"att-{uuid.uuid4().hex[:6]}", "flavorRef": _flavor(server, token),
            "imageRef": image["id"], "networks": "none"}})
        assert r.status_code == 202, r.text
        sid = r.json()["server"]["id"]
    vol = cinder.create(size=1)
    att = server.openstack_json("--os-volume-api-version", "3.27", "volume", "attachment",
                                "create", vol["id"], sid)
    assert att["Volume ID"] == vol["id"] and att["Instance ID"] == sid  # type: ignore[index]
    assert att["Status"] == "reserved"  # type: ignore[index]
    assert cinder.wait(vol["id"], "reserved")
    server.openstack("--os-volume-api-version", "3.27", "volume", "attachment", "delete",
                     att["ID"])  # type: ignore[index]
    assert cinder.wait(vol["id"], "available")
    # 3.54: the mode; a connector makes the attachment 'attaching' with its connection.
    att = server.openstack_json("--os-volume-api-version", "3.54", "volume", "attachment",
                                "create", "--mode", "ro", "--connect", "--host", "h1",
                                vol["id"], sid)
    assert att["Status"] == "attaching"  # type: ignore[index]
    shown = cinder.c.get(f"{cinder.base}/attachments/{att['ID']}").json()["attachment"]  # type: ignore[index]
    assert shown["attach_mode"] == "ro" and shown["instance"] == sid
    assert shown["connection_info"]["data"]["volume_id"] == vol["id"]
    server.openstack("--os-volume-api-version", "3.27", "volume", "attachment", "delete",
                     att["ID"])  # type: ignore[index]
    # Cinder's field names over raw HTTP; bad input is a 400 naming the field.
    url = f"{cinder.base}/attachments"
    r = cinder.c.post(url, json={"attachment": {"volume_uuid": vol["id"],
                                                "instance_uuid": sid, "connector": None}})
    assert r.status_code == 200 and r.json()["attachment"]["volume_id"] == vol["id"]
    cinder.c.delete(f"{url}/{r.json()['attachment']['id']}")
    for bad, field in (({}, "volume_uuid"), ({"volume_uuid": ["x"]}, "volume_uuid"),
                       ({"volume_uuid": vol["id"], "connector": "h"}, "connector"),
                       ({"volume_uuid": vol["id"], "mode": "rwx"}, "mode"),
                       ({"volume_uuid": vol["id"], "instance_uuid": 7}, "instance_uuid")):
        r = cinder.c.post(url, json={"attachment": bad})
        assert r.status_code == 400 and field in r.json()["badRequest"]["message"], r.text
    assert cinder.c.post(url, json={"attachment": {"volume_uuid": str(uuid.uuid4())}}
                         ).status_code == 404
    assert cinder.wait(vol["id"], "available")
    cinder.delete(vol["id"])
    with server.client(token) as c:
        c.delete(f"/compute/v2.1/servers/{sid}", headers={
            "OpenStack-API-Version": "compute 2.79"})


# ------------------------------------------------------------------ cascade, busy snapshots
def test_cascade_delete_and_busy_snapshots_leave_messages(server: Server,
                                                          cinder: Cinder) -> None:
    blocks = _blocks(server)
    project = cinder.base.rsplit("/", 1)[1]

    def usage() -> dict:
        return cinder.c.get(f"{cinder.base}/os-quota-sets/{project}",
                            params={"usage": "true"}).json()["quota_set"]

    before = usage()
    # Without --cascade a volume with snapshots is refused, as before.
    a = cinder.create(size=1)
    s1, s2 = cinder.snapshot(a["id"]), cinder.snapshot(a["id"])
    r = cinder.c.delete(f"{cinder.base}/volumes/{a['id']}")
    assert r.status_code == 400 and "dependent snapshots" in r.text
    # --cascade: the snapshots go first, then the volume; nothing is left in the store.
    server.openstack("volume", "delete", "--cascade", a["id"])
    _wait(cinder.c, f"{cinder.base}/volumes/{a['id']}", "volume", "gone")
    for s in (s1, s2):
        assert cinder.c.get(f"{cinder.base}/snapshots/{s['id']}").status_code == 404
    assert not [n for n in blocks.list("volumes") if a["id"] in n]
    after = usage()
    for resource in ("volumes", "snapshots", "gigabytes"):
        assert after[resource]["in_use"] == before[resource]["in_use"], resource

    # A snapshot a clone still needs: its delete is refused after the 202; it stays
    # available and the user gets Cinder's message.
    b = cinder.create(size=1)
    t1, t2 = cinder.snapshot(b["id"]), cinder.snapshot(b["id"])
    clone = cinder.create(snapshot_id=t1["id"])
    r = cinder.c.delete(f"{cinder.base}/snapshots/{t1['id']}")
    assert r.status_code == 202
    request_id = r.headers["X-OpenStack-Request-Id"]
    msg = _wait_messages(cinder, t1["id"])[0]
    assert cinder.c.get(f"{cinder.base}/snapshots/{t1['id']}").json()["snapshot"][
        "status"] == "available"
    assert msg["event_id"] == "VOLUME_VOLUME_SNAPSHOT_010_015"
    assert msg["user_message"] == BUSY and msg["message_level"] == "ERROR"
    assert msg["resource_type"] == "VOLUME_SNAPSHOT" and msg["request_id"] == request_id

    # The cascade delete fails as a whole before anything is touched: both snapshots
    # and the volume come back, with a message on the busy snapshot and on the volume.
    server.openstack("volume", "delete", "--cascade", b["id"])
    vmsg = _wait_messages(cinder, b["id"])[0]
    assert vmsg["event_id"] == "VOLUME_VOLUME_010_015" and vmsg["user_message"] == BUSY
    assert vmsg["resource_type"] == "VOLUME"
    assert cinder.wait(b["id"], "available")
    for t in (t1, t2):
        assert cinder.c.get(f"{cinder.base}/snapshots/{t['id']}").json()["snapshot"][
            "status"] == "available"
    with blocks.open("volumes", f"volume-{b['id']}") as image:
        assert {s.name for s in image.list_snaps()} >= {f"snapshot-{t1['id']}",
                                                        f"snapshot-{t2['id']}"}
    assert len(_messages(cinder, resource_uuid=t1["id"])) == 2
    assert _messages(cinder, resource_uuid=t2["id"]) == []

    # The messages through the real client (3.3+), then deleted.
    # Without a version the request is 3.0, where the route does not exist (Cinder: 404).
    assert server.openstack("volume", "message", "list", check=False).returncode != 0
    listed = server.openstack_json("--os-volume-api-version", "3.3", "volume", "message",
                                   "list")
    ids = {m["ID"]: m for m in listed}  # type: ignore[union-attr]
    assert ids[vmsg["id"]]["User Message"] == BUSY
    assert ids[vmsg["id"]]["Resource UUID"] == b["id"]
    shown = server.openstack_json("--os-volume-api-version", "3.3", "volume", "message",
                                  "show", vmsg["id"])
    assert shown["Event ID"] == "VOLUME_VOLUME_010_015"  # type: ignore[index]
    assert shown["Guaranteed Until"] > shown["Created At"]  # type: ignore[index]
    server.openstack("--os-volume-api-version", "3.3", "volume", "message", "delete",
                     vmsg["id"])
    assert server.openstack("--os-volume-api-version", "3.3", "volume", "message", "show",
                            vmsg["id"], check=False).returncode != 0
    # Before 3.3 the route does not exist.
    assert cinder.c.get(f"{cinder.base}/messages", headers={
        "OpenStack-API-Version": "volume 3.2"}).status_code == 404

    # With the clone gone the same cascade delete goes through.
    cinder.delete(clone["id"])
    server.openstack("volume", "delete", "--cascade", b["id"])
    _wait(cinder.c, f"{cinder.base}/volumes/{b['id']}", "volume", "gone")
    assert not [n for n in blocks.list("volumes") if b["id"] in n]


def test_messages_are_project_scoped(server: Server, cinder: Cinder) -> None:
    """Another project neither lists, shows nor deletes this project's messages."""
    b = cinder.create(size=1)
    t = cinder.snapshot(b["id"])
    clone = cinder.create(snapshot_id=t["id"])
    assert cinder.c.delete(f"{cinder.base}/snapshots/{t['id']}").status_code == 202
    msg = _wait_messages(cinder, t["id"])[0]
    admin = server.token()
    name = f"p-{uuid.uuid4().hex[:6]}"
    with server.client(admin) as c:
        pid = c.post("/identity/v3/projects", json={"project": {
            "name": name, "domain_id": "default"}}).json()["project"]["id"]
        uid = c.post("/identity/v3/users", json={"user": {
            "name": name, "domain_id": "default", "password": "pw-other-1"}}).json()[
            "user"]["id"]
        roles = c.get("/identity/v3/roles", params={"name": "member"}).json()["roles"]
        assert c.put(f"/identity/v3/projects/{pid}/users/{uid}/roles/{roles[0]['id']}"
                     ).status_code == 204
    other = Cinder(server, server.token(name, "pw-other-1", name), pid)
    hdr = {"OpenStack-API-Version": "volume 3.3"}
    assert all(m["id"] != msg["id"] for m in other.c.get(
        f"{other.base}/messages", headers=hdr).json()["messages"])
    assert other.c.get(f"{other.base}/messages", headers=hdr, params={
        "project_id": cinder.base.rsplit("/", 1)[1]}).json()["messages"] == []
    assert other.c.get(f"{other.base}/messages/{msg['id']}", headers=hdr).status_code == 404
    assert other.c.delete(f"{other.base}/messages/{msg['id']}",
                          headers=hdr).status_code == 404
    assert other.c.get(f"{cinder.base}/messages/{msg['id']}",
                       headers=hdr).status_code == 403
    assert cinder.c.get(f"{cinder.base}/messages/{msg['id']}",
                        headers=hdr).status_code == 200
    cinder.delete(clone["id"])
    cinder.delete_snapshot(t["id"])
    cinder.delete(b["id"])


# ------------------------------------------------------------------ errored volumes and quota
@pytest.fixture(scope="module")
def failing_scheduler(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One 1 GiB backend (20 GiB promised when thin): a 100 GiB volume never fits."""
    srv = Server(tmp_path_factory.mktemp("nobackend"), free_port(), extra_conf={
        "volume": {"enabled_backends": "small:volumes:1", "quota_volumes": "10",
                   "quota_gigabytes": "-1"},
        "jobs": {"workers": "2"}})
    srv.setup()
    srv.start()
    yield srv
    srv.stop()


def test_errored_volumes_keep_their_quota(failing_scheduler: Server) -> None:
    srv = failing_scheduler
    token = srv.token()
    project = _project(srv, token)
    cinder = Cinder(srv, token, project)

    def create(i: int) -> httpx.Response:
        return httpx.post(f"{srv.url}/volume/v3/{project}/volumes", json={"volume": {
            "size": 100, "name": f"burst{i}"}}, headers={"X-Auth-Token": token}, timeout=60)

    # A burst, then another one after the first have failed: never more than 10.
    with ThreadPoolExecutor(max_workers=10) as pool:
        first = list(pool.map(create, range(30)))
    codes = [r.status_code for r in first]
    assert codes.count(202) == 10 and codes.count(413) == 20, sorted(set(codes))
    requests = {r.json()["volume"]["id"]: r.headers["X-OpenStack-Request-Id"]
                for r in first if r.status_code == 202}
    for volume_id in requests:
        cinder.wait(volume_id, "error")
        # Cinder's view has no reason field: the user message says why.
        assert "Could not find any available weighted backend" in _messages(
            cinder, resource_uuid=volume_id)[0]["user_message"]
    with ThreadPoolExecutor(max_workers=10) as pool:
        second = [r.status_code for r in pool.map(create, range(30, 45))]
    assert second == [413] * 15
    vols = cinder.c.get(f"{cinder.base}/volumes/detail").json()["volumes"]
    assert len(vols) == 10 and {v["status"] for v in vols} == {"error"}
    quota = cinder.c.get(f"{cinder.base}/os-quota-sets/{project}",
                         params={"usage": "true"}).json()["quota_set"]
    assert quota["volumes"] == {"limit": 10, "in_use": 10, "reserved": 0, "allocated": 0}
    assert quota["gigabytes"]["in_use"] == 1000 and quota["gigabytes"]["reserved"] == 0
    # Each failure is a user message naming the request that caused it.
    messages = {m["resource_uuid"]: m for m in _messages(cinder)}
    for volume_id, request_id in requests.items():
        msg = messages[volume_id]
        assert msg["event_id"] == "VOLUME_VOLUME_001_003"
        assert msg["user_message"] == NO_BACKEND and msg["request_id"] == request_id
    # Deleting them gives the quota back.
    for volume_id in requests:
        cinder.delete(volume_id)
    quota = cinder.c.get(f"{cinder.base}/os-quota-sets/{project}",
                         params={"usage": "true"}).json()["quota_set"]
    assert quota["volumes"]["in_use"] == 0 and quota["gigabytes"]["in_use"] == 0
    # Paging (3.5): limit, marker, sort.
    page = _messages(cinder, limit="4", sort="created_at:asc")
    assert len(page) == 4
    rest = _messages(cinder, marker=page[-1]["id"], sort="created_at:asc")
    assert len(rest) == 6 and not {m["id"] for m in rest} & {m["id"] for m in page}
    r = cinder.c.get(f"{cinder.base}/messages", params={"sort": "bogus:asc"},
                     headers={"OpenStack-API-Version": "volume 3.5"})
    assert r.status_code == 400


# ------------------------------------------------------------------ expiry, in the database
def test_messages_expire(db: Database) -> None:
    api = UserMessages(db, Enforcer(), ttl=3600, endpoint="http://x")
    ctx = RequestContext(user_id="u", project_id="p1", roles=["member", "reader"])
    with db.session() as session:
        old = record(session, 60, "p1", Action.SNAPSHOT_DELETE,
                     resource_type=Resource.VOLUME_SNAPSHOT, resource_uuid="s1",
                     detail=Detail.SNAPSHOT_IS_BUSY, request_id="req-1")
        old_id = old.id
    shown = api.show(ctx, old_id)
    assert shown["event_id"] == "VOLUME_VOLUME_SNAPSHOT_010_015"
    assert shown["user_message"] == "delete snapshot:Snapshot is busy."
    created = datetime.fromisoformat(shown["created_at"])
    until = datetime.fromisoformat(shown["guaranteed_until"])
    assert until - created == timedelta(seconds=60)
    with db.session() as session:  # time passes
        session.get(Message, old_id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert api.list(ctx, "p1", {}, (3, 3))["messages"] == []
    with pytest.raises(Exception, match="could not be found"):
        api.show(ctx, old_id)
    with db.session() as session:  # the next message purges it
        new = api.record(session, "p1", Action.SCHEDULE_ALLOCATE_VOLUME, resource_uuid="v1",
                         exception=RuntimeError("host x: disk /dev/sdz"))
        new_id = new.id
    with db.session(readonly=True) as session:
        assert session.get(Message, old_id) is None
    listed = api.list(ctx, "p1", {}, (3, 3))["messages"]
    assert [m["id"] for m in listed] == [new_id]
    # An exception's own text never reaches the user; an unmapped one is "unknown".
    assert listed[0]["user_message"] == "schedule allocate volume:An unknown error occurred."
    assert "sdz" not in json.dumps(listed)
    assert api.list(RequestContext(user_id="u2", project_id="p2", roles=["member", "reader"]), "p2",
                    {}, (3, 3))["messages"] == []
