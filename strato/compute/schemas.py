"""Nova v2.1 request bodies (api-ref: compute), bounded to strato's columns.

As Nova's own JSON schemas: names 1-255 characters, integers up to the ``Integer``
column's 2**31-1 (Nova's ``db.MAX_INT``), ``boot_index``/``volume_size``/``min_count``
also as strings (the SDK sends them so), ``user_data`` at most 65535 characters.
What needs the microversion or the database stays in ``strato.compute``.
"""

from __future__ import annotations

from strato.validation import INT32_MAX, Action, Arr, Bool, Int, Map, Num, Obj, Str, one_of

NAME = Str(255)
OPT = Str(255, nullable=True)
ID_REF = Str(2048)  # an id or a link to one
DESCRIPTION = Str(255, nullable=True)  # Nova: 0-255 characters
IP = Str(64, nullable=True)  # any textual form; stored normalized (at most 39)
METADATA = Map(nullable=True)
TAG = Str(60, nullable=True)  # Nova's device tag

BDM = Obj({
    "uuid": Str(255, nullable=True),
    "source_type": Str(16, nullable=True),
    "destination_type": Str(16, nullable=True),
    "boot_index": Int(-INT32_MAX, INT32_MAX, nullable=True, strings=True),
    "volume_size": Int(0, INT32_MAX, nullable=True, strings=True),
    "delete_on_termination": Bool(strings=True, nullable=True),
    "tag": TAG, "device_name": OPT, "guest_format": OPT, "disk_bus": OPT,
    "device_type": OPT, "volume_type": OPT, "no_device": Bool(strings=True, nullable=True),
    "image_id": OPT, "volume_id": OPT, "snapshot_id": OPT,
})

_NETWORK = Obj({"uuid": Str(36, nullable=True), "port": Str(36, nullable=True),
                "fixed_ip": Str(64, nullable=True), "tag": TAG})

CREATE_SERVER = Obj({"server": Obj({
    "name": NAME,
    "description": DESCRIPTION,
    "imageRef": Str(2048, nullable=True),
    "flavorRef": one_of(ID_REF, Int(0, INT32_MAX)),
    "metadata": METADATA,
    "networks": one_of(Str(enum=("none", "auto")), Arr(_NETWORK, max_items=16),
                       nullable=True),
    "block_device_mapping_v2": Arr(BDM, max_items=26, nullable=True),
    "user_data": Str(65535, nullable=True),
    "min_count": Int(1, INT32_MAX, strings=True),
    "max_count": Int(1, INT32_MAX, strings=True),
    "return_reservation_id": Bool(strings=True),
    "accessIPv4": IP, "accessIPv6": IP,
    "key_name": OPT,
    "availability_zone": OPT,
    "adminPass": Str(255),
    "security_groups": Arr(Obj({"name": Str(255)}), max_items=64, nullable=True),
    "config_drive": one_of(Bool(strings=True), Str(255), nullable=True),
    "OS-DCF:diskConfig": Str(enum=("AUTO", "MANUAL")),
    "tags": Arr(Str(60), max_items=50, nullable=True),
    "hostname": Str(255, nullable=True),
    "host": Str(255, nullable=True),
    "hypervisor_hostname": Str(255, nullable=True),
    "trusted_image_certificates": Arr(Str(255), max_items=50, nullable=True),
}, required=("name",))}, required=("server",))

UPDATE_SERVER = Obj({"server": Obj({
    "name": NAME, "description": DESCRIPTION, "accessIPv4": IP, "accessIPv6": IP,
    "OS-DCF:diskConfig": Str(enum=("AUTO", "MANUAL")), "hostname": Str(255),
})}, required=("server",))

SERVER_ACTION = Action({
    "reboot": Obj({"type": Str(16)}, required=("type",)),
    "createImage": Obj({"name": NAME, "metadata": METADATA}, required=("name",)),
    "os-getConsoleOutput": Obj({"length": one_of(Int(-1, INT32_MAX, strings=True),
                                                 nullable=True)}, nullable=True),
    "addSecurityGroup": Obj({"name": Str(255)}, required=("name",)),
    "removeSecurityGroup": Obj({"name": Str(255)}, required=("name",)),
})

ATTACH_INTERFACE = Obj({"interfaceAttachment": Obj({
    "net_id": Str(36, nullable=True), "port_id": Str(36, nullable=True),
    "fixed_ips": Arr(Obj({"ip_address": Str(64)}, required=("ip_address",)), max_items=1),
    "tag": TAG,
})}, required=("interfaceAttachment",))

METADATA_BODY = Obj({"metadata": Map()}, required=("metadata",))
META_ITEM = Obj({"meta": Map()}, required=("meta",))

ATTACH_VOLUME = Obj({"volumeAttachment": Obj({
    "volumeId": Str(36, min=1), "device": Str(255, nullable=True), "tag": TAG,
    "delete_on_termination": Bool(),
}, required=("volumeId",))}, required=("volumeAttachment",))

