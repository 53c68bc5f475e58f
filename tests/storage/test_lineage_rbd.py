"""The lineage graph on the rbd engine (a real Ceph cluster) has the same shape as on the
local engine: image -> volume clone -> snapshot -> volume clone.  Here, with the other
modules that use the test cluster's pools, so they never run at the same time."""

from __future__ import annotations

from pathlib import Path

from tests.storage.conftest import ceph_conf
from tests.support import Server, free_port
from tests.test_lineage import Cloud, chain_shape


def _shape(root: Path, extra: dict[str, dict[str, str]]) -> tuple[str, tuple]:
    srv = Server(root, free_port(), extra_conf=extra)
    srv.setup()
    srv.start()
    try:
        return chain_shape(Cloud(srv, srv.token()))
    finally:
        srv.stop()


def test_lineage_same_shape_on_rbd_and_local(tmp_path: Path) -> None:
    conf = ceph_conf()
    rbd = _shape(tmp_path / "rbd", {
        "storage": {"engine": "rbd"},
        "glance_store": {"rbd_store_ceph_conf": conf},
        "volume": {"rbd_ceph_conf": conf, "enabled_backends": "ceph:volumes"},
        "compute": {"images_rbd_ceph_conf": conf}})
    local = _shape(tmp_path / "local", {})
    assert (rbd[0], local[0]) == ("rbd", "local")
    assert rbd[1] == local[1]
