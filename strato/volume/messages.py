"""Cinder's user messages (microversion 3.3): asynchronous failures a user caused.

A request that got its 2xx and then failed in a worker (a volume no backend could
take, an image that could not be copied, a snapshot delete the store refused) leaves
a message the user can list, show and delete.  Each message names what was being
done (an *action*), why it failed (a *detail*) and the resource, with Cinder's ids,
so ``event_id`` reads ``VOLUME_<resource type>_<action id>_<detail id>`` and
``user_message`` reads ``<action text>:<detail text>``.  The reason of the failure
itself (an exception's text) never reaches the message: it may name hosts or paths.

Messages live at least ``[volume] message_ttl`` seconds (``guaranteed_until``);
expired ones are not shown and are purged whenever a new one is recorded.

Any service records one with :func:`record`, in the transaction of the state change
that reports the failure.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from strato.context import RequestContext
from strato.db import Database
from strato.db.base import Base, UTCDateTime, utcnow
from strato.exceptions import BadRequest, NotFound
from strato.policy import Enforcer

# (id, text) pairs: Cinder's codes and texts, so clients and operators that know
# Cinder's event ids read ours the same way.


class Resource:
    VOLUME = "VOLUME"
    VOLUME_SNAPSHOT = "VOLUME_SNAPSHOT"
    VOLUME_BACKUP = "VOLUME_BACKUP"


class Action:
    SCHEDULE_ALLOCATE_VOLUME = ("001", "schedule allocate volume")
    ATTACH_VOLUME = ("002", "attach volume")
    COPY_VOLUME_TO_IMAGE = ("003", "copy volume to image")
    UPDATE_ATTACHMENT = ("004", "update attachment")
    COPY_IMAGE_TO_VOLUME = ("005", "copy image to volume")
    UNMANAGE_VOLUME = ("006", "unmanage volume")
    EXTEND_VOLUME = ("007", "extend volume")
    CREATE_VOLUME_FROM_BACKEND = ("008", "create volume from backend storage")
    SNAPSHOT_CREATE = ("009", "create snapshot")
    SNAPSHOT_DELETE = ("010", "delete snapshot")
    SNAPSHOT_UPDATE = ("011", "update snapshot")
    SNAPSHOT_METADATA_UPDATE = ("012", "update snapshot metadata")
    BACKUP_CREATE = ("013", "create backup")
    BACKUP_DELETE = ("014", "delete backup")
    BACKUP_RESTORE = ("015", "restore backup")
    REIMAGE_VOLUME = ("016", "reimage volume")


class Detail:
    UNKNOWN_ERROR = ("001", "An unknown error occurred.")
    DRIVER_NOT_INITIALIZED = ("002", "Driver is not initialized at present.")
    NO_BACKEND_AVAILABLE = ("003", "Could not find any available weighted backend.")
    FAILED_TO_UPLOAD_VOLUME = ("004", "Failed to upload volume to image at backend.")
    VOLUME_ATTACH_MODE_INVALID = ("005", "Volume's attach mode is invalid.")
    QUOTA_EXCEED = ("006", "Not enough quota resource for operation.")
    NOT_ENOUGH_SPACE_FOR_IMAGE = ("007", "Image used for creating volume exceeds "
                                         "available space.")
    UNMANAGE_ENC_NOT_SUPPORTED = ("008", "Unmanaging encrypted volumes is not supported.")
    NOTIFY_COMPUTE_SERVICE_FAILED = ("009", "Compute service failed to extend volume.")
    DRIVER_FAILED_EXTEND = ("010", "Volume Driver failed to extend volume.")
    SIGNATURE_VERIFICATION_FAILED = ("011", "Image signature verification failed.")
    DRIVER_FAILED_CREATE = ("012", "Driver failed to create the volume.")
    SNAPSHOT_CREATE_ERROR = ("013", "Snapshot failed to create.")
    SNAPSHOT_UPDATE_METADATA_FAILED = ("014", "Volume snapshot update metadata failed.")
    SNAPSHOT_IS_BUSY = ("015", "Snapshot is busy.")
    SNAPSHOT_DELETE_ERROR = ("016", "Snapshot failed to delete.")
    BACKUP_INVALID_STATE = ("017", "Backup status is invalid.")
    BACKUP_SERVICE_DOWN = ("018", "Backup service is down.")
    BACKUP_CREATE_DEVICE_ERROR = ("019", "Failed to get backup device from the volume "
                                         "service.")
    BACKUP_CREATE_DRIVER_ERROR = ("020", "Backup driver failed to create backup.")
    ATTACH_ERROR = ("021", "Failed to attach volume.")
    DETACH_ERROR = ("022", "Failed to detach volume.")
    BACKUP_CREATE_CLEANUP_ERROR = ("023", "Cleanup of temporary volume/snapshot failed.")
    BACKUP_SCHEDULE_ERROR = ("024", "Backup failed to schedule. Service not found for "
                                    "creating backup.")
    BACKUP_DELETE_DRIVER_ERROR = ("025", "Backup driver failed to delete backup.")
    BACKUP_RESTORE_ERROR = ("026", "Backup driver failed to restore backup.")
    VOLUME_INVALID_STATE = ("027", "Volume status is invalid.")
    REIMAGE_VOLUME_FAILED = ("028", "Compute service failed to reimage volume.")
    IMAGE_FORMAT_UNACCEPTABLE = ("029", "The image disk format must be the same as the "
                                        "volume format for the volume type you are "
                                        "requesting.")
    INCREMENTAL_BACKUP_FORCES_FULL_BACKUP = ("030", "Incremental backup not possible, "
                                                    "forcing full backup.")


def _codes(cls: type) -> dict[str, str]:
    return {v[0]: v[1] for k, v in vars(cls).items() if k.isupper()}


ACTIONS = _codes(Action)
DETAILS = _codes(Detail)

# Exceptions (by class name, wherever they are defined) that say more than "unknown".
EXCEPTION_DETAILS = {
    "NoValidBackend": Detail.NO_BACKEND_AVAILABLE,
    "SnapshotIsBusy": Detail.SNAPSHOT_IS_BUSY,
    "OverLimit": Detail.QUOTA_EXCEED,
    "ImageTooBig": Detail.NOT_ENOUGH_SPACE_FOR_IMAGE,
}

LEVELS = ("ERROR", "WARNING", "INFO")


class Message(Base):
    """A user message (Cinder's ``messages`` table, without soft delete)."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    request_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    resource_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    resource_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True,
                                                      index=True)
    event_id: Mapped[str] = mapped_column(String(255))
    action_id: Mapped[str] = mapped_column(String(10))
    detail_id: Mapped[str] = mapped_column(String(10))
    message_level: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


