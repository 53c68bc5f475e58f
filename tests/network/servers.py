"""A strato server for the network API tests.

With the Linux data plane installed (``strato.network.linux``) it is a real ``strato
serve`` with ``[network] dataplane = linux``.  Until then it is the same application
served in this test process with the network service on the recording data plane
(``tests.network.doubles``): the HTTP API, the catalog and the real ``openstack``
client are exercised either way; only the devices are not."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn

from strato import config
from tests.support import Server, free_port


def _worker() -> int:
    """pytest-xdist's worker number (``gw1`` -> 1; 0 when the run is not split)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


# each test server gets its own external range, 198.18.<k>.0/24: k unique per process,
# each xdist worker in a band of its own (100-139, 160-199, ...; the e2e's 150 and the
# data plane test's 201 are fixed)
_K = itertools.count(100 + 60 * _worker() + os.getpid() % 20)


def linux_dataplane() -> bool:
    try:
        import strato.network.linux  # noqa: F401
    except ImportError:
        return False
    return True


def public_cidr() -> str:
    return f"198.18.{next(_K) % 256}.0/24"


@contextlib.contextmanager
def network_server(root: Path) -> Iterator[Server]:
    cidr = public_cidr()
    if linux_dataplane():
        srv = Server(root, free_port(), extra_conf={"network": {
            "dataplane": "linux", "public_cidr": cidr}})
        srv.setup()
        try:
            srv.start()
            yield srv
        finally:
            srv.stop()
            # networks outlive `strato serve` by design (guests keep running): this
            # test deployment's namespaces, devices and rules go with the test
            from strato.network.linux import LinuxDataplane

            LinuxDataplane(config.load(srv.conf)).teardown()
        return
    from strato.api.app import build_app
    from strato.network.api import NetworkAPI
    from strato.service import Services
    from tests.network.doubles import RecordingDataplane

    srv = Server(root, free_port(), extra_conf={"network": {
        "dataplane": "usermode", "public_cidr": cidr}})
    srv.setup()
    conf = config.load(srv.conf)
    services = Services.build(conf)
    services.network = NetworkAPI(services.db, services.policy, conf, RecordingDataplane())
    server = uvicorn.Server(uvicorn.Config(build_app(services), host="127.0.0.1",
                                           port=srv.port, log_config=None,
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{srv.url}/identity/v3", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield srv
    finally:
        server.should_exit = True
        thread.join(30)
        services.close()
