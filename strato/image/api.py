"""Image service logic: records, visibility, properties, tags, members, actions.

Data flow (upload/download) is in strato.image.data; listing in strato.image.listing.
Everything takes the request context and returns dicts in Glance v2's shapes.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strato.config import Config
from strato.context import RequestContext
from strato.db import Database
from strato.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    OverLimit,
    StratoError,
)
from strato.image.formats import CONTAINER_FORMATS, DISK_FORMATS
from strato.image.models import Image, ImageMember, ImageProperty, ImageTag
from strato.image.stores.base import ImageStore, InUseByStore, LeftBehind, NotFoundInStore
from strato.jobs.models import PENDING, RUNNING, Job
from strato.jobs.queue import enqueue
from strato.policy import Enforcer
from strato.storage import crash
from strato.validation import INT32_MAX, Int, show

LOG = logging.getLogger(__name__)

VISIBILITIES = ("public", "private", "shared", "community")
MEMBER_STATUSES = ("pending", "accepted", "rejected")
# Attributes a client may never set.
READ_ONLY = frozenset({
    "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
    "created_at", "updated_at", "self", "file", "schema", "direct_url", "locations",
    "location", "stores",
})
# Core attributes: columns, not extra properties.
CORE = frozenset({"id", "name", "visibility", "protected", "os_hidden", "owner",
                  "disk_format", "container_format", "min_disk", "min_ram", "tags"})
NAME_MAX = 255
KEY_MAX = 255
VALUE_MAX = 65535


def staged_path(conf: Config, image_id: str) -> Path:
    """Where ``PUT /v2/images/{id}/stage`` keeps an image's data until its import."""
    return Path(conf.DEFAULT.state_path) / "image-staging" / image_id


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Quotas:
    image_count: int
    size_total_mb: int
    properties: int
    tags: int
    members: int
    size_cap: int

    @classmethod
    def from_config(cls, conf: Config) -> Quotas:
        i = conf.image
        return cls(i.image_count_quota, i.image_size_total, i.image_property_quota,
                   i.image_tag_quota, i.image_member_quota, i.image_size_cap)


def _over(limit: int, count: int) -> bool:
    return limit >= 0 and count > limit


