"""Cinder's QoS specs (``/qos-specs``): named I/O limits associated with volume types.

Specs whose consumer is ``front-end`` or ``both`` reach the hypervisor in an
attachment's connection info (``front_end_specs``, as Cinder's
``_parse_connection_options`` does, ``*_per_gb`` turned into absolute values for the
volume's size) and QEMU throttles the guest's drive (``strato.virt.qemu.throttle``,
Nova's libvirt mapping).  ``back-end`` specs are kept and shown; no backend here consumes
them.  Like Cinder, an association applies to attachments made after it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, object_session

from strato import events
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound
from strato.volume.api import NAME_MAX, VolumeAPI, iso
from strato.volume.models import QosSpecs, VolumeType

CONSUMERS = ("front-end", "back-end", "both")
#: Cinder's per-GB options (``<option>_per_gb``, ``_per_gb_min``, and ``<option>_max``
#: capping the computed value)
PER_GB = ("read_iops_sec", "read_bytes_sec", "write_iops_sec", "write_bytes_sec",
          "total_iops_sec", "total_bytes_sec")
POLICY = "volume_extension:qos_specs_manage:"


def front_end_specs(qos: QosSpecs | None, size_gb: int) -> dict[str, str] | None:
    """What Cinder puts in ``connection_info['data']['qos_specs']``: the specs of a
    front-end (or both) QoS with the per-GB options resolved; None otherwise."""
    if qos is None or qos.consumer not in ("front-end", "both"):
        return None
    specs = dict(qos.specs or {})
    for option in PER_GB:
        per_gb = f"{option}_per_gb"
        if per_gb not in specs:
            continue
        try:
            minimum = int(specs.pop(f"{option}_per_gb_min", 0))
            value = max(minimum, int(specs.pop(per_gb)) * int(size_gb))
            specs[option] = str(min(value, int(specs.pop(f"{option}_max", value))))
        except ValueError as exc:
            raise BadRequest(f"Invalid QoS spec {per_gb}: an integer is required.") from exc
    return specs


def _specs(value: Any, field: str = "qos_specs", nullable: bool = False
           ) -> dict[str, str | None]:
    """Cinder's spec map: string keys, values strings (numbers kept as strings, as its
    string fields coerce them); ``None`` only where the schema allows it (set)."""
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input for field/attribute {field}: an object is "
                         "required.")
    out: dict[str, str | None] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= NAME_MAX:
            raise BadRequest(f"Invalid input for field/attribute {field}: keys must be "
                             f"strings of 1-{NAME_MAX} characters.")
        if val is None and nullable:
            out[key] = None
            continue
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise BadRequest(f"Invalid input for field/attribute {field}: value of {key} "
                             "must be a string.")
        if len(str(val)) > NAME_MAX:
            raise BadRequest(f"Invalid input for field/attribute {field}: value of {key} "
                             f"is longer than {NAME_MAX} characters.")
        out[key] = str(val)
    return out


def _consumer(value: Any) -> str:
    if value not in CONSUMERS:
        raise BadRequest(f"Invalid input received: Valid consumer of QoS specs are: "
                         f"{list(CONSUMERS)}")
    return str(value)


class QosSpecsAPI:
    def __init__(self, api: VolumeAPI) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy

    # ------------------------------------------------------------ views
    def view(self, row: QosSpecs) -> dict[str, Any]:
        return {"id": row.id, "name": row.name, "consumer": row.consumer,
                "specs": dict(row.specs or {})}

    def links(self, row: QosSpecs, project_id: str) -> list[dict[str, str]]:
        base = f"{self.api.conf.public_endpoint}/volume"
        return [{"rel": "self", "href": f"{base}/v3/{project_id}/qos-specs/{row.id}"},
                {"rel": "bookmark", "href": f"{base}/{project_id}/qos-specs/{row.id}"}]

    def _get(self, session: Session, specs_id: str) -> QosSpecs:
        row = session.get(QosSpecs, specs_id)
        if row is None:
            raise NotFound(f"QoS Specs {specs_id} could not be found.")
        return row

    @staticmethod
    def _type(session: Session, type_id: str | None) -> VolumeType:
        if not type_id:
            raise BadRequest("Volume Type id must not be None.")
        vtype = session.get(VolumeType, type_id)
        if vtype is None:
            raise NotFound(f"Volume type with id {type_id} could not be found.")
        return vtype

    # ------------------------------------------------------------ CRUD
    def list(self, ctx: RequestContext, params: dict[str, str]) -> list[dict[str, Any]]:
        """Cinder's filters (``id``, ``name``, ``consumer``), oldest first."""
        self.policy.enforce(ctx, POLICY + "get_all", {})
        query = select(QosSpecs).order_by(QosSpecs.created_at, QosSpecs.id)
        for key, column in (("id", QosSpecs.id), ("name", QosSpecs.name),
                            ("consumer", QosSpecs.consumer)):
            if params.get(key):
                query = query.where(column == params[key])
        with self.db.session(readonly=True) as session:
            return [self.view(r) for r in session.scalars(query)]

    def show(self, ctx: RequestContext, specs_id: str) -> tuple[dict[str, Any], QosSpecs]:
        self.policy.enforce(ctx, POLICY + "get", {})
        with self.db.session(readonly=True) as session:
            row = self._get(session, specs_id)
            session.expunge(row)
            return self.view(row), row

    def create(self, ctx: RequestContext, body: Any) -> tuple[dict[str, Any], QosSpecs]:
        self.policy.enforce(ctx, POLICY + "create", {})
        if not isinstance(body, dict) or set(body) != {"qos_specs"} or not isinstance(
                body["qos_specs"], dict):
            raise BadRequest("Invalid input: the body must be {'qos_specs': {...}}.")
        ref = dict(body["qos_specs"])
        name = ref.pop("name", None)
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
            raise BadRequest(f"Invalid input for field/attribute name: a string of "
                             f"1-{NAME_MAX} characters, not only spaces, is required.")
        name = name.strip()
        consumer = _consumer(ref.pop("consumer")) if "consumer" in ref else "back-end"
        specs = _specs(ref)
        with self.db.session() as session:
            if session.scalars(select(QosSpecs.id).where(QosSpecs.name == name)).first():
                raise Conflict(f"QoS Specs {name} already exists.")
            row = QosSpecs(id=str(uuid.uuid4()), name=name, consumer=consumer, specs=specs)
            session.add(row)
            events.emit(session, "volume", "qos_specs.create", row.id, None, name=name,
                        consumer=consumer, specs=specs)
            session.flush()
            session.expunge(row)
            return self.view(row), row

    def update(self, ctx: RequestContext, specs_id: str, body: Any) -> dict[str, Any]:
        """Merge keys (``consumer`` changes the consumer); answers the request's map."""
        self.policy.enforce(ctx, POLICY + "update", {})
        if not isinstance(body, dict) or set(body) != {"qos_specs"}:
            raise BadRequest("Invalid input: the body must be {'qos_specs': {...}}.")
        given = _specs(body["qos_specs"], nullable=True)
        with self.db.session() as session:
            row = self._get(session, specs_id)
            specs = dict(row.specs or {})
            for key, value in given.items():
                if key == "consumer":
                    row.consumer = _consumer(value)
                else:
                    specs[key] = value
            row.specs = specs
            row.updated_at = datetime.now(UTC)
            events.emit(session, "volume", "qos_specs.update", row.id, None,
                        specs=given)
        return {"qos_specs": body["qos_specs"]}

    def delete(self, ctx: RequestContext, specs_id: str, force: bool) -> None:
        """In use (associated) and not forced: 400 as Cinder; forced: disassociated first."""
        self.policy.enforce(ctx, POLICY + "delete", {})
        with self.db.session() as session:
            row = self._get(session, specs_id)
            used = session.scalars(select(VolumeType.id).where(
                VolumeType.qos_specs_id == row.id)).first()
            if used and not force:
                raise BadRequest("Qos specs still in use.")
            session.execute(update(VolumeType).where(VolumeType.qos_specs_id == row.id)
                            .values(qos_specs_id=None))
            session.delete(row)
            events.emit(session, "volume", "qos_specs.delete", specs_id, None,
                        created_at=iso(row.created_at))

    def delete_keys(self, ctx: RequestContext, specs_id: str, body: Any) -> None:
        self.policy.enforce(ctx, POLICY + "delete", {})
        keys = body.get("keys") if isinstance(body, dict) and set(body) == {"keys"} else None
        if not isinstance(keys, list) or not all(
                isinstance(k, str) and 0 < len(k) <= NAME_MAX for k in keys) or len(
                set(keys)) != len(keys):
            raise BadRequest("Invalid input for field/attribute keys: a list of unique "
                             "strings is required.")
        with self.db.session() as session:
            row = self._get(session, specs_id)
            specs = dict(row.specs or {})
            missing = [k for k in keys if k not in specs]
            if missing:
                raise NotFound(f"QoS spec {missing[0]} cannot be found for QoS Specs "
                               f"{specs_id}.")
            for key in keys:
                del specs[key]
            row.specs = specs
            row.updated_at = datetime.now(UTC)

    # ------------------------------------------------------------ associations
    def associations(self, ctx: RequestContext, specs_id: str) -> list[dict[str, str]]:
        self.policy.enforce(ctx, POLICY + "get_all", {})
        with self.db.session(readonly=True) as session:
            self._get(session, specs_id)
            return [{"association_type": "volume_type", "name": t.name, "id": t.id}
                    for t in session.scalars(select(VolumeType).where(
                        VolumeType.qos_specs_id == specs_id).order_by(VolumeType.name))]

    def associate(self, ctx: RequestContext, specs_id: str, type_id: str | None) -> None:
        """A type has at most one QoS: another one already there is a 400 (Cinder)."""
        self.policy.enforce(ctx, POLICY + "update", {})
        if not type_id:
            raise BadRequest("Volume Type id must not be None.")
        with self.db.session() as session:
            self._get(session, specs_id)
            vtype = self._type(session, type_id)
            if vtype.qos_specs_id not in (None, specs_id):
                raise BadRequest(f"Invalid volume type: Type {type_id} is already "
                                 f"associated with another qos specs: "
                                 f"{vtype.qos_specs_id}")
            vtype.qos_specs_id = specs_id
            events.emit(session, "volume", "qos_specs.associate", specs_id, None,
                        type_id=type_id)

    def disassociate(self, ctx: RequestContext, specs_id: str, type_id: str | None) -> None:
        self.policy.enforce(ctx, POLICY + "update", {})
        if not type_id:
            raise BadRequest("Volume Type id must not be None.")
        with self.db.session() as session:
            self._get(session, specs_id)
            vtype = self._type(session, type_id)
            if vtype.qos_specs_id == specs_id:
                vtype.qos_specs_id = None
            events.emit(session, "volume", "qos_specs.disassociate", specs_id, None,
                        type_id=type_id)

    def disassociate_all(self, ctx: RequestContext, specs_id: str) -> None:
        self.policy.enforce(ctx, POLICY + "update", {})
        with self.db.session() as session:
            self._get(session, specs_id)
            session.execute(update(VolumeType).where(VolumeType.qos_specs_id == specs_id)
                            .values(qos_specs_id=None))
            events.emit(session, "volume", "qos_specs.disassociate_all", specs_id, None)


def type_qos(session: Session, type_id: str | None) -> QosSpecs | None:
    """The QoS specs associated with a volume type (None: no type or no QoS)."""
    if not type_id:
        return None
    qos_id = session.scalars(select(VolumeType.qos_specs_id).where(
        VolumeType.id == type_id)).first()
    return session.get(QosSpecs, qos_id) if qos_id else None


def connection_specs(db: Any, vol: Any) -> dict[str, str] | None:
    """``connection_info['data']['qos_specs']`` of ``vol`` now (in its own session when
    it has one, the caller's transaction)."""
    session = object_session(vol)
    if session is not None:
        return front_end_specs(type_qos(session, vol.volume_type_id), vol.size)
    with db.session(readonly=True) as own:
        return front_end_specs(type_qos(own, vol.volume_type_id), vol.size)
