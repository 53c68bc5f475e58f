"""strato.conf: every option typed, documented and defaulted, in one table.

Options use OpenStack's names where OpenStack has one.  A value may refer to another
option of its section or of [DEFAULT] as ``$name`` (as oslo.config does), so
``connection = sqlite:///$state_path/strato.db`` follows ``state_path``.
A bad value or an unknown option stops startup with a message naming it.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the option."""


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("expected a port number 0-65535")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected an integer >= 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("expected a number > 0")
    return value


def _str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


TYPES: dict[str, Callable[[str], Any]] = {
    "str": str,
    "bool": _bool,
    "port": _port,
    "int": int,
    "positive_int": _positive_int,
    "non_negative_int": _non_negative_int,
    "positive_float": _positive_float,
    "path": lambda text: Path(text).expanduser(),
    "list": _str_list,
    "int_list": lambda text: [int(part) for part in _str_list(text)],
    "float": float,
}


@dataclass(frozen=True)
class Option:
    """One option: its section, name, type name (a key of TYPES), default and help."""

    section: str
    name: str
    type: str
    default: str
    help: str
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        if self.choices and text not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}")
        return TYPES[self.type](text)


OPTIONS: tuple[Option, ...] = (
    # [DEFAULT]
    Option("DEFAULT", "state_path", "path", "/var/lib/strato",
           "Directory for all local state: database, keys, block store, guests."),
    Option("DEFAULT", "bind_host", "str", "127.0.0.1", "Address the API listens on."),
    Option("DEFAULT", "bind_port", "port", "8787", "Port the API listens on."),
    Option("DEFAULT", "public_endpoint", "str", "",
           "Base URL clients reach the API on, used in the catalog and links; "
           "empty means http://<bind_host>:<bind_port>."),
    Option("DEFAULT", "host", "str", "localhost",
           "Name of this host: compute jobs and guests are keyed by it."),
    Option("DEFAULT", "report_interval", "positive_int", "10",
           "Seconds between two heartbeats of this host's compute agent (Nova's)."),
    Option("DEFAULT", "service_down_time", "positive_int", "60",
           "Seconds without a heartbeat after which a compute service is reported down "
           "(Nova's; keep it well above report_interval)."),
    Option("DEFAULT", "allow_resize_to_same_host", "bool", "false",
           "Let a resize pick the server's own host (Nova's).  Either way a cloud whose "
           "only compute host is the server's resizes on it."),
    Option("DEFAULT", "region_name", "str", "RegionOne", "Region shown in the catalog."),
    Option("DEFAULT", "debug", "bool", "false", "Log at DEBUG level."),
    Option("DEFAULT", "log_file", "str", "", "Log to this file instead of standard error."),
    # [database]
    Option("database", "connection", "str", "sqlite:///$state_path/strato.db",
           "SQLAlchemy URL: sqlite:///PATH (embedded) or postgresql+psycopg://USER@HOST/DB."),
    Option("database", "pool_size", "positive_int", "5", "Connections kept per process "
           "(PostgreSQL)."),
    Option("database", "sqlite_busy_timeout", "positive_float", "30",
           "Seconds a SQLite writer waits for the lock before failing."),
    # [token]
    Option("token", "expiration", "positive_int", "3600", "Seconds a token stays valid."),
    Option("token", "key_repository", "path", "$state_path/fernet-keys",
           "Directory of Fernet keys that sign and encrypt tokens (created when missing)."),
    # [oslo_policy]
    Option("oslo_policy", "policy_file", "str", "",
           "YAML or JSON file whose rules override the defaults (see `strato policy`)."),
    # [jobs]
    Option("jobs", "workers", "non_negative_int", "2",
           "Job worker threads run by `strato serve` (0: none, for API-only processes)."),
    Option("jobs", "lease_seconds", "positive_float", "30",
           "How long a claimed job is owned before another worker may take it over."),
    Option("jobs", "poll_interval", "positive_float", "0.5",
           "Seconds an idle worker waits before looking for jobs again."),
    Option("jobs", "max_attempts", "positive_int", "5",
           "Attempts before a failing job is recorded as failed."),
    Option("jobs", "retry_backoff", "positive_float", "2",
           "Seconds before the first retry; doubled on every further attempt."),
    # [storage]
    Option("storage", "engine", "str", "local",
           "Block store engine of image data, volumes and instance disks: 'local' "
           "(qemu-img layers in a directory) or 'rbd' (a Ceph cluster, through librbd).",
           choices=("local", "rbd")),
    Option("storage", "images_engine", "str", "$engine",
           "Engine of image data (Glance's rbd store); its Ceph options are "
           "[glance_store] rbd_store_*.", choices=("local", "rbd")),
    Option("storage", "volumes_engine", "str", "$engine",
           "Engine of volumes (Cinder's RBD driver); its Ceph options are [volume] rbd_*.",
           choices=("local", "rbd")),
    Option("storage", "vms_engine", "str", "$engine",
           "Engine of instance disks (Nova's images_type); its Ceph options are "
           "[compute] images_rbd_*.", choices=("local", "rbd")),
    Option("storage", "local_path", "path", "$state_path/blocks",
           "Directory of the local block store engine."),
    # [glance_store]
    Option("glance_store", "default_store", "str", "rbd",
           "Where image data goes: 'rbd' (the block store, so volumes and instances clone "
           "it without copying) or 'file' (a directory).", choices=("rbd", "file")),
    Option("glance_store", "enabled_backends", "list", "",
           "Multi-store (Glance's enabled_backends): 'id:type' pairs, e.g. 'fast:rbd, "
           "cheap:file' (at most one store of each type); empty: the one default_store."),
    Option("glance_store", "default_backend", "str", "",
           "With enabled_backends: the id of the store uploads go to (empty: the first)."),
    Option("glance_store", "rbd_store_chunk_size", "positive_int", "8",
           "Image data is written in pieces of this many MiB (also the object size)."),
    Option("glance_store", "filesystem_store_datadir", "path", "$state_path/images",
           "Directory of the 'file' store."),
    Option("glance_store", "rbd_store_pool", "str", "images", "Pool of image data."),
    Option("glance_store", "rbd_store_user", "str", "",
           "Ceph user of the image store (empty: librados' default, client.admin)."),
    Option("glance_store", "rbd_store_ceph_conf", "path", "/etc/ceph/ceph.conf",
           "Ceph configuration file of the image store's cluster (with its keyring)."),
    Option("glance_store", "rados_connect_timeout", "int", "0",
           "Seconds one connection attempt to Ceph may take (<= 0: 30)."),
    # [import_filtering_opts]: which URIs web-download may fetch (Glance's defaults)
    Option("import_filtering_opts", "allowed_schemes", "list", "http,https",
           "URI schemes web-download may fetch (empty: any not disallowed)."),
    Option("import_filtering_opts", "disallowed_schemes", "list", "",
           "URI schemes web-download refuses (ignored when allowed_schemes is set)."),
    Option("import_filtering_opts", "allowed_hosts", "list", "",
           "Hosts (names or IP addresses) web-download may fetch from (empty: any "
           "not disallowed)."),
    Option("import_filtering_opts", "disallowed_hosts", "list", "",
           "Hosts web-download refuses (ignored when allowed_hosts is set)."),
    Option("import_filtering_opts", "allowed_ports", "int_list", "80,443",
           "Ports web-download may fetch from (empty: any not disallowed)."),
    Option("import_filtering_opts", "disallowed_ports", "int_list", "",
           "Ports web-download refuses (ignored when allowed_ports is set)."),
    # [image] import methods (Glance's names and defaults)
    Option("image", "enabled_import_methods", "list",
           "glance-direct,web-download,copy-image",
           "Interoperable import methods offered: glance-direct, web-download (strato "
           "has one store and no other region: copy-image and glance-download are "
           "never offered)."),
    Option("image", "show_image_direct_url", "bool", "false",
           "Show an active image's location as 'direct_url'."),
    Option("image", "show_multiple_locations", "bool", "false",
           "Show an image's 'locations' list."),
    Option("image", "image_count_quota", "int", "-1",
           "Images a project may own (-1: no limit)."),
    Option("image", "image_size_total", "int", "-1",
           "MiB of image data a project may store (-1: no limit)."),
    Option("image", "image_property_quota", "int", "128",
           "Extra properties an image may have (-1: no limit)."),
    Option("image", "image_tag_quota", "int", "128", "Tags an image may have (-1: no limit)."),
    Option("image", "image_member_quota", "int", "128",
           "Members an image may have (-1: no limit)."),
    Option("image", "image_size_cap", "positive_int", "1099511627776",
           "Largest image, in bytes."),
    Option("image", "limit_param_default", "positive_int", "25",
           "Images listed per page when the request gives no limit."),
    Option("image", "api_limit_max", "positive_int", "1000",
           "Most images listed per page."),
    # [volume]
    Option("volume", "enabled_backends", "list", "strato-local:volumes",
           "Volume backends, comma-separated, each NAME:POOL[:CAPACITY_GB[:ZONE]]: a pool "
           "of the block store, its capacity (default: the free space of the store's disk) "
           "and availability zone.  Each backend's worker claims jobs for 'volume:NAME'."),
    Option("volume", "scheduler_default_filters", "list",
           "AvailabilityZoneFilter,CapacityFilter,CapabilitiesFilter",
           "Filters a backend must pass to take a new volume."),
    Option("volume", "scheduler_default_weighers", "list",
           "CapacityWeigher,AllocatedCapacityWeigher",
           "Weighers that rank the backends left (CapacityWeigher, "
           "AllocatedCapacityWeigher)."),
    Option("volume", "capacity_weight_multiplier", "float", "1.0",
           "Weight of free capacity (negative: fill the fullest backend first)."),
    Option("volume", "allocated_capacity_weight_multiplier", "float", "-1.0",
           "Weight of capacity already allocated (negative: prefer the least used)."),
    Option("volume", "reserved_percentage", "non_negative_int", "0",
           "Percent of each backend's capacity kept free."),
    Option("volume", "max_over_subscription_ratio", "float", "20.0",
           "Thin backends may promise this many times their capacity to volumes."),
    Option("volume", "rbd_pool", "str", "rbd",
           "Pool of a backend whose enabled_backends entry names none."),
    Option("volume", "rbd_user", "str", "",
           "Ceph user of the volume backends (empty: librados' default, client.admin)."),
    Option("volume", "rbd_ceph_conf", "str", "",
           "Ceph configuration file of the volumes' cluster (empty: /etc/ceph/ceph.conf)."),
    Option("volume", "rbd_cluster_name", "str", "ceph", "Name of the volumes' Ceph cluster."),
    Option("volume", "rbd_secret_uuid", "str", "",
           "libvirt secret of rbd_user, for hypervisors that need one (QEMU here reads the "
           "keyring named in the Ceph configuration instead)."),
    Option("volume", "rbd_store_chunk_size", "positive_int", "4",
           "Object size of new volumes, in MiB."),
    Option("volume", "rados_connect_timeout", "int", "-1",
           "Seconds one connection attempt to Ceph may take (< 0: 30)."),
    Option("volume", "rados_connection_retries", "positive_int", "3",
           "Attempts to connect to Ceph before giving up with an error."),
    Option("volume", "rados_connection_interval", "non_negative_int", "5",
           "Seconds between those attempts."),
    Option("volume", "rbd_max_clone_depth", "non_negative_int", "5",
           "Clones of clones allowed before the source is flattened (0: always copy)."),
    Option("volume", "rbd_flatten_volume_from_snapshot", "bool", "false",
           "Make volumes created from snapshots independent of them (copies data)."),
    Option("volume", "image_conversion_dir", "path", "$state_path/conversion",
           "Where images are downloaded and converted when they cannot be cloned."),
    Option("volume", "default_volume_type", "str", "__DEFAULT__",
           "Volume type of volumes created without one."),
    Option("volume", "storage_availability_zone", "str", "nova",
           "Availability zone of this volume backend."),
    Option("volume", "quota_volumes", "int", "10", "Volumes per project (-1: no limit)."),
    Option("volume", "quota_snapshots", "int", "10", "Snapshots per project (-1: no limit)."),
    Option("volume", "quota_gigabytes", "int", "1000",
           "GiB of volumes and snapshots per project (-1: no limit)."),
    Option("volume", "quota_backups", "int", "10",
           "Volume backups per project (-1: no limit)."),
    Option("volume", "quota_backup_gigabytes", "int", "1000",
           "GiB of volume backups per project (-1: no limit)."),
    Option("volume", "message_ttl", "positive_int", "2592000",
           "Seconds a user message (an asynchronous failure, GET /messages) is kept at "
           "least; it is shown until then as guaranteed_until."),
    # [backup]: the backup store (Cinder backups' data), never the volumes' own pool
    Option("backup", "backend", "str", "",
           "Engine of the backup store: 'local' (a block store in store_dir) or 'rbd' "
           "(rbd_pool in the volumes' Ceph cluster); empty: the volumes' own engine kind, "
           "in that separate place.", choices=("", "local", "rbd")),
    Option("backup", "store_dir", "path", "$state_path/backups",
           "Directory of the local backup store (a block store of its own, apart from "
           "[storage] local_path)."),
    Option("backup", "rbd_pool", "str", "backups",
           "Pool of the rbd backup store, in the cluster of [volume] rbd_ceph_conf (as "
           "cinder-backup's backup_ceph_pool); it must exist and differ from every "
           "volume, image and instance-disk pool."),
    # [compute]
    Option("compute", "instances_path", "path", "$state_path/instances",
           "Where each guest's files live (spec, QMP socket, console log)."),
    Option("compute", "cpu_allocation_ratio", "positive_float", "4.0",
           "Virtual CPUs the scheduler may place per physical CPU."),
    Option("compute", "ram_allocation_ratio", "positive_float", "1.0",
           "Guest RAM the scheduler may place per MiB of host RAM."),
    Option("compute", "disk_allocation_ratio", "positive_float", "1.0",
           "Guest root disk the scheduler may place per GiB of host disk."),
    Option("compute", "reserved_host_memory_mb", "non_negative_int", "512",
           "Host RAM kept for the host itself."),
    Option("compute", "reserved_host_disk_mb", "non_negative_int", "0",
           "Host disk kept for the host itself."),
    Option("compute", "sync_power_state_interval", "float", "5",
           "Seconds between power-state syncs of this host's guests (<= 0: never)."),
    Option("compute", "resize_confirm_window", "non_negative_int", "0",
           "Seconds after which a resize still in VERIFY_RESIZE is confirmed on its own "
           "(0: never)."),
    Option("compute", "shutdown_timeout", "non_negative_int", "60",
           "Seconds a guest gets to power off after ACPI before it is killed."),
    Option("compute", "live_migration_inbound_addr", "str", "127.0.0.1",
           "The address other hosts reach this host's incoming live migrations (and NBD "
           "exports of block migration) on (Nova's [libvirt] live_migration_inbound_addr)."),
    Option("compute", "live_migration_downtime", "non_negative_int", "50",
           "Longest pause (ms) of a live-migrated guest at the switch-over (Nova's "
           "[libvirt] live_migration_downtime). QEMU aims at it: a lower value means "
           "more, smaller passes and a shorter pause."),
    Option("compute", "live_migration_bandwidth", "non_negative_int", "0",
           "Most MiB/s a live migration's memory copy may use (0: unlimited; Nova's "
           "[libvirt] live_migration_bandwidth)."),
    Option("compute", "live_migration_completion_timeout", "non_negative_int", "800",
           "Seconds a live migration may run before it is aborted (Nova's [libvirt] "
           "live_migration_completion_timeout)."),
    Option("compute", "shelved_offload_time", "int", "0",
           "Seconds a shelved server keeps its guest and disk on its host before they are "
           "offloaded (0: at once, as Nova's default; -1: never)."),
    Option("compute", "block_device_allocate_retries", "non_negative_int", "300",
           "Checks for a boot volume to become available before the build fails."),
    Option("compute", "block_device_allocate_retries_interval", "positive_float", "0.5",
           "Seconds between those checks."),
    Option("compute", "osapi_max_limit", "positive_int", "1000",
           "Most servers returned by one list request."),
    Option("compute", "images_rbd_pool", "str", "vms", "Pool of instance disks."),
    Option("compute", "images_rbd_ceph_conf", "str", "",
           "Ceph configuration file of the instance disks' cluster (empty: "
           "/etc/ceph/ceph.conf)."),
    Option("compute", "rbd_user", "str", "",
           "Ceph user of the instance disks (empty: librados' default, client.admin)."),
    Option("compute", "snapshot_image_format", "str", "",
           "Disk format of instance snapshots; empty: raw, cloned in the block store when "
           "the image store shares it (a direct snapshot), else extracted and uploaded.",
           choices=("", "raw", "qcow2")),
    Option("compute", "snapshots_directory", "path", "$state_path/instances/snapshots",
           "Where a snapshot that cannot be cloned is extracted before its upload."),
    Option("compute", "quota_metadata_items", "int", "128",
           "Metadata items a server or a server snapshot may carry (-1: no limit)."),
    Option("compute", "quota_instances", "int", "10", "Servers per project (-1: no limit)."),
    Option("compute", "quota_cores", "int", "20", "vCPUs per project (-1: no limit)."),
    Option("compute", "quota_ram", "int", "51200", "MiB of RAM per project (-1: no limit)."),
    Option("compute", "quota_key_pairs", "int", "100",
           "Keypairs per user; the limit is the project's (-1: no limit)."),
    Option("compute", "force_config_drive", "bool", "false",
           "Give every new server a config drive, whether it asked for one or not."),
    # [filter_scheduler] (Nova's)
    Option("filter_scheduler", "enabled_filters", "list",
           "ComputeFilter,AvailabilityZoneFilter,RamFilter,CoreFilter,DiskFilter,"
           "AggregateInstanceExtraSpecsFilter,ServerGroupAntiAffinityFilter,"
           "ServerGroupAffinityFilter,SameHostFilter,DifferentHostFilter",
           "Filters a host must pass to take a server, in order (Nova's names)."),
    Option("filter_scheduler", "ram_weight_multiplier", "float", "1.0",
           "Weight of free RAM (positive: spread servers; negative: stack them)."),
    Option("filter_scheduler", "cpu_weight_multiplier", "float", "0.0",
           "Weight of free vCPUs (positive: spread; negative: stack). Nova's default is "
           "1.0; here 0: free RAM alone spreads, and a soft (anti-)affinity group's "
           "weight at its default multiplier always outweighs it."),
    Option("filter_scheduler", "soft_affinity_weight_multiplier", "float", "1.0",
           "Weight of a soft-affinity group's members already on a host (>= 0)."),
    Option("filter_scheduler", "soft_anti_affinity_weight_multiplier", "float", "1.0",
           "Weight against a soft-anti-affinity group's members on a host (>= 0)."),
    # [serial_console]
    Option("serial_console", "enabled", "bool", "true",
           "Offer guests' serial consoles over a websocket (remote-consoles, "
           "os-getSerialConsole); off: 400 Unavailable console type serial."),
    Option("serial_console", "base_url", "str", "",
           "Websocket URL the console URLs start with (?token=... is added); empty means "
           "the public endpoint as ws:// (wss:// for https) + /compute/console/serial, "
           "served by strato itself."),
    # [consoleauth]
    Option("consoleauth", "token_ttl", "positive_int", "600",
           "Seconds a console token may be used to connect (an open session outlives it)."),
    # [api]
    Option("api", "enable_instance_password", "bool", "true",
           "Return the admin password (given or generated) in the server create "
           "response."),
    # [network]
    Option("network", "dataplane", "str", "auto",
           "Guest networking: linux (namespaces, bridges, dnsmasq, nftables; fails at "
           "startup when it cannot), usermode (QEMU user-mode NAT per guest; the "
           "network API refuses writes), auto (linux when this process may create "
           "network namespaces, else usermode, said once at startup).",
           choices=("auto", "linux", "usermode")),
    Option("network", "state_path", "path", "$state_path/network",
           "Where dnsmasq's files and the data plane's records live."),
    Option("network", "dataplane_id", "str", "",
           "Short tag in the names of every namespace and host device strato makes, so "
           "deployments on one machine never touch each other's; empty: derived from "
           "state_path."),
    Option("network", "public_network", "str", "public",
           "Name of the external network created at bootstrap (empty: none)."),
    Option("network", "public_cidr", "str", "198.18.0.0/24",
           "Range of that external network (floating IPs, router gateways). It exists "
           "only behind strato's own host veth (the host takes its gateway address); "
           "no route to any other address is ever added."),
    Option("network", "dhcp_lease_duration", "positive_int", "86400",
           "Seconds of a DHCP lease given to guests (Neutron's dhcp_lease_duration)."),
    Option("network", "global_physnet_mtu", "positive_int", "1500",
           "MTU of every network (Neutron's global_physnet_mtu)."),
    Option("network", "quota_network", "non_negative_int", "100",
           "Networks per project (Neutron's default quotas; -1 is not offered here)."),
    Option("network", "quota_subnet", "non_negative_int", "100", "Subnets per project."),
    Option("network", "quota_port", "non_negative_int", "500", "Ports per project."),
    Option("network", "quota_router", "non_negative_int", "10", "Routers per project."),
    Option("network", "quota_floatingip", "non_negative_int", "50",
           "Floating IPs per project."),
    Option("network", "quota_security_group", "non_negative_int", "10",
           "Security groups per project."),
    Option("network", "quota_security_group_rule", "non_negative_int", "100",
           "Security group rules per project."),
    # [identity]
    Option("identity", "password_min_length", "non_negative_int", "0",
           "Shortest password a user may be given."),
    # [dashboard]
    Option("dashboard", "enabled", "bool", "true",
           "Serve the web dashboard at /dashboard (log in with a Keystone user)."),
    Option("dashboard", "key_repository", "path", "$state_path/dashboard-keys",
           "Fernet keys that encrypt the dashboard's session cookie (created when "
           "missing; every API process of a deployment must share them)."),
)

