"""The whole server on PostgreSQL: what runs on SQLite by default runs there too."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import Server, free_port


@pytest.fixture
def pg_url(db_url: str) -> str:
    if not db_url.startswith("postgresql"):
        pytest.skip("this module is about PostgreSQL; SQLite is every other module")
    return db_url


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_identity_images_and_volumes_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    srv = Server(tmp_path, free_port(), extra_conf={"database": {"connection": pg_url}})
    srv.setup()
    srv.start()
    try:
        assert srv.openstack_json("token", "issue")["project_id"]
        data = tmp_path / "d.raw"
        data.write_bytes(b"pg" * (1 << 19))
        image = srv.openstack_json("image", "create", "--file", str(data), "--disk-format",
                                   "raw", "--container-format", "bare", "pgimg")
        assert image["status"] == "active"
        srv.openstack("volume", "create", "--image", "pgimg", "--size", "1", "pgvol")
        deadline = time.monotonic() + 60
        while srv.openstack_json("volume", "show", "pgvol")["status"] != "available":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        srv.openstack("volume", "delete", "pgvol")
        while srv.openstack("volume", "show", "pgvol", check=False).returncode == 0:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        srv.openstack("image", "delete", "pgimg")
    finally:
        srv.stop()
