"""The documents a guest reads about itself, in Nova's layout (``nova/api/metadata``).

One :class:`InstanceMetadata` answers both the metadata service (``lookup``) and the
config drive (``config_drive_files``): the OpenStack tree ``openstack/<date>/...``
(``meta_data.json``, ``user_data``, ``vendor_data.json``, ``vendor_data2.json``,
``network_data.json``, ``password``) for every version date Nova knows, and the EC2
tree (``ec2/<version>/meta-data...``, ``user-data``).  What cloud-init's ConfigDrive
and OpenStack datasources read is exactly this.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from strato.compute import guestnet
from strato.compute.guestinfo import decode_user_data, hostname_for
from strato.compute.models import BlockDevice, Instance

#: EC2 versions (oldest first), as Nova lists them
EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10",
                "2007-12-15", "2008-02-01", "2008-09-01", "2009-04-04")
FOLSOM, GRIZZLY, HAVANA, LIBERTY = "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15"
NEWTON_ONE, NEWTON_TWO, OCATA, ROCKY = "2016-06-30", "2016-10-06", "2017-02-22", "2018-08-27"
VICTORIA, EPOXY = "2020-10-14", "2025-04-04"
#: OpenStack versions (oldest first)
OPENSTACK_VERSIONS = (FOLSOM, GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO, OCATA,
                      ROCKY, VICTORIA, EPOXY)
TEXT = "text/plain"
JSON = "application/json"
#: the longest password a guest may post (Nova: 4 chunks of 255)
PASSWORD_MAX = 4 * 255
_NS = uuid.UUID("6d6e2a1c-51f7-4d2b-a0d2-7c6f8e3a9b10")  # strato's ids for the NIC


class NotFoundPath(Exception):
    """No document at this path (the service answers 404)."""


@dataclass(frozen=True)
class Password:
    """The password endpoint: GET reads it, POST sets it once (the service acts)."""

    value: str | None


@dataclass
class InstanceMetadata:
    """Everything about one instance a guest may read, detached from the database."""

    inst: Instance
    bdms: list[BlockDevice] = field(default_factory=list)
    #: set only for the config drive (Nova's ``extra_md``): never served over HTTP
    admin_pass: str | None = None
    #: ``network_data.json`` of the instance's network ports (the network service's)
    ports_data: dict[str, Any] | None = None
    today: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d"))

    # ------------------------------------------------------------ pieces
    @property
    def userdata(self) -> bytes | None:
        return decode_user_data(self.inst.user_data)

    @property
    def hostname(self) -> str:
        return self.inst.hostname or hostname_for(self.inst.name or "", self.inst.id)

    def _keys(self) -> tuple[dict[str, str], list[dict[str, str]]] | None:
        if not self.inst.key_name or not self.inst.key_data:
            return None
        name, data = self.inst.key_name, self.inst.key_data
        return {name: data}, [{"name": name, "type": self.inst.key_type or "ssh",
                               "data": data}]

    def _devices(self) -> list[dict[str, Any]]:
        """Tagged disks (Nova exposes a device only when it has tags)."""
        out = []
        for b in self.bdms:
            if b.tag and b.destination_type == "volume" and b.volume_id:
                out.append({"type": "disk", "bus": "pci", "address": "none",
                            "serial": b.volume_id, "path": f"/dev/{b.device_name}",
                            "tags": [b.tag]})
        return out

    def meta_data(self, version: str) -> dict[str, Any]:
        """``openstack/<version>/meta_data.json``."""
        md: dict[str, Any] = {"uuid": self.inst.id}
        if self.inst.metadata_:
            md["meta"] = {str(k): str(v) for k, v in self.inst.metadata_.items()}
        if self.admin_pass is not None:
            md["admin_pass"] = self.admin_pass
        keys = self._keys()
        if keys is not None:
            md["public_keys"], md["keys"] = keys
        md["hostname"] = self.hostname
        md["name"] = self.inst.name
        md["launch_index"] = self.inst.launch_index or 0
        md["availability_zone"] = self.inst.availability_zone
        if _at_least(GRIZZLY, version):
            md["random_seed"] = base64.b64encode(os.urandom(512)).decode()
        if _at_least(LIBERTY, version):
            md["project_id"] = self.inst.project_id
        if _at_least(NEWTON_ONE, version):
            md["devices"] = self._devices()
        if _at_least(VICTORIA, version):
            md["dedicated_cpus"] = []
        return md

    def network_data(self) -> dict[str, Any]:
        """``network_data.json``: the NICs on network ports (as the network service
        describes them), after the user-mode NIC, which DHCP configures, if any."""
        if not self.inst.mac:
            return dict(self.ports_data or {})
        mine = self._user_mode_data()
        if self.ports_data:
            for key in ("links", "networks", "services"):
                mine[key] = mine[key] + list(self.ports_data.get(key, []))
        return mine

    def local_ipv4(self) -> str:
        if self.inst.mac:
            return guestnet.GUEST_ADDR
        for net in (self.ports_data or {}).get("networks", []):
            if net.get("ip_address") and ":" not in net["ip_address"]:
                return str(net["ip_address"])
        return ""

    def _user_mode_data(self) -> dict[str, Any]:
        vif = str(uuid.uuid5(_NS, f"vif:{self.inst.id}"))
        link = {"id": f"tap{vif[:11]}", "vif_id": vif, "type": "phy", "mtu": None,
                "ethernet_mac_address": self.inst.mac}
        return {"links": [link],
                "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": link["id"],
                              "network_id": str(uuid.uuid5(_NS, "user-mode network"))}],
                "services": [{"type": "dns", "address": guestnet.DNS}]}

    def ec2_meta_data(self, version: str) -> dict[str, Any]:
        """``ec2/<version>/meta-data``: Nova's keys for that version."""
        inst = self.inst
        md: dict[str, Any] = {
            "ami-id": ec2_id("ami", inst.image_ref), "ami-launch-index": inst.launch_index or 0,
            "ami-manifest-path": "FIXME", "instance-id": ec2_id("i", inst.id),
            "hostname": self.hostname, "local-ipv4": self.local_ipv4(),
            "reservation-id": inst.reservation_id, "security-groups": ["default"]}
        if inst.key_name and inst.key_data:
            md["public-keys"] = {"0": {"_name": f"0={inst.key_name}",
                                       "openssh-key": inst.key_data}}
        if _ec2_at_least("2007-01-19", version):
            md["local-hostname"] = md["public-hostname"] = self.hostname
            md["public-ipv4"] = ""
        if _ec2_at_least("2007-08-29", version):
            md["instance-type"] = (inst.flavor or {}).get("name", "")
        if _ec2_at_least("2007-12-15", version):
            md["block-device-mapping"] = self._block_device_mapping()
            if inst.kernel_id:
                md["kernel-id"] = ec2_id("aki", inst.kernel_id)
            if inst.ramdisk_id:
                md["ramdisk-id"] = ec2_id("ari", inst.ramdisk_id)
        if _ec2_at_least("2008-02-01", version):
            md["placement"] = {"availability-zone": inst.availability_zone}
        if _ec2_at_least("2008-09-01", version):
            md["instance-action"] = "none"
        return md

    def _block_device_mapping(self) -> dict[str, str]:
        root = next((b.device_name for b in self.bdms if b.boot_index == 0), "vda")
        out = {"ami": root, "root": f"/dev/{root}"}
        ebs = sorted(b.device_name for b in self.bdms
                     if b.destination_type == "volume" and b.device_name != root)
        for i, dev in enumerate(ebs):
            out[f"ebs{i}"] = f"/dev/{dev}"
        return out

    # ------------------------------------------------------------ the service's tree
    def lookup(self, path: str) -> tuple[Any, str]:
        """(document, mime type) at ``path``; a listing is a list, an EC2 subtree a dict
        (see :func:`render`).  Unknown paths raise :class:`NotFoundPath`."""
        path = posixpath.normpath("/" + path.lstrip("/"))
        tokens = [t for t in path.split("/") if t]
        if not tokens:
            return [*EC2_VERSIONS, "latest"], TEXT
        if tokens[0] not in ("ec2", "openstack"):
            tokens = ["ec2", *tokens]
        if len(tokens) == 1:
            if tokens[0] == "openstack":
                return [v for v in OPENSTACK_VERSIONS if v <= self.today] + ["latest"], TEXT
            return [*EC2_VERSIONS, "latest"], TEXT
        if tokens[0] == "openstack":
            return self._openstack(tokens[1], tokens[2:])
        return _find(self._ec2(tokens[1]), tokens[2:]), TEXT

    def _openstack(self, version: str, rest: list[str]) -> tuple[Any, str]:
        if version == "latest":
            version = OPENSTACK_VERSIONS[-1]
        if version not in OPENSTACK_VERSIONS:
            raise NotFoundPath(version)
        name = "/".join(rest)
        userdata = self.userdata
        if name == "":
            listing = ["meta_data.json"]
            if userdata is not None:
                listing.append("user_data")
            for since, doc in ((GRIZZLY, "password"), (HAVANA, "vendor_data.json"),
                               (LIBERTY, "network_data.json"),
                               (NEWTON_TWO, "vendor_data2.json")):
                if _at_least(since, version):
                    listing.append(doc)
            return listing, TEXT
        if name == "meta_data.json":
            return _json(self.meta_data(version)), JSON
        if name == "user_data" and userdata is not None:
            return userdata, TEXT
        if name == "password" and _at_least(GRIZZLY, version):
            return Password(self.inst.guest_password), TEXT
        if name == "vendor_data.json" and _at_least(HAVANA, version):
            return _json({}), JSON
        if name == "vendor_data2.json" and _at_least(NEWTON_TWO, version):
            return _json({}), JSON
        if name == "network_data.json" and _at_least(LIBERTY, version):
            return _json(self.network_data()), TEXT
        raise NotFoundPath(name)

    def _ec2(self, version: str) -> dict[str, Any]:
        if version == "latest":
            version = EC2_VERSIONS[-1]
        if version not in EC2_VERSIONS:
            raise NotFoundPath(version)
        data: dict[str, Any] = {"meta-data": self.ec2_meta_data(version)}
        if self.userdata is not None:
            data["user-data"] = self.userdata
        return data

    # ------------------------------------------------------------ the config drive's
    def config_drive_files(self) -> Iterator[tuple[str, bytes]]:
        """(path, content) of every file on the config drive, as Nova writes them."""
        for version in (*EC2_VERSIONS, "latest"):
            data = self._ec2(version)
            if "user-data" in data:
                yield f"ec2/{version}/user-data", data["user-data"]
            md = data["meta-data"]
            if "public-keys" in md:
                md["public-keys"]["0"].pop("_name", None)
            yield f"ec2/{version}/meta-data.json", _json(md)
        for version in (*OPENSTACK_VERSIONS, "latest"):
            base = f"openstack/{version}"
            real = OPENSTACK_VERSIONS[-1] if version == "latest" else version
            yield f"{base}/meta_data.json", _json(self.meta_data(real))
            if self.userdata is not None:
                yield f"{base}/user_data", self.userdata
            if _at_least(HAVANA, real):
                yield f"{base}/vendor_data.json", _json({})
            if _at_least(LIBERTY, real):
                yield f"{base}/network_data.json", _json(self.network_data())
            if _at_least(NEWTON_TWO, real):
                yield f"{base}/vendor_data2.json", _json({})


