"""Dashboard pages: servers — the list, the create form, a server's page, its actions.

Every read and action is a call of the compute (and image/volume/network) REST API
with the user's own token, at the newest microversion; a refusal comes back as the
service's own message in the flash (or the error page for a page that cannot be
shown), never as a 500. The server's page, its actions and its progress JSON are in
:mod:`strato.dashboard.server_page`, included here.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from strato.dashboard import server_page
from strato.dashboard.client import ApiClient, ApiError
from strato.dashboard.web import done, failed, form, page_context, render

router = APIRouter()
NOVA = "/compute/v2.1"
BOOT_SOURCES = (("image", "Image"), ("volume", "Volume"), ("snapshot", "Volume snapshot"))


@router.get("/dashboard/servers", include_in_schema=False)
async def servers(request: Request) -> Response:
    ctx = await page_context(request)
    listing = await ctx.api.get(f"{NOVA}/servers/detail")
    rows = sorted(listing["servers"], key=lambda s: (s.get("created") or ""), reverse=True)
    return render(ctx, "servers.html", servers=rows,
                  progress_of=server_page.progress_of)


async def _optional(api: ApiClient, path: str, key: str,
                    query: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]],
                                                                  str | None]:
    """A list the create form offers; a refusal (no right to list networks, say) is an
    empty list and the service's words beside the field, not a failed page."""
    try:
        answer = await api.get(path, query=query)
    except ApiError as exc:
        if exc.status == 401:
            raise
        return [], exc.message
    return list((answer or {}).get(key) or []), None


@router.get("/dashboard/servers/new", include_in_schema=False)
async def new_server(request: Request) -> Response:
    """The create form, filled from what exists: active images, available volumes and
    snapshots, flavors, key pairs and networks of this project."""
    ctx = await page_context(request)
    vol = f"/volume/v3/{ctx.session.project_id}"
    (images, images_err), (volumes, volumes_err), (snapshots, snapshots_err), \
        (flavors, flavors_err), (keypairs, keypairs_err), (networks, _) = \
        await asyncio.gather(
            _optional(ctx.api, "/image/v2/images", "images", {"status": "active",
                                                              "limit": 200}),
            _optional(ctx.api, f"{vol}/volumes/detail", "volumes", {"status": "available"}),
            _optional(ctx.api, f"{vol}/snapshots/detail", "snapshots",
                      {"status": "available"}),
            _optional(ctx.api, f"{NOVA}/flavors/detail", "flavors"),
            _optional(ctx.api, f"{NOVA}/os-keypairs", "keypairs"),
            _optional(ctx.api, "/networking/v2.0/networks", "networks"))
    flavors.sort(key=lambda f: (f.get("ram") or 0, f.get("vcpus") or 0, f.get("name", "")))
    images.sort(key=lambda i: str(i.get("name") or ""))
    # the project's own networks first (the default choice), external ones last
    networks.sort(key=lambda n: (bool(n.get("router:external")),
                                 n.get("project_id") != ctx.session.project_id,
                                 str(n.get("name") or "")))
    again = request.query_params  # the fields of a create the API refused
    return render(ctx, "server_new.html", sources=BOOT_SOURCES,
                  source=again.get("source", "image"), preselect=again.get("id", ""),
                  again={k: again.get(k, "") for k in ("name", "flavor", "key_name",
                                                        "network")},
                  images=images, volumes=volumes, snapshots=snapshots, flavors=flavors,
                  keypairs=[k["keypair"] for k in keypairs if "keypair" in k],
                  networks=networks,
                  errors={"image": images_err, "volume": volumes_err,
                          "snapshot": snapshots_err, "flavor": flavors_err,
                          "key-name": keypairs_err})


def create_body(fields: dict[str, str]) -> dict[str, Any]:
    """The ``POST /servers`` body the form asks for. What the form leaves empty is
    left out, so the API (not the dashboard) says what is missing."""
    server: dict[str, Any] = {"name": fields.get("name", "").strip(),
                              "flavorRef": fields.get("flavor", "")}
    source = fields.get("boot_source", "image")
    if source == "image":
        server["imageRef"] = fields.get("image", "")
    elif source in ("volume", "snapshot"):
        server["imageRef"] = ""
        mapping: dict[str, Any] = {"boot_index": 0, "uuid": fields.get(source, ""),
                                   "source_type": source, "destination_type": "volume",
                                   "delete_on_termination": source == "snapshot"}
        server["block_device_mapping_v2"] = [mapping]
    if fields.get("key_name"):
        server["key_name"] = fields["key_name"]
    network = fields.get("network", "")
    if network in ("", "auto", "none"):
        server["networks"] = network or "auto"
    else:
        server["networks"] = [{"uuid": network}]
    return {"server": server}


@router.post("/dashboard/servers/new", include_in_schema=False)
async def create_server(request: Request) -> Response:
    ctx = await page_context(request)
    fields = await form(request)
    try:
        answer = await ctx.api.post(f"{NOVA}/servers", create_body(fields))
    except ApiError as exc:
        if exc.status == 401:
            raise
        source = fields.get("boot_source", "image")
        again = {"source": source, "id": fields.get(source, ""),
                 **{k: fields.get(k, "") for k in ("name", "flavor", "key_name", "network")}}
        return failed(ctx, "/dashboard/servers/new?" + urlencode(again), exc)
    server = answer.json()["server"]
    return done(ctx, f"/dashboard/servers/{server['id']}",
                f"Server {fields.get('name', '').strip()} is being created.")


router.include_router(server_page.router)
