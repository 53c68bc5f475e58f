"""Response shapes of Nova's read APIs (api-ref: compute), per microversion: availability
zones, limits, simple tenant usage, services, hypervisors, server groups, aggregates,
quota classes."""

from __future__ import annotations

import copy
from typing import Any

from tests.api_schemas import (
    BOOLEAN,
    INTEGER,
    LINKS,
    NULLABLE_DATETIME,
    NULLABLE_STRING,
    STRING,
    UUID,
    list_of,
    strict,
)

NUMBER: dict = {"type": "number"}
OBJECT: dict = {"type": "object"}
INT_OR_UUID: dict = {"type": ["integer", "string"]}
Version = tuple[int, int]


# ------------------------------------------------------------------ availability zones
def availability_zones(detail: bool) -> dict:
    service = strict({"available": BOOLEAN, "active": BOOLEAN,
                      "updated_at": NULLABLE_DATETIME})
    hosts = {"type": ["object", "null"], "additionalProperties": {
        "type": "object", "additionalProperties": service}} if detail else {"type": "null"}
    zone = strict({"zoneName": STRING, "zoneState": strict({"available": BOOLEAN}),
                   "hosts": hosts})
    return list_of("availabilityZoneInfo", zone)


# ------------------------------------------------------------------ limits
_ABSOLUTE = ("maxServerMeta", "maxImageMeta", "maxPersonality", "maxPersonalitySize",
             "maxTotalKeypairs", "maxSecurityGroups", "maxSecurityGroupRules",
             "maxTotalFloatingIps", "totalFloatingIpsUsed", "totalSecurityGroupsUsed",
             "maxTotalInstances", "maxTotalCores", "maxTotalRAMSize", "totalInstancesUsed",
             "totalCoresUsed", "totalRAMUsed", "maxServerGroups", "maxServerGroupMembers",
             "totalServerGroupsUsed")


def limits(version: Version) -> dict:
    gone: set[str] = set()
    if version >= (2, 36):
        gone |= {"maxSecurityGroups", "maxSecurityGroupRules", "maxTotalFloatingIps",
                 "totalFloatingIpsUsed", "totalSecurityGroupsUsed"}
    if version >= (2, 39):
        gone.add("maxImageMeta")
    if version >= (2, 57):
        gone |= {"maxPersonality", "maxPersonalitySize"}
    absolute = strict({k: INTEGER for k in _ABSOLUTE if k not in gone})
    return strict({"limits": strict({"absolute": absolute,
                                     "rate": {"type": "array", "maxItems": 0}})})


# ------------------------------------------------------------------ tenant usage
SERVER_USAGE = strict({
    "ended_at": NULLABLE_DATETIME, "flavor": STRING, "hours": NUMBER, "instance_id": UUID,
    "local_gb": INTEGER, "memory_mb": INTEGER, "name": STRING, "started_at": STRING,
    "state": STRING, "tenant_id": STRING, "uptime": INTEGER, "vcpus": INTEGER})


def tenant_usage(detailed: bool) -> dict:
    props: dict[str, Any] = {
        "start": STRING, "stop": STRING, "tenant_id": STRING, "total_hours": NUMBER,
        "total_local_gb_usage": NUMBER, "total_memory_mb_usage": NUMBER,
        "total_vcpus_usage": NUMBER}
    if detailed:
        props["server_usages"] = {"type": "array", "items": SERVER_USAGE}
    return strict(props)


def tenant_usage_list(detailed: bool) -> dict:
    return list_of("tenant_usages", tenant_usage(detailed), "tenant_usages_links")


def tenant_usage_show() -> dict:
    return strict({"tenant_usage": tenant_usage(True), "tenant_usage_links": LINKS},
                  optional=("tenant_usage_links",))


# ------------------------------------------------------------------ services
def service(version: Version) -> dict:
    props: dict[str, Any] = {
        "id": UUID if version >= (2, 53) else INTEGER, "binary": STRING, "host": STRING,
        "zone": STRING, "status": {"enum": ["enabled", "disabled"]},
        "state": {"enum": ["up", "down"]}, "updated_at": NULLABLE_DATETIME,
        "disabled_reason": NULLABLE_STRING}
    if version >= (2, 11):
        props["forced_down"] = BOOLEAN
    return strict(props)


def services(version: Version) -> dict:
    return list_of("services", service(version))


LEGACY_ENABLE = strict({"service": strict({"host": STRING, "binary": STRING,
                                           "status": STRING})})
LEGACY_DISABLE_REASON = strict({"service": strict({
    "host": STRING, "binary": STRING, "status": STRING, "disabled_reason": STRING})})
LEGACY_FORCE_DOWN = strict({"service": strict({"host": STRING, "binary": STRING,
                                               "forced_down": BOOLEAN})})


