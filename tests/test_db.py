"""Migrations and engine settings on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text

from strato.db import Database, migrate


def test_migrations_upgrade_and_downgrade(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()
    database = Database(db_url)
    tables = set(inspect(database.engine).get_table_names())
    assert {"domains", "projects", "users", "roles", "role_assignments", "jobs"} <= tables
    database.dispose()
    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    database = Database(db_url)
    assert set(inspect(database.engine).get_table_names()) <= {"alembic_version"}
    database.dispose()


def test_models_match_the_migrations(db: Database) -> None:
    """Autogenerate finds nothing to add: the migrations cover every model."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import strato.db.models  # noqa: F401
    from strato.db.base import Base

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_sqlite_runs_with_wal_and_foreign_keys(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    migrate.upgrade(url)
    database = Database(url)
    with database.session() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    database.dispose()


def test_sqlite_readers_do_not_wait_for_a_writer(tmp_path) -> None:
    """Token checks read on every request; a long write must not stall them."""
    import threading
    import time

    from strato.identity.models import Domain

    url = f"sqlite:///{tmp_path}/s.db"
    migrate.upgrade(url)
    database = Database(url, sqlite_busy_timeout=5)
    with database.session() as s:
        s.add(Domain(id="d", name="d"))
    writing, release = threading.Event(), threading.Event()

    def writer() -> None:
        with database.session() as s:
            s.add(Domain(id="e", name="e"))
            s.flush()
            writing.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    writing.wait(5)
    started = time.monotonic()
    with database.session(readonly=True) as s:
        names = sorted(d.name for d in s.query(Domain))
    elapsed = time.monotonic() - started
    release.set()
    thread.join()
    assert names == ["d"] and elapsed < 1.0
    database.dispose()
