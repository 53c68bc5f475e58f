"""Quota reservations on SQLite and PostgreSQL: exact under concurrent requests."""

from __future__ import annotations

import threading

import pytest

from strato.db import Database
from strato.exceptions import OverLimit
from strato.quota.engine import QuotaEngine


def test_reserve_commit_rollback_release(db: Database) -> None:
    quota = QuotaEngine({"volumes": 2, "gigabytes": 10})
    with db.session() as s:
        held = quota.reserve(s, "p", {"volumes": 1, "gigabytes": 4})
    with db.session() as s:
        assert {k: (u.in_use, u.reserved) for k, u in quota.usage(s, "p").items()} == {
            "volumes": (0, 1), "gigabytes": (0, 4)}
        with pytest.raises(OverLimit, match="gigabytes"):
            quota.reserve(s, "p", {"volumes": 1, "gigabytes": 7})
    with db.session() as s:
        quota.commit(s, held)
        quota.commit(s, held)  # idempotent
    with db.session() as s:
        other = quota.reserve(s, "p", {"volumes": 1, "gigabytes": 6})
    with db.session() as s:
        quota.rollback(s, other)
        quota.release(s, "p", {"volumes": 1, "gigabytes": 4})
    with db.session() as s:
        assert {k: (u.in_use, u.reserved) for k, u in quota.usage(s, "p").items()} == {
            "volumes": (0, 0), "gigabytes": (0, 0)}
        quota.set_limit(s, "p", "volumes", 0)
    with db.session() as s, pytest.raises(OverLimit):
        quota.reserve(s, "p", {"volumes": 1})


def test_concurrent_reservations_are_exact(db: Database) -> None:
    """40 threads race for a limit of 10 on a project with no usage rows yet."""
    quota = QuotaEngine({"volumes": 10})
    results: list[str] = []
    start = threading.Barrier(40)

    def attempt() -> None:
        start.wait()
        try:
            with db.session() as s:
                quota.reserve(s, "race", {"volumes": 1, "volumes_fast": 1})
            results.append("ok")
        except OverLimit:
            results.append("over")
        except Exception as exc:  # noqa: BLE001 - any other error is a failure
            results.append(f"error: {exc}")

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(results)) == ["ok", "over"], results
    assert results.count("ok") == 10
    with db.session() as s:
        assert quota.usage(s, "race")["volumes"].reserved == 10
