"""Services: everything a process builds once from its configuration and shares."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strato.config import Config, ConfigError
from strato.db import Database
from strato.identity.api import IdentityAPI
from strato.identity.tokens import TokenFactory, load_keys
from strato.image.api import ImageAPI
from strato.image.stores.base import ImageStore
from strato.network.api import NetworkAPI
from strato.network.dataplane import Dataplane, DataplaneUnavailable
from strato.policy import Enforcer
from strato.storage import Engine, open_engine
from strato.volume.api import VolumeAPI
from strato.volume.driver import DriverOptions, RBDDriver
from strato.volume.scheduler import Backend, parse_backends

if TYPE_CHECKING:  # imported in build() only: most commands never load compute
    from strato.compute.api import ComputeAPI
    from strato.virt.qemu import QemuDriver


LOG = logging.getLogger("strato.service")


def open_dataplane(conf: Config) -> tuple[Dataplane | None, str]:
    """The data plane ``[network] dataplane`` asks for, or None and why not.

    ``linux`` that cannot run here fails startup (ConfigError); ``auto`` falls back to
    QEMU's user-mode networking, said once, with the network API refusing changes."""
    mode = conf.network.dataplane
    if mode == "usermode":
        return None, "[network] dataplane is usermode"
    try:
        from strato.network.linux import LinuxDataplane

        dataplane: Dataplane = LinuxDataplane(conf)
        dataplane.probe()
        return dataplane, ""
    except ImportError as exc:
        reason = f"the Linux data plane is not installed ({exc})"
    except DataplaneUnavailable as exc:
        reason = str(exc)
    if mode == "linux":
        raise ConfigError(f"[network] dataplane = linux, but {reason}")
    LOG.warning("guest networking falls back to QEMU user-mode NAT: %s", reason)
    return None, reason


def volume_backends(conf: Config) -> list[Backend]:
    return parse_backends(conf.volume.enabled_backends, conf.storage.local_path,
                          conf.volume.storage_availability_zone)


DEFAULT_CEPH_CONF = "/etc/ceph/ceph.conf"


@dataclass
class BlockStores:
    """Where each service's block data lives: an engine and a pool for image data and
    for instance disks, an engine per volume backend.  Services on the same engine
    (the local one, or one Ceph cluster as one user) share one engine object, so one
    pooled connection; clones work wherever two pools share a cluster (fsid)."""

    images: Engine
    images_pool: str
    vms: Engine
    vms_pool: str
    volumes: dict[str, Engine]
    by_pool: dict[str, Engine]


def _timeout(value: int) -> float:
    return float(value) if value > 0 else 30.0  # bounded: never librados' 300 s


def open_block_stores(conf: Config) -> BlockStores:
    s, gs, v, c = conf.storage, conf.glance_store, conf.volume, conf.compute
    # role -> (engine kind, pool, ceph options)
    roles: dict[str, tuple[str, str, dict[str, Any]]] = {
        "images": (s.images_engine, gs.rbd_store_pool, {
            "ceph_conf": str(gs.rbd_store_ceph_conf), "user": gs.rbd_store_user or "admin",
            "cluster": "ceph", "connect_timeout": _timeout(gs.rados_connect_timeout)}),
        "vms": (s.vms_engine, c.images_rbd_pool, {
            "ceph_conf": c.images_rbd_ceph_conf or DEFAULT_CEPH_CONF,
            "user": c.rbd_user or "admin", "cluster": "ceph"}),
    }
    for b in volume_backends(conf):
        roles[f"volume:{b.name}"] = (s.volumes_engine, b.pool, {
            "ceph_conf": v.rbd_ceph_conf or DEFAULT_CEPH_CONF, "user": v.rbd_user or "admin",
            "cluster": v.rbd_cluster_name, "connect_timeout": _timeout(v.rados_connect_timeout),
            "connection_retries": v.rados_connection_retries,
            "connection_interval": float(v.rados_connection_interval)})

    def cluster(kind: str, ceph: dict[str, Any]) -> tuple[str, ...]:
        return ("local",) if kind == "local" else ("rbd", ceph["ceph_conf"], ceph["cluster"])

    pools: dict[tuple[str, ...], dict[str, None]] = {}
    owner: dict[str, tuple[str, ...]] = {}
    for role, (kind, pool, ceph) in roles.items():
        where = cluster(kind, ceph)
        if owner.setdefault(pool, where) != where:
            raise ConfigError(f"pool {pool!r} ({role}) is named on two block stores; "
                              "give each store's pools their own names")
        pools.setdefault(where, {})[pool] = None
    engines: dict[tuple[str, ...], Engine] = {}
    by_role: dict[str, Engine] = {}
    for role, (kind, _pool, ceph) in roles.items():
        where = cluster(kind, ceph)
        key = (*where, ceph["user"]) if kind == "rbd" else where
        if key not in engines:
            if kind == "local":
                engines[key] = open_engine("local", root=s.local_path,
                                           pools=tuple(pools[where]))
            else:
                engines[key] = open_engine("rbd", pools=tuple(pools[where]), **ceph)
        by_role[role] = engines[key]
    return BlockStores(
        images=by_role["images"], images_pool=gs.rbd_store_pool, vms=by_role["vms"],
        vms_pool=c.images_rbd_pool,
        volumes={r.split(":", 1)[1]: e for r, e in by_role.items() if r.startswith("volume:")},
        by_pool={pool: by_role[role] for role, (_, pool, _) in roles.items()})


