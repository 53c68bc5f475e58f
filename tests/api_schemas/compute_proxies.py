"""Nova's proxy APIs (compute API reference, up to microversion 2.35; image metadata up
to 2.38): images, image metadata, os-volumes/os-volumes_boot, os-snapshots,
os-security-groups (+ rules), os-floating-ips, os-floating-ip-pools, os-networks,
os-tenant-networks, and the server's os-security-groups."""

from __future__ import annotations

from tests.api_schemas import (
    DATETIME,
    INTEGER,
    LINKS,
    METADATA,
    NULLABLE_STRING,
    STRING,
    UUID,
    list_of,
    strict,
)

NULLABLE_INTEGER: dict = {"type": ["integer", "null"]}
EMPTY: dict = strict({})

# ---------------------------------------------------------------- images
IMAGE_SUMMARY = strict({"id": UUID, "name": NULLABLE_STRING, "links": LINKS})
IMAGE = strict({
    "id": UUID, "name": NULLABLE_STRING, "minRam": INTEGER, "minDisk": INTEGER,
    "metadata": METADATA, "created": DATETIME, "updated": DATETIME,
    "status": {"enum": ["ACTIVE", "SAVING", "DELETED", "ERROR", "UNKNOWN"]},
    "progress": INTEGER, "OS-EXT-IMG-SIZE:size": NULLABLE_INTEGER, "links": LINKS,
    # only for an instance snapshot (the image has instance_uuid) / auto_disk_config
    "server": strict({"id": UUID, "links": LINKS}),
    "OS-DCF:diskConfig": {"enum": ["AUTO", "MANUAL"]},
}, optional=("server", "OS-DCF:diskConfig"))
IMAGES = list_of("images", IMAGE_SUMMARY, "images_links")
IMAGES_DETAIL = list_of("images", IMAGE, "images_links")
SHOW_IMAGE = strict({"image": IMAGE})
IMAGE_METADATA = strict({"metadata": METADATA})
IMAGE_META_ITEM = strict({"meta": {**METADATA, "minProperties": 1, "maxProperties": 1}})

# ---------------------------------------------------------------- volumes, snapshots
ATTACHMENT = {"oneOf": [EMPTY, strict({"id": UUID, "volumeId": UUID, "serverId": UUID,
                                       "device": STRING}, optional=("device",))]}
VOLUME = strict({
    "id": UUID, "status": STRING, "size": INTEGER, "availabilityZone": STRING,
    "createdAt": STRING, "attachments": {"type": "array", "items": ATTACHMENT},
    "displayName": NULLABLE_STRING, "displayDescription": NULLABLE_STRING,
    "volumeType": NULLABLE_STRING, "snapshotId": NULLABLE_STRING, "metadata": METADATA,
})
SHOW_VOLUME = strict({"volume": VOLUME})
VOLUMES = list_of("volumes", VOLUME)
SNAPSHOT = strict({
    "id": UUID, "volumeId": UUID, "status": STRING, "size": INTEGER, "createdAt": STRING,
    "displayName": NULLABLE_STRING, "displayDescription": NULLABLE_STRING,
})
SHOW_SNAPSHOT = strict({"snapshot": SNAPSHOT})
SNAPSHOTS = list_of("snapshots", SNAPSHOT)

# ---------------------------------------------------------------- security groups
RULE = strict({
    "id": UUID, "parent_group_id": UUID, "ip_protocol": NULLABLE_STRING,
    "from_port": NULLABLE_INTEGER, "to_port": NULLABLE_INTEGER,
    "group": {"oneOf": [EMPTY, strict({"name": STRING, "tenant_id": STRING})]},
    "ip_range": {"oneOf": [EMPTY, strict({"cidr": STRING})]},
})
SECURITY_GROUP = strict({"id": UUID, "name": STRING, "description": STRING,
                         "tenant_id": STRING, "rules": {"type": "array", "items": RULE}})
SHOW_SECURITY_GROUP = strict({"security_group": SECURITY_GROUP})
SECURITY_GROUPS = list_of("security_groups", SECURITY_GROUP)
SHOW_RULE = strict({"security_group_rule": RULE})

# ---------------------------------------------------------------- floating IPs, networks
FLOATING_IP = strict({"id": UUID, "ip": STRING, "fixed_ip": NULLABLE_STRING,
                      "instance_id": NULLABLE_STRING, "pool": NULLABLE_STRING})
FLOATING_IPS = list_of("floating_ips", FLOATING_IP)
POOLS = list_of("floating_ip_pools", strict({"name": STRING}))

_NET_FIELDS = ("cidr", "netmask", "gateway", "broadcast", "dns1", "dns2", "cidr_v6",
               "gateway_v6", "netmask_v6")
_NET_ADMIN_FIELDS = ("created_at", "updated_at", "deleted_at", "deleted", "injected",
                     "bridge", "vlan", "vpn_public_address", "vpn_public_port",
                     "vpn_private_address", "dhcp_start", "project_id", "host",
                     "bridge_interface", "multi_host", "priority", "rxtx_base", "mtu",
                     "dhcp_server", "enable_dhcp", "share_address")
_NULL: dict = {"type": "null"}
NETWORK = strict({"id": UUID, "label": STRING, **dict.fromkeys(_NET_FIELDS, _NULL)})
NETWORK_ADMIN = strict({"id": UUID, "label": STRING,
                        **dict.fromkeys(_NET_FIELDS + _NET_ADMIN_FIELDS, _NULL)})
NETWORKS = list_of("networks", NETWORK)
NETWORKS_ADMIN = list_of("networks", NETWORK_ADMIN)
TENANT_NETWORK = strict({"id": UUID, "cidr": NULLABLE_STRING, "label": STRING})
TENANT_NETWORKS = list_of("networks", TENANT_NETWORK)
SHOW_TENANT_NETWORK = strict({"network": TENANT_NETWORK})
