"""Compute (Nova v2.1) response shapes for servers, flavors, keypairs, quota sets,
instance actions, volume attachments, tags and the version documents, written from the
compute API reference, per microversion (2.1 to strato's 2.92) and role.

Each function takes the microversion as a ``(major, minor)`` tuple and returns a strict
schema (``additionalProperties: false``; every field the reference lists for that call
required, unless the reference says it comes only in some states).
"""

from __future__ import annotations

from typing import Any

from tests.api_schemas import (
    BOOLEAN,
    INTEGER,
    LINKS,
    METADATA,
    NULLABLE_STRING,
    STRING,
    list_of,
    strict,
)

Version = tuple[int, int]
NULLABLE_INTEGER: dict = {"type": ["integer", "null"]}
STRING_LIST: dict = {"type": "array", "items": STRING}
# "2026-12-02T15:00:00Z" (created/updated) and Nova's naive microsecond stamps
TIMESTAMP: dict = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?$"}
NULLABLE_TIMESTAMP: dict = {"anyOf": [TIMESTAMP, {"type": "null"}]}


# ---------------------------------------------------------------- servers
def _address(full: bool) -> dict:
    props: dict[str, Any] = {"addr": STRING, "version": {"enum": [4, 6]}}
    if full:  # the extension attributes (absent from a PUT response before 2.75)
        props["OS-EXT-IPS:type"] = {"enum": ["fixed", "floating"]}
        props["OS-EXT-IPS-MAC:mac_addr"] = STRING
    return strict(props)


def _flavor(version: Version) -> dict:
    if version < (2, 47):
        return strict({"id": STRING, "links": LINKS})
    return strict({"vcpus": INTEGER, "ram": INTEGER, "disk": INTEGER, "ephemeral": INTEGER,
                   "swap": INTEGER, "original_name": STRING,
                   "extra_specs": {"type": "object",
                                   "additionalProperties": STRING}})


def server(version: Version, *, admin: bool, view: str = "show") -> dict:
    """A server in ``GET /servers/{id}`` (``view="show"``), ``/servers/detail``
    (``"detail"``) or the ``PUT /servers/{id}`` response (``"update"``)."""
    full = view != "update" or version >= (2, 75)
    props: dict[str, Any] = {
        "id": STRING, "name": STRING, "status": STRING, "tenant_id": STRING,
        "user_id": STRING, "metadata": METADATA, "hostId": STRING,
        "image": {"oneOf": [strict({"id": STRING, "links": LINKS}),
                            {"type": "string", "maxLength": 0}]},
        "flavor": _flavor(version), "created": TIMESTAMP, "updated": TIMESTAMP,
        "addresses": {"type": "object", "additionalProperties": {
            "type": "array", "items": _address(full)}},
        "accessIPv4": STRING, "accessIPv6": STRING, "links": LINKS,
        "OS-DCF:diskConfig": {"enum": ["AUTO", "MANUAL"]},
        # only in some states: ACTIVE/BUILD/... (progress), ERROR/DELETED (fault)
        "progress": INTEGER,
        "fault": strict({"code": INTEGER, "message": STRING, "created": TIMESTAMP,
                         "details": STRING}, optional=("details",)),
    }
    optional = ["progress", "fault"]
    if full:
        props.update({
            "OS-EXT-AZ:availability_zone": STRING, "config_drive": STRING,
            "key_name": NULLABLE_STRING, "OS-SRV-USG:launched_at": NULLABLE_TIMESTAMP,
            "OS-SRV-USG:terminated_at": NULLABLE_TIMESTAMP,
            "OS-EXT-STS:task_state": NULLABLE_STRING, "OS-EXT-STS:vm_state": STRING,
            "OS-EXT-STS:power_state": INTEGER,
            "os-extended-volumes:volumes_attached": {"type": "array", "items": strict(
                {"id": STRING, **({"delete_on_termination": BOOLEAN}
                                  if version >= (2, 3) else {})})},
            "security_groups": {"type": "array", "items": strict({"name": STRING})},
        })
        optional.append("security_groups")  # only when the server's ports have groups
        if admin:
            props.update({"OS-EXT-SRV-ATTR:host": NULLABLE_STRING,
                          "OS-EXT-SRV-ATTR:hypervisor_hostname": NULLABLE_STRING,
                          "OS-EXT-SRV-ATTR:instance_name": STRING})
            if version >= (2, 3):
                props.update({
                    "OS-EXT-SRV-ATTR:reservation_id": NULLABLE_STRING,
                    "OS-EXT-SRV-ATTR:launch_index": INTEGER,
                    "OS-EXT-SRV-ATTR:hostname": STRING,
                    "OS-EXT-SRV-ATTR:kernel_id": NULLABLE_STRING,
                    "OS-EXT-SRV-ATTR:ramdisk_id": NULLABLE_STRING,
                    "OS-EXT-SRV-ATTR:root_device_name": NULLABLE_STRING,
                    "OS-EXT-SRV-ATTR:user_data": NULLABLE_STRING})
            if version >= (2, 16):
                props["host_status"] = {"enum": ["UP", "DOWN", "MAINTENANCE", "UNKNOWN",
                                                 ""]}
    if version >= (2, 9):
        props["locked"] = BOOLEAN
    if version >= (2, 19):
        props["description"] = NULLABLE_STRING
    if version >= (2, 26):
        props["tags"] = STRING_LIST
    if version >= (2, 63):
        props["trusted_image_certificates"] = {"type": ["array", "null"], "items": STRING}
    if version >= (2, 71) and view != "detail":
        props["server_groups"] = STRING_LIST
    if version >= (2, 73):
        props["locked_reason"] = NULLABLE_STRING
    if version >= (2, 90):
        props["OS-EXT-SRV-ATTR:hostname"] = STRING
    return strict(props, tuple(optional))


