"""Keystone v3 routes under /identity: parse HTTP, call strato.identity.api, render."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from strato.api.common import base_url, context, json_body, query, services
from strato.exceptions import Forbidden, NotFound
from strato.identity import schemas

router = APIRouter(prefix="/identity")

JSON_TYPES = [
    {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
]


def _api(request: Request) -> Any:
    return services(request).identity


def version_doc(request: Request) -> dict[str, Any]:
    return {
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base_url(request)}/identity/v3/"}],
        "media-types": JSON_TYPES,
    }


@router.get("")
@router.get("/")
def versions(request: Request) -> JSONResponse:
    return JSONResponse({"versions": {"values": [version_doc(request)]}}, status_code=300)


@router.get("/v3")
@router.get("/v3/")
def v3(request: Request) -> dict:
    return {"version": version_doc(request)}


def _listing(request: Request, key: str, items: list[dict]) -> dict:
    return {key: items, "links": {"self": str(request.url), "next": None, "previous": None}}


# ------------------------------------------------------------------ tokens
def _subject(request: Request) -> str:
    subject = request.headers.get("x-subject-token")
    if not subject:
        raise NotFound("X-Subject-Token header is required.")
    return subject


@router.post("/v3/auth/tokens", status_code=201)
async def issue_token(request: Request) -> JSONResponse:
    body = await json_body(request, schemas.AUTH)
    api = _api(request)
    data = await run_in_threadpool(api.authenticate, body)
    nocatalog = "nocatalog" in request.query_params
    return JSONResponse(api.token_view(data, nocatalog), status_code=201,
                        headers={"X-Subject-Token": data.token})


@router.get("/v3/auth/tokens")
def validate_token(request: Request) -> JSONResponse:
    api = _api(request)
    data = api.check_token(context(request), _subject(request))
    nocatalog = "nocatalog" in request.query_params
    return JSONResponse(api.token_view(data, nocatalog), headers={"X-Subject-Token": data.token})


@router.head("/v3/auth/tokens")
def check_token(request: Request) -> Response:
    data = _api(request).check_token(context(request), _subject(request))
    return Response(status_code=200, headers={"X-Subject-Token": data.token})


@router.delete("/v3/auth/tokens", status_code=204)
def revoke_token(request: Request) -> Response:
    _api(request).revoke_token(context(request), _subject(request))
    return Response(status_code=204)


@router.get("/v3/auth/catalog")
def auth_catalog(request: Request) -> dict:
    ctx = context(request)
    if ctx.project_id is None and ctx.domain_id is None and ctx.system_scope is None:
        raise Forbidden("A scoped token is required.")
    return {"catalog": _api(request).catalog(ctx.project_id),
            "links": {"self": str(request.url)}}


@router.get("/v3/auth/projects")
def auth_projects(request: Request) -> dict:
    ctx = context(request)
    return _listing(request, "projects", _api(request).auth_projects(ctx))


@router.get("/v3/auth/domains")
def auth_domains(request: Request) -> dict:
    return _listing(request, "domains", _api(request).auth_domains(context(request)))


@router.get("/v3/auth/system")
def auth_system(request: Request) -> dict:
    return _listing(request, "system", _api(request).auth_system(context(request)))


# ------------------------------------------------------------------ CRUD resources
def _crud(kind: str, singular: str) -> None:
    """list/create/show/update/delete routes for one Keystone resource."""

    @router.get(f"/v3/{kind}", name=f"list_{kind}")
    def list_(request: Request) -> dict:
        items = getattr(_api(request), f"list_{kind}")(context(request), query(request))
        return _listing(request, kind, items)

    create_schema, update_schema = schemas.CRUD[singular]

    @router.post(f"/v3/{kind}", status_code=201, name=f"create_{singular}")
    async def create(request: Request) -> dict:
        body = await json_body(request, create_schema)
        return {singular: await run_in_threadpool(
            getattr(_api(request), f"create_{singular}"), context(request), body)}

    @router.get(f"/v3/{kind}/{{id_}}", name=f"get_{singular}")
    def show(request: Request, id_: str) -> dict:
        return {singular: getattr(_api(request), f"get_{singular}")(context(request), id_)}

    @router.patch(f"/v3/{kind}/{{id_}}", name=f"update_{singular}")
    async def update(request: Request, id_: str) -> dict:
        body = await json_body(request, update_schema)
        return {singular: await run_in_threadpool(
            getattr(_api(request), f"update_{singular}"), context(request), id_, body)}

    @router.delete(f"/v3/{kind}/{{id_}}", status_code=204, name=f"delete_{singular}")
    def remove(request: Request, id_: str) -> Response:
        getattr(_api(request), f"delete_{singular}")(context(request), id_)
        return Response(status_code=204)


for _kind, _singular in (("domains", "domain"), ("projects", "project"),
                         ("users", "user"), ("roles", "role"), ("groups", "group"),
                         ("services", "service"), ("endpoints", "endpoint"),
                         ("regions", "region"), ("credentials", "credential"),
                         ("policies", "policy")):
    _crud(_kind, _singular)


@router.get("/v3/users/{user_id}/projects")
def user_projects(request: Request, user_id: str) -> dict:
    return _listing(request, "projects", _api(request).user_projects(context(request), user_id))


@router.post("/v3/users/{user_id}/password", status_code=204)
async def change_password(request: Request, user_id: str) -> Response:
    body = await json_body(request, schemas.CHANGE_PASSWORD)
    await run_in_threadpool(_api(request).change_password, context(request), user_id, body)
    return Response(status_code=204)


@router.get("/v3/role_assignments")
def role_assignments(request: Request) -> dict:
    items = _api(request).list_assignments(context(request), query(request))
    return _listing(request, "role_assignments", items)


@router.get("/v3/role_inferences")
def role_inferences(request: Request) -> dict:
    return {"role_inferences": _api(request).role_inferences(context(request)),
            "links": {"self": str(request.url)}}
