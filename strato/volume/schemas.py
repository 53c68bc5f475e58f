"""Cinder v3 request bodies (api-ref: block-storage v3), bounded to strato's columns.

Sizes are ``Integer`` columns (Cinder: 1 to 2**31-1, also as a string), names and
descriptions at most 255 characters, ids ``String(36)`` where they are stored. The
client sends an explicit null for every field it does not use, so optional fields
take null. Quota values: -1 (unlimited) to Cinder's ``MAX_INT``.
"""

from __future__ import annotations

from strato.validation import INT32_MAX, Action, Bool, Int, Map, Obj, Str, one_of

NAME = Str(255, nullable=True)
DESCRIPTION = Str(255, nullable=True)
REF = Str(255, nullable=True)  # an id looked up (never stored unless found)
SIZE = Int(1, INT32_MAX, strings=True, nullable=True)
FLAG = Bool(strings=True, nullable=True)
METADATA = Map(nullable=True)

CREATE_VOLUME = Obj({"volume": Obj({
    "size": SIZE, "name": NAME, "description": DESCRIPTION,
    "display_name": NAME, "display_description": DESCRIPTION,
    "imageRef": REF, "image_id": REF, "snapshot_id": REF, "source_volid": REF,
    "volume_type": REF, "availability_zone": Str(255, nullable=True),
    "metadata": METADATA, "multiattach": FLAG, "backup_id": REF,
    "consistencygroup_id": REF, "group_id": REF, "source_replica": REF,
    "scheduler_hints": Obj(nullable=True),
}), "OS-SCH-HNT:scheduler_hints": Obj(nullable=True)}, required=("volume",))

UPDATE_VOLUME = Obj({"volume": Obj({
    "name": NAME, "description": DESCRIPTION, "display_name": NAME,
    "display_description": DESCRIPTION, "metadata": METADATA,
})}, required=("volume",))

CREATE_SNAPSHOT = Obj({"snapshot": Obj({
    "volume_id": Str(36, nullable=True), "name": NAME, "description": DESCRIPTION,
    "display_name": NAME, "display_description": DESCRIPTION, "force": FLAG,
    "metadata": METADATA,
}, required=("volume_id",))}, required=("snapshot",))

UPDATE_SNAPSHOT = Obj({"snapshot": Obj({
    "name": NAME, "description": DESCRIPTION, "display_name": NAME,
    "display_description": DESCRIPTION, "metadata": METADATA,
})}, required=("snapshot",))

UPDATE_QUOTA = Obj({"quota_set": Obj({"id": Str(255)}, extra=Int(-1, INT32_MAX))},
                   required=("quota_set",))

METADATA_BODY = Obj({"metadata": Map()}, required=("metadata",))
METADATA_ITEM = Obj({"meta": Map()}, required=("meta",))
EXTRA_SPEC_ITEM = Map()

SNAPSHOT_ACTION = Action({
    "os-reset_status": Obj({"status": Str(32)}, required=("status",)),
    "os-update_snapshot_status": Obj({"status": Str(32), "progress": Str(8, nullable=True)},
                                     required=("status",)),
    "os-force_delete": Obj(nullable=True),
})

CREATE_TYPE = Obj({"volume_type": Obj({
    "name": Str(255), "description": DESCRIPTION,
    "os-volume-type-access:is_public": FLAG, "extra_specs": METADATA,
})}, required=("volume_type",))

UPDATE_TYPE = Obj({"volume_type": Obj({
    "name": NAME, "description": DESCRIPTION, "is_public": FLAG,
})}, required=("volume_type",))

EXTRA_SPECS = Obj({"extra_specs": Map()}, required=("extra_specs",))

_CONNECTOR = Obj({"host": Str(255, nullable=True), "mountpoint": Str(255, nullable=True),
                  "initiator": Str(255, nullable=True), "ip": Str(255, nullable=True),
                  "multipath": FLAG}, max_props=100)
_STATUS = Str(32, nullable=True)  # the status columns

VOLUME_ACTION = Action({
    "os-extend": Obj({"new_size": Int(1, INT32_MAX, strings=True)},
                     required=("new_size",)),
    "os-set_bootable": Obj({"bootable": Bool(strings=True)}, required=("bootable",)),
    "os-update_readonly_flag": Obj({"readonly": Bool(strings=True)},
                                   required=("readonly",)),
    "os-reset_status": Obj({"status": _STATUS, "attach_status": _STATUS,
                            "migration_status": _STATUS}),
    "os-volume_upload_image": Obj({
        "image_name": Str(255), "disk_format": Str(20, nullable=True),
        "container_format": Str(20, nullable=True), "force": FLAG,
        "visibility": Str(20, nullable=True), "protected": FLAG,
    }, required=("image_name",)),
    "revert": Obj({"snapshot_id": Str(36)}, required=("snapshot_id",)),
    "os-initialize_connection": Obj({"connector": _CONNECTOR}, required=("connector",)),
    "os-terminate_connection": Obj({"connector": one_of(_CONNECTOR, nullable=True)},
                                   nullable=True),
    "os-attach": Obj({"instance_uuid": Str(36, nullable=True),
                      "host_name": Str(255, nullable=True),
                      "mountpoint": Str(255, nullable=True),
                      "mode": Str(enum=("rw", "ro"))}),
    "os-detach": Obj({"attachment_id": Str(36, nullable=True)}, nullable=True),
})

CREATE_ATTACHMENT = Obj({"attachment": Obj({
    "volume_uuid": Str(36), "volume_id": Str(36),
    "instance_uuid": Str(36, nullable=True), "connector": one_of(_CONNECTOR, nullable=True),
    "mode": Str(enum=("rw", "ro"), nullable=True),
})}, required=("attachment",))

UPDATE_ATTACHMENT = Obj({"attachment": Obj({"connector": _CONNECTOR},
                                           required=("connector",))},
                        required=("attachment",))

ATTACHMENT_ACTION = Action({"os-complete": Obj(nullable=True)})