def server_rebuild(version: Version, *, admin: bool, admin_pass: bool = True) -> dict:
    """The rebuild action's 202: the ``PUT`` view, with ``key_name`` (2.54), ``user_data``
    (2.57, instead of ``OS-EXT-SRV-ATTR:user_data``) and ``adminPass`` (when instance
    passwords are enabled)."""
    body = server(version, admin=admin, view="update")
    props, required = body["properties"], set(body["required"])
    if version >= (2, 54):
        props["key_name"] = NULLABLE_STRING
        required.add("key_name")
    if version >= (2, 57):
        props.pop("OS-EXT-SRV-ATTR:user_data", None)
        required.discard("OS-EXT-SRV-ATTR:user_data")
        props["user_data"] = NULLABLE_STRING
        required.add("user_data")
    if admin_pass:
        props["adminPass"] = STRING
        required.add("adminPass")
    body["required"] = sorted(required)
    return strict({"server": body})


def server_create() -> dict:
    """``POST /servers`` (202): the same at every version."""
    return strict({"server": strict({
        "id": STRING, "links": LINKS, "OS-DCF:diskConfig": {"enum": ["AUTO", "MANUAL"]},
        "security_groups": {"type": "array", "items": strict({"name": STRING})},
        "adminPass": STRING}, optional=("adminPass",))})


def server_list() -> dict:
    return list_of("servers", strict({"id": STRING, "name": STRING, "links": LINKS}),
                   "servers_links")


def server_detail_list(version: Version, *, admin: bool) -> dict:
    return list_of("servers", server(version, admin=admin, view="detail"), "servers_links")


def ips() -> dict:
    return strict({"addresses": {"type": "object", "additionalProperties": {
        "type": "array", "items": _address(False)}}})


def tags() -> dict:
    return strict({"tags": STRING_LIST})


def metadata() -> dict:
    return strict({"metadata": METADATA})


def meta_item() -> dict:
    return strict({"meta": METADATA})


# ---------------------------------------------------------------- flavors
def flavor(version: Version) -> dict:
    props: dict[str, Any] = {
        "id": STRING, "name": STRING, "ram": INTEGER, "disk": INTEGER, "vcpus": INTEGER,
        "OS-FLV-EXT-DATA:ephemeral": INTEGER, "OS-FLV-DISABLED:disabled": BOOLEAN,
        "swap": {"oneOf": [INTEGER, {"type": "string", "maxLength": 0}]},
        "rxtx_factor": {"type": "number"}, "os-flavor-access:is_public": BOOLEAN,
        "links": LINKS,
    }
    if version >= (2, 55):
        props["description"] = NULLABLE_STRING
    if version >= (2, 61):
        props["extra_specs"] = {"type": "object", "additionalProperties": STRING}
    return strict(props)


def flavor_list(version: Version, detail: bool) -> dict:
    if detail:
        return list_of("flavors", flavor(version), "flavors_links")
    props: dict[str, Any] = {"id": STRING, "name": STRING, "links": LINKS}
    if version >= (2, 55):
        props["description"] = NULLABLE_STRING
    return list_of("flavors", strict(props), "flavors_links")


