"""Glance's metadata-definition catalog routes (``/image/v2/metadefs``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api.common import context, json_body, services
from strato.image.metadefs import Metadefs

router = APIRouter(prefix="/v2/metadefs")  # included by strato.api.image
NS = "/namespaces/{namespace}"


def _m(request: Request) -> Metadefs:
    return Metadefs(services(request).image)


async def _call(request: Request, method: str, *args: Any, status: int = 200,
                body: bool = False) -> Response:
    ctx = context(request)
    extra = [await json_body(request)] if body else []
    result = await run_in_threadpool(getattr(_m(request), method), ctx, *args, *extra)
    if status == 204:
        return Response(status_code=204)
    return JSONResponse(result, status_code=status)


@router.get("/resource_types")
async def resource_types(request: Request) -> Response:
    return await _call(request, "list_resource_types")


@router.get("/namespaces")
async def list_namespaces(request: Request) -> Response:
    return await _call(request, "list_namespaces", dict(request.query_params))


@router.post("/namespaces")
async def create_namespace(request: Request) -> Response:
    return await _call(request, "create_namespace", status=201, body=True)


@router.get(NS)
async def show_namespace(request: Request, namespace: str) -> Response:
    return await _call(request, "show_namespace", namespace)


@router.put(NS)
async def update_namespace(request: Request, namespace: str) -> Response:
    return await _call(request, "update_namespace", namespace, body=True)


@router.delete(NS)
async def delete_namespace(request: Request, namespace: str) -> Response:
    return await _call(request, "delete_namespace", namespace, status=204)


@router.get(NS + "/resource_types")
async def associations(request: Request, namespace: str) -> Response:
    return await _call(request, "associations", namespace)


@router.post(NS + "/resource_types")
async def associate(request: Request, namespace: str) -> Response:
    return await _call(request, "associate", namespace, status=201, body=True)


@router.delete(NS + "/resource_types/{name}")
async def dissociate(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "dissociate", namespace, name, status=204)


@router.get(NS + "/properties")
async def list_properties(request: Request, namespace: str) -> Response:
    return await _call(request, "list_properties", namespace)


@router.post(NS + "/properties")
async def create_property(request: Request, namespace: str) -> Response:
    return await _call(request, "create_property", namespace, status=201, body=True)


@router.get(NS + "/properties/{name}")
async def show_property(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "show_property", namespace, name)


@router.put(NS + "/properties/{name}")
async def update_property(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "update_property", namespace, name, body=True)


@router.delete(NS + "/properties/{name}")
async def delete_property(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "delete_property", namespace, name, status=204)


@router.get(NS + "/objects")
async def list_objects(request: Request, namespace: str) -> Response:
    return await _call(request, "list_objects", namespace)


@router.post(NS + "/objects")
async def create_object(request: Request, namespace: str) -> Response:
    return await _call(request, "create_object", namespace, status=201, body=True)


@router.get(NS + "/objects/{name}")
async def show_object(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "show_object", namespace, name)


@router.put(NS + "/objects/{name}")
async def update_object(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "update_object", namespace, name, body=True)


@router.delete(NS + "/objects/{name}")
async def delete_object(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "delete_object", namespace, name, status=204)


@router.get(NS + "/tags")
async def list_tags(request: Request, namespace: str) -> Response:
    return await _call(request, "list_tags", namespace)


@router.post(NS + "/tags")
async def create_tags(request: Request, namespace: str) -> Response:
    return await _call(request, "create_tags", namespace, status=201, body=True)


@router.delete(NS + "/tags")
async def delete_tags(request: Request, namespace: str) -> Response:
    return await _call(request, "delete_tags", namespace, status=204)


@router.post(NS + "/tags/{name}")
async def create_tag(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "create_tag", namespace, name, status=201)


@router.get(NS + "/tags/{name}")
async def show_tag(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "show_tag", namespace, name)


@router.put(NS + "/tags/{name}")
async def update_tag(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "update_tag", namespace, name, body=True)


@router.delete(NS + "/tags/{name}")
async def delete_tag(request: Request, namespace: str, name: str) -> Response:
    return await _call(request, "delete_tag", namespace, name, status=204)
