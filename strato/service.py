"""Services: everything a process builds once from its configuration and shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strato.config import Config
from strato.db import Database
from strato.identity.api import IdentityAPI
from strato.identity.tokens import TokenFactory, load_keys
from strato.image.api import ImageAPI
from strato.image.stores.base import ImageStore
from strato.policy import Enforcer
from strato.storage import Engine, open_engine
from strato.volume.api import VolumeAPI
from strato.volume.driver import DriverOptions, RBDDriver
from strato.volume.scheduler import Backend, parse_backends


def volume_backends(conf: Config) -> list[Backend]:
    return parse_backends(conf.volume.enabled_backends, conf.storage.local_path,
                          conf.volume.storage_availability_zone)


def open_block_store(conf: Config) -> Engine:
    s = conf.storage
    pools = dict.fromkeys([s.images_pool, s.vms_pool, *(b.pool for b in volume_backends(conf))])
    return open_engine(s.engine, root=s.local_path, pools=tuple(pools))


def open_image_store(conf: Config, engine: Engine) -> ImageStore:
    gs = conf.glance_store
    if gs.default_store == "file":
        from strato.image.stores.file import FileStore

        return FileStore(gs.filesystem_store_datadir)
    from strato.image.stores.rbd import RbdStore

    return RbdStore(engine, conf.storage.images_pool, gs.rbd_store_chunk_size)


@dataclass
class Services:
    conf: Config
    db: Database
    policy: Enforcer
    identity: IdentityAPI
    blocks: Engine
    image: ImageAPI
    volume: VolumeAPI
    volume_drivers: dict[str, RBDDriver]
    compute: Any = None  # strato.compute.api.ComputeAPI
    virt: Any = None  # strato.virt.qemu.QemuDriver of this host

    @classmethod
    def build(cls, conf: Config) -> Services:
        db = Database.from_config(conf)
        policy = Enforcer(conf.oslo_policy.policy_file)
        tokens = TokenFactory(load_keys(conf.token.key_repository), conf.token.expiration)
        identity = IdentityAPI(db, tokens, policy, conf.public_endpoint,
                               conf.DEFAULT.region_name, conf.identity.password_min_length)
        blocks = open_block_store(conf)
        image = ImageAPI(db, policy, open_image_store(conf, blocks), conf)
        v = conf.volume
        backends = volume_backends(conf)
        drivers = {b.name: RBDDriver(blocks, DriverOptions(
            pool=b.pool, max_clone_depth=v.rbd_max_clone_depth,
            flatten_volume_from_snapshot=v.rbd_flatten_volume_from_snapshot,
            conversion_dir=v.image_conversion_dir)) for b in backends}
        from strato.compute.api import ComputeAPI
        from strato.virt.qemu import QemuDriver, storage_resolver

        volume = VolumeAPI(db, policy, conf, image, backends, blocks)
        return cls(conf=conf, db=db, policy=policy, identity=identity, blocks=blocks,
                   image=image, volume=volume, volume_drivers=drivers,
                   compute=ComputeAPI(db, policy, conf, image, volume),
                   virt=QemuDriver(conf.compute.instances_path,
                                   resolve=storage_resolver(blocks)))

    def recover(self) -> None:
        """Finish or undo what a crash of this host's processes left half done."""
        from strato.image.data import recover as recover_images

        recover_images(self.image, self.conf.DEFAULT.host)

    def close(self) -> None:
        self.db.dispose()