def flavor_access() -> dict:
    return strict({"flavor_access": {"type": "array", "items": strict(
        {"flavor_id": STRING, "tenant_id": STRING})}})


def extra_specs() -> dict:
    return strict({"extra_specs": {"type": "object", "additionalProperties": STRING}})


# ---------------------------------------------------------------- keypairs
def keypair(version: Version, *, call: str) -> dict:
    """``call``: ``create`` (with ``private_key`` when strato made the key, before
    2.92), ``show`` or ``list`` (the item inside ``{"keypair": ...}``)."""
    props: dict[str, Any] = {"name": STRING, "public_key": STRING, "fingerprint": STRING}
    optional: tuple[str, ...] = ()
    if version >= (2, 2):
        props["type"] = {"enum": ["ssh", "x509"]}
    if call in ("create", "show"):
        props["user_id"] = STRING
    if call == "create":
        props["private_key"] = STRING
        optional = ("private_key",)
    if call == "show":
        props.update({"id": INTEGER, "created_at": TIMESTAMP, "deleted": BOOLEAN,
                      "deleted_at": NULLABLE_TIMESTAMP, "updated_at": NULLABLE_TIMESTAMP})
    return strict(props, optional)


def keypair_list(version: Version) -> dict:
    return list_of("keypairs", strict({"keypair": keypair(version, call="list")}),
                   "keypairs_links")


# ---------------------------------------------------------------- quota sets
def quota_resources(version: Version) -> list[str]:
    out = ["instances", "cores", "ram", "key_pairs", "metadata_items", "server_groups",
           "server_group_members"]
    if version < (2, 36):
        out += ["floating_ips", "fixed_ips", "security_groups", "security_group_rules"]
    if version < (2, 57):
        out += ["injected_files", "injected_file_content_bytes", "injected_file_path_bytes"]
    return out


def quota_set(version: Version, *, detail: bool = False, update: bool = False) -> dict:
    """``GET /os-quota-sets/{id}`` (``/detail``, ``/defaults``) and the PUT response
    (which has no ``id``)."""
    value = strict({"limit": INTEGER, "in_use": INTEGER, "reserved": INTEGER}) \
        if detail else INTEGER
    props: dict[str, Any] = {r: value for r in quota_resources(version)}
    if not update:
        props["id"] = STRING
    return strict({"quota_set": strict(props)})


# ---------------------------------------------------------------- actions, attachments
def instance_action(version: Version, *, events: bool, admin: bool) -> dict:
    props: dict[str, Any] = {
        "action": STRING, "request_id": STRING, "user_id": NULLABLE_STRING,
        "project_id": NULLABLE_STRING, "start_time": TIMESTAMP, "message": NULLABLE_STRING,
        "instance_uuid": STRING}
    if version >= (2, 58):
        props["updated_at"] = NULLABLE_TIMESTAMP
    if events:
        ev: dict[str, Any] = {"event": STRING, "start_time": TIMESTAMP,
                              "finish_time": NULLABLE_TIMESTAMP, "result": NULLABLE_STRING}
        optional: tuple[str, ...] = ()
        if admin:
            ev["traceback"] = NULLABLE_STRING
            optional = ("traceback",)
        if version >= (2, 62):
            ev["hostId"] = STRING
            if admin:
                ev["host"] = STRING
        if version >= (2, 84) and admin:
            ev["details"] = NULLABLE_STRING
        props["events"] = {"type": "array", "items": strict(ev, optional)}
    return strict(props)


def volume_attachment(version: Version) -> dict:
    props: dict[str, Any] = {"serverId": STRING, "volumeId": STRING,
                             "device": NULLABLE_STRING}
    if version < (2, 89):
        props["id"] = STRING
    if version >= (2, 70):
        props["tag"] = NULLABLE_STRING
    if version >= (2, 79):
        props["delete_on_termination"] = BOOLEAN
    if version >= (2, 89):
        props.update({"attachment_id": STRING, "bdm_uuid": STRING})
    return strict(props)


# ---------------------------------------------------------------- versions
def _version_doc() -> dict:
    return strict({
        "id": STRING, "status": {"enum": ["CURRENT", "SUPPORTED", "DEPRECATED"]},
        "version": STRING, "min_version": STRING, "updated": TIMESTAMP, "links": LINKS,
        "media-types": {"type": "array", "items": strict({"base": STRING, "type": STRING})},
    }, optional=("media-types",))


def versions() -> dict:
    return strict({"versions": {"type": "array", "items": _version_doc()}})


def version() -> dict:
    return strict({"version": _version_doc()})