# 2.85: the GET response's fields may be sent back; only delete_on_termination changes
UPDATE_ATTACHMENT = Obj({"volumeAttachment": Obj({
    "volumeId": Str(36, min=1), "device": Str(255, nullable=True), "tag": TAG,
    "delete_on_termination": Bool(strings=True), "serverId": Str(36), "id": Str(36),
}, required=("volumeId",), extra=None)}, required=("volumeAttachment",), extra=None)

# Nova's quota values: -1 (unlimited) up to its db.MAX_INT.
QUOTA_VALUE = Int(-1, INT32_MAX, strings=True)  # "5120" too, as Nova takes
UPDATE_QUOTA = Obj({"quota_set": Obj({
    "instances": QUOTA_VALUE, "cores": QUOTA_VALUE, "ram": QUOTA_VALUE,
    "metadata_items": QUOTA_VALUE, "key_pairs": QUOTA_VALUE,
    "server_groups": QUOTA_VALUE, "server_group_members": QUOTA_VALUE,
    "injected_files": QUOTA_VALUE, "injected_file_content_bytes": QUOTA_VALUE,
    "injected_file_path_bytes": QUOTA_VALUE, "force": Bool(strings=True),
    "floating_ips": QUOTA_VALUE, "fixed_ips": QUOTA_VALUE, "security_groups": QUOTA_VALUE,
    "security_group_rules": QUOTA_VALUE,
})}, required=("quota_set",))

_FLAVOR_INT = Int(0, INT32_MAX, strings=True)
CREATE_FLAVOR = Obj({"flavor": Obj({
    "name": Str(255, min=1, strip=True),
    "id": one_of(Str(255, min=1), Int(0, INT32_MAX), nullable=True),
    "ram": Int(1, INT32_MAX, strings=True),
    "vcpus": Int(1, INT32_MAX, strings=True),
    "disk": _FLAVOR_INT,
    "OS-FLV-EXT-DATA:ephemeral": _FLAVOR_INT,
    "swap": one_of(_FLAVOR_INT, Str(enum=("",))),
    "rxtx_factor": Num(0.0, 3.4e38, strings=True),
    "os-flavor-access:is_public": Bool(strings=True),
    "description": Str(65535, nullable=True),
}, required=("name", "ram", "vcpus", "disk"))}, required=("flavor",))

UPDATE_FLAVOR = Obj({"flavor": Obj({"description": Str(65535, nullable=True)},
                                   required=("description",), extra=None)},
                    required=("flavor",))

EXTRA_SPECS = Obj({"extra_specs": Map(numbers=True)}, required=("extra_specs",))
EXTRA_SPEC = Map(numbers=True)

# Consoles (Nova's remote_consoles schemas): mks/webmks from 2.8.
_PROTOCOLS = ("vnc", "spice", "serial", "rdp")
_CONSOLE_TYPES = ("novnc", "xvpvnc", "spice-html5", "serial", "rdp-html5")


def _remote_console(protocols: tuple[str, ...], types: tuple[str, ...]) -> Obj:
    return Obj({"remote_console": Obj({
        "protocol": Str(enum=protocols), "type": Str(enum=types),
    }, required=("protocol", "type"), extra=None)}, required=("remote_console",), extra=None)


REMOTE_CONSOLE = _remote_console(_PROTOCOLS, _CONSOLE_TYPES)
REMOTE_CONSOLE_V28 = _remote_console((*_PROTOCOLS, "mks"), (*_CONSOLE_TYPES, "webmks"))


def _console_action(name: str, types: tuple[str, ...]) -> Obj:
    return Obj({name: Obj({"type": Str(enum=types)}, required=("type",), extra=None)},
               required=(name,), extra=None)


#: the pre-2.6 actions (os-getRDPConsole is refused before its body matters)
CONSOLE_ACTIONS = {
    "os-getSerialConsole": _console_action("os-getSerialConsole", ("serial",)),
    "os-getVNCConsole": _console_action("os-getVNCConsole", ("novnc", "xvpvnc")),
    "os-getSPICEConsole": _console_action("os-getSPICEConsole", ("spice-html5",)),
}

# os-keypairs (Nova's schemas/keypairs.py): ``type`` from 2.2, ``user_id`` from 2.10,
# ``public_key`` required from 2.92; no other key at any version. The name's
# characters are checked by ``strato.compute.keypairs`` (they change at 2.92).
_KEY_NAME = Str(255, min=1)
_PUBLIC_KEY = Str(65535)  # a Text column; a 16384-bit RSA key is under 3 KiB


def create_keypair(version: tuple[int, int]) -> Obj:
    props: dict = {"name": _KEY_NAME, "public_key": _PUBLIC_KEY}
    if version >= (2, 2):
        props["type"] = Str(enum=("ssh", "x509"))
    if version >= (2, 10):
        props["user_id"] = Str(255)
    required = ("name", "public_key") if version >= (2, 92) else ("name",)
    return Obj({"keypair": Obj(props, required=required, extra=None)},
               required=("keypair",), extra=None)