def detail_for(exc: BaseException | None,
               detail: tuple[str, str] | None = None) -> tuple[str, str]:
    """The detail a failure is shown with: the one given, else the exception's (by its
    class or a base class's name), else "An unknown error occurred."."""
    if detail is not None:
        return detail
    for cls in type(exc).__mro__ if exc is not None else ():
        if cls.__name__ in EXCEPTION_DETAILS:
            return EXCEPTION_DETAILS[cls.__name__]
    return Detail.UNKNOWN_ERROR


def record(session: Session, ttl: int, project_id: str, action: tuple[str, str], *,
           resource_type: str = Resource.VOLUME, resource_uuid: str | None = None,
           exception: BaseException | None = None, detail: tuple[str, str] | None = None,
           request_id: str | None = None, level: str = "ERROR") -> Message:
    """Add a user message to the caller's transaction (it exists only if the state
    change it reports commits).  ``ttl``: seconds it is guaranteed to be kept
    (``[volume] message_ttl``).  Expired messages are purged on the way."""
    if level not in LEVELS:
        raise ValueError(f"message level {level!r} is not one of {LEVELS}")
    now = datetime.now(UTC)
    session.execute(delete(Message).where(Message.expires_at < now))
    detail_id = detail_for(exception, detail)[0]
    msg = Message(id=str(uuid.uuid4()), project_id=project_id, request_id=request_id,
                  resource_type=resource_type, resource_uuid=resource_uuid,
                  event_id=f"VOLUME_{resource_type}_{action[0]}_{detail_id}",
                  action_id=action[0], detail_id=detail_id, message_level=level,
                  created_at=now, expires_at=now + timedelta(seconds=ttl))
    session.add(msg)
    return msg


def user_message(msg: Message) -> str:
    return (f"{ACTIONS.get(msg.action_id, 'unknown action')}:"
            f"{DETAILS.get(msg.detail_id, Detail.UNKNOWN_ERROR[1])}")


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


# Columns a list may be filtered and sorted by (Cinder: any column of the model).
FILTERS = ("event_id", "resource_type", "resource_uuid", "message_level", "request_id",
           "project_id", "action_id", "detail_id")
SORT_KEYS = ("created_at", "id", "event_id", "resource_type", "resource_uuid",
             "message_level", "request_id", "expires_at")


