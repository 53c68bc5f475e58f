"""Cinder's backup request bodies (cinder/api/schemas/backups.py), per microversion:
``metadata`` from 3.43, ``availability_zone`` from 3.51 (the API refuses them before)."""

from __future__ import annotations

from strato.validation import Action, Bool, Map, Obj, Str

NAME = Str(255, nullable=True)
UUID = Str(36, min=1)
FLAG = Bool(strings=True, nullable=True)

CREATE = Obj({"backup": Obj({
    "volume_id": UUID, "container": Str(255, nullable=True), "name": NAME,
    "description": NAME, "incremental": FLAG, "force": FLAG,
    "snapshot_id": Str(36, nullable=True), "metadata": Map(nullable=True),
    "availability_zone": Str(255, nullable=True),
}, required=("volume_id",), extra=None)}, required=("backup",), extra=None)

UPDATE = Obj({"backup": Obj({
    "name": NAME, "description": NAME, "metadata": Map(nullable=True),
}, extra=None)}, required=("backup",), extra=None)

RESTORE = Obj({"restore": Obj({
    "volume_id": Str(36, nullable=True), "name": NAME,
}, extra=None, nullable=True)}, required=("restore",), extra=None)

IMPORT = Obj({"backup-record": Obj({
    "backup_service": Str(255), "backup_url": Str(1 << 20),
}, required=("backup_service", "backup_url"), extra=None)}, required=("backup-record",),
    extra=None)

ACTION = Action({
    "os-reset_status": Obj({"status": Str(32)}, required=("status",), extra=None),
    "os-force_delete": Obj(nullable=True),
})