def open_image_store(conf: Config, stores: BlockStores) -> ImageStore:
    """The one ``default_store``, or with ``enabled_backends`` all of them, each named by
    its id, behind a MultiStore that writes to the default one."""
    from strato.image.stores.file import FileStore
    from strato.image.stores.multi import MultiStore, StoreConfigError
    from strato.image.stores.multi import parse_backends as parse_stores
    from strato.image.stores.rbd import RbdStore

    gs = conf.glance_store

    def open_kind(kind: str) -> ImageStore:
        if kind == "file":
            return FileStore(gs.filesystem_store_datadir)
        return RbdStore(stores.images, stores.images_pool, gs.rbd_store_chunk_size)

    if not gs.enabled_backends:
        return open_kind(gs.default_store)
    try:
        backends, default = parse_stores(gs.enabled_backends, gs.default_backend)
    except StoreConfigError as exc:
        raise ConfigError(str(exc)) from None
    by_id: dict[str, ImageStore] = {}
    for store_id, kind in backends.items():
        by_id[store_id] = open_kind(kind)
        by_id[store_id].name = store_id
    return MultiStore(by_id, default)


@dataclass
class Services:
    conf: Config
    db: Database
    policy: Enforcer
    identity: IdentityAPI
    stores: BlockStores
    image: ImageAPI
    volume: VolumeAPI
    volume_drivers: dict[str, RBDDriver]
    compute: ComputeAPI
    virt: QemuDriver  # of this host
    network: NetworkAPI
    #: this host's metadata service, while its compute agent runs (``MetadataServer``)
    metadata_server: Any = None
    #: Cinder backups (``strato.backup.api.BackupAPI``)
    backup: Any = None

    @classmethod
    def build(cls, conf: Config) -> Services:
        db = Database.from_config(conf)
        policy = Enforcer(conf.oslo_policy.policy_file)
        tokens = TokenFactory(load_keys(conf.token.key_repository), conf.token.expiration)
        identity = IdentityAPI(db, tokens, policy, conf.public_endpoint,
                               conf.DEFAULT.region_name, conf.identity.password_min_length)
        stores = open_block_stores(conf)
        image = ImageAPI(db, policy, open_image_store(conf, stores), conf)
        v = conf.volume
        backends = volume_backends(conf)
        drivers = {b.name: RBDDriver(stores.volumes[b.name], DriverOptions(
            pool=b.pool, max_clone_depth=v.rbd_max_clone_depth,
            flatten_volume_from_snapshot=v.rbd_flatten_volume_from_snapshot,
            conversion_dir=v.image_conversion_dir,
            order=v.rbd_store_chunk_size.bit_length() + 19)) for b in backends}
        from strato.compute.api import ComputeAPI
        from strato.compute.ports import tap_opener
        from strato.virt.qemu import QemuDriver, storage_resolver

        volume = VolumeAPI(db, policy, conf, image, backends, stores.volumes)
        dataplane, reason = open_dataplane(conf)
        network = NetworkAPI(db, policy, conf, dataplane, reason)
        from strato.backup.api import BackupAPI

        return cls(conf=conf, db=db, policy=policy, identity=identity, stores=stores,
                   image=image, volume=volume, volume_drivers=drivers, network=network,
                   compute=ComputeAPI(db, policy, conf, image, volume, network),
                   virt=QemuDriver(conf.compute.instances_path,
                                   resolve=storage_resolver(stores.by_pool),
                                   open_tap=tap_opener(network)),
                   backup=BackupAPI(volume))

    def recover(self) -> None:
        """Finish or undo what a crash of this host's processes left half done."""
        from strato.image.data import recover as recover_images

        recover_images(self.image, self.conf.DEFAULT.host)
        from strato.backup.manager import sweep as sweep_backups

        sweep_backups(self)
        from strato.compute.schedule_runner import reconcile as reconcile_schedules

        reconcile_schedules(self)  # no enabled snapshot schedule is left without its job

    def close(self) -> None:
        self.db.dispose()
