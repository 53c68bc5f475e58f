"""Responses rendered for the requested microversion: nothing from a later one shows.

Milestones used: 2.3 more admin attributes and ``delete_on_termination`` in
``volumes_attached``; 2.9 ``locked``; 2.16 ``host_status``; 2.19 ``description``;
2.26 ``tags``; 2.47 the flavor embedded (with its extra specs: Nova's
``servers:show:flavor-extra-specs`` lets every reader of the server see them); 2.55 flavor
``description``; 2.61 flavor ``extra_specs``; 2.63 ``trusted_image_certificates``; 2.71
``server_groups`` (show and update, never the detail list); 2.73 ``locked_reason``; 2.75
the update response as full as a show; 2.89 volume attachments; 2.90
``OS-EXT-SRV-ATTR:hostname`` for every user.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from strato.compute import states
from strato.compute.guestnet import GUEST_ADDR
from strato.compute.models import BlockDevice, Flavor, Instance

Version = tuple[int, int]
PRIVATE_ADDR = GUEST_ADDR  # QEMU user-mode networking's first DHCP lease


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_us(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def flavor_view(f: Flavor, base: str, version: Version) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f.id, "name": f.name, "ram": f.memory_mb, "disk": f.root_gb, "vcpus": f.vcpus,
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral_gb, "OS-FLV-DISABLED:disabled": f.disabled,
        "swap": f.swap or "", "rxtx_factor": f.rxtx_factor,
        "os-flavor-access:is_public": f.is_public,
        "links": _links(base, "flavors", f.id),
    }
    if version >= (2, 55):
        body["description"] = f.description
    if version >= (2, 61):
        body["extra_specs"] = dict(f.extra_specs or {})
    return body


def flavor_snapshot(f: Flavor) -> dict[str, Any]:
    """The flavor as an instance keeps it (Nova's instance.flavor)."""
    return {"id": f.id, "name": f.name, "memory_mb": f.memory_mb, "vcpus": f.vcpus,
            "root_gb": f.root_gb, "ephemeral_gb": f.ephemeral_gb, "swap": f.swap,
            "extra_specs": dict(f.extra_specs or {})}


def _links(base: str, kind: str, rid: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{base}/compute/v2.1/{kind}/{rid}"},
            {"rel": "bookmark", "href": f"{base}/compute/{kind}/{rid}"}]


def host_id(project_id: str, host: str | None) -> str:
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def addresses(inst: Instance) -> dict[str, Any]:
    """A guest without ports has one user-mode NIC, unless it asked for ``networks``
    "none" (then it has no NIC and no ``mac``)."""
    if not inst.mac or inst.vm_state in (states.BUILDING, states.ERROR, states.DELETED):
        return {}
    return {"private": [{"addr": PRIVATE_ADDR, "version": 4, "OS-EXT-IPS:type": "fixed",
                         "OS-EXT-IPS-MAC:mac_addr": inst.mac}]}


def server_view(inst: Instance, bdms: list[BlockDevice], base: str, version: Version, *,
                admin: bool, host_up: bool = True, show: bool = True,
                net: tuple[dict[str, Any], list[dict[str, Any]]] | None = None,
                update: bool = False) -> dict[str, Any]:
    """A server as ``GET /servers/{id}`` and ``/servers/detail`` show it; ``net`` is
    what its ports say (addresses, security groups), beside any user-mode NIC.
    ``update``: the ``PUT /servers/{id}`` response, which before 2.75 leaves out the
    extension attributes (AZ, config drive, key, usage, groups, states, volumes,
    OS-EXT-SRV-ATTR, host status) and the addresses' type and MAC, as Nova does."""
    full = not update or version >= (2, 75)
    fl = inst.flavor or {}
    if version >= (2, 47):
        flavor: dict[str, Any] = {
            "vcpus": fl.get("vcpus"), "ram": fl.get("memory_mb"), "disk": fl.get("root_gb"),
            "ephemeral": fl.get("ephemeral_gb", 0), "swap": fl.get("swap", 0),
            "original_name": fl.get("name"),
            "extra_specs": dict(fl.get("extra_specs") or {})}
    else:
        flavor = {"id": inst.flavor_id, "links": [
            {"rel": "bookmark", "href": f"{base}/compute/flavors/{inst.flavor_id}"}]}
    image: Any = ""
    if inst.image_ref:
        image = {"id": inst.image_ref, "links": [
            {"rel": "bookmark", "href": f"{base}/compute/images/{inst.image_ref}"}]}
    volumes = []
    for b in bdms:
        if b.volume_id and b.destination_type == "volume":
            entry: dict[str, Any] = {"id": b.volume_id}
            if version >= (2, 3):
                entry["delete_on_termination"] = b.delete_on_termination
            volumes.append(entry)
    status = states.status(inst.vm_state, inst.task_state)
    addrs = {**addresses(inst), **(net[0] if net else {})}
    if not full:
        addrs = {label: [{"addr": a["addr"], "version": a["version"]} for a in entries]
                 for label, entries in addrs.items()}
    body: dict[str, Any] = {
        "id": inst.id, "name": inst.name, "status": status,
        "tenant_id": inst.project_id, "user_id": inst.user_id,
        "metadata": dict(inst.metadata_ or {}), "hostId": host_id(inst.project_id, inst.host),
        "image": image, "flavor": flavor,
        "created": iso(inst.created_at), "updated": iso(inst.updated_at or inst.created_at),
        "addresses": addrs,
        "accessIPv4": inst.access_ip_v4 or "", "accessIPv6": inst.access_ip_v6 or "",
        "links": _links(base, "servers", inst.id), "OS-DCF:diskConfig": "MANUAL",
    }
    if full:
        body.update({
            "OS-EXT-AZ:availability_zone": inst.availability_zone or "",
            "config_drive": inst.config_drive or "", "key_name": inst.key_name,
            "OS-SRV-USG:launched_at": iso_us(inst.launched_at),
            "OS-SRV-USG:terminated_at": iso_us(inst.terminated_at),
            "OS-EXT-STS:task_state": inst.task_state, "OS-EXT-STS:vm_state": inst.vm_state,
            "OS-EXT-STS:power_state": inst.power_state,
            "os-extended-volumes:volumes_attached": volumes,
        })
        if net and net[1]:  # from the ports' groups; none (no port): no key, as Nova
            body["security_groups"] = net[1]
    if status in _PROGRESS_STATUSES:
        body["progress"] = 100 if inst.vm_state == states.ACTIVE else 0
    admin = admin and full
    if admin:
        body["OS-EXT-SRV-ATTR:host"] = inst.host
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = inst.host
        body["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{inst.id[:8]}"
        if version >= (2, 3):
            root = next((b.device_name for b in bdms if b.boot_index == 0), "vda")
            body.update({
                "OS-EXT-SRV-ATTR:reservation_id": inst.reservation_id,
                "OS-EXT-SRV-ATTR:launch_index": inst.launch_index or 0,
                "OS-EXT-SRV-ATTR:hostname": hostname(inst),
                "OS-EXT-SRV-ATTR:kernel_id": inst.kernel_id,
                "OS-EXT-SRV-ATTR:ramdisk_id": inst.ramdisk_id,
                "OS-EXT-SRV-ATTR:root_device_name": f"/dev/{root}",
                "OS-EXT-SRV-ATTR:user_data": inst.user_data,
            })
    if inst.fault and inst.vm_state in (states.ERROR, states.DELETED):
        fault = {k: inst.fault[k] for k in ("code", "message", "created")}
        if admin and inst.fault.get("details"):
            fault["details"] = inst.fault["details"]
        body["fault"] = fault
    if version >= (2, 90):  # every user sees the hostname
        body["OS-EXT-SRV-ATTR:hostname"] = hostname(inst)
    if version >= (2, 9):
        body["locked"] = inst.locked
    if version >= (2, 16) and admin:  # the host_status policy: admin, as the attrs
        body["host_status"] = ("UP" if host_up else "UNKNOWN") if inst.host else ""
    if version >= (2, 19):
        body["description"] = inst.description
    if version >= (2, 26):
        body["tags"] = list(inst.tags or [])
    if version >= (2, 63):  # strato verifies no image certificates: never any
        body["trusted_image_certificates"] = None
    if version >= (2, 71) and show:
        body["server_groups"] = []
    if version >= (2, 73):
        body["locked_reason"] = inst.locked_reason
    return body


_PROGRESS_STATUSES = ("ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING")


def hostname(inst: Instance) -> str:
    """The hostname stored at create (given at 2.90+, else made from the name); one
    made from the name for a server older than the column."""
    return inst.hostname or default_hostname(inst.name)


def default_hostname(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return out[:63] or "server"


def attachment_view(b: BlockDevice, version: Version) -> dict[str, Any]:
    """2.70 ``tag``; 2.79 ``delete_on_termination``; 2.89 ``attachment_id`` and
    ``bdm_uuid``, and no ``id`` (it repeated ``volumeId``)."""
    body: dict[str, Any] = {"serverId": b.instance_uuid, "volumeId": b.volume_id,
                            "device": f"/dev/{b.device_name}"}
    if version < (2, 89):
        body["id"] = b.volume_id
    if version >= (2, 70):
        body["tag"] = b.tag
    if version >= (2, 79):
        body["delete_on_termination"] = b.delete_on_termination
    if version >= (2, 89):
        body["attachment_id"] = b.attachment_id
        body["bdm_uuid"] = b.uuid
    return body
