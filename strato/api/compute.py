"""Compute (Nova v2.1) routes under /compute: discovery now, resources in later issues."""

from __future__ import annotations

from fastapi import APIRouter, Request

from strato.api.common import base_url
from strato.api.microversions import COMPUTE

router = APIRouter(prefix="/compute")


def version_doc(request: Request) -> dict:
    return {
        "id": "v2.1", "status": "CURRENT", "version": str(COMPUTE.max),
        "min_version": str(COMPUTE.min), "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/compute/v2.1/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2.1"}],
    }


@router.get("")
@router.get("/")
def versions(request: Request) -> dict:
    return {"versions": [version_doc(request)]}


@router.get("/v2.1")
@router.get("/v2.1/")
def v21(request: Request) -> dict:
    return {"version": version_doc(request)}
