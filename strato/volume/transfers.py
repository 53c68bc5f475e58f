"""Volume transfers (Cinder's ``os-volume-transfer``, ``volume-transfers`` from 3.55):
a project offers an ``available`` volume (it goes ``awaiting-transfer``); another
project accepts it with the transfer's id and key and becomes its owner, quota and
snapshots included, in one transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from sqlalchemy import select

from strato import events
from strato.context import RequestContext
from strato.exceptions import BadRequest, NotFound
from strato.storage import crash
from strato.volume.api import (
    VolumeAPI,
    _flag,
    _text,
    iso,
    snapshot_deltas,
    type_name,
    volume_deltas,
)
from strato.volume.models import Snapshot, Volume, VolumeTransfer

KEY_LENGTH = 16


def _hash(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}{key}".encode()).hexdigest()


class VolumeTransfers:
    def __init__(self, api: VolumeAPI) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy

    def view(self, row: VolumeTransfer, version: tuple[int, int],
             detail: bool = True) -> dict[str, Any]:
        """Cinder's summary (list) or detail view, with 3.55's and 3.57's fields."""
        base = f"{self.api.conf.public_endpoint}/volume"
        out: dict[str, Any] = {
            "id": row.id, "volume_id": row.volume_id, "name": row.name,
            "links": [{"rel": "self", "href": f"{base}/v3/{row.source_project_id}/"
                                              f"os-volume-transfer/{row.id}"},
                      {"rel": "bookmark", "href": f"{base}/{row.source_project_id}/"
                                                  f"os-volume-transfer/{row.id}"}]}
        if not detail:
            return out
        out["created_at"] = iso(row.created_at)
        if version >= (3, 55):
            out["no_snapshots"] = row.no_snapshots
        if version >= (3, 57):
            out["destination_project_id"] = row.destination_project_id
            out["source_project_id"] = row.source_project_id
            out["accepted"] = row.accepted
        return out

    def _get(self, session: Any, ctx: RequestContext, transfer_id: str) -> VolumeTransfer:
        row = session.get(VolumeTransfer, transfer_id)
        if row is None or row.accepted or not (
                ctx.is_admin or row.source_project_id == ctx.project_id):
            raise NotFound(f"Transfer {transfer_id} could not be found.")
        return row

    def create(self, ctx: RequestContext, body: Any, version: tuple[int, int]) -> dict:
        ref = body.get("transfer") if isinstance(body, dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("volume_id"), str):
            raise BadRequest("Missing required element 'transfer' with a volume_id.")
        name = _text(ref, "name")
        no_snapshots = _flag(ref.get("no_snapshots", False), "no_snapshots") \
            if version >= (3, 55) else False
        key = secrets.token_hex(KEY_LENGTH // 2)
        salt = secrets.token_hex(8)
        with self.db.session() as session:
            vol = self.api.get_volume_row(session, ctx, ref["volume_id"])
            self.policy.enforce(ctx, "volume:create_transfer", {"project_id": vol.project_id})
            if not no_snapshots:  # they follow the volume: each must be whole (Cinder)
                for snap in session.scalars(select(Snapshot).where(
                        Snapshot.volume_id == vol.id)):
                    if snap.status != "available":
                        raise BadRequest(f"Invalid snapshot: snapshot: {snap.id} status "
                                         "must be available")
            if not self.api.set_status(session, Volume, vol.id, "available",
                                       "awaiting-transfer"):
                raise BadRequest(f"Invalid volume: status must be available (status "
                                 f"{vol.status}).")
            row = VolumeTransfer(id=str(uuid.uuid4()), volume_id=vol.id, name=name,
                                 source_project_id=vol.project_id, salt=salt,
                                 crypt_hash=_hash(salt, key), no_snapshots=no_snapshots)
            session.add(row)
            events.emit(session, "volume", "transfer.create", vol.id, vol.project_id,
                        transfer_id=row.id)
            session.flush()
            return {**self.view(row, version), "auth_key": key}

    def show(self, ctx: RequestContext, transfer_id: str, version: tuple[int, int]) -> dict:
        self.policy.enforce(ctx, "volume:get_transfer", {"project_id": ctx.project_id})
        with self.db.session(readonly=True) as session:
            return self.view(self._get(session, ctx, transfer_id), version)

    def list(self, ctx: RequestContext, params: dict[str, str], version: tuple[int, int],
             detail: bool) -> list[dict]:
        self.policy.enforce(ctx, "volume:get_all_transfers", {"project_id": ctx.project_id})
        query = select(VolumeTransfer).where(VolumeTransfer.accepted == False)  # noqa: E712
        if not (ctx.is_admin and str(params.get("all_tenants", "")).lower() in (
                "1", "true", "yes")):
            query = query.where(VolumeTransfer.source_project_id == ctx.project_id)
        with self.db.session(readonly=True) as session:
            return [self.view(r, version, detail) for r in session.scalars(
                query.order_by(VolumeTransfer.created_at))]

    def delete(self, ctx: RequestContext, transfer_id: str) -> None:
        with self.db.session() as session:
            row = self._get(session, ctx, transfer_id)
            self.policy.enforce(ctx, "volume:delete_transfer",
                                {"project_id": row.source_project_id})
            self.api.set_status(session, Volume, row.volume_id, "awaiting-transfer",
                                "available")
            session.delete(row)

    def accept(self, ctx: RequestContext, transfer_id: str, body: Any,
               version: tuple[int, int]) -> dict:
        ref = body.get("accept") if isinstance(body, dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("auth_key"), str):
            raise BadRequest("Missing required element 'accept' with an auth_key.")
        self.policy.enforce(ctx, "volume:accept_transfer", {"project_id": ctx.project_id})
        with self.db.session() as session:
            row = session.get(VolumeTransfer, transfer_id)
            if row is None or row.accepted:
                raise NotFound(f"Transfer {transfer_id} could not be found.")
            if not secrets.compare_digest(row.crypt_hash, _hash(row.salt, ref["auth_key"])):
                raise BadRequest(f"Invalid auth key: Attempt to transfer {transfer_id} "
                                 "with invalid auth key.")
            vol = session.get(Volume, row.volume_id)
            if vol is None or vol.status != "awaiting-transfer":
                raise BadRequest("Invalid volume: the volume is not awaiting transfer.")
            source, dest = vol.project_id, ctx.project_id
            tname = type_name(session, vol)
            deltas = volume_deltas(tname, vol.size)
            snaps = [] if row.no_snapshots else list(session.scalars(select(Snapshot).where(
                Snapshot.volume_id == vol.id)))
            for snap in snaps:
                for k, v in snapshot_deltas(tname, snap.size).items():
                    deltas[k] = deltas.get(k, 0) + v
            quota = self.api.quota
            quota.commit(session, quota.reserve(session, dest, deltas))
            quota.release(session, source, deltas)
            for snap in snaps:
                snap.project_id = dest
                snap.user_id = ctx.user_id
            if not self.api.set_status(session, Volume, vol.id, "awaiting-transfer",
                                       "available", project_id=dest, user_id=ctx.user_id):
                raise BadRequest("Invalid volume: the volume changed state; try again.")
            row.accepted = True
            row.destination_project_id = dest
            events.emit(session, "volume", "transfer.accept", vol.id, dest,
                        transfer_id=row.id, source_project_id=source)
            session.flush()
            crash.point("transfer.accept", "before-commit")  # all of it or none
            return self.view(row, version, detail=False)