_REF = re.compile(r"\$(\w+)|\$\{(\w+)\}")


class Section:
    """Attribute access to one section's parsed values."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self._name = name
        self._values = values

    def __getattr__(self, item: str) -> Any:
        try:
            return self._values[item]
        except KeyError:
            raise AttributeError(f"no option [{self._name}] {item}") from None


@dataclass
class Config:
    """Parsed configuration: ``conf.database.connection``, ``conf.DEFAULT.state_path``."""

    sections: dict[str, Section] = field(default_factory=dict)
    source: Path | None = None

    def __getattr__(self, item: str) -> Section:
        try:
            return self.__dict__["sections"][item]
        except KeyError:
            raise AttributeError(f"no section [{item}]") from None

    @property
    def public_endpoint(self) -> str:
        base = self.DEFAULT.public_endpoint or (
            f"http://{self.DEFAULT.bind_host}:{self.DEFAULT.bind_port}"
        )
        return base.rstrip("/")


def _expand(section: str, raw: dict[str, dict[str, str]], text: str, seen: tuple = ()) -> str:
    """``seen`` holds the (section, option) pairs being expanded: an option naming its
    own name (``[network] state_path = $state_path/network``) means DEFAULT's."""
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        for sec in (section, "DEFAULT"):
            if name in raw.get(sec, {}) and (sec, name) not in seen:
                return _expand(sec, raw, raw[sec][name], (*seen, (sec, name)))
        if any(n == name for _s, n in seen):
            raise ConfigError(f"option reference loop through ${name}")
        raise ConfigError(f"[{section}] refers to unknown option ${name}")

    return _REF.sub(sub, text)


