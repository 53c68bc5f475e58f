"""Block storage (Cinder v3) response shapes, from the API reference (block-storage v3)
and Cinder's default policy: what each call answers, for which role, at which
microversion.

Create and update answer the volume "detail" view; show and the detail list add what
the reference lists for those two calls only (``os-vol-tenant-attr:tenant_id`` for
every reader, ``os-vol-host-attr:host`` and ``os-vol-mig-status-attr:*`` for admins,
``volume_image_metadata`` when the volume has some). Snapshots: the plain list is the
summary, create/update the detail, show and the detail list add
``os-extended-snapshot-attributes:*``.
"""

from __future__ import annotations

from tests.api_schemas import (
    BOOLEAN,
    DATETIME,
    INTEGER,
    LINKS,
    METADATA,
    NULLABLE_DATETIME,
    NULLABLE_STRING,
    STRING,
    UUID,
    list_of,
    strict,
)

Version = tuple[int, int]
NULLABLE_UUID: dict = {"type": ["string", "null"], "pattern": "^[0-9a-fA-F-]{32,36}$"}

ATTACHMENT_IN_VOLUME = strict({
    "id": UUID, "attachment_id": UUID, "volume_id": UUID, "server_id": NULLABLE_UUID,
    "host_name": NULLABLE_STRING, "device": NULLABLE_STRING,
    "attached_at": NULLABLE_DATETIME})


def volume(call: str, admin: bool, version: Version = (3, 0),
           image_metadata: bool = False) -> dict:
    """``call``: ``create`` (also update) or ``show`` (also the detail list)."""
    props: dict = {
        "id": UUID, "name": NULLABLE_STRING, "description": NULLABLE_STRING,
        "status": STRING, "size": INTEGER, "availability_zone": NULLABLE_STRING,
        "created_at": DATETIME, "updated_at": NULLABLE_DATETIME,
        "attachments": {"type": "array", "items": ATTACHMENT_IN_VOLUME},
        "bootable": {"enum": ["true", "false"]}, "encrypted": BOOLEAN,
        "multiattach": BOOLEAN, "volume_type": NULLABLE_STRING,
        "snapshot_id": NULLABLE_UUID, "source_volid": NULLABLE_UUID, "metadata": METADATA,
        "user_id": UUID, "replication_status": NULLABLE_STRING,
        "consistencygroup_id": NULLABLE_UUID, "links": LINKS,
    }
    if admin:
        props["migration_status"] = NULLABLE_STRING
    if version >= (3, 13):
        props["group_id"] = NULLABLE_UUID
    if admin and version >= (3, 21):
        props["provider_id"] = NULLABLE_UUID
    if version >= (3, 48):
        props["shared_targets"] = BOOLEAN
        props["service_uuid"] = NULLABLE_UUID
    if admin and version >= (3, 61):
        props["cluster_name"] = NULLABLE_STRING
    if version >= (3, 63):
        props["volume_type_id"] = NULLABLE_UUID
    if version >= (3, 65):
        props["consumes_quota"] = BOOLEAN
    if call == "show":
        props["os-vol-tenant-attr:tenant_id"] = UUID
        if admin:
            props["os-vol-host-attr:host"] = NULLABLE_STRING
            props["os-vol-mig-status-attr:migstat"] = NULLABLE_STRING
            props["os-vol-mig-status-attr:name_id"] = NULLABLE_UUID
        if image_metadata:
            props["volume_image_metadata"] = METADATA
    return strict(props)


VOLUME_SUMMARY = strict({"id": UUID, "name": NULLABLE_STRING, "links": LINKS})


def volumes(detail: bool, admin: bool, version: Version = (3, 0)) -> dict:
    item = volume("show", admin, version) if detail else VOLUME_SUMMARY
    if detail:  # image metadata is there for the volumes that have some
        item = {**item, "properties": {**item["properties"],
                                       "volume_image_metadata": METADATA}}
    return list_of("volumes", item, "volumes_links")


