"""Servers: validation, policy, quota reservations, records, scheduling, jobs.

A create reserves quota, picks a host and enqueues ``compute.build`` for it in the
transaction that writes the instance; every later state change is a conditional
UPDATE on the state it expects (a lost race is a 409) plus a job for the host.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from strato import events
from strato.compute import bdm as bdm_parse
from strato.compute import (
    bootinfo,
    console_tokens,
    guestinfo,
    listing,
    routing,
    scheduler_hints,
    schedules,
    server_groups,
    states,
)
from strato.compute import tags as server_tags
from strato.compute.flavors import FlavorAPI
from strato.compute.hosts import host_zone, zones_of_compute_hosts
from strato.compute.keypairs import KeyPair, KeyPairs
from strato.compute.limits import Limits, class_limits
from strato.compute.models import BlockDevice, ComputeNode, Flavor, Instance, InstanceAction
from strato.compute.scheduler import (
    DEFAULT_ZONE,
    NoValidHost,
    RequestSpec,
    select_destination,
    want_of,
)
from strato.compute.views import (
    Version,
    default_hostname,
    flavor_snapshot,
    iso,
    server_view,
)
from strato.config import Config
from strato.context import RequestContext
from strato.db import Database
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound, OverLimit
from strato.image.api import ImageAPI
from strato.jobs.queue import enqueue
from strato.policy import Enforcer
from strato.quota.engine import QuotaEngine
from strato.validation import query_int, string_map, text
from strato.volume.actions import VolumeActions
from strato.volume.api import VolumeAPI

if TYPE_CHECKING:
    from strato.network.api import NetworkAPI
    from strato.network.instance import Request as NetRequest

P = "os_compute_api:"
SORT_KEYS = {"created_at": Instance.created_at, "updated_at": Instance.updated_at,
             "display_name": Instance.name, "name": Instance.name, "uuid": Instance.id,
             "vm_state": Instance.vm_state, "task_state": Instance.task_state,
             "power_state": Instance.power_state, "host": Instance.host,
             "launched_at": Instance.launched_at}


def now() -> datetime:
    return datetime.now(UTC)


def instance_deltas(flavor: dict[str, Any], count: int = 1) -> dict[str, int]:
    return {"instances": count, "cores": flavor["vcpus"] * count,
            "ram": flavor["memory_mb"] * count}


def ctx_payload(ctx: RequestContext) -> dict[str, Any]:
    """What a job needs to act for the requester (volume calls)."""
    return {"user_id": ctx.user_id, "project_id": ctx.project_id, "roles": list(ctx.roles),
            "request_id": ctx.request_id}


def ctx_from(payload: dict[str, Any]) -> RequestContext:
    return RequestContext(user_id=payload["user_id"], project_id=payload["project_id"],
                          roles=list(payload["roles"]),
                          request_id=payload.get("request_id") or "req-strato-compute")


def _text(ref: dict[str, Any], key: str, required: bool = False,
          maximum: int = 255) -> str | None:
    """A string field: the message names the field and the limit, never the value."""
    return text(ref.get(key), key, maximum=maximum, required=required)


def access_ip(ref: dict[str, Any], key: str) -> str | None:
    """``accessIPv4``/``accessIPv6`` in any valid textual form, kept normalized as
    Nova's IPAddress column keeps them (``0:0:0:0:0:babe:220.12.22.2`` is
    ``::babe:dc0c:1602``); empty is unset, anything else not an address of that
    family is the client's mistake."""
    value = ref.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for field/attribute {key}: not a string.")
    family = ipaddress.IPv4Address if key == "accessIPv4" else ipaddress.IPv6Address
    try:
        if "%" in value:  # a zone index names a host's link: no access address
            raise ValueError(value)
        return str(family(value.strip()))
    except ValueError:
        kind = "IPv4" if key == "accessIPv4" else "IPv6"
        raise BadRequest(f"Invalid input for field/attribute {key}: not an {kind} "
                         "address.") from None


@dataclass(frozen=True)
class GuestInput:
    """What server create was given for the guest itself (checked)."""

    config_drive: str  # "True" or "", as Nova stores it
    keypair: KeyPair | None
    hostname: str
    admin_pass: str  # never stored: the create response and the config drive only


def mac_of(instance_id: str) -> str:
    h = instance_id.replace("-", "")
    return f"fa:16:3e:{h[0:2]}:{h[2:4]}:{h[4:6]}"


