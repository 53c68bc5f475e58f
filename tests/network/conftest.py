"""Fixtures of the network service's tests: a migrated database, the service on a
recording data plane, request contexts of two projects and an admin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato import config
from strato.context import RequestContext
from strato.db import Database, migrate
from strato.network.api import NetworkAPI
from strato.policy import Enforcer
from tests.network.doubles import RecordingDataplane


@pytest.fixture
def netdb(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/strato.db"
    migrate.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture
def dataplane() -> RecordingDataplane:
    return RecordingDataplane()


@pytest.fixture
def netconf(tmp_path: Path) -> config.Config:
    return config.load(None, overrides=[("DEFAULT", "state_path", str(tmp_path)),
                                        ("DEFAULT", "host", "host-a")])


@pytest.fixture
def net_api(netdb: Database, netconf: config.Config,
            dataplane: RecordingDataplane) -> NetworkAPI:
    return NetworkAPI(netdb, Enforcer(), netconf, dataplane)


def make_ctx(project: str, admin: bool = False) -> RequestContext:
    roles = ["admin", "member", "reader"] if admin else ["member", "reader"]
    return RequestContext(user_id=uuid.uuid4().hex, project_id=project, roles=roles)


@pytest.fixture
def admin() -> RequestContext:
    return make_ctx("p-admin", admin=True)


@pytest.fixture
def alice() -> RequestContext:
    return make_ctx("p-alice")


@pytest.fixture
def bob() -> RequestContext:
    return make_ctx("p-bob")
