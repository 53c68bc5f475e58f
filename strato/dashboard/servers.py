"""Dashboard pages: servers (the list; part B builds the rest)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from strato.dashboard.web import page_context, render

router = APIRouter()


@router.get("/dashboard/servers", include_in_schema=False)
async def servers(request: Request) -> Response:
    ctx = await page_context(request)
    listing = await ctx.api.get("/compute/v2.1/servers/detail")
    return render(ctx, "servers.html", servers=listing["servers"])
