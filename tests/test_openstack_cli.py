"""The real `openstack` CLI (python-openstackclient) against a real `strato serve`."""

from __future__ import annotations

import uuid

import yaml

from tests.support import Server


def _add_cloud(server: Server, name: str, user: str, password: str, project: str) -> None:
    data = yaml.safe_load(server.clouds.read_text())
    data["clouds"][name] = {**data["clouds"]["strato"], "auth": {
        **data["clouds"]["strato"]["auth"], "username": user, "password": password,
        "project_name": project}}
    server.clouds.write_text(yaml.safe_dump(data))


def test_token_issue_catalog_and_versions(server: Server) -> None:
    token = server.openstack_json("token", "issue")
    assert token["id"].startswith("gAAAA") and token["project_id"] and token["user_id"]
    catalog = server.openstack_json("catalog", "list")
    assert {c["Type"] for c in catalog} >= {"identity", "compute", "image", "block-storage"}
    versions = server.openstack_json("versions", "show")
    by_type = {(v["Service Type"], v["Status"]): v for v in versions}
    assert by_type[("compute", "CURRENT")]["Max Microversion"] == "2.92"
    assert by_type[("block-storage", "CURRENT")]["Max Microversion"] == "3.71"
    assert ("identity", "CURRENT") in by_type and ("image", "CURRENT") in by_type


def test_admin_manages_projects_users_and_roles(server: Server) -> None:
    suffix = uuid.uuid4().hex[:6]
    project, user = f"demo-{suffix}", f"alice-{suffix}"
    created = server.openstack_json("project", "create", "--description", "a demo", project)
    assert created["name"] == project and created["domain_id"] == "default"
    assert project in {p["Name"] for p in server.openstack_json("project", "list")}

    server.openstack("user", "create", "--password", "pw-one", "--project", project, user)
    server.openstack("role", "add", "--project", project, "--user", user, "member")
    assignments = server.openstack_json("role", "assignment", "list", "--user", user,
                                        "--project", project, "--names")
    assert [(a["Role"], a["User"], a["Project"]) for a in assignments] == [
        ("member", f"{user}@Default", f"{project}@Default")]

    # The new user logs in with the CLI, and is refused admin calls.
    _add_cloud(server, "alice", user, "pw-one", project)
    mine = server.openstack_json("token", "issue", cloud="alice")
    assert mine["project_id"] == created["id"]
    refused = server.openstack("user", "list", cloud="alice", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr
    # `project list` falls back to the user's own projects when refused the full list.
    assert [p["Name"] for p in server.openstack_json("project", "list", cloud="alice")] == [
        project]
    refused = server.openstack("user", "create", "--password", "x", f"eve-{suffix}",
                               cloud="alice", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr

    # A password change ends the old password; the new one works.
    server.openstack("user", "set", "--password", "pw-two", user)
    old = server.openstack("token", "issue", cloud="alice", check=False)
    assert old.returncode != 0 and "401" in old.stderr
    _add_cloud(server, "alice", user, "pw-two", project)
    assert server.openstack_json("token", "issue", cloud="alice")["user_id"]

    server.openstack("role", "remove", "--project", project, "--user", user, "member")
    assert server.openstack_json("role", "assignment", "list", "--user", user) == []
    server.openstack("user", "delete", user)
    server.openstack("project", "delete", project)
    assert project not in {p["Name"] for p in server.openstack_json("project", "list")}
    gone = server.openstack("user", "show", user, check=False)
    assert gone.returncode != 0 and "No User found" in gone.stderr


def test_roles_and_domains(server: Server) -> None:
    roles = {r["Name"] for r in server.openstack_json("role", "list")}
    assert {"admin", "member", "reader"} <= roles
    name = f"auditor-{uuid.uuid4().hex[:6]}"
    server.openstack("role", "create", name)
    assert server.openstack_json("role", "show", name)["name"] == name
    server.openstack("role", "delete", name)
    domains = server.openstack_json("domain", "list")
    assert [(d["ID"], d["Name"]) for d in domains] == [("default", "Default")]