# ------------------------------------------------------------------ hypervisors
_SERVERS: dict = {"type": "array", "items": strict({"uuid": UUID, "name": STRING})}


def hypervisor(version: Version, detail: bool, servers: bool = False) -> dict:
    props: dict[str, Any] = {
        "id": UUID if version >= (2, 53) else INTEGER, "hypervisor_hostname": STRING,
        "state": {"enum": ["up", "down"]}, "status": {"enum": ["enabled", "disabled"]}}
    if detail:
        props.update({
            "hypervisor_type": STRING, "hypervisor_version": INTEGER, "host_ip": STRING,
            "service": strict({"host": STRING, "id": UUID if version >= (2, 53)
                               else INTEGER, "disabled_reason": NULLABLE_STRING})})
        if version >= (2, 88):
            props["uptime"] = NULLABLE_STRING
        else:
            props.update({k: INTEGER for k in (
                "vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used",
                "local_gb_used", "free_ram_mb", "free_disk_gb", "current_workload",
                "running_vms")})
            props["disk_available_least"] = {"type": ["integer", "null"]}
            props["cpu_info"] = OBJECT if version >= (2, 28) else STRING
    optional: tuple[str, ...] = ()
    if servers or (version >= (2, 53)):
        props["servers"] = _SERVERS
        optional = ("servers",)  # only for a host with servers
    return strict(props, optional)


def hypervisors(version: Version, detail: bool) -> dict:
    return list_of("hypervisors", hypervisor(version, detail),
                   "hypervisors_links" if version >= (2, 33) else None)


HYPERVISOR_STATISTICS = strict({"hypervisor_statistics": strict({k: INTEGER for k in (
    "count", "vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used",
    "local_gb_used", "free_ram_mb", "free_disk_gb", "current_workload", "running_vms",
    "disk_available_least")})})


def hypervisor_uptime(version: Version) -> dict:
    item = copy.deepcopy(hypervisor(version, False))
    item["properties"].pop("servers", None)
    item["properties"]["uptime"] = STRING
    item["required"] = sorted(set(item["required"]) | {"uptime"})
    return strict({"hypervisor": item})


# ------------------------------------------------------------------ server groups
def server_group(version: Version) -> dict:
    props: dict[str, Any] = {"id": UUID, "name": STRING,
                             "members": {"type": "array", "items": UUID}}
    if version >= (2, 64):
        props["policy"] = {"enum": ["affinity", "anti-affinity", "soft-affinity",
                                    "soft-anti-affinity"]}
        props["rules"] = OBJECT
    else:
        props["policies"] = {"type": "array", "items": STRING, "minItems": 1,
                             "maxItems": 1}
        props["metadata"] = {"type": "object", "maxProperties": 0}
    if version >= (2, 13):
        props["project_id"] = STRING
        props["user_id"] = STRING
    return strict(props)


# ------------------------------------------------------------------ aggregates
def aggregate(version: Version, full: bool = True) -> dict:
    props: dict[str, Any] = {
        "id": INTEGER, "name": STRING, "availability_zone": NULLABLE_STRING,
        "created_at": STRING, "updated_at": NULLABLE_DATETIME, "deleted": BOOLEAN,
        "deleted_at": {"type": "null"}}
    if full:
        props["hosts"] = {"type": "array", "items": STRING}
        props["metadata"] = {"type": "object", "additionalProperties": STRING}
    if version >= (2, 41):
        props["uuid"] = UUID
    return strict(props)


# ------------------------------------------------------------------ quota classes
def quota_class(version: Version, with_id: bool = True) -> dict:
    keys = ["instances", "cores", "ram", "metadata_items", "key_pairs"]
    if version < (2, 50):
        keys += ["fixed_ips", "floating_ips", "security_groups", "security_group_rules"]
    else:
        keys += ["server_groups", "server_group_members"]
    if version < (2, 57):
        keys += ["injected_files", "injected_file_content_bytes",
                 "injected_file_path_bytes"]
    props: dict[str, Any] = {k: INTEGER for k in keys}
    if with_id:
        props["id"] = STRING
    return strict({"quota_class_set": strict(props)})


# ------------------------------------------------------------------ os-hosts (< 2.43)
HOSTS = list_of("hosts", strict({"host_name": STRING, "service": STRING, "zone": STRING}))
HOST = strict({"host": {"type": "array", "minItems": 3, "items": strict({
    "resource": strict({"host": STRING, "project": STRING, "cpu": INTEGER,
                        "memory_mb": INTEGER, "disk_gb": INTEGER})})}})
HOST_STATUS = strict({"host": STRING, "status": {"enum": ["enabled", "disabled"]}})
