"""Engine and session factory, with the SQLite settings the embedded default needs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

READONLY = "strato_readonly"


def _sqlite_setup(engine: Engine, busy_timeout: float) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE.

    pysqlite opens transactions lazily and as DEFERRED; two writers then deadlock on
    the lock upgrade and fail at once instead of waiting.  Taking the write lock at
    BEGIN makes every transaction wait its turn for up to ``busy_timeout``.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Readers (token checks on every request) must not queue behind writers: in WAL
        # mode a deferred transaction that only reads never waits for the write lock.
        if conn.get_execution_options().get(READONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One per process: the engine, a session factory and the dialect's name."""

    def __init__(self, url: str, pool_size: int = 5, sqlite_busy_timeout: float = 30.0) -> None:
        self.url = url
        if url.startswith("sqlite"):
            self.engine = create_engine(url, connect_args={"check_same_thread": False})
            _sqlite_setup(self.engine, sqlite_busy_timeout)
        else:
            self.engine = create_engine(url, pool_size=pool_size, pool_pre_ping=True)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.reader = sessionmaker(self.engine.execution_options(**{READONLY: True}),
                                   expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, readonly: bool = False) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on error.

        ``readonly``: the block only reads; on SQLite it then does not take the write
        lock (writing in it is a bug: it may fail with "database is locked").
        """
        factory = self.reader if readonly else self.sessionmaker
        with factory() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    @classmethod
    def from_config(cls, conf: Any) -> Database:
        return cls(
            conf.database.connection,
            pool_size=conf.database.pool_size,
            sqlite_busy_timeout=conf.database.sqlite_busy_timeout,
        )