def ec2_id(prefix: str, ident: str | None) -> str:
    """An EC2-style id (``i-0000abcd``) from a uuid: its first 32 bits, so it is stable
    (Nova numbers them in a table; strato has no such table)."""
    hexpart = (ident or "").replace("-", "")[:8]
    try:
        return f"{prefix}-{int(hexpart, 16):08x}"
    except ValueError:
        return f"{prefix}-00000000"


def render(data: Any) -> bytes:
    """Nova's ``ec2_md_print``: a dict is a listing (subtrees end in ``/``, a public
    key shows as ``0=name``), a list one item per line, bytes as they are."""
    if isinstance(data, dict):
        lines = []
        for key in sorted(data):
            if key == "_name":
                continue
            value = data[key]
            if isinstance(value, dict):
                lines.append(str(value["_name"]) if "_name" in value else f"{key}/")
            else:
                lines.append(key)
        return "\n".join(lines).encode()
    if isinstance(data, list):
        return "\n".join(str(x) for x in data).encode()
    if isinstance(data, bytes):
        return data
    return str(data).encode()


def _find(data: Any, tokens: list[str]) -> Any:
    for i, tok in enumerate(tokens):
        if isinstance(data, dict) and tok in data:
            data = data[tok]
        elif isinstance(data, list) and tok.isdigit() and int(tok) < len(data):
            data = data[int(tok)]
        else:
            raise NotFoundPath("/".join(tokens[:i + 1]))
    return data


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _at_least(required: str, version: str) -> bool:
    return OPENSTACK_VERSIONS.index(version) >= OPENSTACK_VERSIONS.index(required)


def _ec2_at_least(required: str, version: str) -> bool:
    return EC2_VERSIONS.index(version) >= EC2_VERSIONS.index(required)