class ComputeAPI:
    def __init__(self, db: Database, policy: Enforcer, conf: Config, images: ImageAPI,
                 volumes: VolumeAPI, network: NetworkAPI | None = None) -> None:
        """``network`` None: no network service (every guest gets the user-mode NIC)."""
        self.db = db
        self.network = network
        self.policy = policy
        self.conf = conf
        self.images = images
        self.volumes = volumes
        self.volume_actions = VolumeActions(volumes)
        self.base = conf.public_endpoint
        self.flavors = FlavorAPI(db, policy, self.base)
        c = conf.compute
        self.quota = QuotaEngine({"instances": c.quota_instances, "cores": c.quota_cores,
                                  "ram": c.quota_ram, "key_pairs": c.quota_key_pairs},
                                 class_limits)
        self.keypairs = KeyPairs(db, policy, self.quota, self.base, c.osapi_max_limit)

    # ------------------------------------------------------------ lookups
    def get_row(self, session: Session, ctx: RequestContext, server_id: str,
                rule: str | None = None) -> Instance:
        inst = session.get(Instance, server_id)
        if inst is None or inst.deleted or not (ctx.is_admin
                                                or inst.project_id == ctx.project_id):
            raise NotFound(f"Instance {server_id} could not be found.")
        if rule:
            self.policy.enforce(ctx, rule, {"project_id": inst.project_id})
        return inst

    @staticmethod
    def bdms(session: Session, ids: list[str]) -> dict[str, list[BlockDevice]]:
        out: dict[str, list[BlockDevice]] = {i: [] for i in ids}
        if ids:
            for b in session.scalars(select(BlockDevice).where(
                    BlockDevice.instance_uuid.in_(ids)).order_by(BlockDevice.id)):
                out[b.instance_uuid].append(b)
        return out

    def net_info(self, ids: list[str]) -> dict[str, tuple[dict[str, Any], list[dict]]]:
        """Per instance: the ``addresses`` and ``security_groups`` its ports give (one
        batch call each for a whole listing); empty without a network service."""
        if self.network is None or not ids:
            return {}
        addrs = self.network.addresses(ids)
        groups = self.network.instance_security_groups(ids)
        return {i: (addrs.get(i) or {}, groups.get(i) or []) for i in ids
                if addrs.get(i) or groups.get(i)}

    def view(self, session: Session, ctx: RequestContext, inst: Instance,
             version: Version, update: bool = False) -> dict[str, Any]:
        return server_view(inst, self.bdms(session, [inst.id])[inst.id], self.base, version,
                           admin=self.policy.allowed(ctx, P + "os-extended-server-attributes",
                                                     {"project_id": inst.project_id}),
                           net=self.net_info([inst.id]).get(inst.id), update=update)

    @staticmethod
    def record_action(session: Session, ctx: RequestContext, inst: Instance,
                      action: str) -> None:
        session.add(InstanceAction(instance_uuid=inst.id, action=action,
                                   request_id=ctx.request_id, project_id=ctx.project_id,
                                   user_id=ctx.user_id, start_time=now()))

    # ------------------------------------------------------------ create
    def create(self, ctx: RequestContext, body: Any, version: Version) -> dict[str, Any]:
        ref = body.get("server") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Missing required element 'server' in request body.")
        self.policy.enforce(ctx, P + "servers:create", {"project_id": ctx.project_id})
        name = _text(ref, "name", required=True)
        description = _text(ref, "description")
        if description is not None and version < (2, 19):
            raise BadRequest("Additional properties are not allowed ('description' was "
                             "unexpected).")
        metadata = string_map(ref.get("metadata") or {}, "metadata")
        if "tags" in ref and version < (2, 52):
            raise BadRequest("Invalid input for field/attribute server. Additional "
                             "properties are not allowed ('tags' was unexpected)")
        server_tags.check_tags(ref.get("tags") or [])
        hints = scheduler_hints.parse(body)
        with self.db.session(readonly=True) as session:
            meta_limit = Limits(self).project_limits(session, ctx.project_id or "")[
                "metadata_items"]
            zone = (ref.get("availability_zone") or "").split(":", 1)[0]  # zone[:host]
            if ":" in (ref.get("availability_zone") or "") and not ctx.is_admin:
                raise Forbidden("Policy doesn't allow os_compute_api:servers:create:"
                                "forced_host to be performed.")
            if zone and zone not in zones_of_compute_hosts(session):
                raise BadRequest(f"The requested availability zone {zone} is not "
                                 "available")
            _requested_destination(session, ctx, ref, version)
        if 0 <= meta_limit < len(metadata):  # Nova's MetadataLimitExceeded
            raise Forbidden(f"Maximum number of metadata items exceeds {meta_limit}")
        _requested_hostname(ref, version)
        networks = self._networks(ref, version)
        groups = _security_groups(ref)
        for key in ("min_count", "max_count"):
            if key in ref and str(ref[key]) not in ("1",):
                raise BadRequest(f"{key} other than 1 is not supported.")
        flavor = self._flavor(ctx, ref.get("flavorRef"))
        key_name = _text(ref, "key_name")
        keypair = None
        if key_name is not None:
            keypair = self.keypairs.get(ctx.user_id, key_name)
            if keypair is None:
                raise BadRequest("Invalid key_name provided.")
        guestinfo.check_user_data(ref.get("user_data"))
        config_drive = guestinfo.config_drive_value(ref.get("config_drive"))
        mappings = bdm_parse.parse(ref.get("block_device_mapping_v2"))
        image_ref = ref.get("imageRef") or ""
        root = next((m for m in mappings if m.boot_index == 0), None)
        if root is not None and root.source_type == "image" and root.destination_type == "local":
            image_ref = root.uuid or image_ref
            mappings.remove(root)
            root = None
        if root is None and image_ref:
            from_image = self._image_mappings(ctx, image_ref)
            if from_image:  # a volume-backed snapshot: its volumes come from snapshots
                mappings = from_image + [m for m in mappings if m.boot_index != 0]
                root = next((m for m in from_image if m.boot_index == 0), None)
        if root is None and not image_ref:
            raise BadRequest("Block Device Mapping is Invalid: Boot sequence for the "
                             "instance and image/block device mapping combination is not "
                             "valid.")
        if root is not None:
            image_ref = ""  # boot from volume: the server shows "image": ""
        kernel = {"kernel_id": "", "ramdisk_id": ""}
        # what the guest boots from: the image's properties, or a boot volume's image
        # metadata (and the image, when there is one, to look at its first sectors)
        source: dict[str, Any] = {}
        source_image: dict[str, Any] | None = None
        if image_ref:
            image = self._image(ctx, image_ref)
            if flavor.root_gb and (image.get("size") or 0) > flavor.root_gb << 30:
                raise BadRequest(f"Flavor's disk is too small for requested image. Flavor "
                                 f"disk is {flavor.root_gb << 30} bytes, image is "
                                 f"{image.get('size')} bytes.")
            if (image.get("min_disk") or 0) > flavor.root_gb > 0:
                raise BadRequest("Flavor's disk is too small for requested image.")
            if (image.get("min_ram") or 0) > flavor.memory_mb:
                raise BadRequest("Flavor's memory is too small for requested image.")
            source = source_image = image
            if str(image.get("img_config_drive") or "") == "mandatory":
                config_drive = "True"
        if self.conf.compute.force_config_drive:
            config_drive = "True"
        for m in mappings:
            if m.destination_type != "volume":
                continue
            if m.source_type == "image":
                img = self._image(ctx, m.uuid or "")
                if m.boot_index == 0:
                    source = source_image = img
            elif m.source_type == "volume":
                vol = self._volume(ctx, m.uuid or "")
                if vol["status"] != "available":
                    raise BadRequest(f"Invalid volume: volume {m.uuid} status must be "
                                     f"'available', not '{vol['status']}'.")
                if m.boot_index == 0:
                    source = vol.get("volume_image_metadata") or {}
            elif m.source_type == "snapshot":
                snap = self._snapshot(ctx, m.uuid or "")
                if snap["status"] != "available":
                    raise BadRequest(f"Invalid snapshot {m.uuid}: status {snap['status']}.")
                m.volume_size = m.volume_size or snap["size"]
                if m.boot_index == 0:
                    source = self._volume(ctx, snap["volume_id"]).get(
                        "volume_image_metadata") or {}
        kernel = {k: str(source.get(k) or "") for k in kernel}
        boot = bootinfo.boot_meta(source)
        if source_image is not None:
            bootinfo.check_boot_image(source_image, boot, self.db, self.images.store)
        instance_id = str(uuid.uuid4())
        guest = GuestInput(
            config_drive=config_drive, keypair=keypair,
            hostname=(ref.get("hostname") if version >= (2, 90) else None) or
            guestinfo.hostname_for(name or "", instance_id),
            admin_pass=ref["adminPass"] if "adminPass" in ref
            else guestinfo.generate_password())
        # the network service checks networks, ports, fixed IPs and groups before the
        # 202 (its errors carry Nova's messages); [] is the user-mode NIC
        requests = self._net_requests(ctx, networks, groups)
        label = "ports" if requests else (networks if isinstance(networks, str) else "auto")
        return self._create_record(ctx, instance_id, name, description, metadata, label,
                                   flavor, image_ref, kernel, mappings, ref, version, guest,
                                   boot_meta=boot, requests=requests, groups=groups,
                                   hints=hints)

    def _create_record(self, ctx: RequestContext, instance_id: str, name: str | None,
                       description: str | None, metadata: dict[str, str], network: str,
                       flavor: Flavor, image_ref: str, kernel: dict[str, str],
                       mappings: list[bdm_parse.Mapping], ref: dict[str, Any],
                       version: Version, guest: GuestInput,
                       boot_meta: dict[str, str] | None = None,
                       requests: list[NetRequest] | None = None,
                       groups: list[str] | None = None,
                       hints: dict[str, Any] | None = None) -> dict[str, Any]:
        """``requests``: the guest's ports to allocate (none: the user-mode NIC, whose
        MAC the instance keeps, unless ``network`` is "none": no NIC at all); they are
        made in the transaction of the record.
        ``hints``: the validated ``os:scheduler_hints``; the server joins their ``group``
        (its policy constrains the host); they and the zone asked for are kept in the
        system metadata for the server's moves."""
        hints = dict(hints or {})
        server_group = hints.get("group")
        snap = flavor_snapshot(flavor)
        inst = Instance(
            id=instance_id, name=name, project_id=ctx.project_id, user_id=ctx.user_id,
            image_ref=image_ref, kernel_id=kernel["kernel_id"],
            ramdisk_id=kernel["ramdisk_id"], flavor_id=flavor.id, flavor=snap,
            boot_meta=boot_meta or {},
            vm_state=states.BUILDING, task_state=states.SPAWNING,
            power_state=0, metadata_=metadata,
            tags=server_tags.check_tags(ref.get("tags") or []),
            access_ip_v4=access_ip(ref, "accessIPv4"),
            access_ip_v6=access_ip(ref, "accessIPv6"), description=description,
            key_name=_text(ref, "key_name"), user_data=ref.get("user_data"),
            availability_zone=ref.get("availability_zone") or "nova", network=network,
            # "none" (2.37+) is a guest without any NIC, as Nova gives it
            mac="" if requests or network == "none" else mac_of(instance_id),
            reservation_id=f"r-{uuid.uuid4().hex[:8]}",
            created_at=now(), launch_index=0, config_drive=guest.config_drive,
            hostname=guest.hostname,
            key_data=guest.keypair.public_key if guest.keypair else None,
            key_type=guest.keypair.type if guest.keypair else None)
        with self.db.session() as session:
            # Existing volumes are reserved for this server (Nova's API does the same) in
            # the transaction that records it and its build job: all or nothing.
            attachments: dict[int, str] = {}
            for i, m in enumerate(mappings):
                if m.source_type == "volume" and m.destination_type == "volume":
                    attachments[i] = self.volume_actions.create_attachment(ctx, {
                        "attachment": {"volume_id": m.uuid, "instance_uuid": instance_id}},
                        session)["id"]
            session.add(inst)
            session.flush()
            devices = iter("bcdefghijklmnopqrstuvwxyz")
            for i, m in enumerate(mappings):
                dev = "vda" if m.boot_index == 0 else f"vd{next(devices)}"
                session.add(BlockDevice(
                    instance_uuid=instance_id, device_name=dev, source_type=m.source_type,
                    destination_type=m.destination_type, source_id=m.uuid,
                    volume_id=m.uuid if m.source_type == "volume" else None,
                    volume_size=m.volume_size, boot_index=m.boot_index,
                    delete_on_termination=m.delete_on_termination,
                    attachment_id=attachments.get(i), tag=m.tag))
            self.record_action(session, ctx, inst, "create")
            events.emit(session, "compute", "compute.instance.create.start", instance_id,
                        ctx.project_id, name=name)
            try:
                inst.reservations = self.quota.reserve(session, ctx.project_id,
                                                       instance_deltas(snap))
            except OverLimit as exc:  # Nova answers 403 to a server over quota
                raise Forbidden(f"Quota exceeded: {exc.message}") from None
            if server_group is not None:
                server_groups.join(
                    session, ctx, server_group, instance_id,
                    Limits(self).project_limits(session, ctx.project_id or "")[
                        "server_group_members"])
            zone, _, forced = (ref.get("availability_zone") or "").partition(":")
            meta = dict(inst.system_metadata or {})
            if hints:
                meta["scheduler_hints"] = hints
            if zone:
                meta["requested_zone"] = zone
            inst.system_metadata = meta
            # 2.74 host / hypervisor_hostname: a host the filters still check
            wanted = (ref.get("host") or ref.get("hypervisor_hostname")) \
                if version >= (2, 74) else None
            spec = RequestSpec(
                want=want_of(snap, bool(image_ref)), instance_id=instance_id,
                project_id=ctx.project_id, zone=zone or None,
                # "zone:host[:node]": an admin's forced host (Nova skips the filters)
                requested_host=forced.split(":")[0] or wanted or None, force=bool(forced),
                group_id=server_group, hints=hints,
                extra_specs=dict(snap.get("extra_specs") or {}))
            inst.availability_zone = zone or DEFAULT_ZONE
            try:
                host = select_destination(session, self.conf, spec)
                # the server is in the zone it asked for, else in its host's
                inst.availability_zone = zone or host_zone(session, host)
            except NoValidHost as exc:
                inst.vm_state, inst.task_state = states.ERROR, None
                inst.fault = {"code": 500, "message": str(exc), "created": iso(now()),
                              "details": "NoValidHost"}
                self.quota.rollback(session, list(inst.reservations or []))
                inst.reservations = []
                events.emit(session, "compute", "compute.instance.create.error",
                            instance_id, ctx.project_id, error=str(exc))
            else:
                inst.host = host
                if requests:
                    assert self.network is not None
                    self.network.allocate_for_instance(ctx, session, instance_id, host,
                                                       requests, groups, guest.hostname)
                payload = {"instance_id": instance_id, "ctx": ctx_payload(ctx)}
                if guest.config_drive:  # only the config drive carries it; the build
                    payload["admin_pass"] = guest.admin_pass  # drops it from the job
                enqueue(session, "compute.build", payload, target=f"host:{host}",
                        max_attempts=3)
        body = {"id": instance_id, "links": server_view(
            inst, [], self.base, version, admin=False)["links"],
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": g} for g in groups or ["default"]]}
        if self.conf.api.enable_instance_password:
            body["adminPass"] = guest.admin_pass
        return body

    def _networks(self, ref: dict[str, Any], version: Version) -> str | list[dict[str, Any]]:
        """``networks`` after Nova's microversion rules: "auto", "none" or the list.

        Before 2.37 it is optional (absent: auto) and a list only; from 2.37 it is
        required and may be "auto"/"none".  ``tag`` on an entry: 2.32-2.36, then 2.42+.
        """
        nets = ref.get("networks")
        if nets is None:
            if version >= (2, 37):
                raise BadRequest("Invalid input for field/attribute networks: 'networks' is "
                                 "a required property.")
            return "auto"
        if nets in ("none", "auto"):
            if version < (2, 37):
                raise BadRequest(f"Invalid input for field/attribute networks. Value: {nets}."
                                 f" '{nets}' is not of type 'array'")
            return str(nets)
        if not isinstance(nets, list):
            raise BadRequest(f"Invalid input for field/attribute networks. Value: {nets}.")
        tags = (2, 32) <= version < (2, 37) or version >= (2, 42)
        out = []
        for entry in nets:
            if not isinstance(entry, dict):
                raise BadRequest(f"Invalid input for field/attribute networks. Value: {nets}.")
            extra = set(entry) - {"uuid", "port", "fixed_ip", *(("tag",) if tags else ())}
            if extra:
                raise BadRequest("Invalid input for field/attribute networks. Additional "
                                 "properties are not allowed "
                                 f"({', '.join(repr(k) for k in sorted(extra))} was "
                                 "unexpected)")
            port, net, ip = entry.get("port"), entry.get("uuid"), entry.get("fixed_ip")
            if port:
                if not _is_uuid(port):
                    raise BadRequest(f"Bad networks format: port uuid is not in proper "
                                     f"format ({port})")
            elif not net:
                raise BadRequest("Bad network format: missing uuid")
            elif not _is_uuid(net):
                raise BadRequest(f"Bad networks format: network uuid is not in proper "
                                 f"format ({net})")
            if ip is not None and not _is_ipv4(ip):
                raise BadRequest(f"Invalid input for field/attribute fixed_ip. Value: {ip}."
                                 f" '{ip}' is not a 'ipv4'")
            out.append({k: v for k, v in entry.items() if v is not None})
        return out

    def _net_requests(self, ctx: RequestContext, networks: str | list[dict[str, Any]],
                      groups: list[str] | None) -> list[NetRequest]:
        if self.network is None:  # no network service: today's user-mode NIC
            return []
        return self.network.resolve_requests(ctx, networks, groups)

    def _flavor(self, ctx: RequestContext, flavor_ref: Any) -> Flavor:
        if not isinstance(flavor_ref, str | int) or not str(flavor_ref):
            raise BadRequest("Invalid input for field/attribute flavorRef.")
        fid = str(flavor_ref).rstrip("/").rsplit("/", 1)[-1]
        with self.db.session(readonly=True) as session:
            flavor = session.get(Flavor, fid)
            if flavor is None or flavor.disabled or not self.flavors.visible(
                    session, ctx, flavor):
                raise BadRequest(f"Flavor {fid} could not be found.")
            session.expunge(flavor)
            return flavor

    def _image(self, ctx: RequestContext, image_id: str) -> dict[str, Any]:
        try:
            image = self.images.show(ctx, image_id.rstrip("/").rsplit("/", 1)[-1])
        except NotFound:
            raise BadRequest(f"Image {image_id} could not be found.") from None
        if image["status"] != "active":
            raise BadRequest(f"Image {image_id} is not active.")
        return image

    def _image_mappings(self, ctx: RequestContext, image_ref: str) -> list[bdm_parse.Mapping]:
        """The block device mapping a volume-backed snapshot image carries (seed 000's
        ``block_device_mapping`` property, ``bdm_v2``); [] for an image with data."""
        raw = self._image(ctx, image_ref).get("block_device_mapping")
        if not raw:
            return []
        try:
            items = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise BadRequest(f"Image {image_ref} has an invalid block_device_mapping.") \
                from None
        if not isinstance(items, list):
            raise BadRequest(f"Image {image_ref} has an invalid block_device_mapping.")
        return bdm_parse.parse([{
            "source_type": i.get("source_type"), "destination_type": i.get("destination_type"),
            "uuid": i.get("snapshot_id") or i.get("volume_id") or i.get("image_id"),
            "boot_index": i.get("boot_index"), "volume_size": i.get("volume_size"),
            "delete_on_termination": i.get("delete_on_termination") or False,
            "tag": i.get("tag")} for i in items if isinstance(i, dict)
            and not i.get("no_device")])

    def _volume(self, ctx: RequestContext, volume_id: str) -> dict[str, Any]:
        try:
            return self.volumes.show(ctx, volume_id, (3, 0))
        except NotFound:
            raise BadRequest(f"Volume {volume_id} could not be found.") from None

    def _snapshot(self, ctx: RequestContext, snapshot_id: str) -> dict[str, Any]:
        try:
            return self.volumes.show_snapshot(ctx, snapshot_id, (3, 0))
        except NotFound:
            raise BadRequest(f"Snapshot {snapshot_id} could not be found.") from None

    # ------------------------------------------------------------ read
    def show(self, ctx: RequestContext, server_id: str, version: Version) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            inst = self.get_row(session, ctx, server_id, P + "servers:show")
            return self.view(session, ctx, inst, version)

    def list(self, ctx: RequestContext, params: dict[str, str], version: Version,
             detail: bool) -> bytes:
        """The response body, JSON (rendered servers are memoised: see ``listing``)."""
        self.policy.enforce(ctx, P + ("servers:detail" if detail else "servers:index"),
                            {"project_id": ctx.project_id})
        admin = ctx.is_admin
        query = select(Instance).where(Instance.deleted.is_(False))
        all_tenants = "all_tenants" in params and params["all_tenants"].lower() not in (
            "0", "false", "off")
        if all_tenants:
            self.policy.enforce(ctx, P + "servers:index:get_all_tenants", {})
        project = params.get("project_id") or params.get("tenant_id")
        if project and admin:
            query = query.where(Instance.project_id == project)
        elif not (all_tenants and admin):
            query = query.where(Instance.project_id == ctx.project_id)
        if "status" in params:
            vm_states = states.STATUS_FILTER.get(params["status"].upper())
            if vm_states is None:
                if version >= (2, 38):  # an unknown status is a mistake from 2.38
                    raise BadRequest(f"Invalid status value: {params['status']}")
                return b'{"servers":[]}'
            query = query.where(Instance.vm_state.in_(vm_states))
            tasks = states.STATUS_TASKS.get(params["status"].upper())
            if tasks:
                query = query.where(Instance.task_state.in_(tasks))
        if "host" in params and admin:
            query = query.where(Instance.host == params["host"])
        if "image" in params:
            query = query.where(Instance.image_ref == params["image"].rsplit("/", 1)[-1])
        if "flavor" in params:
            query = query.where(Instance.flavor_id == params["flavor"].rsplit("/", 1)[-1])
        since = before = None
        if "changes-since" in params:
            since = _parse_time(params["changes-since"], "changes-since")
            query = query.where(Instance.updated_at >= since)
        if "changes-before" in params and version >= (2, 66):
            before = _parse_time(params["changes-before"], "changes-before")
            if since is not None and since > before:
                raise BadRequest("The value of changes-since must be less than or equal "
                                 "to changes-before.")
            query = query.where(Instance.updated_at <= before)
        if "locked" in params and version >= (2, 73):
            from strato.compute.locks import locked_filter

            query = query.where(Instance.locked.is_(locked_filter(params["locked"])))
        # 2.83 lets every user filter on these; admins always could (Nova)
        more = admin or version >= (2, 83)
        for key, column in (("user_id", Instance.user_id), ("vm_state", Instance.vm_state),
                            ("task_state", Instance.task_state)):
            if more and key in params:
                query = query.where(column == params[key])
        if more and "power_state" in params:
            query = query.where(Instance.power_state == query_int(
                "power_state", params["power_state"], 0, 255))
        key = params.get("sort_key", "created_at")
        column = SORT_KEYS.get(key)
        if column is None:
            raise BadRequest(f"Invalid sort_key {key}.")
        desc = params.get("sort_dir", "desc") != "asc"
        patterns: dict[str, re.Pattern[str]] = {}  # Nova's regular-expression filters
        for key in ("name", "key_name", "availability_zone", "hostname"):
            if key in params and (key == "name" or (more if key != "hostname" else
                                                    admin or version >= (2, 90))):
                try:
                    patterns[key] = re.compile(params[key])
                except re.error:
                    raise BadRequest(f"Invalid regular expression for {key}: "
                                     f"{params[key]}") from None
        limit = self.conf.compute.osapi_max_limit
        if params.get("limit"):
            limit = min(query_int("limit", params["limit"]), limit)
        wanted_tags = server_tags.list_filter(params) if version >= (2, 26) else {}
        with self.db.session(readonly=True) as session:
            if params.get("marker"):
                marker = session.get(Instance, params["marker"])
                # Looked up as the caller, as Nova does: another project's server is
                # "not found", not a place to page from (nor a test of its existence).
                if marker is None or not (admin or marker.project_id == ctx.project_id):
                    raise BadRequest(f"marker [{params['marker']}] not found")
                query = query.where(_after(column, marker, desc))
            query = query.order_by(column.desc() if desc else column.asc(),
                                   Instance.id.desc() if desc else Instance.id.asc())
            query = query.with_only_columns(*listing.RAW)
            if not patterns and not wanted_tags:
                rows = list(session.execute(query.limit(limit)))
            else:
                rows = [r for r in session.execute(query) if all(
                    p.search(_filtered(r, k)) for k, p in patterns.items())
                    and server_tags.matches(r.tags, wanted_tags)][:limit]
            if detail:
                ids = [r.id for r in rows]
                servers = listing.render(rows, listing.bdm_rows(session, ids),
                                         self.base, version, admin, self.net_info(ids))
            else:
                servers = [json.dumps({"id": r.id, "name": r.name, "links": [
                    {"rel": "self", "href": f"{self.base}/compute/v2.1/servers/{r.id}"},
                    {"rel": "bookmark", "href": f"{self.base}/compute/servers/{r.id}"}]},
                    separators=(",", ":")).encode() for r in rows]
        body = b'{"servers":[' + b",".join(servers) + b"]"
        if len(rows) == limit and rows:
            kind = "servers/detail" if detail else "servers"
            body += b',"servers_links":' + json.dumps([{"rel": "next", "href": (
                f"{self.base}/compute/v2.1/{kind}?limit={limit}&marker={rows[-1].id}")}]
            ).encode()
        return body + b"}"

    # ------------------------------------------------------------ update / delete
    def update(self, ctx: RequestContext, server_id: str, body: Any,
               version: Version) -> dict[str, Any]:
        ref = body.get("server") if isinstance(body, dict) else None
        if not isinstance(ref, dict):
            raise BadRequest("Missing required element 'server' in request body.")
        allowed = {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"}
        if version >= (2, 19):
            allowed.add("description")
        if version >= (2, 90):
            allowed.add("hostname")
        extra = set(ref) - allowed
        if extra:
            raise BadRequest(f"Additional properties are not allowed ({', '.join(extra)} "
                             "unexpected).")
        with self.db.session() as session:
            inst = self.get_row(session, ctx, server_id, P + "servers:update")
            if "name" in ref:
                inst.name = _text(ref, "name", required=True) or inst.name
            if "accessIPv4" in ref:
                inst.access_ip_v4 = access_ip(ref, "accessIPv4")
            if "accessIPv6" in ref:
                inst.access_ip_v6 = access_ip(ref, "accessIPv6")
            if "description" in ref:
                inst.description = _text(ref, "description")
            if "hostname" in ref:
                inst.hostname = _requested_hostname(ref, version)
            inst.updated_at = now()
            session.flush()
            return self.view(session, ctx, inst, version, update=True)

    def delete(self, ctx: RequestContext, server_id: str) -> None:
        with self.db.session() as session:
            inst = self.get_row(session, ctx, server_id, P + "servers:delete")
            self._check_lock(ctx, inst)
            if inst.task_state == states.DELETING:
                return
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.deleted.is_(False),
                or_(Instance.task_state.is_(None), Instance.task_state != states.DELETING))
                .values(task_state=states.DELETING, updated_at=now())).rowcount
            if not done:
                raise Conflict(f"Instance {server_id} changed state; try again.")
            self.record_action(session, ctx, inst, "delete")
            console_tokens.delete_for_instance(session, inst.id)
            schedules.drop_for_server(session, inst.id)  # and their pending jobs
            events.emit(session, "compute", "compute.instance.delete.start", inst.id,
                        inst.project_id)
            enqueue(session, "compute.delete", {"instance_id": inst.id,
                                                "ctx": ctx_payload(ctx)},
                    target=routing.delete_target(session, self.conf, inst), max_attempts=5)

    @staticmethod
    def _check_lock(ctx: RequestContext, inst: Instance) -> None:
        from strato.compute.locks import ensure_unlocked

        ensure_unlocked(ctx, inst)

    # ------------------------------------------------------------ power actions
    def power_action(self, ctx: RequestContext, server_id: str, action: str,
                     rule: str, label: str) -> None:
        allowed, task, _, _ = states.POWER_ACTIONS[action]
        with self.db.session() as session:
            inst = self.get_row(session, ctx, server_id, rule)
            self._check_lock(ctx, inst)
            if inst.vm_state not in allowed or inst.task_state is not None:
                raise Conflict(state_message(label, inst))
            routing.require_host(inst)  # ERROR without a host: no one to run it
            done = session.execute(update(Instance).where(
                Instance.id == inst.id, Instance.vm_state == inst.vm_state,
                Instance.task_state.is_(None)).values(task_state=task, updated_at=now())
            ).rowcount
            if not done:
                raise Conflict(state_message(label, inst))
            self.record_action(session, ctx, inst, label)
            enqueue(session, "compute.power", {"instance_id": inst.id, "action": action,
                                               "request_id": ctx.request_id},
                    target=f"host:{inst.host}", max_attempts=3)

    # ------------------------------------------------------------ metadata
    def metadata(self, ctx: RequestContext, server_id: str) -> dict[str, str]:
        with self.db.session(readonly=True) as session:
            inst = self.get_row(session, ctx, server_id, P + "server-metadata:index")
            return dict(inst.metadata_ or {})

    def set_metadata(self, ctx: RequestContext, server_id: str, new: dict[str, str],
                     replace: bool, rule: str) -> dict[str, str]:
        new = string_map(new, "metadata")
        with self.db.session() as session:
            inst = self.get_row(session, ctx, server_id, P + f"server-metadata:{rule}")
            self._check_lock(ctx, inst)
            inst.metadata_ = new if replace else {**(inst.metadata_ or {}), **new}
            inst.updated_at = now()
            return dict(inst.metadata_)

    def delete_metadata_key(self, ctx: RequestContext, server_id: str, key: str) -> None:
        with self.db.session() as session:
            inst = self.get_row(session, ctx, server_id, P + "server-metadata:delete")
            self._check_lock(ctx, inst)
            meta = dict(inst.metadata_ or {})
            if key not in meta:
                raise NotFound(f"Metadata item was not found: {key}")
            del meta[key]
            inst.metadata_ = meta
            inst.updated_at = now()


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _is_ipv4(value: Any) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_address(value).version == 4
    except ValueError:
        return False


