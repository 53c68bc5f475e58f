"""Dashboard pages: storage — images, volumes and volume snapshots.

One router for the package's ``ROUTERS``; each kind of resource keeps its pages in its
own module. Shared here: the few helpers every storage page needs (the volume API's
project path, status words, the poll answer of ``data-poll``).
"""

from __future__ import annotations

from fastapi import APIRouter

from strato.dashboard import images, snapshots, volumes

router = APIRouter()
router.include_router(images.router)
router.include_router(volumes.router)
router.include_router(snapshots.router)
