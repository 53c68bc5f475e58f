"""Nova's proxy APIs under /compute/v2.1: images (+ metadata), os-volumes,
os-volumes_boot, os-snapshots and the network proxies.

Nova removed them at microversion 2.36 (image metadata at 2.39): from there they answer
404, as Nova's do. The work is in ``strato.compute.proxy_*``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from strato.api.common import base_url, context, json_body, services
from strato.api.compute import FastJSON
from strato.compute.proxy_images import ImageProxy
from strato.compute.proxy_network import NetworkProxy
from strato.compute.proxy_volumes import VolumeProxy
from strato.exceptions import NotFound

router = APIRouter(prefix="/compute/v2.1")

PROXY_MAX = (2, 35)
IMAGE_METADATA_MAX = (2, 38)


def _gate(request: Request, last: tuple[int, int] = PROXY_MAX) -> None:
    """404 from the microversion Nova dropped the route at."""
    major, minor = (context(request).microversion or "2.1").split(".")
    if (int(major), int(minor)) > last:
        raise NotFound("The resource could not be found.")


def _images(request: Request, last: tuple[int, int] = PROXY_MAX) -> ImageProxy:
    _gate(request, last)
    return ImageProxy(services(request).image)


def _volumes(request: Request) -> VolumeProxy:
    _gate(request)
    return VolumeProxy(services(request).volume, services(request).policy)


def _network(request: Request) -> NetworkProxy:
    _gate(request)
    return NetworkProxy(services(request).network, services(request).policy)


# ---------------------------------------------------------------- images
@router.get("/images")
def list_images(request: Request) -> FastJSON:
    return FastJSON(_images(request).list(context(request),
                                          list(request.query_params.multi_items()), False,
                                          base_url(request)))


@router.get("/images/detail")
def list_images_detail(request: Request) -> FastJSON:
    return FastJSON(_images(request).list(context(request),
                                          list(request.query_params.multi_items()), True,
                                          base_url(request)))


@router.get("/images/{image_id}")
def show_image(request: Request, image_id: str) -> FastJSON:
    return FastJSON({"image": _images(request).show(context(request), image_id,
                                                    base_url(request))})


@router.delete("/images/{image_id}")
async def delete_image(request: Request, image_id: str) -> Response:
    await run_in_threadpool(_images(request).delete, context(request), image_id)
    return Response(status_code=204)


@router.get("/images/{image_id}/metadata")
def list_image_metadata(request: Request, image_id: str) -> FastJSON:
    proxy = _images(request, IMAGE_METADATA_MAX)
    return FastJSON({"metadata": proxy.metadata(context(request), image_id)})


@router.post("/images/{image_id}/metadata")
async def update_image_metadata(request: Request, image_id: str) -> FastJSON:
    proxy = _images(request, IMAGE_METADATA_MAX)
    body = await json_body(request)
    return FastJSON({"metadata": await run_in_threadpool(
        proxy.set_metadata, context(request), image_id, body, False)})


@router.put("/images/{image_id}/metadata")
async def replace_image_metadata(request: Request, image_id: str) -> FastJSON:
    proxy = _images(request, IMAGE_METADATA_MAX)
    body = await json_body(request)
    return FastJSON({"metadata": await run_in_threadpool(
        proxy.set_metadata, context(request), image_id, body, True)})


@router.get("/images/{image_id}/metadata/{key}")
def show_image_metadata_item(request: Request, image_id: str, key: str) -> FastJSON:
    proxy = _images(request, IMAGE_METADATA_MAX)
    return FastJSON({"meta": proxy.metadata_item(context(request), image_id, key)})


@router.put("/images/{image_id}/metadata/{key}")
async def set_image_metadata_item(request: Request, image_id: str, key: str) -> FastJSON:
    proxy = _images(request, IMAGE_METADATA_MAX)
    body = await json_body(request)
    return FastJSON({"meta": await run_in_threadpool(
        proxy.set_metadata_item, context(request), image_id, key, body)})


@router.delete("/images/{image_id}/metadata/{key}")
async def delete_image_metadata_item(request: Request, image_id: str, key: str) -> Response:
    proxy = _images(request, IMAGE_METADATA_MAX)
    await run_in_threadpool(proxy.delete_metadata_item, context(request), image_id, key)
    return Response(status_code=204)


# ---------------------------------------------------------------- volumes, snapshots
def _volume_routes(collection: str) -> None:
    """os-volumes and os-volumes_boot: one controller in Nova, two paths."""

    @router.get(f"/{collection}", name=f"{collection}-list")
    def list_volumes(request: Request) -> FastJSON:
        return FastJSON({"volumes": _volumes(request).list_volumes(
            context(request), dict(request.query_params), False)})

    @router.get(f"/{collection}/detail", name=f"{collection}-detail")
    def list_volumes_detail(request: Request) -> FastJSON:
        return FastJSON({"volumes": _volumes(request).list_volumes(
            context(request), dict(request.query_params), True)})

    @router.get(f"/{collection}/{{volume_id}}", name=f"{collection}-show")
    def show_volume(request: Request, volume_id: str) -> FastJSON:
        return FastJSON({"volume": _volumes(request).show_volume(context(request),
                                                                 volume_id)})

    @router.post(f"/{collection}", name=f"{collection}-create")
    async def create_volume(request: Request) -> FastJSON:
        proxy = _volumes(request)
        body = await json_body(request)
        volume = await run_in_threadpool(proxy.create_volume, context(request), body)
        return FastJSON({"volume": volume}, headers={
            "Location": f"{base_url(request)}/compute/v2.1/{collection}/{volume['id']}"})

    @router.delete(f"/{collection}/{{volume_id}}", name=f"{collection}-delete")
    async def delete_volume(request: Request, volume_id: str) -> Response:
        await run_in_threadpool(_volumes(request).delete_volume, context(request),
                                volume_id)
        return Response(status_code=202)


_volume_routes("os-volumes")
_volume_routes("os-volumes_boot")


@router.get("/os-snapshots")
def list_snapshots(request: Request) -> FastJSON:
    return FastJSON({"snapshots": _volumes(request).list_snapshots(
        context(request), dict(request.query_params), False)})


@router.get("/os-snapshots/detail")
def list_snapshots_detail(request: Request) -> FastJSON:
    return FastJSON({"snapshots": _volumes(request).list_snapshots(
        context(request), dict(request.query_params), True)})


@router.get("/os-snapshots/{snapshot_id}")
def show_snapshot(request: Request, snapshot_id: str) -> FastJSON:
    return FastJSON({"snapshot": _volumes(request).show_snapshot(context(request),
                                                                 snapshot_id)})


@router.post("/os-snapshots")
async def create_snapshot(request: Request) -> FastJSON:
    proxy = _volumes(request)
    body = await json_body(request)
    return FastJSON({"snapshot": await run_in_threadpool(proxy.create_snapshot,
                                                         context(request), body)})


@router.delete("/os-snapshots/{snapshot_id}")
async def delete_snapshot(request: Request, snapshot_id: str) -> Response:
    await run_in_threadpool(_volumes(request).delete_snapshot, context(request),
                            snapshot_id)
    return Response(status_code=202)


# ---------------------------------------------------------------- network proxies
@router.get("/os-security-groups")
def list_security_groups(request: Request) -> FastJSON:
    return FastJSON({"security_groups": _network(request).list_groups(
        context(request), dict(request.query_params))})


@router.get("/os-security-groups/{group_id}")
def show_security_group(request: Request, group_id: str) -> FastJSON:
    return FastJSON({"security_group": _network(request).show_group(context(request),
                                                                     group_id)})


@router.post("/os-security-groups")
async def create_security_group(request: Request) -> FastJSON:
    proxy = _network(request)
    body = await json_body(request)
    return FastJSON({"security_group": await run_in_threadpool(
        proxy.create_group, context(request), body)})


@router.put("/os-security-groups/{group_id}")
async def update_security_group(request: Request, group_id: str) -> FastJSON:
    proxy = _network(request)
    body = await json_body(request)
    return FastJSON({"security_group": await run_in_threadpool(
        proxy.update_group, context(request), group_id, body)})


@router.delete("/os-security-groups/{group_id}")
async def delete_security_group(request: Request, group_id: str) -> Response:
    await run_in_threadpool(_network(request).delete_group, context(request), group_id)
    return Response(status_code=202)


@router.post("/os-security-group-rules")
async def create_security_group_rule(request: Request) -> FastJSON:
    proxy = _network(request)
    body = await json_body(request)
    return FastJSON({"security_group_rule": await run_in_threadpool(
        proxy.create_rule, context(request), body)})


@router.delete("/os-security-group-rules/{rule_id}")
async def delete_security_group_rule(request: Request, rule_id: str) -> Response:
    await run_in_threadpool(_network(request).delete_rule, context(request), rule_id)
    return Response(status_code=202)


@router.get("/os-floating-ips")
def list_floating_ips(request: Request) -> FastJSON:
    return FastJSON({"floating_ips": _network(request).list_floating_ips(context(request))})


@router.get("/os-floating-ips/{fip_id}")
def show_floating_ip(request: Request, fip_id: str) -> FastJSON:
    return FastJSON({"floating_ip": _network(request).show_floating_ip(context(request),
                                                                       fip_id)})


@router.post("/os-floating-ips")
async def create_floating_ip(request: Request) -> FastJSON:
    proxy = _network(request)
    body = await json_body(request)
    return FastJSON({"floating_ip": await run_in_threadpool(
        proxy.create_floating_ip, context(request), body)})


@router.delete("/os-floating-ips/{fip_id}")
async def delete_floating_ip(request: Request, fip_id: str) -> Response:
    await run_in_threadpool(_network(request).delete_floating_ip, context(request), fip_id)
    return Response(status_code=202)


@router.get("/os-floating-ip-pools")
def list_floating_ip_pools(request: Request) -> FastJSON:
    return FastJSON({"floating_ip_pools": _network(request).list_pools(context(request))})


@router.get("/os-networks")
def list_networks(request: Request) -> FastJSON:
    return FastJSON({"networks": _network(request).list_networks(context(request))})


@router.get("/os-networks/{network_id}")
def show_network(request: Request, network_id: str) -> FastJSON:
    return FastJSON({"network": _network(request).show_network(context(request),
                                                               network_id)})


@router.get("/os-tenant-networks")
def list_tenant_networks(request: Request) -> FastJSON:
    return FastJSON({"networks": _network(request).list_tenant_networks(context(request))})


@router.get("/os-tenant-networks/{network_id}")
def show_tenant_network(request: Request, network_id: str) -> FastJSON:
    return FastJSON({"network": _network(request).show_tenant_network(context(request),
                                                                      network_id)})


# ---------------------------------------------------------------- empty ids
def _no_id(request: Request) -> Response:
    """``GET /images/`` and the like: an empty id is no resource (Nova: 404), not a
    redirect to the collection."""
    raise NotFound("The resource could not be found.")


for _collection in ("images", "os-volumes", "os-volumes_boot", "os-snapshots",
                    "os-security-groups", "os-security-group-rules", "os-floating-ips",
                    "os-networks", "os-tenant-networks"):
    router.add_api_route(f"/{_collection}/", _no_id, methods=["GET", "PUT", "DELETE"],
                         name=f"{_collection}-empty-id")
