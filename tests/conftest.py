"""Fixtures: databases on SQLite and on a real PostgreSQL, and a running strato server."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from strato.db import Database, migrate
from strato.virt.cloudimage import CloudImage
from strato.virt.qemu import QemuDriver
from tests import cloudimage, guests
from tests.support import Server, free_port

PG_URL = os.environ.get("STRATO_TEST_PG_URL")
REQUIRE_PG = os.environ.get("STRATO_REQUIRE_PG") == "1"


def _pg_admin() -> psycopg.Connection:
    url = make_url(PG_URL)
    return psycopg.connect(host=url.host, port=url.port, user=url.username,
                           dbname=url.database, autocommit=True)


@contextlib.contextmanager
def pg_database(prefix: str = "strato_test") -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the test server, dropped afterwards; its
    URL.  Without a server: skipped, or failed when `make test` requires PostgreSQL."""
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("STRATO_TEST_PG_URL is not set but PostgreSQL is required")
        pytest.skip("no PostgreSQL server (run the suite with `make test`)")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each engine (PostgreSQL: a fresh database per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/strato.db"
        return
    with pg_database() as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    migrate.upgrade(db_url)
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One strato server for the tests that only read or add their own resources."""
    # its tokens last the whole run: the session's admin_token outlived the default
    # hour when a loaded CI ran longer (a late test's token lookup failed)
    srv = Server(tmp_path_factory.mktemp("server"), free_port(),
                 extra_conf={"image": {"show_image_direct_url": "true"},
                             "token": {"expiration": "86400"}})
    srv.setup()
    srv.start()
    yield srv
    srv.stop()
    # servers the tests made from bootable images run real QEMUs: none may outlive the
    # run (a leaked guest spins a core for the rest of CI)
    drv = QemuDriver(srv.state / "instances")
    for sid in drv.list_instances():
        drv.destroy(sid)


@pytest.fixture(scope="session")
def admin_token(server: Server) -> str:
    return server.token()


def _run_guests(root: Path) -> dict[int, str]:
    """The qemu-system processes of this run (their command line names a path under the
    run's base temporary directory; other runs' guests on the machine are not ours)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not Path(argv[0].decode(errors="replace")).name.startswith("qemu-system"):
            continue
        text = b" ".join(argv).decode(errors="replace")
        if f"{root}/" in text:
            found[int(entry.name)] = text
    return found


def _kill(pids: dict[int, str], root: Path) -> None:
    for pid in pids:
        if pid in _run_guests(root):  # still the same guest of ours
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module", autouse=True)
def no_guest_outlives_its_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fails the module whose tests or fixtures leave a QEMU guest running after its last
    test: a leaked guest spins a core for the rest of the run (CI has two).  Session
    fixtures destroy what they boot at the end of the run; a guest a module started must
    be gone when the module is (or be kept on purpose: ``tests.guests``)."""
    root = tmp_path_factory.getbasetemp()
    before = _run_guests(root)
    yield
    deadline = time.monotonic() + 20  # a server deleted through the API stops a moment later
    while (left := {pid: cmd for pid, cmd in _run_guests(root).items()
                    if pid not in before and not guests.kept(cmd)}) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        _kill(left, root)
        names = "\n".join(f"  pid {pid}: {cmd[:300]}" for pid, cmd in left.items())
        pytest.fail(f"{len(left)} QEMU guest(s) started by this module still ran after it "
                    f"(killed now):\n{names}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The same for the whole run, after the session fixtures have been torn down."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(factory, "_basetemp", None) is None:
        return  # no test used a temporary directory, so none booted a guest here
    root = factory.getbasetemp()
    left = _run_guests(root)
    if left:
        _kill(left, root)
        print(f"\nERROR: {len(left)} QEMU guest(s) still ran at the end of the run "
              f"(killed now): {sorted(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


#: modules that share the test Ceph cluster's pools (the engine fixture empties them
#: before every test): they run one after another, in one xdist worker
_CEPH_MODULES = ("tests/storage/", "tests/compute/test_ceph_e2e.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """For a split run (``-n``, scripts/test.sh) each module is one unit of work, so its
    module fixtures (servers, booted guests) are made once; the Ceph modules are one unit
    together."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "ceph" if path.startswith(_CEPH_MODULES) else path

    return ByModule(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the cloud image build in the background as soon as a collected test needs
    it, so it overlaps the tests that run first; the modules that need it run last (in
    their collected order), so they never wait for the build while other tests could
    run."""
    late = {getattr(item, "module", None) for item in items
            if cloudimage.FIXTURE in getattr(item, "fixturenames", ())}
    late.discard(None)
    if late:
        cloudimage.start()
        items[:] = ([i for i in items if getattr(i, "module", None) not in late]
                    + [i for i in items if getattr(i, "module", None) in late])


@pytest.fixture(scope="session")
def cloud_image() -> CloudImage:
    """The Debian cloud image (qcow2; BIOS and UEFI; cloud-init, sshd, qemu-ga), built
    at most once per run and cached across runs: never write to ``.path``."""
    return cloudimage.get()
