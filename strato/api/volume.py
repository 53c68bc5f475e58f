"""Block storage (Cinder v3) routes under /volume: discovery now, resources later."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from strato.api.common import base_url
from strato.api.microversions import VOLUME

router = APIRouter(prefix="/volume")


def version_doc(request: Request) -> dict:
    return {
        "id": "v3.0", "status": "CURRENT", "version": str(VOLUME.max),
        "min_version": str(VOLUME.min), "updated": "2023-08-31T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/volume/v3/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.volume+json;version=3"}],
    }


@router.get("")
@router.get("/")
def versions(request: Request) -> JSONResponse:
    return JSONResponse({"versions": [version_doc(request)]}, status_code=300)


@router.get("/v3")
@router.get("/v3/")
def v3(request: Request) -> dict:
    return {"versions": [version_doc(request)]}