class ImageAPI:
    def __init__(self, db: Database, policy: Enforcer, store: ImageStore, conf: Config) -> None:
        self.db = db
        self.policy = policy
        self.store = store
        self.conf = conf
        self.quotas = Quotas.from_config(conf)

    @property
    def stores(self) -> dict[str, ImageStore]:
        """Every store by id (one, unless ``[glance_store] enabled_backends`` names more)."""
        return getattr(self.store, "by_id", None) or {self.store.name: self.store}

    @property
    def multi_store(self) -> bool:
        return hasattr(self.store, "by_id")

    # ------------------------------------------------------------ views
    def view(self, image: Image) -> dict[str, Any]:
        body: dict[str, Any] = {p.name: p.value for p in image.properties}
        body.update({
            "id": image.id, "name": image.name, "status": image.status,
            "visibility": image.visibility, "protected": image.protected,
            "os_hidden": image.os_hidden, "owner": image.owner,
            "checksum": image.checksum, "os_hash_algo": image.os_hash_algo,
            "os_hash_value": image.os_hash_value, "size": image.size,
            "virtual_size": image.virtual_size, "min_disk": image.min_disk,
            "min_ram": image.min_ram, "disk_format": image.disk_format,
            "container_format": image.container_format,
            "tags": [t.value for t in image.tags],
            "created_at": iso(image.created_at), "updated_at": iso(image.updated_at),
            "self": f"/v2/images/{image.id}", "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image",
        })
        if image.status == "active" and image.store:
            body["stores"] = ",".join(sorted([image.store, *(image.extra_locations or {})]))
        if image.location and image.status in ("active", "deactivated"):
            if self.conf.image.show_image_direct_url:
                body["direct_url"] = image.location
            if self.conf.image.show_multiple_locations:
                body["locations"] = [{"url": image.location, "metadata": {}}]
        elif self.conf.image.show_multiple_locations:
            body["locations"] = []
        return body

    # ------------------------------------------------------------ access
    def visible_clause(self, ctx: RequestContext) -> Any:
        """SQL for "ctx may see this image" (admins see everything)."""
        if ctx.is_admin:
            return True
        member_of = select(ImageMember.image_id).where(ImageMember.member == ctx.project_id)
        return or_(Image.owner == ctx.project_id,
                   Image.visibility.in_(("public", "community")),
                   (Image.visibility == "shared") & Image.id.in_(member_of))

    def load(self, session: Session, ctx: RequestContext, image_id: str,
             for_update: bool = False) -> Image:
        """The image if ctx may see it; 404 otherwise (never reveal another's image)."""
        query = select(Image).where(Image.id == image_id, self.visible_clause(ctx))
        image = session.scalars(query).first()
        if image is None:
            raise NotFound(f"No image found with ID {image_id}")
        return image

    def _target(self, image: Image | None = None, owner: str | None = None) -> dict[str, Any]:
        owner = image.owner if image is not None else owner
        return {"project_id": owner, "owner": owner}

    def require_owner(self, ctx: RequestContext, image: Image, rule: str) -> None:
        """Policy, and ownership: only the owner (or an admin) changes an image."""
        self.policy.enforce(ctx, rule, self._target(image))
        if not ctx.is_admin and image.owner != ctx.project_id:
            raise Forbidden(f"You are not permitted to modify image {image.id}.")

    # ------------------------------------------------------------ validation
    def _check_core(self, ctx: RequestContext, key: str, value: Any, creating: bool,
                    image: Image | None = None) -> Any:
        if key == "name":
            if value is not None and (not isinstance(value, str) or len(value) > NAME_MAX):
                raise BadRequest(f"Invalid value for name: must be a string of at most "
                                 f"{NAME_MAX} characters.")
        elif key == "visibility":
            if value not in VISIBILITIES:
                raise BadRequest(f"Invalid visibility value: {show(value)}")
            if value == "public":
                self.policy.enforce(ctx, "publicize_image", self._target(image,
                                                                         ctx.project_id))
            if value == "community":
                self.policy.enforce(ctx, "communitize_image", self._target(image,
                                                                           ctx.project_id))
        elif key in ("protected", "os_hidden"):
            if not isinstance(value, bool):
                raise BadRequest(f"Invalid value for {key}: {value!r} is not a boolean.")
        elif key in ("min_disk", "min_ram"):
            Int(0, INT32_MAX)(value, key)
        elif key in ("disk_format", "container_format"):
            allowed = DISK_FORMATS if key == "disk_format" else CONTAINER_FORMATS
            if value is not None and value not in allowed:
                raise BadRequest(f"Invalid value {show(value)} for {key}: must be one of "
                                 f"{', '.join(allowed)}.")
            if image is not None and image.status not in ("queued",):
                raise Forbidden(f"Attribute {key} can be only replaced for a queued image.")
        elif key == "owner":
            if not ctx.is_admin and value != ctx.project_id:
                raise Forbidden("Attribute 'owner' can be set only by an administrator.")
            if value is not None and not isinstance(value, str):
                raise BadRequest("Invalid value for owner.")
        elif key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t)
                                                      <= 255 for t in value):
                raise BadRequest("Invalid value for tags: a list of strings of 1-255 "
                                 "characters.")
        elif key == "id":
            if not creating:
                raise Forbidden("Attribute 'id' is read-only.")
            try:
                uuid.UUID(str(value))
            except ValueError:
                raise BadRequest(f"Invalid id {show(value)}: must be a UUID.") from None
        return value

    @staticmethod
    def _check_property(key: Any, value: Any) -> None:
        if not isinstance(key, str) or not key or len(key) > KEY_MAX:
            raise BadRequest(f"Invalid property name: at most {KEY_MAX} characters.")
        if key.startswith("os_glance"):
            raise Forbidden(f"Attribute '{key}' is reserved.")
        if not isinstance(value, str):
            raise BadRequest(f"Invalid value for property '{key}': it must be a string.")
        if len(value) > VALUE_MAX:
            raise BadRequest(f"Property '{key}' is longer than {VALUE_MAX} characters.")

    def _check_counts(self, image: Image) -> None:
        n = len(image.properties)
        if _over(self.quotas.properties, n):
            raise OverLimit(f"Maximum number of properties exceeded. Attempted: {n}, "
                            f"Maximum: {self.quotas.properties}")
        n = len(image.tags)
        if _over(self.quotas.tags, n):
            raise OverLimit(f"Maximum number of tags exceeded. Attempted: {n}, Maximum: "
                            f"{self.quotas.tags}")

    def _set(self, ctx: RequestContext, image: Image, key: str, value: Any,
             creating: bool = False) -> None:
        if key in READ_ONLY:
            raise Forbidden(f"Attribute '{key}' is read-only.")
        if key in CORE:
            value = self._check_core(ctx, key, value, creating, None if creating else image)
            if key == "tags":
                image.tags = [ImageTag(value=t) for t in dict.fromkeys(value)]
            else:
                setattr(image, key, value)
            return
        self._check_property(key, value)
        for prop in image.properties:
            if prop.name == key:
                prop.value = value
                return
        image.properties.append(ImageProperty(name=key, value=value))

    def _unset(self, image: Image, key: str) -> None:
        if key in READ_ONLY or key in CORE:
            raise Forbidden(f"Attribute '{key}' is read-only or cannot be removed.")
        for prop in image.properties:
            if prop.name == key:
                image.properties.remove(prop)
                return
        raise Conflict(f"Property {key} does not exist.")

    # ------------------------------------------------------------ create/show/update/delete
    def create(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        image = self.new_record(ctx, body)
        with self.db.session() as session:
            self.add_record(session, image)
        return self.view(image)

    def new_record(self, ctx: RequestContext, body: Any) -> Image:
        """A validated, not yet stored ``queued`` image (policy checked)."""
        if not isinstance(body, dict):
            raise BadRequest("Request body must be a JSON object.")
        owner = body.get("owner", ctx.project_id) if ctx.is_admin else ctx.project_id
        self.policy.enforce(ctx, "add_image", self._target(owner=owner))
        image = Image(id=str(body.get("id") or uuid.uuid4()), status="queued",
                      visibility="shared", owner=owner, properties=[], tags=[])
        for key, value in body.items():
            if key == "owner" and not ctx.is_admin and value == ctx.project_id:
                continue
            self._set(ctx, image, key, value, creating=True)
        self._check_counts(image)
        return image

    def add_record(self, session: Session, image: Image) -> dict[str, Any]:
        """Store ``image`` (from :meth:`new_record`) in the caller's transaction, within
        the owner's image count quota: another service's record and job can commit
        with it, so no crash leaves one without the other."""
        if self.quotas.image_count >= 0:
            count = session.scalar(select(func.count()).select_from(Image).where(
                Image.owner == image.owner))
            if count + 1 > self.quotas.image_count:
                raise OverLimit(f"Maximum number of images exceeded. Attempted: "
                                f"{count + 1}, Maximum: {self.quotas.image_count}")
        session.add(image)
        try:
            session.flush()  # an error rolls the caller's whole transaction back
        except IntegrityError:
            raise Conflict(f"Image with identifier {image.id} already exists!") from None
        return self.view(image)

    def show(self, ctx: RequestContext, image_id: str) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            image = self.load(session, ctx, image_id)
            self.policy.enforce(ctx, "get_image", self._target(image))
            return self.view(image)

    def update(self, ctx: RequestContext, image_id: str, patch: Any) -> dict[str, Any]:
        """A JSON patch (application/openstack-images-v2.1-json-patch)."""
        if not isinstance(patch, list):
            raise BadRequest("The request body must be a JSON-patch list of operations.")
        with self.db.session() as session:
            image = self.load(session, ctx, image_id)
            self.require_owner(ctx, image, "modify_image")
            for op in patch:
                self._apply(ctx, image, op)
            self._check_counts(image)
            image.updated_at = datetime.now(UTC)
            session.flush()
            return self.view(image)

    def _apply(self, ctx: RequestContext, image: Image, op: Any) -> None:
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
            raise BadRequest(f"Invalid JSON-patch operation: {show(op)}. Supported: add, "
                             "replace, remove.")
        path = op.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path == "/":
            raise BadRequest(f"Invalid JSON pointer: {show(path)}.")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
        if parts[0] == "tags" and len(parts) == 2 and parts[1] == "-" and op["op"] == "add":
            self._set(ctx, image, "tags", [t.value for t in image.tags] + [op.get("value")])
            return
        if parts[0] in ("locations", "location"):
            # Glance: 403 when show_multiple_locations is off; strato has no store a
            # client could point a location at (no http store) when it is on.
            if not self.conf.image.show_multiple_locations:
                raise Forbidden(f"It's not allowed to {op['op']} locations if locations "
                                "are invisible.")
            raise Forbidden("Setting image locations is not supported: this image "
                            "service has no store a client-given location could name.")
        if len(parts) != 1:
            raise BadRequest(f"Invalid JSON pointer: {show(path)}.")
        key = parts[0]
        if op["op"] == "remove":
            self._unset(image, key)
            return
        if "value" not in op:
            raise BadRequest(f"Operation {op['op']} on {path} needs a value.")
        if op["op"] == "replace" and key not in CORE and key not in READ_ONLY and not any(
                p.name == key for p in image.properties):
            raise Conflict(f"Property {key} does not exist.")
        self._set(ctx, image, key, op["value"])

    def delete(self, ctx: RequestContext, image_id: str) -> None:
        """Glance's delete, honest whatever the store does.

        The record goes to ``pending_delete`` in the same transaction as an
        ``image.delete`` job, then the request tries to finish at once (seed 002's
        order: data, then record).  Clones that still need the data: 409 naming them,
        the image back as it was (nothing was removed).  Any other failure: 204 all the
        same, the image stays ``pending_delete`` (hidden from lists) and the job
        finishes the delete; a record never says ``active`` once data went.
        """
        with self.db.session() as session:
            image = self.load(session, ctx, image_id)
            self.policy.enforce(ctx, "delete_image", self._target(image))
            refusals = self.delete_refusals(ctx, image)
            if refusals:
                raise refusals[0][1]
            self.start_delete(session, image)
        try:
            self.finish_delete(image_id)
        except InUseByStore as exc:
            raise Conflict(f"Image {image_id} could not be deleted because it is in use: "
                           f"volumes or instances were cloned from it ({exc}).") from None
        except Exception as exc:  # noqa: BLE001 - the job finishes it; the client is done
            LOG.warning("image %s: delete not finished at once (%s: %s); job image.delete "
                        "will finish it", image_id, type(exc).__name__, exc)

    @staticmethod
    def delete_refusals(ctx: RequestContext, image: Image) -> list[tuple[str, StratoError]]:
        """Why the delete refuses ``image`` before touching its data, as (reason, error)
        in the order it checks them; [] when it goes on (clones that need the data still
        refuse it then: the store's InUseByStore, 409).  Shared by the delete and the
        lineage API's delete blockers."""
        out: list[tuple[str, StratoError]] = []
        if not ctx.is_admin and image.owner != ctx.project_id:
            out.append(("not_owner", Forbidden(
                f"You are not permitted to modify image {image.id}.")))
        if image.protected:
            out.append(("protected", Forbidden(
                f"Image {image.id} is protected and cannot be deleted.")))
        if image.status == "pending_delete":
            out.append(("busy", Conflict(f"Image {image.id} is being deleted.")))
        return out

    def start_delete(self, session: Session, image: Image) -> None:
        """``pending_delete`` and the job that finishes the delete, in the caller's
        transaction.  The job waits a lease first: the caller usually finishes at once."""
        previous, image.status = image.status, "pending_delete"
        image.updated_at = datetime.now(UTC)
        enqueue(session, "image.delete", self._delete_payload(image.id, previous,
                                                              image.location),
                delay=self.conf.jobs.lease_seconds, max_attempts=10)

    def _delete_payload(self, image_id: str, previous: str, location: str | None
                        ) -> dict[str, Any]:
        holds = None
        if location is not None:
            try:
                holds = self.store.holds(location)
            except Exception as exc:  # noqa: BLE001 - only a crash's leftover is at stake
                LOG.warning("image %s: cannot tell what its data holds: %s", image_id, exc)
        return {"image_id": image_id, "previous": previous, "holds": holds}

    def finish_delete(self, image_id: str) -> dict[str, Any]:
        """Remove a ``pending_delete`` image's data, then its record (idempotent: the
        request, the job and recovery all call it).  InUseByStore: clones need the
        data and nothing was removed; the image goes back to the status it had and its
        job is cancelled.  Other errors leave it ``pending_delete`` for a retry."""
        with self.db.session(readonly=True) as session:
            image = session.get(Image, image_id)
            if image is None or image.status != "pending_delete":
                return {"skipped": image.status if image else "gone"}
            location = image.location
            extras = dict(image.extra_locations or {})
            holds = next((j.payload.get("holds") for j in session.scalars(
                self._delete_jobs(image_id)) if j.payload.get("holds")), None)
        crash.fault("image.delete", "before-data")
        left: dict[str, str] | None = None
        if location is not None:
            try:
                self.store.delete(location)
            except NotFoundInStore:
                LOG.warning("image %s: data already gone from %s", image_id, location)
            except InUseByStore:
                self._undelete(image_id)
                raise
            except LeftBehind as exc:
                LOG.warning("image %s: %s; job image.release will retry", image_id, exc)
                left = exc.garbage
        for store_id, extra in extras.items():  # the copies in other stores (no clones)
            try:
                self.store.delete(extra)
            except NotFoundInStore:
                LOG.info("image %s: its copy in %s was gone already", image_id, store_id)
        if left is None and holds:  # a delete cut off after the data went: release it
            try:
                self.store.release(holds)
            except Exception as exc:  # noqa: BLE001 - the job image.release retries
                LOG.warning("image %s: %s not released yet: %s", image_id, holds, exc)
                left = holds
        with contextlib.suppress(FileNotFoundError):  # data staged, never imported
            staged_path(self.conf, image_id).unlink()
        crash.fault("image.delete", "before-record")
        with self.db.session() as session:
            image = session.get(Image, image_id)
            if image is not None:
                session.delete(image)
            if left is not None:
                enqueue(session, "image.release", left, max_attempts=10)
            self._drop_delete_jobs(session, image_id)
        return {"deleted": image_id, **({"left_behind": left} if left else {})}

    def _undelete(self, image_id: str) -> None:
        """The data could not go and none of it went: the status it had, no job."""
        with self.db.session() as session:
            previous = "active"
            for job in session.scalars(self._delete_jobs(image_id)):
                previous = str(job.payload.get("previous") or previous)
            session.execute(update(Image).where(
                Image.id == image_id, Image.status == "pending_delete").values(
                status=previous, updated_at=datetime.now(UTC)))
            self._drop_delete_jobs(session, image_id)

    @staticmethod
    def _delete_jobs(image_id: str) -> Any:
        return select(Job).where(Job.name == "image.delete", Job.state.in_(
            (PENDING, RUNNING))).where(Job.payload["image_id"].as_string() == image_id)

    @staticmethod
    def _drop_delete_jobs(session: Session, image_id: str) -> None:
        """Pending ``image.delete`` jobs of the image have nothing left to do."""
        for job in session.scalars(ImageAPI._delete_jobs(image_id)):
            if job.state == PENDING:
                session.delete(job)

    def ensure_delete_jobs(self) -> int:
        """Every ``pending_delete`` image has a job that finishes its delete (rows left
        by a crash, by older code, or whose job ran out of attempts).  Returns how many
        jobs were added."""
        added = 0
        with self.db.session() as session:
            for image in session.scalars(select(Image).where(
                    Image.status == "pending_delete")):
                if session.scalars(self._delete_jobs(image.id)).first() is None:
                    enqueue(session, "image.delete", self._delete_payload(
                        image.id, "active", image.location), max_attempts=10)
                    added += 1
        return added

    def _set_status(self, image_id: str, expected: str, new: str, **values: Any) -> bool:
        """A conditional state change: False when the image is not in ``expected``."""
        with self.db.session() as session:
            result = session.execute(
                update(Image).where(Image.id == image_id, Image.status == expected)
                .values(status=new, updated_at=datetime.now(UTC), **values))
            return result.rowcount == 1

    def set_failed_import(self, image_id: str, store: str) -> None:
        """Glance's ``os_glance_failed_import``: the stores an import did not reach
        (a reserved name, so set here, never by a client)."""
        with self.db.session() as session:
            image = session.get(Image, image_id)
            if image is None:
                return
            key = "os_glance_failed_import"
            prop = next((p for p in image.properties if p.name == key), None)
            if prop is None:
                image.properties.append(ImageProperty(name=key, value=store))
            else:
                prop.value = store

    def set_properties(self, image_id: str, properties: dict[str, str],
                       activate: bool = False, hash_after: bool = False,
                       **values: Any) -> bool:
        """Properties (and columns) strato itself sets on a queued image, in one
        transaction; ``activate``: and queued -> active, for data strato placed itself
        (a snapshot's clone, or none for a volume-backed snapshot), with ``hash_after``
        the job that computes its checksums.  False when the image is no longer queued."""
        with self.db.session() as session:
            image = session.scalars(select(Image).where(
                Image.id == image_id, Image.status == "queued")
                .with_for_update()).first()
            if image is None:
                return False
            for key, value in properties.items():
                self._check_property(key, value)
                prop = next((p for p in image.properties if p.name == key), None)
                if prop is None:
                    image.properties.append(ImageProperty(name=key, value=value))
                else:
                    prop.value = value
            for key, value in values.items():
                setattr(image, key, value)
            image.updated_at = datetime.now(UTC)
            if activate:
                image.status = "active"
            if hash_after:
                enqueue(session, "image.hash", {"image_id": image_id}, max_attempts=3)
            return True

    def set_hashes(self, image_id: str, location: str, md5: str, sha512: str) -> bool:
        """Checksums computed after activation (the hash pass of a cloned snapshot);
        only while the image still holds the data that was hashed."""
        with self.db.session() as session:
            return session.execute(update(Image).where(
                Image.id == image_id, Image.location == location,
                Image.checksum.is_(None)).values(
                checksum=md5, os_hash_algo="sha512", os_hash_value=sha512)).rowcount == 1

    # ------------------------------------------------------------ actions and tags
    def deactivate(self, ctx: RequestContext, image_id: str) -> None:
        self._toggle(ctx, image_id, "deactivate", "active", "deactivated")

    def reactivate(self, ctx: RequestContext, image_id: str) -> None:
        self._toggle(ctx, image_id, "reactivate", "deactivated", "active")

    def _toggle(self, ctx: RequestContext, image_id: str, rule: str, src: str,
                dst: str) -> None:
        with self.db.session(readonly=True) as session:
            image = self.load(session, ctx, image_id)
            self.policy.enforce(ctx, rule, self._target(image))
            status = image.status
        if status == dst:
            return
        if status != src or not self._set_status(image_id, src, dst):
            raise Forbidden(f"Not allowed to {rule} image in status '{status}'.")

    def add_tag(self, ctx: RequestContext, image_id: str, tag: str) -> None:
        self.update(ctx, image_id, [{"op": "add", "path": "/tags/-", "value": tag}])

    def delete_tag(self, ctx: RequestContext, image_id: str, tag: str) -> None:
        with self.db.session() as session:
            image = self.load(session, ctx, image_id)
            self.require_owner(ctx, image, "modify_image")
            remaining = [t for t in image.tags if t.value != tag]
            if len(remaining) == len(image.tags):
                raise NotFound(f"Tag {tag} not found.")
            image.tags = remaining

    # ------------------------------------------------------------ members
    def member_view(self, m: ImageMember) -> dict[str, Any]:
        return {"image_id": m.image_id, "member_id": m.member, "status": m.status,
                "created_at": iso(m.created_at), "updated_at": iso(m.updated_at),
                "schema": "/v2/schemas/member"}

    def add_member(self, ctx: RequestContext, image_id: str, body: Any) -> dict[str, Any]:
        member = body.get("member") if isinstance(body, dict) else None
        if not isinstance(member, str) or not member:
            raise BadRequest("Request body must name a 'member' (a project id).")
        with self.db.session() as session:
            image = self.load(session, ctx, image_id)
            self.policy.enforce(ctx, "add_member", self._target(image))
            if not ctx.is_admin and image.owner != ctx.project_id:
                raise Forbidden("Only the image owner can add members.")
            if image.visibility != "shared":
                raise Forbidden(f"Image {image_id} is not shared: only shared images have "
                                "members.")
            if session.get(ImageMember, (image_id, member)) is not None:
                raise Conflict(f"Member {member} already has access to image {image_id}.")
            count = session.scalar(select(func.count()).select_from(ImageMember).where(
                ImageMember.image_id == image_id))
            if _over(self.quotas.members, count + 1):
                raise OverLimit(f"Maximum number of image members exceeded. Attempted: "
                                f"{count + 1}, Maximum: {self.quotas.members}")
            record = ImageMember(image_id=image_id, member=member, status="pending")
            session.add(record)
            session.flush()
            return self.member_view(record)

    def list_members(self, ctx: RequestContext, image_id: str) -> list[dict[str, Any]]:
        with self.db.session(readonly=True) as session:
            image = self.load(session, ctx, image_id)
            self.policy.enforce(ctx, "get_members", self._target(image))
            if image.visibility != "shared":
                raise Forbidden(f"Image {image_id} is not shared: only shared images have "
                                "members.")
            query = select(ImageMember).where(ImageMember.image_id == image_id)
            if not ctx.is_admin and image.owner != ctx.project_id:
                query = query.where(ImageMember.member == ctx.project_id)
            return [self.member_view(m) for m in session.scalars(query)]

    def get_member(self, ctx: RequestContext, image_id: str, member: str) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            image = self.load(session, ctx, image_id)
            self.policy.enforce(ctx, "get_member", self._target(image))
            record = session.get(ImageMember, (image_id, member))
            if record is None or (not ctx.is_admin and ctx.project_id not in (
                    image.owner, member)):
                raise NotFound(f"Member {member} not found for image {image_id}.")
            return self.member_view(record)

    def update_member(self, ctx: RequestContext, image_id: str, member: str,
                      body: Any) -> dict[str, Any]:
        status = body.get("status") if isinstance(body, dict) else None
        if status not in MEMBER_STATUSES:
            raise BadRequest(f"Invalid member status {status!r}: one of "
                             f"{', '.join(MEMBER_STATUSES)}.")
        with self.db.session() as session:
            self.load(session, ctx, image_id)
            self.policy.enforce(ctx, "modify_member", {"project_id": member})
            record = session.get(ImageMember, (image_id, member))
            if record is None:
                raise NotFound(f"Member {member} not found for image {image_id}.")
            if ctx.project_id != member:
                raise Forbidden("Only the member itself can accept or reject an image.")
            record.status = status
            record.updated_at = datetime.now(UTC)
            return self.member_view(record)

    def delete_member(self, ctx: RequestContext, image_id: str, member: str) -> None:
        with self.db.session() as session:
            image = self.load(session, ctx, image_id)
            self.policy.enforce(ctx, "delete_member", self._target(image))
            if not ctx.is_admin and image.owner != ctx.project_id:
                raise Forbidden("Only the image owner can remove members.")
            record = session.get(ImageMember, (image_id, member))
            if record is None:
                raise NotFound(f"Member {member} not found for image {image_id}.")
            session.delete(record)