def _security_groups(ref: dict[str, Any]) -> list[str] | None:
    """Names (or ids) of ``security_groups`` as given; None when absent (the project's
    default group)."""
    raw = ref.get("security_groups")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(g, dict) and isinstance(
            g.get("name"), str) and g["name"] for g in raw):
        raise BadRequest("Invalid input for field/attribute security_groups.")
    return list(dict.fromkeys(g["name"] for g in raw))


def _filtered(row: Any, key: str) -> str:
    """A listing row's value for a regular-expression filter."""
    if key == "hostname":
        return row.hostname or default_hostname(row.name)
    return getattr(row, key) or ""


_HOSTNAME = re.compile(r"^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$")


def _requested_destination(session: Session, ctx: RequestContext, ref: dict[str, Any],
                           version: Version) -> None:
    """2.74: ``host`` and/or ``hypervisor_hostname`` (admin) name a compute host the
    scheduler must use, filters applied (not forced, unlike ``zone:host``)."""
    given = {k: ref[k] for k in ("host", "hypervisor_hostname") if k in ref}
    if not given:
        return
    if version < (2, 74):
        raise BadRequest("Invalid input for field/attribute server. Additional properties "
                         f"are not allowed ({', '.join(given)} was unexpected)")
    for key, value in given.items():
        if not isinstance(value, str) or not 1 <= len(value) <= 255:
            raise BadRequest(f"Invalid input for field/attribute {key}.")
    if not ctx.is_admin:
        raise Forbidden("Policy doesn't allow compute:servers:create:requested_destination "
                        "to be performed.")
    host, node = given.get("host"), given.get("hypervisor_hostname")
    if host is not None and session.get(ComputeNode, host) is None:
        raise BadRequest(f"Compute host {host} could not be found.")
    if node is not None and (session.get(ComputeNode, node) is None
                             or (host is not None and node != host)):
        raise BadRequest(f"Compute host {host or node}, node {node} could not be found.")


