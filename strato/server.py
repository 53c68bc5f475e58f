"""``strato serve`` and ``strato worker``: processes, their lifetimes, clean shutdown.

SIGTERM or SIGINT (Ctrl-C): uvicorn stops accepting, finishes the requests in flight,
then the lifespan's shutdown stops the job workers, each after its current step.  A
second Ctrl-C makes uvicorn stop at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from strato.config import Config
from strato.jobs.queue import ANY
from strato.jobs.worker import Worker, WorkerPool

LOG = logging.getLogger("strato.server")


def worker_targets(conf: Config) -> list[str]:
    """What this host's workers claim: jobs for anyone and jobs for this host."""
    from strato.service import volume_backends

    return [ANY, f"host:{conf.DEFAULT.host}",
            *(f"volume:{b.name}" for b in volume_backends(conf))]


def load_handlers() -> None:
    """Import the modules whose ``@handler`` functions workers run, then guard the
    guest jobs: each runs only on the host its guest is on (``compute.routing``)."""
    import strato.backup.manager  # noqa: F401
    import strato.compute.backup  # noqa: F401
    import strato.compute.cold_migrate  # noqa: F401
    import strato.compute.evacuate  # noqa: F401
    import strato.compute.guestops  # noqa: F401
    import strato.compute.hostcalls  # noqa: F401
    import strato.compute.live_migration_manager  # noqa: F401
    import strato.compute.manager  # noqa: F401
    import strato.compute.rebuild_manager  # noqa: F401
    import strato.compute.rescue  # noqa: F401
    import strato.compute.resize  # noqa: F401
    import strato.compute.schedule_runner  # noqa: F401
    import strato.compute.shelve  # noqa: F401
    import strato.compute.snapshot_manager  # noqa: F401
    import strato.image.manager  # noqa: F401
    import strato.jobs.builtin  # noqa: F401
    import strato.volume.manager  # noqa: F401
    import strato.volume.migration  # noqa: F401
    from strato.compute import routing
    from strato.jobs.worker import HANDLERS

    routing.install(HANDLERS)


def make_pool(conf: Config, services: object, targets: list[str] | None = None) -> WorkerPool:
    load_handlers()

    def make(i: int) -> Worker:
        return Worker(
            services.db, targets or worker_targets(conf), services=services,  # type: ignore[attr-defined]
            lease=conf.jobs.lease_seconds, poll_interval=conf.jobs.poll_interval,
            retry_backoff=conf.jobs.retry_backoff,
        )

    return WorkerPool(conf.jobs.workers, make)


def websocket_support() -> bool:
    """Can uvicorn serve websockets here (the serial console proxy needs them)?"""
    from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

    return AutoWebSocketsProtocol is not None


def serve(conf: Config, compute: bool = True) -> int:
    """The API and its embedded job workers; with ``compute`` (the default, one box)
    also this host's compute agent and its ``host:`` jobs.  Without it (scale-out: the
    API on a machine that runs no guests) the workers claim only ``any`` and the volume
    backends' jobs, and this host is not registered as a compute node."""
    from strato.api.app import build_app
    from strato.cli import _check_schema
    from strato.service import Services

    _check_schema(conf)
    services = Services.build(conf)
    services.recover()
    from strato.compute.agent import ComputeAgent

    # this host's networks and routers as the tables say, before guests re-attach
    services.network.sync_host()
    agent = ComputeAgent(services) if compute else None
    if agent is not None:
        agent.start()  # re-attach to running guests, resolve half-done tasks, sync power
    targets = None if compute else [
        t for t in worker_targets(conf) if t != f"host:{conf.DEFAULT.host}"]
    pool = make_pool(conf, services, targets)
    app = build_app(services)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.start()
        LOG.info("strato serving on %s (%d job workers)", conf.public_endpoint,
                 len(pool.workers))
        try:
            yield
        finally:
            LOG.info("stopping job workers after their current step")
            pool.stop()
            if agent is not None:
                agent.stop()
            services.close()
            LOG.info("stopped")

    app.router.lifespan_context = lifespan
    if conf.serial_console.enabled and not websocket_support():
        LOG.warning("no websocket implementation is installed (pip install websockets): "
                    "serial console URLs will not connect")
    server = uvicorn.Server(uvicorn.Config(
        app, host=conf.DEFAULT.bind_host, port=conf.DEFAULT.bind_port, log_config=None,
        access_log=False, lifespan="on",
    ))
    # uvicorn re-raises the signal it caught once it has shut down; with these handlers in
    # place that re-raise is a no-op, so a server stopped by SIGTERM or SIGINT (Ctrl-C on
    # `make run`) exits 0 after a clean stop, without a KeyboardInterrupt traceback.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    server.run()
    return 0


def run_worker(conf: Config, targets: list[str] | None) -> int:
    from strato.cli import _check_schema
    from strato.service import Services

    _check_schema(conf)
    services = Services.build(conf)
    from strato.compute.agent import ComputeAgent

    agent = None
    if f"host:{conf.DEFAULT.host}" in (targets or worker_targets(conf)):
        services.network.sync_host()
        agent = ComputeAgent(services)
        agent.start()
    pool = make_pool(conf, services, targets)
    if ANY in (targets or worker_targets(conf)):  # snapshot schedules' jobs run here
        from strato.compute.schedule_runner import reconcile

        reconcile(services)
    done = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        LOG.info("signal %d: stopping after the current step", signum)
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pool.start()
    LOG.info("worker serving targets %s", targets or worker_targets(conf))
    done.wait()
    pool.stop()
    if agent is not None:
        agent.stop()
    services.close()
    return 0
