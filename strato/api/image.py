"""Image (Glance v2) routes under /image: discovery now, resources in later issues."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from strato.api.common import base_url

router = APIRouter(prefix="/image")

# Glance lists every minor version it serves; the newest is CURRENT.
MINORS = (16, 15, 9, 7, 6, 5, 4, 3, 2, 1, 0)


def versions_doc(request: Request) -> dict:
    href = f"{base_url(request)}/image/v2/"
    return {"versions": [
        {"id": f"v2.{minor}", "status": "CURRENT" if i == 0 else "SUPPORTED",
         "links": [{"rel": "self", "href": href}]}
        for i, minor in enumerate(MINORS)
    ]}


@router.get("")
@router.get("/")
@router.get("/v2")
@router.get("/v2/")
def versions(request: Request) -> JSONResponse:
    return JSONResponse(versions_doc(request), status_code=300)


@router.get("/versions")
def versions_ok(request: Request) -> dict:
    return versions_doc(request)
