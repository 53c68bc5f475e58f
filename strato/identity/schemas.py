"""Keystone v3 request bodies (api-ref: identity v3), bounded to strato's columns.

Names are ``String(255)``, ids ``String(64)``, descriptions ``Text`` (Keystone caps
none; 64 KiB here). Unknown attributes are Keystone's "extra" and pass through.
"""

from __future__ import annotations

from strato.validation import Arr, Bool, Obj, Str, one_of

NAME = Str(255, min=1, strip=True)
ID = Str(64)
OPT_ID = Str(64, nullable=True)
DESCRIPTION = Str(65535, nullable=True)
PASSWORD = Str(4096)  # Keystone's [identity] max_password_length

_REF = Obj({"id": ID, "name": Str(255)}, nullable=True)  # a domain by id or by name

AUTH = Obj({"auth": Obj({
    "identity": Obj({
        "methods": Arr(Str(64), max_items=8),
        "password": Obj({"user": Obj({"id": ID, "name": Str(255), "password": PASSWORD,
                                      "domain": _REF})}, nullable=True),
        "token": Obj({"id": Str(4096)}, nullable=True),
        "application_credential": Obj({
            "id": ID, "name": Str(255), "secret": PASSWORD,
            "user": Obj({"id": ID, "name": Str(255), "domain": _REF})}, nullable=True),
    }, required=("methods",)),
    "scope": one_of(
        Str(64),  # "unscoped"
        Obj({"project": Obj({"id": ID, "name": Str(255), "domain": _REF}, nullable=True),
             "domain": _REF, "system": Obj(nullable=True)}),
        nullable=True),
}, required=("identity",))}, required=("auth",))

# Keystone caps project and domain names at 64 characters (users, groups, roles 255).
SHORT_NAME = Str(64)

CREATE_DOMAIN = Obj({"domain": Obj({
    "name": SHORT_NAME, "description": DESCRIPTION, "enabled": Bool()})}, required=("domain",))
UPDATE_DOMAIN = CREATE_DOMAIN

_PROJECT = {"name": SHORT_NAME, "description": DESCRIPTION, "enabled": Bool(),
            "domain_id": OPT_ID, "parent_id": OPT_ID, "is_domain": Bool(),
            "tags": Arr(Str(255, min=1), max_items=80, nullable=True)}
CREATE_PROJECT = Obj({"project": Obj(_PROJECT)}, required=("project",))
UPDATE_PROJECT = CREATE_PROJECT

_USER = {"name": Str(255), "description": DESCRIPTION, "enabled": Bool(),
         "domain_id": OPT_ID, "default_project_id": OPT_ID,
         "password": Str(4096, nullable=True), "email": Str(255, nullable=True),
         "options": Obj(nullable=True)}
CREATE_USER = Obj({"user": Obj(_USER)}, required=("user",))
UPDATE_USER = CREATE_USER

CHANGE_PASSWORD = Obj({"user": Obj({"original_password": PASSWORD, "password": PASSWORD},
                                   required=("original_password", "password"))},
                      required=("user",))

CREATE_ROLE = Obj({"role": Obj({"name": Str(255), "description": DESCRIPTION,
                                "domain_id": OPT_ID})}, required=("role",))
UPDATE_ROLE = CREATE_ROLE

CREATE_GROUP = Obj({"group": Obj({"name": Str(255), "description": DESCRIPTION,
                                  "domain_id": OPT_ID})}, required=("group",))
UPDATE_GROUP = CREATE_GROUP

TAGS = Obj({"tags": Arr(Str(255), max_items=80)}, required=("tags",))

_URL = Str(4096)
CREATE_SERVICE = Obj({"service": Obj({"type": Str(255), "name": Str(255, nullable=True),
                                      "description": DESCRIPTION, "enabled": Bool()})},
                     required=("service",))
UPDATE_SERVICE = CREATE_SERVICE
CREATE_ENDPOINT = Obj({"endpoint": Obj({
    "service_id": ID, "interface": Str(8), "url": _URL, "region": Str(255, nullable=True),
    "region_id": Str(255, nullable=True), "enabled": Bool()})}, required=("endpoint",))
UPDATE_ENDPOINT = CREATE_ENDPOINT
CREATE_REGION = Obj({"region": Obj({"id": Str(255), "description": DESCRIPTION,
                                    "parent_region_id": Str(255, nullable=True)})},
                    required=("region",))
UPDATE_REGION = CREATE_REGION

CREATE_CREDENTIAL = Obj({"credential": Obj({
    "user_id": ID, "project_id": OPT_ID, "type": Str(255), "blob": Str(65535)},
    required=("user_id", "type", "blob"))}, required=("credential",))
UPDATE_CREDENTIAL = Obj({"credential": Obj({
    "user_id": ID, "project_id": OPT_ID, "type": Str(255), "blob": Str(65535)})},
    required=("credential",))
CREATE_POLICY = Obj({"policy": Obj({"type": Str(255), "blob": Str(65535)},
                                   required=("type", "blob"))}, required=("policy",))
UPDATE_POLICY = Obj({"policy": Obj({"type": Str(255), "blob": Str(65535)})},
                    required=("policy",))

CREATE_APP_CRED = Obj({"application_credential": Obj({
    "name": Str(255, min=1), "description": DESCRIPTION, "secret": Str(4096, nullable=True),
    "expires_at": Str(64, nullable=True), "unrestricted": Bool(),
    "roles": Arr(Obj({"id": ID, "name": Str(255)}), max_items=100),
    "access_rules": Arr(Obj(), max_items=100)}, required=("name",))},
    required=("application_credential",))

CREATE_EC2 = Obj({"tenant_id": ID}, required=("tenant_id",))

# The schema of each body an identity route reads, by the route's resource name.
CRUD = {"domain": (CREATE_DOMAIN, UPDATE_DOMAIN), "project": (CREATE_PROJECT, UPDATE_PROJECT),
        "user": (CREATE_USER, UPDATE_USER), "role": (CREATE_ROLE, UPDATE_ROLE),
        "group": (CREATE_GROUP, UPDATE_GROUP), "service": (CREATE_SERVICE, UPDATE_SERVICE),
        "endpoint": (CREATE_ENDPOINT, UPDATE_ENDPOINT), "region": (CREATE_REGION, UPDATE_REGION),
        "credential": (CREATE_CREDENTIAL, UPDATE_CREDENTIAL),
        "policy": (CREATE_POLICY, UPDATE_POLICY)}
