"""lock/unlock, changePassword and trigger_crash_dump on one member's guest, through the
real `openstack` client; lock enforcement for the member (409) against an admin of
another project (allowed), on several entry points; the new password proven by a login
on the serial console (the old one refused)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from strato.virt.guestbuild import ROOT_PASSWORD
from strato.virt.qemu import QemuDriver
from tests.api_schemas import assert_shape
from tests.api_schemas import compute_servers as shapes
from tests.compute.conftest import wait_console
from tests.console import ConsoleError, SerialConsole
from tests.support import Server
from tests.tenants import Tenant, make_tenant

NEW_PASSWORD = "N3w pa$$:word\\x"  # a space, a colon, a backslash, dollars: all verbatim


class Caller:
    """Compute REST calls with one token at a given microversion."""

    def __init__(self, srv: Server, token: str) -> None:
        self.c = srv.client(token)

    def req(self, method: str, path: str, version: str = "2.73", **kw: object) -> httpx.Response:
        return self.c.request(method, f"/compute/v2.1{path}", headers={  # type: ignore[arg-type]
            "OpenStack-API-Version": f"compute {version}"}, **kw)

    def act(self, sid: str, body: dict, version: str = "2.73") -> httpx.Response:
        return self.req("POST", f"/servers/{sid}/action", version, json=body)

    def show(self, sid: str, version: str = "2.73") -> dict:
        r = self.req("GET", f"/servers/{sid}", version)
        assert r.status_code == 200, r.text
        return r.json()["server"]

    def wait(self, sid: str, status: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            body = self.show(sid)
            if body["status"] == status and body["OS-EXT-STS:task_state"] is None:
                return body
            time.sleep(0.2)
        raise AssertionError(f"{sid} not {status}: {body}")

    def actions(self, sid: str) -> dict[str, dict]:
        r = self.req("GET", f"/servers/{sid}/os-instance-actions", "2.84")
        assert r.status_code == 200, r.text
        return {a["request_id"]: a for a in r.json()["instanceActions"]}

    def events(self, sid: str, request_id: str) -> list[dict]:
        r = self.req("GET", f"/servers/{sid}/os-instance-actions/{request_id}", "2.84")
        assert r.status_code == 200, r.text
        return r.json()["instanceAction"]["events"]


@pytest.fixture(scope="module")
def tenant(compute_server: Server) -> Tenant:
    return make_tenant(compute_server, "lockpw")


@pytest.fixture(scope="module")
def member(compute_server: Server, tenant: Tenant) -> Caller:
    return Caller(compute_server, tenant.token())


@pytest.fixture(scope="module")
def admin(compute_server: Server) -> Caller:
    """An admin of another project (the server's locker is then ``admin``)."""
    return Caller(compute_server, compute_server.token())


@pytest.fixture(scope="module")
def sid(compute_server: Server, tenant: Tenant, driver: QemuDriver) -> Iterator[str]:
    """The member's one guest, shared by every test here."""
    created = tenant.openstack_json("server", "create", "--image", "strato-guest",
                                    "--flavor", "m1.tiny", "--nic", "none", "--wait",
                                    f"lockpw-{uuid.uuid4().hex[:6]}")
    server_id = str(created["id"])  # type: ignore[index]
    wait_console(driver, server_id, "STRATO-GUEST-READY bootcount=")
    driver.wait_for_agent(server_id)
    yield server_id
    compute_server.openstack("server", "delete", "--wait", server_id, check=False)


def _locked_409(r: httpx.Response, sid: str) -> None:
    assert r.status_code == 409, r.text
    assert r.json()["conflictingRequest"]["message"] == f"Instance {sid} is locked"


def _console_url(admin: Caller, sid: str) -> str:
    r = admin.req("POST", f"/servers/{sid}/remote-consoles", "2.6",
                  json={"remote_console": {"protocol": "serial", "type": "serial"}})
    assert r.status_code == 200, r.text
    return r.json()["remote_console"]["url"]


# ---------------------------------------------------------------- lock
def test_owner_lock_refuses_the_member_everywhere_but_not_an_admin(
        compute_server: Server, tenant: Tenant, member: Caller, admin: Caller,
        sid: str) -> None:
    tenant.openstack("--os-compute-api-version", "2.73", "server", "lock", "--reason",
                     "maintenance window", sid)
    body = member.show(sid)
    assert body["locked"] is True and body["locked_reason"] == "maintenance window"
    assert_shape(body, shapes.server((2, 73), admin=False))
    assert member.show(sid, "2.72").get("locked_reason", "absent") == "absent"
    # the 2.73 list filter
    r = member.req("GET", "/servers/detail?locked=true")
    assert [s["id"] for s in r.json()["servers"]] == [sid]
    r = member.req("GET", "/servers?locked=false")
    assert sid not in [s["id"] for s in r.json()["servers"]]
    r = member.req("GET", "/servers?locked=yes")
    assert [s["id"] for s in r.json()["servers"]] == [sid]
    r = member.req("GET", "/servers?locked=maybe")
    assert r.status_code == 400 and "Unrecognized value 'maybe'" in r.text

    # every change the member tries is refused (actions, delete, metadata, volumes, NICs)
    for action in ({"os-stop": None}, {"reboot": {"type": "HARD"}}, {"pause": None},
                   {"suspend": None}, {"changePassword": {"adminPass": "x"}},
                   {"rebuild": {"imageRef": str(uuid.uuid4())}},
                   {"resize": {"flavorRef": "m1.small"}}, {"shelve": None},
                   {"rescue": None}, {"trigger_crash_dump": None}):
        _locked_409(member.act(sid, action), sid)
    # Nova's order: a bad body (400) or a microversion without the action (404) first
    assert member.act(sid, {"changePassword": {}}).status_code == 400
    assert member.act(sid, {"trigger_crash_dump": None}, "2.16").status_code == 404
    _locked_409(member.req("DELETE", f"/servers/{sid}"), sid)
    _locked_409(member.req("POST", f"/servers/{sid}/metadata",
                           json={"metadata": {"k": "v"}}), sid)
    _locked_409(member.req("PUT", f"/servers/{sid}/metadata/k", json={"meta": {"k": "v"}}),
                sid)
    _locked_409(member.req("DELETE", f"/servers/{sid}/metadata/k"), sid)
    volume = tenant.openstack_json("volume", "create", "--size", "1",
                                   f"lockvol-{uuid.uuid4().hex[:6]}")["id"]  # type: ignore[index]
    try:
        _locked_409(member.req("POST", f"/servers/{sid}/os-volume_attachments",
                               json={"volumeAttachment": {"volumeId": volume}}), sid)
    finally:
        tenant.openstack("volume", "delete", volume)
    _locked_409(member.req("POST", f"/servers/{sid}/os-interface",
                           json={"interfaceAttachment": {"net_id": str(uuid.uuid4())}}), sid)
    # the real client says the same
    out = tenant.openstack("server", "stop", sid, check=False)
    assert out.returncode != 0 and f"Instance {sid} is locked" in out.stderr
    # what Nova does not lock-check still works: reads, console output, server update
    r = member.act(sid, {"os-getConsoleOutput": {"length": 5}})
    assert r.status_code == 200, r.text
    r = member.req("PUT", f"/servers/{sid}", json={"server": {"description": "locked"}})
    assert r.status_code == 200, r.text
    # unknown server: 404 before the lock; unknown action: 400
    assert member.act(str(uuid.uuid4()), {"os-stop": None}).status_code == 404
    assert member.act(sid, {"no-such-action": None}).status_code == 400

    # an admin (of another project) changes a locked server
    r = admin.req("POST", f"/servers/{sid}/metadata", json={"metadata": {"by": "admin"}})
    assert r.status_code == 200, r.text
    r = admin.req("DELETE", f"/servers/{sid}/metadata/by")
    assert r.status_code == 204, r.text

    # the owner unlocks their own lock
    tenant.openstack("server", "unlock", sid)
    body = member.show(sid)
    assert body["locked"] is False and body["locked_reason"] is None
    r = member.req("POST", f"/servers/{sid}/metadata", json={"metadata": {"k": "v"}})
    assert r.status_code == 200, r.text

    acts = member.actions(sid)
    names = [a["action"] for a in acts.values()]
    assert "lock" in names and "unlock" in names
    lock = next(a for a in acts.values() if a["action"] == "lock")
    events = admin.events(sid, lock["request_id"])
    assert [(e["event"], e["result"]) for e in events] == [("api_lock", "Success")]


def test_an_admins_lock_needs_the_override_to_undo(tenant: Tenant, member: Caller,
                                                   admin: Caller, sid: str) -> None:
    r = admin.act(sid, {"lock": None}, "2.1")
    assert r.status_code == 202 and not r.content
    assert member.show(sid)["locked"] is True
    # the owner may not undo an admin's lock (os-lock-server:unlock:unlock_override)
    out = tenant.openstack("server", "unlock", sid, check=False)
    assert out.returncode != 0 and "unlock_override" in out.stderr
    r = member.act(sid, {"unlock": None})
    assert r.status_code == 403, r.text
    # the owner's lock on top changes nothing (no action recorded), the admin unlocks
    before = len(member.actions(sid))
    assert member.act(sid, {"lock": None}).status_code == 202
    assert len(member.actions(sid)) == before
    assert admin.act(sid, {"unlock": None}).status_code == 202
    assert member.show(sid)["locked"] is False


@pytest.mark.parametrize(("version", "body", "words"), [
    ("2.73", {"lock": {"locked_reason": ""}}, "locked_reason"),
    ("2.73", {"lock": {"locked_reason": "x" * 256}}, "locked_reason"),
    ("2.73", {"lock": {"reason": "x"}}, "reason"),
    ("2.72", {"lock": {"locked_reason": "x"}}, "2.73"),
    ("2.73", {"changePassword": {}}, "adminPass"),
    ("2.73", {"changePassword": {"adminPass": 1}}, "adminPass"),
    ("2.73", {"changePassword": {"adminPass": "a", "x": 1}}, "x"),
    ("2.73", {"trigger_crash_dump": {}}, "trigger_crash_dump"),
])
def test_bad_bodies_are_400(member: Caller, sid: str, version: str, body: dict,
                            words: str) -> None:
    r = member.act(sid, body, version)
    assert r.status_code == 400, r.text
    assert words in r.json()["badRequest"]["message"]


def test_a_reader_may_not_lock(compute_server: Server, tenant: Tenant, sid: str) -> None:
    reader = make_tenant(compute_server, "lockrd")
    compute_server.openstack("role", "add", "--project", tenant.project, "--user",
                             reader.user, "reader")
    c = Caller(compute_server, compute_server.token(reader.user, reader.password,
                                                    tenant.project))
    for action, rule in (({"lock": None}, "os-lock-server:lock"),
                         ({"changePassword": {"adminPass": "x"}}, "os-admin-password"),
                         ({"trigger_crash_dump": None}, "servers:trigger_crash_dump")):
        r = c.act(sid, action)
        assert r.status_code == 403, r.text
        assert rule in r.json()["forbidden"]["message"]


# ---------------------------------------------------------------- changePassword
def test_change_password_through_the_agent_then_log_in(
        tenant: Tenant, member: Caller, admin: Caller, sid: str) -> None:
    url = _console_url(admin, sid)
    with SerialConsole(url) as con:  # the image's password first
        con.login("root", ROOT_PASSWORD)
    tenant.openstack("server", "set", "--password", NEW_PASSWORD, sid)
    assert member.show(sid)["status"] == "ACTIVE"
    with SerialConsole(url) as con:
        con.login("root", NEW_PASSWORD)
        assert con.run("id -u") == "0"
    with SerialConsole(url) as con, pytest.raises(ConsoleError, match="refused"):
        con.login("root", ROOT_PASSWORD)
    acts = member.actions(sid)
    change = next(a for a in acts.values() if a["action"] == "changePassword")
    assert change["message"] is None
    events = admin.events(sid, change["request_id"])
    assert [(e["event"], e["result"]) for e in events] == [
        ("compute_set_admin_password", "Success")]
    # back to the image's password for the tests after this one
    assert member.act(sid, {"changePassword": {"adminPass": ROOT_PASSWORD}}).status_code \
        == 202


def test_change_password_refused_by_a_frozen_agent_is_409(
        member: Caller, admin: Caller, sid: str, driver: QemuDriver) -> None:
    with driver.agent(sid) as ga:
        ga.fsfreeze_freeze()
    try:
        r = member.act(sid, {"changePassword": {"adminPass": "frozen-secret"}})
    finally:
        with driver.agent(sid) as ga:
            ga.fsfreeze_thaw()
    assert r.status_code == 409, r.text
    message = r.json()["conflictingRequest"]["message"]
    assert message == (f"Failed to set admin password on {sid} because error setting "
                       "admin password")
    body = member.wait(sid, "ACTIVE")
    assert "fault" not in body  # an ACTIVE server shows no fault
    change = next(a for a in member.actions(sid).values()
                  if a["action"] == "changePassword" and a["message"] == "Error")
    events = admin.events(sid, change["request_id"])
    assert events[0]["result"] == "Error" and "frozen-secret" not in str(events)


def test_change_password_with_the_agent_busy_is_501(member: Caller, sid: str,
                                                    driver: QemuDriver) -> None:
    """The agent's channel serves one client: while another holds it the agent is
    unresponsive to strato, Nova's 'Unable to set password on instance'."""
    with driver.agent(sid):
        r = member.act(sid, {"changePassword": {"adminPass": "busy"}})
    assert r.status_code == 501, r.text
    assert r.json()["notImplemented"]["message"] == "Unable to set password on instance"
    member.wait(sid, "ACTIVE")


# ---------------------------------------------------------------- trigger_crash_dump
def test_trigger_crash_dump_sends_an_nmi(tenant: Tenant, member: Caller, admin: Caller,
                                         sid: str, driver: QemuDriver) -> None:
    assert member.act(sid, {"trigger_crash_dump": None}, "2.16").status_code == 404
    before = driver.console_output(sid).count("NMI received")
    tenant.openstack("--os-compute-api-version", "2.17", "server", "dump", "create", sid)
    deadline = time.monotonic() + 30
    while driver.console_output(sid).count("NMI received") <= before:
        assert time.monotonic() < deadline, driver.console_output(sid)[-2000:]
        time.sleep(0.2)
    dump = next(a for a in member.actions(sid).values()
                if a["action"] == "trigger_crash_dump")
    deadline = time.monotonic() + 30
    while not (events := admin.events(sid, dump["request_id"])) or \
            events[0]["result"] is None:
        assert time.monotonic() < deadline, events
        time.sleep(0.2)
    assert [(e["event"], e["result"]) for e in events] == [
        ("compute_trigger_crash_dump", "Success")]
    assert member.show(sid)["status"] == "ACTIVE"  # Nova changes no state for it


def test_wrong_states_are_409(member: Caller, sid: str) -> None:
    """Last: the guest stops (changePassword wants ACTIVE, a dump a running vm_state)."""
    assert member.act(sid, {"os-stop": None}).status_code == 202
    member.wait(sid, "SHUTOFF")
    r = member.act(sid, {"changePassword": {"adminPass": "x"}})
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == (
        f"Cannot 'changePassword' instance {sid} while it is in vm_state stopped")
    r = member.act(sid, {"trigger_crash_dump": None})
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == (
        f"Cannot 'trigger_crash_dump' instance {sid} while it is in vm_state stopped")


def test_the_new_password_is_kept_sealed_to_an_rsa_key_only() -> None:
    """What ``os-server-password`` then gives the key's owner (Nova's libvirt driver)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from strato.compute.guestops import _sealed

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    sealed = _sealed(public, NEW_PASSWORD)
    assert sealed is not None and NEW_PASSWORD not in sealed
    assert key.decrypt(base64.b64decode(sealed), padding.PKCS1v15()) == NEW_PASSWORD.encode()
    assert _sealed(None, "x") is None
    assert _sealed("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG", "x") is None