class UserMessages:
    """The messages API of one deployment: record, list, show, delete."""

    def __init__(self, db: Database, policy: Enforcer, ttl: int, endpoint: str) -> None:
        self.db = db
        self.policy = policy
        self.ttl = ttl
        self.endpoint = endpoint

    def record(self, session: Session, project_id: str, action: tuple[str, str],
               **kw: Any) -> Message:
        """:func:`record` with this deployment's ``message_ttl``."""
        return record(session, self.ttl, project_id, action, **kw)

    def view(self, msg: Message) -> dict[str, Any]:
        href = f"{self.endpoint}/volume/v3/{msg.project_id}/messages/{msg.id}"
        body: dict[str, Any] = {
            "id": msg.id, "event_id": msg.event_id, "user_message": user_message(msg),
            "message_level": msg.message_level, "created_at": _iso(msg.created_at),
            "guaranteed_until": _iso(msg.expires_at), "request_id": msg.request_id,
            "links": [{"rel": "self", "href": href},
                      {"rel": "bookmark", "href": href.replace("/v3/", "/", 1)}]}
        if msg.resource_type:
            body["resource_type"] = msg.resource_type
        if msg.resource_uuid:
            body["resource_uuid"] = msg.resource_uuid
        return body

    def _get(self, session: Session, ctx: RequestContext, message_id: str) -> Message:
        msg = session.get(Message, message_id)
        if msg is None or msg.expires_at < datetime.now(UTC) or not (
                ctx.is_admin or msg.project_id == ctx.project_id):
            raise NotFound(f"Message {message_id} could not be found.")
        return msg

    def show(self, ctx: RequestContext, message_id: str) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            msg = self._get(session, ctx, message_id)
            self.policy.enforce(ctx, "message:get", {"project_id": msg.project_id})
            return self.view(msg)

    def delete(self, ctx: RequestContext, message_id: str) -> None:
        with self.db.session() as session:
            msg = self._get(session, ctx, message_id)
            self.policy.enforce(ctx, "message:delete", {"project_id": msg.project_id})
            session.delete(msg)

    def list(self, ctx: RequestContext, project_id: str, params: dict[str, str],
             version: tuple[int, int]) -> dict[str, Any]:
        """The URL's project's messages (an admin's ``project_id`` filter may name
        another); from 3.5 filtered by column, sorted, and paged with limit/marker."""
        self.policy.enforce(ctx, "message:get_all", {"project_id": project_id})
        query = select(Message).where(Message.expires_at >= datetime.now(UTC))
        params = dict(params) if version >= (3, 5) else {}
        wanted = params.pop("project_id", None)
        if wanted and ctx.is_admin:
            query = query.where(Message.project_id == wanted)
        elif not (ctx.is_admin and params.get("all_tenants")):
            query = query.where(Message.project_id == project_id)
        for key in FILTERS:
            if key in params and key != "project_id":
                query = query.where(getattr(Message, key) == params[key])
        for key, direction in _sort(params):
            column = getattr(Message, key)
            query = query.order_by(column.asc() if direction == "asc" else column.desc())
        with self.db.session(readonly=True) as session:
            items = list(session.scalars(query))
            if params.get("marker"):
                ids = [m.id for m in items]
                if params["marker"] not in ids:
                    raise BadRequest(f"Marker {params['marker']} could not be found.")
                items = items[ids.index(params["marker"]) + 1:]
            offset = _count(params, "offset")
            if offset:
                items = items[offset:]
            limit = _count(params, "limit")
            more = limit is not None and len(items) > limit
            if limit is not None:
                items = items[:limit]
            out: dict[str, Any] = {"messages": [self.view(m) for m in items]}
        if more and items:
            out["messages_links"] = [{"rel": "next", "href": (
                f"{self.endpoint}/volume/v3/{project_id}/messages?"
                f"marker={items[-1].id}&limit={limit}")}]
        return out


def _count(params: dict[str, str], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 18:
        raise BadRequest(f"Invalid {key} {value!r}: a non-negative integer is required.")
    return int(value)


def _sort(params: dict[str, str]) -> list[tuple[str, str]]:
    """``sort=key[:dir],…`` or ``sort_key``/``sort_dir``; then created_at, id (desc)."""
    keys: list[tuple[str, str]] = []
    if params.get("sort"):
        for item in params["sort"].split(","):
            key, _, direction = item.partition(":")
            keys.append((key.strip(), direction.strip() or "desc"))
    elif params.get("sort_key"):
        keys.append((params["sort_key"], params.get("sort_dir", "desc")))
    for key, direction in keys:
        if key not in SORT_KEYS or direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort key or direction: {key}:{direction}.")
    return [*keys, ("created_at", "desc"), ("id", "desc")]