def _requested_hostname(ref: dict[str, Any], version: Version) -> str | None:
    """2.90's ``hostname`` (an RFC 1123 label of 2-63 characters); unknown before."""
    if "hostname" not in ref:
        return None
    if version < (2, 90):
        raise BadRequest("Invalid input for field/attribute server: additional properties "
                         "are not allowed ('hostname' was unexpected).")
    value = ref["hostname"]
    if not isinstance(value, str) or not 2 <= len(value) <= 63 or not _HOSTNAME.match(value):
        raise BadRequest("Invalid input for field/attribute hostname: 2-63 letters, digits "
                         "and '-', starting and ending with a letter or a digit.")
    return value


def state_message(label: str, inst: Instance) -> str:
    if inst.task_state is not None:
        return (f"Cannot '{label}' instance {inst.id} while it is in task_state "
                f"{inst.task_state}")
    return f"Cannot '{label}' instance {inst.id} while it is in vm_state {inst.vm_state}"


def _parse_time(text: str, key: str = "changes-since") -> datetime:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid {key} value: {text}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _after(column: Any, marker: Instance, desc: bool) -> Any:
    """Keyset pagination: rows after the marker in (column, id) order."""
    value = getattr(marker, column.key)
    if value is None:
        return Instance.id < marker.id if desc else Instance.id > marker.id
    if desc:
        return or_(column < value, and_(column == value, Instance.id < marker.id))
    return or_(column > value, and_(column == value, Instance.id > marker.id))
