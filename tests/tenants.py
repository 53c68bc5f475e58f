"""Extra projects on a test server, made the way an operator makes them: with the CLI."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import yaml

from strato.clouds import write_cloud
from tests.support import Server


@dataclass
class Tenant:
    """A project with one user holding ``role`` in it, and a clouds.yaml entry for it."""

    server: Server
    project: str  # name; also the clouds.yaml cloud name
    project_id: str
    user: str
    user_id: str
    password: str

    def token(self) -> str:
        return self.server.token(self.user, self.password, self.project)

    def openstack(self, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return self.server.openstack(*args, cloud=self.project, check=check)

    def openstack_json(self, *args: str) -> object:
        return self.server.openstack_json(*args, cloud=self.project)


def make_tenant(server: Server, prefix: str, role: str = "member") -> Tenant:
    """``openstack project create``, ``user create``, ``role add`` as the admin."""
    suffix = uuid.uuid4().hex[:8]
    project, user, password = f"{prefix}-{suffix}", f"{prefix}-user-{suffix}", uuid.uuid4().hex
    project_id = server.openstack_json("project", "create", "--domain", "default",
                                       project)["id"]
    user_id = server.openstack_json("user", "create", "--domain", "default", "--project",
                                    project, "--password", password, user)["id"]
    server.openstack("role", "add", "--project", project, "--user", user, role)
    admin = yaml.safe_load(server.clouds.read_text())["clouds"]["strato"]
    write_cloud(server.clouds, project, auth_url=admin["auth"]["auth_url"], username=user,
                password=password, project_name=project, region=admin["region_name"])
    return Tenant(server, project, project_id, user, user_id, password)
