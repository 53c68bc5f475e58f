"""Image stores: where image data lives.  ``rbd`` (the block store) or ``file``."""

from strato.image.stores.base import ImageStore, InUseByStore, StoreWriter

__all__ = ["ImageStore", "InUseByStore", "StoreWriter"]
