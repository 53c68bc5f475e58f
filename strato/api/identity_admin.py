"""Keystone v3 routes beyond the basic resources: role grants on every target
(project, domain, system, OS-INHERIT), group membership, implied roles, project tags;
and Keystone's APIs strato does not implement, answered with Keystone's 501 fault."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from strato.api.common import context, json_body, services
from strato.exceptions import Forbidden, NotSupported
from strato.identity import schemas

router = APIRouter(prefix="/identity/v3")


def _api(request: Request) -> Any:
    return services(request).identity


def _listing(request: Request, key: str, items: list) -> dict:
    return {key: items, "links": {"self": str(request.url), "next": None, "previous": None}}


def _no_content() -> Response:
    return Response(status_code=204)


# ------------------------------------------------------------------ grants
def _grant_routes(prefix: str, target_type: str, actor_type: str, inherited: bool) -> None:
    """PUT/HEAD/GET/DELETE one grant and GET the list, for one (target, actor) pair."""
    suffix = "/inherited_to_projects" if inherited else ""
    one = f"{prefix}/roles/{{role_id}}{suffix}"

    def ids(params: dict[str, str]) -> tuple[str, str]:
        return params.get("target_id", "all"), params["actor_id"]

    @router.put(one, status_code=204, name=f"grant_{prefix}_{inherited}")
    def create(request: Request) -> Response:
        target_id, actor_id = ids(request.path_params)
        _api(request).grant(context(request), "create", actor_type, actor_id, target_type,
                            target_id, request.path_params["role_id"], inherited)
        return _no_content()

    @router.head(one, status_code=204, name=f"check_grant_{prefix}_{inherited}")
    @router.get(one, status_code=204, name=f"get_grant_{prefix}_{inherited}")
    def check(request: Request) -> Response:
        target_id, actor_id = ids(request.path_params)
        _api(request).grant(context(request), "check", actor_type, actor_id, target_type,
                            target_id, request.path_params["role_id"], inherited)
        return _no_content()

    @router.delete(one, status_code=204, name=f"revoke_grant_{prefix}_{inherited}")
    def revoke(request: Request) -> Response:
        target_id, actor_id = ids(request.path_params)
        _api(request).grant(context(request), "revoke", actor_type, actor_id, target_type,
                            target_id, request.path_params["role_id"], inherited)
        return _no_content()

    if inherited and target_type == "project":
        return  # Keystone lists inherited grants on domains only

    @router.get(f"{prefix}/roles{suffix}", name=f"list_grants_{prefix}_{inherited}")
    def list_(request: Request) -> dict:
        target_id, actor_id = ids(request.path_params)
        return _listing(request, "roles", _api(request).list_grant_roles(
            context(request), actor_type, actor_id, target_type, target_id, inherited))


for _actors, _actor in (("users", "user"), ("groups", "group")):
    for _targets, _target in (("projects", "project"), ("domains", "domain")):
        _grant_routes(f"/{_targets}/{{target_id}}/{_actors}/{{actor_id}}", _target, _actor,
                      False)
        _grant_routes(f"/OS-INHERIT/{_targets}/{{target_id}}/{_actors}/{{actor_id}}",
                      _target, _actor, True)
    _grant_routes(f"/system/{_actors}/{{actor_id}}", "system", _actor, False)


# ------------------------------------------------------------------ group membership
@router.get("/groups/{group_id}/users")
def group_users(request: Request, group_id: str) -> dict:
    return _listing(request, "users", _api(request).group_users(context(request), group_id))


@router.get("/users/{user_id}/groups")
def user_groups(request: Request, user_id: str) -> dict:
    return _listing(request, "groups", _api(request).user_groups(context(request), user_id))


@router.put("/groups/{group_id}/users/{user_id}", status_code=204)
def add_member(request: Request, group_id: str, user_id: str) -> Response:
    _api(request).membership(context(request), "add", group_id, user_id)
    return _no_content()


@router.head("/groups/{group_id}/users/{user_id}", status_code=204)
@router.get("/groups/{group_id}/users/{user_id}", status_code=204)
def check_member(request: Request, group_id: str, user_id: str) -> Response:
    _api(request).membership(context(request), "check", group_id, user_id)
    return _no_content()


@router.delete("/groups/{group_id}/users/{user_id}", status_code=204)
def remove_member(request: Request, group_id: str, user_id: str) -> Response:
    _api(request).membership(context(request), "remove", group_id, user_id)
    return _no_content()


# ------------------------------------------------------------------ implied roles
@router.get("/roles/{prior_id}/implies")
def list_implied(request: Request, prior_id: str) -> dict:
    return {"role_inference": _api(request).implied_roles(context(request), prior_id),
            "links": {"self": str(request.url)}}


@router.put("/roles/{prior_id}/implies/{implied_id}", status_code=201)
def create_implied(request: Request, prior_id: str, implied_id: str) -> dict:
    return {"role_inference": _api(request).implied_role(
        context(request), "create", prior_id, implied_id)}


@router.get("/roles/{prior_id}/implies/{implied_id}")
def get_implied(request: Request, prior_id: str, implied_id: str) -> dict:
    return {"role_inference": _api(request).implied_role(
        context(request), "get", prior_id, implied_id)}


@router.head("/roles/{prior_id}/implies/{implied_id}", status_code=204)
def check_implied(request: Request, prior_id: str, implied_id: str) -> Response:
    _api(request).implied_role(context(request), "check", prior_id, implied_id)
    return _no_content()


@router.delete("/roles/{prior_id}/implies/{implied_id}", status_code=204)
def delete_implied(request: Request, prior_id: str, implied_id: str) -> Response:
    _api(request).implied_role(context(request), "delete", prior_id, implied_id)
    return _no_content()


# ------------------------------------------------------------------ project tags
@router.get("/projects/{project_id}/tags")
def list_tags(request: Request, project_id: str) -> dict:
    return {"tags": _api(request).project_tags(context(request), project_id),
            "links": {"self": str(request.url)}}


@router.put("/projects/{project_id}/tags")
async def replace_tags(request: Request, project_id: str) -> dict:
    body = await json_body(request, schemas.TAGS)
    tags = await run_in_threadpool(_api(request).set_project_tags, context(request),
                                   project_id, body["tags"])
    return {"tags": tags, "links": {"self": str(request.url)}}


@router.delete("/projects/{project_id}/tags", status_code=204)
def clear_tags(request: Request, project_id: str) -> Response:
    _api(request).set_project_tags(context(request), project_id, [])
    return _no_content()


@router.put("/projects/{project_id}/tags/{tag}", status_code=201)
def add_tag(request: Request, project_id: str, tag: str) -> Response:
    _api(request).project_tag(context(request), "add", project_id, tag)
    return Response(status_code=201)


@router.head("/projects/{project_id}/tags/{tag}", status_code=204)
@router.get("/projects/{project_id}/tags/{tag}", status_code=204)
def check_tag(request: Request, project_id: str, tag: str) -> Response:
    _api(request).project_tag(context(request), "check", project_id, tag)
    return _no_content()


@router.delete("/projects/{project_id}/tags/{tag}", status_code=204)
def remove_tag(request: Request, project_id: str, tag: str) -> Response:
    _api(request).project_tag(context(request), "remove", project_id, tag)
    return _no_content()


# ------------------------------------------------------------------ application credentials
APP_CREDS = "/users/{user_id}/application_credentials"


@router.get(APP_CREDS)
def list_app_creds(request: Request, user_id: str) -> dict:
    return _listing(request, "application_credentials", _api(request).list_app_creds(
        context(request), user_id, dict(request.query_params)))


@router.post(APP_CREDS, status_code=201)
async def create_app_cred(request: Request, user_id: str) -> dict:
    body = await json_body(request, schemas.CREATE_APP_CRED)
    return {"application_credential": await run_in_threadpool(
        _api(request).create_app_cred, context(request), user_id, body)}


@router.get(APP_CREDS + "/{app_cred_id}")
def get_app_cred(request: Request, user_id: str, app_cred_id: str) -> dict:
    return {"application_credential": _api(request).get_app_cred(
        context(request), user_id, app_cred_id)}


@router.delete(APP_CREDS + "/{app_cred_id}", status_code=204)
def delete_app_cred(request: Request, user_id: str, app_cred_id: str) -> Response:
    _api(request).delete_app_cred(context(request), user_id, app_cred_id)
    return _no_content()


# ------------------------------------------------------------------ EC2 credentials
EC2 = "/users/{user_id}/credentials/OS-EC2"


@router.get(EC2)
def list_ec2(request: Request, user_id: str) -> dict:
    return _listing(request, "credentials", _api(request).list_ec2(context(request), user_id))


@router.post(EC2, status_code=201)
async def create_ec2(request: Request, user_id: str) -> dict:
    body = await json_body(request, schemas.CREATE_EC2)
    return {"credential": await run_in_threadpool(
        _api(request).create_ec2, context(request), user_id, body)}


@router.get(EC2 + "/{access}")
def get_ec2(request: Request, user_id: str, access: str) -> dict:
    return {"credential": _api(request).get_ec2(context(request), user_id, access)}


@router.delete(EC2 + "/{access}", status_code=204)
def delete_ec2(request: Request, user_id: str, access: str) -> Response:
    _api(request).delete_ec2(context(request), user_id, access)
    return _no_content()


# ------------------------------------------------------------------ regions by id
@router.put("/regions/{region_id}", status_code=201)
async def create_region_with_id(request: Request, region_id: str) -> dict:
    body = await json_body(request, schemas.CREATE_REGION)
    return {"region": await run_in_threadpool(
        _api(request).create_region, context(request), body, region_id)}


# ------------------------------------------------------------------ unified limits
# strato's quotas live in each service's quota sets; Keystone's unified limits hold no
# registered limit here. Reading them says so truthfully (empty lists, the flat model);
# a project limit cannot reference a registered limit, so creating one is refused as
# Keystone refuses it (403); registering limits answers 501 (below).
@router.get("/limits/model")
def limits_model(request: Request) -> dict:
    return {"model": {"name": "flat", "description": (
        "Limit enforcement and validation does not take project hierarchy into "
        "consideration.")}}


@router.get("/registered_limits")
def list_registered_limits(request: Request) -> dict:
    return _listing(request, "registered_limits", [])


@router.get("/limits")
def list_limits(request: Request) -> dict:
    return _listing(request, "limits", [])


@router.post("/limits", status_code=201)
def create_limits(request: Request) -> dict:
    if not context(request).is_admin:
        raise Forbidden()
    raise Forbidden("Unable to create a limit that has no corresponding registered limit.")


# ------------------------------------------------------------------ not implemented
# Keystone APIs strato does not provide: each answers Keystone's fault with 501, so a
# client learns "not here" rather than "no such object" (see the README's matrix).
UNSUPPORTED = {
    "/ec2tokens": "EC2 signature authentication",
    "/s3tokens": "S3 signature authentication",
    "/users/{user_id}/access_rules": "Application credential access rules",
    "/OS-OAUTH1": "OAuth 1.0a delegation",
    "/OS-OAUTH2": "OAuth 2.0",
    "/OS-TRUST": "Trusts",
    "/OS-EP-FILTER": "Endpoint filtering and endpoint groups",
    "/OS-FEDERATION": "Federation",
    "/OS-REVOKE": "Revocation events",
    "/OS-SIMPLE-CERT": "Simple certificates",
    "/limits": "Unified limits",  # beyond the reads and the refusal above
    "/registered_limits": "Registering unified limits",
    "/domains/config": "Domain configuration",
    "/domains/{domain_id}/config": "Domain configuration",
    "/auth/OS-FEDERATION": "Federated authentication",
}
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _unsupported(prefix: str, what: str) -> None:
    """Plain routes (not API routes): they take no input at all, so the API fuzzer
    has nothing to drive in them."""
    async def handler(request: Request) -> Response:
        raise NotSupported(f"{what} ({prefix}) is not implemented by this cloud.")

    handler.strato_unimplemented = True  # type: ignore[attr-defined]  # a 501 route

    # (add_route, unlike add_api_route, does not apply the router's prefix)
    path = router.prefix + prefix
    router.add_route(path, handler, methods=_METHODS, name=f"unsupported_{prefix}")
    router.add_route(path + "/{rest:path}", handler, methods=_METHODS,
                     name=f"unsupported_{prefix}_sub")


for _prefix, _what in UNSUPPORTED.items():
    _unsupported(_prefix, _what)
