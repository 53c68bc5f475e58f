"""The request middleware on a small ASGI app: ids, faults and logging for every outcome."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from strato.api.middleware import RequestMiddleware
from strato.exceptions import Unauthorized


class _Identity:
    def context_for(self, token: str, request_id: str):  # type: ignore[no-untyped-def]
        raise Unauthorized()


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/compute/v2.1/")
    def boom() -> dict:
        raise RuntimeError("a bug")

    services = SimpleNamespace(identity=_Identity(),
                               conf=SimpleNamespace(public_endpoint="http://x"))
    app.add_middleware(RequestMiddleware, services=services)
    return app


@pytest.mark.anyio
async def test_a_bug_is_a_500_fault_with_request_id_and_no_traceback(caplog) -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        with caplog.at_level(logging.INFO, logger="strato.api"):
            r = await c.get("/compute/v2.1/")
    assert r.status_code == 500
    assert r.json()["computeFault"]["code"] == 500
    rid = r.headers["X-OpenStack-Request-Id"]
    assert rid in r.json()["computeFault"]["message"]
    assert "Traceback" not in r.text and "a bug" not in r.text
    assert any("a bug" in (rec.exc_text or "") or rec.exc_info for rec in caplog.records)
    assert any(rid in rec.getMessage() and " 500 " in rec.getMessage() for rec in caplog.records)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
