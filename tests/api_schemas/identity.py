"""Identity (Keystone v3) response shapes, from the Identity API v3 reference.

Each schema is exactly the reference's field list for that call: every listed field
required unless the reference marks it optional, nothing else allowed.
"""

from __future__ import annotations

from tests.api_schemas import BOOLEAN, NULLABLE_STRING, STRING, strict

SELF_LINK = strict({"self": STRING})
LIST_LINKS = strict({"self": STRING, "next": NULLABLE_STRING, "previous": NULLABLE_STRING})
TAGS = {"type": "array", "items": STRING}
OPTIONS = {"type": "object"}
NAMED_REF = strict({"id": STRING, "name": STRING})


def listing(key: str, item: dict) -> dict:
    """A collection: ``{key: [...], "links": {self, next, previous}}``."""
    return strict({key: {"type": "array", "items": item}, "links": LIST_LINKS})


VERSION = strict({
    "id": STRING, "status": STRING, "updated": STRING,
    "links": {"type": "array", "items": strict({"rel": STRING, "href": STRING})},
    "media-types": {"type": "array", "items": strict({"base": STRING, "type": STRING})},
})
VERSIONS = strict({"versions": strict({"values": {"type": "array", "items": VERSION}})})
V3 = strict({"version": VERSION})

DOMAIN = strict({"id": STRING, "name": STRING, "description": STRING, "enabled": BOOLEAN,
                 "tags": TAGS, "options": OPTIONS, "links": SELF_LINK})
PROJECT = strict({"id": STRING, "name": STRING, "domain_id": STRING, "description": STRING,
                  "enabled": BOOLEAN, "parent_id": STRING, "is_domain": BOOLEAN,
                  "tags": TAGS, "options": OPTIONS, "links": SELF_LINK})
USER = strict({"id": STRING, "name": STRING, "domain_id": STRING, "enabled": BOOLEAN,
               "password_expires_at": NULLABLE_STRING, "options": OPTIONS,
               "links": SELF_LINK, "default_project_id": STRING, "description": STRING,
               "email": STRING},
              optional=("default_project_id", "description", "email"))
ROLE = strict({"id": STRING, "name": STRING, "domain_id": NULLABLE_STRING,
               "description": STRING, "options": OPTIONS, "links": SELF_LINK})
GROUP = strict({"id": STRING, "name": STRING, "domain_id": STRING, "description": STRING,
                "links": SELF_LINK})
SERVICE = strict({"id": STRING, "type": STRING, "name": STRING, "description": STRING,
                  "enabled": BOOLEAN, "links": SELF_LINK})
ENDPOINT = strict({"id": STRING, "service_id": STRING, "interface": STRING,
                   "region": NULLABLE_STRING, "region_id": NULLABLE_STRING, "url": STRING,
                   "enabled": BOOLEAN, "links": SELF_LINK})
REGION = strict({"id": STRING, "description": STRING, "parent_region_id": NULLABLE_STRING,
                 "links": SELF_LINK})
CREDENTIAL = strict({"id": STRING, "user_id": STRING, "project_id": NULLABLE_STRING,
                     "type": STRING, "blob": STRING, "links": SELF_LINK})
EC2_CREDENTIAL = strict({"user_id": STRING, "tenant_id": STRING, "access": STRING,
                         "secret": STRING, "trust_id": NULLABLE_STRING, "links": SELF_LINK})
POLICY = strict({"id": STRING, "type": STRING, "blob": STRING, "links": SELF_LINK})

_APP_CRED = {"id": STRING, "name": STRING, "description": NULLABLE_STRING,
             "user_id": STRING, "project_id": STRING,
             "roles": {"type": "array", "items": strict({
                 "id": STRING, "name": STRING, "domain_id": NULLABLE_STRING})},
             "expires_at": NULLABLE_STRING, "unrestricted": BOOLEAN,
             "access_rules": {"type": "array"}, "links": SELF_LINK}
APP_CRED = strict(_APP_CRED)
APP_CRED_CREATED = strict({**_APP_CRED, "secret": STRING})  # the secret: at creation only

_LINKED_REF = strict({"id": STRING, "name": STRING, "links": SELF_LINK})
ROLE_INFERENCE = strict({"role_inference": strict({
    "prior_role": _LINKED_REF, "implies": _LINKED_REF, "links": SELF_LINK})})
ROLE_INFERENCES_OF = strict({"role_inference": strict({
    "prior_role": _LINKED_REF, "implies": {"type": "array", "items": _LINKED_REF}}),
    "links": SELF_LINK})

ROLE_INFERENCES = strict({"role_inferences": {"type": "array", "items": strict({
    "prior_role": _LINKED_REF, "implies": {"type": "array", "items": _LINKED_REF}})},
    "links": SELF_LINK})

PROJECT_TAGS = strict({"tags": TAGS, "links": SELF_LINK})

_ID = strict({"id": STRING})
ROLE_ASSIGNMENT = strict({
    "role": _ID, "user": _ID, "group": _ID,
    "scope": strict({"project": _ID, "domain": _ID, "system": strict({"all": BOOLEAN}),
                     "OS-INHERIT:inherited_to": {"const": "projects"}},
                    optional=("project", "domain", "system", "OS-INHERIT:inherited_to")),
    "links": strict({"assignment": STRING, "membership": STRING},
                    optional=("membership",)),
}, optional=("user", "group"))

CATALOG_ENTRY = strict({"id": STRING, "type": STRING, "name": STRING,
                        "endpoints": {"type": "array", "items": strict({
                            "id": STRING, "interface": STRING,
                            "region": NULLABLE_STRING, "region_id": NULLABLE_STRING,
                            "url": STRING})}})
CATALOG = {"type": "array", "items": CATALOG_ENTRY}

_TOKEN_COMMON = {
    "methods": {"type": "array", "items": STRING},
    "audit_ids": {"type": "array", "items": STRING},
    "expires_at": STRING, "issued_at": STRING,
    "user": strict({"id": STRING, "name": STRING, "domain": NAMED_REF,
                    "password_expires_at": NULLABLE_STRING}),
}
_ROLES = {"type": "array", "items": NAMED_REF}
TOKEN_UNSCOPED = strict({"token": strict(_TOKEN_COMMON)})
TOKEN_PROJECT = strict({"token": strict({
    **_TOKEN_COMMON, "project": strict({"id": STRING, "name": STRING, "domain": NAMED_REF}),
    "roles": _ROLES, "is_domain": BOOLEAN, "catalog": CATALOG,
    "application_credential": strict({"id": STRING, "name": STRING,
                                      "restricted": BOOLEAN}),
}, optional=("catalog", "application_credential"))})
TOKEN_DOMAIN = strict({"token": strict({**_TOKEN_COMMON, "domain": NAMED_REF,
                                        "roles": _ROLES, "catalog": CATALOG},
                                       optional=("catalog",))})
TOKEN_SYSTEM = strict({"token": strict({**_TOKEN_COMMON,
                                        "system": strict({"all": BOOLEAN}),
                                        "roles": _ROLES, "catalog": CATALOG},
                                       optional=("catalog",))})

FAULT = strict({"error": strict({"code": {"type": "integer"}, "title": STRING,
                                 "message": STRING})})