def snapshot(call: str, version: Version = (3, 0)) -> dict:
    """``call``: ``summary`` (the plain list), ``create`` (also update), ``show`` (also
    the detail list)."""
    props: dict = {
        "id": UUID, "name": NULLABLE_STRING, "description": NULLABLE_STRING,
        "volume_id": UUID, "status": STRING, "size": INTEGER, "created_at": DATETIME,
        "updated_at": NULLABLE_DATETIME, "metadata": METADATA}
    if call != "summary":
        if version >= (3, 14):
            props["group_snapshot_id"] = NULLABLE_UUID
        if version >= (3, 41):
            props["user_id"] = UUID
        if version >= (3, 65):
            props["consumes_quota"] = BOOLEAN
    if call == "show":
        props["os-extended-snapshot-attributes:progress"] = STRING
        props["os-extended-snapshot-attributes:project_id"] = UUID
    return strict(props)


def snapshots(detail: bool, version: Version = (3, 0)) -> dict:
    return list_of("snapshots", snapshot("show" if detail else "summary", version),
                   "snapshots_links")


def volume_type(call: str, admin: bool) -> dict:
    """``show`` (also list), ``create`` or ``update``."""
    props: dict = {"id": UUID, "name": STRING, "description": NULLABLE_STRING,
                   "is_public": BOOLEAN, "extra_specs": METADATA}
    if call in ("show", "create"):
        props["os-volume-type-access:is_public"] = BOOLEAN
    if call == "show" and admin:
        props["qos_specs_id"] = NULLABLE_UUID
    return strict(props)


METADATA_BODY = strict({"metadata": METADATA})
META_ITEM = strict({"meta": METADATA})
VOLUME_SUMMARY_BODY_3_12 = strict({"volume-summary": strict(
    {"total_size": INTEGER, "total_count": INTEGER})})
VOLUME_SUMMARY_BODY_3_36 = strict({"volume-summary": strict(
    {"total_size": INTEGER, "total_count": INTEGER,
     "metadata": {"type": "object", "additionalProperties": {"type": "array"}}})})

QUOTA_RESOURCES = ("volumes", "snapshots", "gigabytes", "backups", "backup_gigabytes",
                   "groups", "per_volume_gigabytes")
_USAGE = strict({"limit": INTEGER, "in_use": INTEGER, "reserved": INTEGER,
                 "allocated": INTEGER}, optional=("allocated",))


def quota_set(usage: bool, with_id: bool = True) -> dict:
    """Every total resource, and any per-type one (``volumes_<type>``, ...)."""
    value = _USAGE if usage else INTEGER
    props: dict = {r: value for r in QUOTA_RESOURCES}
    if with_id:
        props["id"] = STRING
    schema = strict(props)
    schema["additionalProperties"] = value
    return strict({"quota_set": schema})


LIMITS = strict({"limits": strict({"rate": {"type": "array"}, "absolute": strict({
    k: INTEGER for k in (
        "maxTotalVolumes", "maxTotalSnapshots", "maxTotalVolumeGigabytes",
        "maxTotalBackups", "maxTotalBackupGigabytes", "totalVolumesUsed",
        "totalSnapshotsUsed", "totalGigabytesUsed", "totalBackupsUsed",
        "totalBackupGigabytesUsed")})})})

SERVICES = list_of("services", strict({
    "binary": STRING, "host": STRING, "zone": STRING,
    "status": {"enum": ["enabled", "disabled"]}, "state": {"enum": ["up", "down"]},
    "updated_at": DATETIME, "disabled_reason": NULLABLE_STRING}))

HOSTS = list_of("hosts", strict({
    "service-status": {"enum": ["available", "unavailable"]}, "service": STRING,
    "zone": STRING, "service-state": {"enum": ["enabled", "disabled"]},
    "host_name": STRING, "last-update": NULLABLE_DATETIME}))