def load(path: str | Path | None = None, overrides: Iterable[tuple[str, str, str]] = ()) -> Config:
    """Read ``path`` (if given) over the defaults; ``overrides`` are (section, name, value)."""
    raw: dict[str, dict[str, str]] = {}
    for opt in OPTIONS:
        raw.setdefault(opt.section, {})[opt.name] = opt.default
    known = {(o.section, o.name) for o in OPTIONS}
    if path is not None:
        path = Path(path)
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with path.open() as fh:
                parser.read_file(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from exc
        except configparser.Error as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        items = [("DEFAULT", k, v) for k, v in parser.defaults().items()]
        for sec in parser.sections():
            items += [(sec, k, v) for k, v in parser.items(sec, raw=True)
                      if k not in parser.defaults() or parser.get(sec, k, raw=True)
                      != parser.defaults()[k]]
        for sec, name, value in items:
            if (sec, name) not in known:
                raise ConfigError(f"{path}: unknown option [{sec}] {name}")
            raw[sec][name] = value
    for sec, name, value in overrides:
        if (sec, name) not in known:
            raise ConfigError(f"unknown option [{sec}] {name}")
        raw[sec][name] = str(value)
    conf = Config(source=Path(path) if path else None)
    parsed: dict[str, dict[str, Any]] = {}
    for opt in OPTIONS:
        text = _expand(opt.section, raw, raw[opt.section][opt.name],
                       ((opt.section, opt.name),))
        try:
            value = opt.parse(text)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"invalid value {text!r} for option [{opt.section}] {opt.name}: {exc}"
            ) from None
        parsed.setdefault(opt.section, {})[opt.name] = value
    for sec, values in parsed.items():
        conf.sections[sec] = Section(sec, values)
    return conf


def sample(overrides: dict[tuple[str, str], str] | None = None) -> str:
    """A documented strato.conf with every option; ``overrides`` are set uncommented."""
    overrides = overrides or {}
    out: list[str] = []
    current = None
    for opt in OPTIONS:
        if opt.section != current:
            current = opt.section
            out.append(f"{'' if not out else chr(10)}[{current}]")
        out.append(f"# {opt.help}")
        kind = f"one of {', '.join(opt.choices)}" if opt.choices else opt.type
        out.append(f"# ({kind}; default: {opt.default})")
        key = (opt.section, opt.name)
        if key in overrides:
            out.append(f"{opt.name} = {overrides[key]}")
        else:
            out.append(f"#{opt.name} = {opt.default}")
    return "\n".join(out) + "\n"
