"""Glance's metadata-definition catalog (``/v2/metadefs``): namespaces and, inside each,
resource type associations, property definitions, objects and tags.

It is a catalog of what image/volume/flavor properties mean (for dashboards and
clients); nothing in strato acts on it.  Reads follow visibility (public namespaces for
everyone, private ones for their owner and admins); writes are admin-only, Glance's
default policy.  A namespace's parts are small documents kept in JSON columns of its
row: every change rewrites them whole, in one transaction with the namespace.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, Forbidden, NotFound
from strato.image.api import ImageAPI, iso
from strato.image.models import MetadefNamespace

# The resource types Glance's catalog seeds (what a namespace may apply to).
RESOURCE_TYPES = ("OS::Cinder::Volume", "OS::Glance::Image", "OS::Glance::Snapshot",
                  "OS::Nova::Aggregate", "OS::Nova::Flavor", "OS::Nova::Server",
                  "OS::Trove::Instance")
_EPOCH = "2026-01-01T00:00:00Z"
_PROPERTY_TYPES = ("array", "boolean", "integer", "number", "object", "string")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(value: Any, what: str, limit: int = 255) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise BadRequest(f"Invalid {what} name: a string of 1 to {limit} characters.")
    return value


def _str_or_none(body: dict[str, Any], key: str, limit: int | None = None) -> None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str)
                              or (limit is not None and len(value) > limit)):
        raise BadRequest(f"Invalid value for {key}: a string"
                         + (f" of at most {limit} characters." if limit else "."))


class Metadefs:
    def __init__(self, api: ImageAPI) -> None:
        self.api = api
        self.db = api.db
        self.policy = api.policy

    # ------------------------------------------------------------ access
    def _read(self, ctx: RequestContext, rule: str) -> None:
        self.policy.enforce(ctx, rule, {"project_id": ctx.project_id})

    def _write(self, ctx: RequestContext, rule: str) -> None:
        self.policy.enforce(ctx, rule, {"project_id": ctx.project_id})

    def _visible(self, ctx: RequestContext) -> Any:
        if ctx.is_admin:
            return True
        return or_(MetadefNamespace.visibility == "public",
                   MetadefNamespace.owner == ctx.project_id)

    def _load(self, session: Session, ctx: RequestContext, namespace: str,
              for_update: bool = False) -> MetadefNamespace:
        query = select(MetadefNamespace).where(MetadefNamespace.namespace == namespace,
                                               self._visible(ctx))
        if for_update:
            query = query.with_for_update()
        found = session.scalars(query).first()
        if found is None:
            raise NotFound(f"Metadata definition namespace={namespace} was not found.")
        return found

    # ------------------------------------------------------------ views
    def namespace_view(self, ns: MetadefNamespace, full: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "namespace": ns.namespace, "display_name": ns.display_name,
            "description": ns.description, "visibility": ns.visibility,
            "protected": ns.protected, "owner": ns.owner,
            "created_at": iso(ns.created_at), "updated_at": iso(ns.updated_at),
            "self": f"/v2/metadefs/namespaces/{ns.namespace}",
            "schema": "/v2/schemas/metadefs/namespace",
        }
        body = {k: v for k, v in body.items() if v is not None}
        if ns.resource_types:
            body["resource_type_associations"] = copy.deepcopy(ns.resource_types)
        if full:
            if ns.properties:
                body["properties"] = copy.deepcopy(ns.properties)
            if ns.objects:
                body["objects"] = [self._object_view(ns, o) for o in ns.objects.values()]
            if ns.tags:
                body["tags"] = [dict(t) for t in ns.tags.values()]
        return body

    @staticmethod
    def _object_view(ns: MetadefNamespace, obj: dict[str, Any]) -> dict[str, Any]:
        return {**copy.deepcopy(obj),
                "self": f"/v2/metadefs/namespaces/{ns.namespace}/objects/{obj['name']}",
                "schema": "/v2/schemas/metadefs/object"}

    # ------------------------------------------------------------ namespaces
    def _namespace_fields(self, ctx: RequestContext, body: Any,
                          ns: MetadefNamespace) -> None:
        if not isinstance(body, dict):
            raise BadRequest("Request body must be a JSON object.")
        ns.namespace = _name(body.get("namespace"), "namespace", 80)
        _str_or_none(body, "display_name", 80)
        _str_or_none(body, "description")
        ns.display_name = body.get("display_name")
        ns.description = body.get("description")
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise BadRequest(f"Invalid visibility {visibility!r}: public or private.")
        ns.visibility = visibility
        protected = body.get("protected", False)
        if not isinstance(protected, bool):
            raise BadRequest("Invalid value for protected: a boolean.")
        ns.protected = protected
        owner = body.get("owner", ns.owner or ctx.project_id)
        if owner is not None and not isinstance(owner, str):
            raise BadRequest("Invalid value for owner: a string.")
        ns.owner = owner

    def list_namespaces(self, ctx: RequestContext, params: dict[str, str]
                        ) -> dict[str, Any]:
        self._read(ctx, "get_metadef_namespaces")
        query = select(MetadefNamespace).where(self._visible(ctx))
        if params.get("visibility") in ("public", "private"):
            query = query.where(MetadefNamespace.visibility == params["visibility"])
        query = query.order_by(MetadefNamespace.created_at, MetadefNamespace.namespace)
        with self.db.session(readonly=True) as session:
            found = list(session.scalars(query))
        wanted = params.get("resource_types")
        if wanted:
            names = set(wanted.split(","))
            found = [n for n in found if names & {r["name"] for r in n.resource_types}]
        return {"namespaces": [self.namespace_view(n, full=False) for n in found],
                "first": "/v2/metadefs/namespaces",
                "schema": "/v2/schemas/metadefs/namespaces"}

    def create_namespace(self, ctx: RequestContext, body: Any) -> dict[str, Any]:
        self._write(ctx, "add_metadef_namespace")
        ns = MetadefNamespace(resource_types=[], properties={}, objects={}, tags={})
        self._namespace_fields(ctx, body, ns)
        now = _now()
        for assoc in body.get("resource_type_associations") or []:
            ns.resource_types = [*ns.resource_types, self._association(assoc, now)]
        for name, prop in (body.get("properties") or {}).items():
            ns.properties = {**ns.properties, name: self._property({**prop, "name": name})}
        for obj in body.get("objects") or []:
            made = self._object(obj, now)
            ns.objects = {**ns.objects, made["name"]: made}
        for tag in body.get("tags") or []:
            made = self._tag(tag, now)
            ns.tags = {**ns.tags, made["name"]: made}
        with self.db.session() as session:
            if session.get(MetadefNamespace, ns.namespace) is not None:
                raise Conflict(f"Metadata definition namespace={ns.namespace} already "
                               "exists.")
            session.add(ns)
            session.flush()
            return self.namespace_view(ns)

    def show_namespace(self, ctx: RequestContext, namespace: str) -> dict[str, Any]:
        self._read(ctx, "get_metadef_namespace")
        with self.db.session(readonly=True) as session:
            return self.namespace_view(self._load(session, ctx, namespace))

    def update_namespace(self, ctx: RequestContext, namespace: str, body: Any
                         ) -> dict[str, Any]:
        self._write(ctx, "modify_metadef_namespace")
        with self.db.session() as session:
            ns = self._load(session, ctx, namespace, for_update=True)
            if isinstance(body, dict) and body.get("namespace", namespace) != namespace:
                new = _name(body["namespace"], "namespace", 80)
                if session.get(MetadefNamespace, new) is not None:
                    raise Conflict(f"Metadata definition namespace={new} already exists.")
            self._namespace_fields(ctx, {"namespace": namespace, **(body or {})}
                                   if isinstance(body, dict) else body, ns)
            ns.updated_at = datetime.now(UTC)
            session.flush()
            return self.namespace_view(ns)

    def delete_namespace(self, ctx: RequestContext, namespace: str) -> None:
        self._write(ctx, "delete_metadef_namespace")
        with self.db.session() as session:
            ns = self._load(session, ctx, namespace, for_update=True)
            if ns.protected:
                raise Forbidden(f"Metadata definition namespace {namespace} is protected "
                                "and cannot be deleted.")
            session.delete(ns)

    def _change(self, ctx: RequestContext, namespace: str, rule: str, fn: Any) -> Any:
        """Run ``fn(ns)`` on the namespace's row under a lock, in one transaction."""
        self._write(ctx, rule)
        with self.db.session() as session:
            ns = self._load(session, ctx, namespace, for_update=True)
            result = fn(ns)
            ns.updated_at = datetime.now(UTC)
            session.flush()
            return result

    def _get(self, ctx: RequestContext, namespace: str, rule: str) -> MetadefNamespace:
        self._read(ctx, rule)
        with self.db.session(readonly=True) as session:
            ns = self._load(session, ctx, namespace)
            session.expunge(ns)
            return ns

    # ------------------------------------------------------------ resource types
    def list_resource_types(self, ctx: RequestContext) -> dict[str, Any]:
        self._read(ctx, "list_metadef_resource_types")
        return {"resource_types": [{"name": n, "created_at": _EPOCH, "updated_at": _EPOCH}
                                   for n in RESOURCE_TYPES]}

    @staticmethod
    def _association(body: Any, now: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("A resource type association must be an object.")
        name = _name(body.get("name"), "resource type", 80)
        if name not in RESOURCE_TYPES:
            raise NotFound(f"Resource type {name} was not found.")
        for key in ("prefix", "properties_target"):
            _str_or_none(body, key, 80)
        made = {"name": name, "created_at": now, "updated_at": now}
        made.update({k: body[k] for k in ("prefix", "properties_target")
                     if body.get(k) is not None})
        return made

    def associations(self, ctx: RequestContext, namespace: str) -> dict[str, Any]:
        ns = self._get(ctx, namespace, "list_metadef_resource_types")
        return {"resource_type_associations": copy.deepcopy(ns.resource_types)}

    def associate(self, ctx: RequestContext, namespace: str, body: Any) -> dict[str, Any]:
        made = self._association(body, _now())

        def fn(ns: MetadefNamespace) -> dict[str, Any]:
            if any(r["name"] == made["name"] for r in ns.resource_types):
                raise Conflict(f"Resource type {made['name']} is already associated with "
                               f"namespace {namespace}.")
            ns.resource_types = [*ns.resource_types, made]
            return made
        return self._change(ctx, namespace, "add_metadef_resource_type_association", fn)

    def dissociate(self, ctx: RequestContext, namespace: str, name: str) -> None:
        def fn(ns: MetadefNamespace) -> None:
            kept = [r for r in ns.resource_types if r["name"] != name]
            if len(kept) == len(ns.resource_types):
                raise NotFound(f"Resource type association {name} was not found in "
                               f"namespace {namespace}.")
            ns.resource_types = kept
        self._change(ctx, namespace, "remove_metadef_resource_type_association", fn)

    # ------------------------------------------------------------ properties
    @staticmethod
    def _property(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("A property definition must be an object.")
        _name(body.get("name"), "property")
        if not isinstance(body.get("title"), str):
            raise BadRequest("A property definition needs a 'title' (a string).")
        if body.get("type") not in _PROPERTY_TYPES:
            raise BadRequest(f"Invalid property type {body.get('type')!r}: one of "
                             f"{', '.join(_PROPERTY_TYPES)}.")
        if "enum" in body and not isinstance(body["enum"], list):
            raise BadRequest("A property's 'enum' must be a list.")
        return copy.deepcopy(body)

    def list_properties(self, ctx: RequestContext, namespace: str) -> dict[str, Any]:
        ns = self._get(ctx, namespace, "get_metadef_properties")
        return {"properties": copy.deepcopy(ns.properties)}

    def create_property(self, ctx: RequestContext, namespace: str, body: Any
                        ) -> dict[str, Any]:
        made = self._property(body)

        def fn(ns: MetadefNamespace) -> dict[str, Any]:
            if made["name"] in ns.properties:
                raise Conflict(f"Property {made['name']} already exists in namespace "
                               f"{namespace}.")
            ns.properties = {**ns.properties, made["name"]: made}
            return made
        return self._change(ctx, namespace, "add_metadef_property", fn)

    def show_property(self, ctx: RequestContext, namespace: str, name: str
                      ) -> dict[str, Any]:
        ns = self._get(ctx, namespace, "get_metadef_property")
        # "<prefix><name>" names a property through a resource type's prefix
        for assoc in ns.resource_types:
            prefix = assoc.get("prefix")
            if prefix and name.startswith(prefix) and name[len(prefix):] in ns.properties:
                name = name[len(prefix):]
        if name not in ns.properties:
            raise NotFound(f"Property {name} was not found in namespace {namespace}.")
        return copy.deepcopy(ns.properties[name])

    def update_property(self, ctx: RequestContext, namespace: str, name: str,
                        body: Any) -> dict[str, Any]:
        made = self._property(body)

        def fn(ns: MetadefNamespace) -> dict[str, Any]:
            if name not in ns.properties:
                raise NotFound(f"Property {name} was not found in namespace {namespace}.")
            if made["name"] != name and made["name"] in ns.properties:
                raise Conflict(f"Property {made['name']} already exists in namespace "
                               f"{namespace}.")
            rest = {k: v for k, v in ns.properties.items() if k != name}
            ns.properties = {**rest, made["name"]: made}
            return made
        return self._change(ctx, namespace, "modify_metadef_property", fn)

    def delete_property(self, ctx: RequestContext, namespace: str, name: str) -> None:
        def fn(ns: MetadefNamespace) -> None:
            if name not in ns.properties:
                raise NotFound(f"Property {name} was not found in namespace {namespace}.")
            ns.properties = {k: v for k, v in ns.properties.items() if k != name}
        self._change(ctx, namespace, "remove_metadef_property", fn)

    # ------------------------------------------------------------ objects
    def _object(self, body: Any, now: str, created: str | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("An object definition must be an object.")
        name = _name(body.get("name"), "object")
        _str_or_none(body, "description")
        required = body.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise BadRequest("An object's 'required' must be a list of property names.")
        props = body.get("properties", {})
        if not isinstance(props, dict):
            raise BadRequest("An object's 'properties' must be an object.")
        made: dict[str, Any] = {
            "name": name, "required": required,
            "properties": {k: self._property({**v, "name": k}) if isinstance(v, dict)
                           else self._property(v) for k, v in props.items()},
            "created_at": created or now, "updated_at": now}
        if body.get("description") is not None:
            made["description"] = body["description"]
        return made

    def list_objects(self, ctx: RequestContext, namespace: str) -> dict[str, Any]:
        ns = self._get(ctx, namespace, "get_metadef_objects")
        return {"objects": [self._object_view(ns, o) for o in ns.objects.values()],
                "schema": "v2/schemas/metadefs/objects"}

    def create_object(self, ctx: RequestContext, namespace: str, body: Any
                      ) -> dict[str, Any]:
        made = self._object(body, _now())

        def fn(ns: MetadefNamespace) -> dict[str, Any]:
            if made["name"] in ns.objects:
                raise Conflict(f"Object {made['name']} already exists in namespace "
                               f"{namespace}.")
            ns.objects = {**ns.objects, made["name"]: made}
            return self._object_view(ns, made)
        return self._change(ctx, namespace, "add_metadef_object", fn)

    def show_object(self, ctx: RequestContext, namespace: str, name: str
                    ) -> dict[str, Any]:
        ns = self._get(ctx, namespace, "get_metadef_object")
        if name not in ns.objects:
            raise NotFound(f"Object {name} was not found in namespace {namespace}.")
        return self._object_view(ns, ns.objects[name])

    def update_object(self, ctx: RequestContext, namespace: str, name: str, body: Any
                      ) -> dict[str, Any]:
        def fn(ns: MetadefNamespace) -> dict[str, Any]:
            if name not in ns.objects:
                raise NotFound(f"Object {name} was not found in namespace {namespace}.")
            made = self._object(body, _now(), ns.objects[name]["created_at"])
            if made["name"] != name and made["name"] in ns.objects:
                raise Conflict(f"Object {made['name']} already exists in namespace "
                               f"{namespace}.")
            rest = {k: v for k, v in ns.objects.items() if k != name}
            ns.objects = {**rest, made["name"]: made}
            return self._object_view(ns, made)
        return self._change(ctx, namespace, "modify_metadef_object", fn)

    def delete_object(self, ctx: RequestContext, namespace: str, name: str) -> None:
        def fn(ns: MetadefNamespace) -> None:
            if name not in ns.objects:
                raise NotFound(f"Object {name} was not found in namespace {namespace}.")
            ns.objects = {k: v for k, v in ns.objects.items() if k != name}
        self._change(ctx, namespace, "delete_metadef_object", fn)

    # ------------------------------------------------------------ tags
    @staticmethod
    def _tag(body: Any, now: str, created: str | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("A tag must be an object with a 'name'.")
        return {"name": _name(body.get("name"), "tag"), "created_at": created or now,
                "updated_at": now}

    def list_tags(self, ctx: RequestContext, namespace: str) -> dict[str, Any]:
        ns = self._get(ctx, namespace, "get_metadef_tags")
        return {"tags": [dict(t) for t in ns.tags.values()]}

    def create_tags(self, ctx: RequestContext, namespace: str, body: Any
                    ) -> dict[str, Any]:
        """``POST .../tags``: these tags replace the namespace's (Glance's default;
        ``X-Openstack-Append: true`` keeps the old ones)."""
        tags = body.get("tags") if isinstance(body, dict) else None
        if not isinstance(tags, list):
            raise BadRequest("Request body must be {'tags': [{'name': ...}, ...]}.")
        now = _now()
        made = [self._tag(t, now) for t in tags]
        names = [t["name"] for t in made]
        if len(set(names)) != len(names):
            raise Conflict("Duplicate tag names in the request.")

        def fn(ns: MetadefNamespace) -> dict[str, Any]:
            ns.tags = {t["name"]: t for t in made}
            return {"tags": [{"name": t["name"]} for t in made]}
        return self._change(ctx, namespace, "add_metadef_tags", fn)

    def delete_tags(self, ctx: RequestContext, namespace: str) -> None:
        def fn(ns: MetadefNamespace) -> None:
            ns.tags = {}
        self._change(ctx, namespace, "delete_metadef_tags", fn)

    def create_tag(self, ctx: RequestContext, namespace: str, name: str
                   ) -> dict[str, Any]:
        made = self._tag({"name": name}, _now())

        def fn(ns: MetadefNamespace) -> dict[str, Any]:
            if name in ns.tags:
                raise Conflict(f"Tag {name} already exists in namespace {namespace}.")
            ns.tags = {**ns.tags, name: made}
            return made
        return self._change(ctx, namespace, "add_metadef_tag", fn)

    def show_tag(self, ctx: RequestContext, namespace: str, name: str) -> dict[str, Any]:
        ns = self._get(ctx, namespace, "get_metadef_tag")
        if name not in ns.tags:
            raise NotFound(f"Tag {name} was not found in namespace {namespace}.")
        return dict(ns.tags[name])

    def update_tag(self, ctx: RequestContext, namespace: str, name: str, body: Any
                   ) -> dict[str, Any]:
        def fn(ns: MetadefNamespace) -> dict[str, Any]:
            if name not in ns.tags:
                raise NotFound(f"Tag {name} was not found in namespace {namespace}.")
            made = self._tag(body, _now(), ns.tags[name]["created_at"])
            if made["name"] != name and made["name"] in ns.tags:
                raise Conflict(f"Tag {made['name']} already exists in namespace "
                               f"{namespace}.")
            rest = {k: v for k, v in ns.tags.items() if k != name}
            ns.tags = {**rest, made["name"]: made}
            return made
        return self._change(ctx, namespace, "modify_metadef_tag", fn)

    def delete_tag(self, ctx: RequestContext, namespace: str, name: str) -> None:
        def fn(ns: MetadefNamespace) -> None:
            if name not in ns.tags:
                raise NotFound(f"Tag {name} was not found in namespace {namespace}.")
            ns.tags = {k: v for k, v in ns.tags.items() if k != name}
        self._change(ctx, namespace, "delete_metadef_tag", fn)