HOST = list_of("host", strict({"resource": strict({
    k: STRING for k in ("host", "project", "volume_count", "total_volume_gb",
                        "snapshot_count", "total_snapshot_gb")})}))

POOLS = list_of("pools", strict({"name": STRING}))
POOLS_DETAIL = list_of("pools", strict({"name": STRING, "capabilities": strict({
    "updated": NULLABLE_DATETIME, "timestamp": NULLABLE_DATETIME,
    "QoS_support": BOOLEAN, "volume_backend_name": STRING,
    "total_capacity_gb": {"type": ["number", "string"]},
    "free_capacity_gb": {"type": ["number", "string"]},
    "reserved_percentage": INTEGER, "driver_version": STRING, "vendor_name": STRING,
    "storage_protocol": STRING})}))

CAPABILITIES = strict({
    "namespace": {"type": "string", "pattern": "^OS::Storage::Capabilities::.+$"},
    "vendor_name": STRING, "volume_backend_name": STRING, "pool_name": NULLABLE_STRING,
    "driver_version": STRING, "storage_protocol": STRING,
    "display_name": NULLABLE_STRING, "description": NULLABLE_STRING,
    "visibility": NULLABLE_STRING, "replication_targets": {"type": "array"},
    "properties": {"type": "object", "additionalProperties": strict(
        {"title": STRING, "type": STRING, "description": STRING})}})

AVAILABILITY_ZONES = list_of("availabilityZoneInfo", strict({
    "zoneName": STRING, "zoneState": strict({"available": BOOLEAN})}))

EXTENSIONS = list_of("extensions", strict({
    "alias": STRING, "name": STRING, "description": STRING, "updated": STRING,
    "links": {"type": "array"}}))

MESSAGE = strict({
    "id": UUID, "event_id": STRING, "user_message": STRING, "message_level": STRING,
    "created_at": DATETIME, "guaranteed_until": DATETIME, "request_id": STRING,
    "resource_uuid": UUID, "resource_type": STRING, "links": LINKS},
    optional=("resource_uuid", "resource_type", "links"))


def transfer(call: str, version: Version = (3, 0)) -> dict:
    """``summary`` (list, accept), ``show`` (show, detail list), ``create`` (+ key)."""
    props: dict = {"id": UUID, "volume_id": UUID, "name": NULLABLE_STRING, "links": LINKS}
    if call != "summary":
        props["created_at"] = DATETIME
        if version >= (3, 55):
            props["no_snapshots"] = BOOLEAN
        if version >= (3, 57):
            props["destination_project_id"] = NULLABLE_STRING
            props["source_project_id"] = STRING
            props["accepted"] = BOOLEAN
    if call == "create":
        props["auth_key"] = STRING
    return strict(props)

ATTACHMENT_SUMMARY = strict({"id": UUID, "status": STRING, "instance": NULLABLE_UUID,
                             "volume_id": UUID})
ATTACHMENT = strict({**ATTACHMENT_SUMMARY["properties"],
                     "attached_at": NULLABLE_STRING, "detached_at": NULLABLE_STRING,
                     "attach_mode": STRING,
                     "connection_info": {"type": ["object", "null"]}})


# QoS specs (Cinder's qos-specs views): the detail view is also each list item.
QOS_SPEC = strict({"id": UUID, "name": STRING,
                   "consumer": {"enum": ["front-end", "back-end", "both"]},
                   "specs": METADATA})
QOS_SPEC_BODY = strict({"qos_specs": QOS_SPEC, "links": LINKS})
QOS_SPECS = list_of("qos_specs", QOS_SPEC)
QOS_SET_BODY = strict({"qos_specs": {"type": "object",
                                     "additionalProperties": {"type": ["string", "null"]}}})
QOS_ASSOCIATIONS = list_of("qos_associations", strict({
    "association_type": {"enum": ["volume_type"]}, "id": UUID, "name": STRING}))
