"""The reference's routes strato lacks answer 501 in the service's own fault format;
what strato serves is never shadowed; a path no reference has stays 404; the README's
support matrix is what the route table says."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute, Match

from strato.api import unimplemented
from strato.api.app import build_app
from strato.api.unimplemented import RefRoute
from strato.exceptions import BadRequest, NotSupported
from tests.support import Server

ROOT = Path(__file__).resolve().parents[2]
DUMMY = "00000000-0000-4000-8000-000000000001"


def _matrix() -> ModuleType:
    spec = importlib.util.spec_from_file_location("support_matrix",
                                                  ROOT / "scripts" / "support_matrix.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return build_app(SimpleNamespace())


@pytest.fixture(scope="module")
def table(app: FastAPI) -> list[tuple[RefRoute, bool]]:
    return unimplemented.route_status(app.routes)


def _concrete(template: str, value: str = DUMMY) -> str:
    return re.sub(r"\{[^}]*\}", value, template)


def _first_match(routes: list[BaseRoute], method: str, path: str) -> BaseRoute | None:
    """What Starlette's router picks: the first route matching path and method."""
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    for route in routes:
        if route.matches(scope)[0] == Match.FULL:
            return route
    return None


# ------------------------------------------------------------------ the route table
def test_every_service_has_reference_routes_and_501_ones(
        table: list[tuple[RefRoute, bool]]) -> None:
    for service in unimplemented.MOUNTS:
        rows = [(ref, ok) for ref, ok in table if ref.service == service]
        assert any(ok for _, ok in rows), service
        assert any(not ok for _, ok in rows), service


def test_an_implemented_route_is_never_shadowed_by_the_501_table(app: FastAPI) -> None:
    routes = unimplemented.flat_routes(app.routes)
    own = [r for r in routes if not unimplemented.is_unimplemented(r)]
    table = {id(r) for r in unimplemented.flat_routes(unimplemented.router.routes)}
    first_501 = next(i for i, r in enumerate(routes) if id(r) in table)
    assert all(getattr(r, "path", "") == "/" for r in routes[first_501:] if r in own), \
        "a router is included after the 501 table"
    checked = 0
    for route in own:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if not path or not methods:
            continue
        for method in methods:
            # a concrete path of this template: a literal-looking value for each parameter
            concrete = _concrete(path, "x1")
            chosen = _first_match(routes, method, concrete)
            assert chosen is not None and not unimplemented.is_unimplemented(chosen), \
                f"{method} {path} is answered by the 501 table"
            checked += 1
    assert checked > 100


def test_every_unimplemented_reference_route_reaches_the_501_table(
        app: FastAPI, table: list[tuple[RefRoute, bool]]) -> None:
    """No route of strato's routers swallows a 501/410 route of the table, except the
    ones the README's matrix names as answered by another route first."""
    routes = unimplemented.flat_routes(app.routes)
    caught = unimplemented.shadowed(app.routes)
    # generic routes that take these literals on purpose: Nova's old os-services
    # enable/disable calls, os-hosts power actions (501), Cinder's os-services updates
    # (checked, then 501), types/default (the default type)
    on_purpose = {"/compute/v2.1/os-services/{service_id}",
                  "/compute/v2.1/os-hosts/{host}/{action}",
                  "/volume/v3/{project_id}/os-services/{action}",
                  "/volume/v3/{project_id}/types/{type_id}"}
    assert set(caught.values()) <= on_purpose, caught
    for ref, ok in table:
        if ok or ref.status == 404 or ref in caught:
            continue
        chosen = _first_match(routes, ref.method, _concrete(ref.path))
        assert chosen is not None and unimplemented.is_unimplemented(chosen), ref.label


def test_actions_helper_tells_unsupported_from_unknown() -> None:
    assert isinstance(unimplemented.unsupported_action(
        "trigger_crash_dump", unimplemented.REFERENCE_SERVER_ACTIONS), NotSupported)
    assert isinstance(unimplemented.unsupported_action(
        "os-retype", unimplemented.REFERENCE_VOLUME_ACTIONS), NotSupported)
    assert isinstance(unimplemented.unsupported_action(
        "no-such-action", unimplemented.REFERENCE_SERVER_ACTIONS), BadRequest)


def test_readme_support_matrix_is_the_generated_one() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "support_matrix.py")],
                         capture_output=True, text=True, check=True).stdout
    readme = (ROOT / "README.md").read_text()
    assert _matrix().readme_section(readme) == out, \
        "README's support matrix is stale: run scripts/support_matrix.py --write"


# ------------------------------------------------------------------ over HTTP
@pytest.fixture(scope="module")
def http(server: Server, admin_token: str) -> Iterator[tuple[httpx.Client, str]]:
    with server.client(admin_token) as c:
        r = c.get("/identity/v3/auth/tokens", headers={"X-Subject-Token": admin_token})
        assert r.status_code == 200, r.text
        yield c, r.json()["token"]["project"]["id"]


def _sample(table: list[tuple[RefRoute, bool]], service: str, status: int) -> RefRoute:
    """An unimplemented route of the service, a GET where there is one (no side effect
    if it ever becomes real between a table and a server of different code)."""
    lacking = [ref for ref, ok in table
               if not ok and ref.service == service and ref.status == status
               and not any(p.match(ref.path) for p, _ in unimplemented.PARENTS)]
    assert lacking, (service, status)
    return next((r for r in lacking if r.method == "GET"), lacking[0])


def _fault(service: str, body: dict, status: int) -> str:
    """The message of a fault body, checked to be in the service's own format."""
    if service in ("compute", "volume"):
        name = {501: "notImplemented", 404: "itemNotFound", 410: "computeFault"}[status]
        assert set(body) == {name} and body[name]["code"] == status, body
        return body[name]["message"]
    if service == "image":
        assert body["code"].startswith(f"{status} ") and body["title"], body
        return body["message"]
    if service == "networking":
        kind = {501: "HTTPNotImplemented", 404: "HTTPNotFound"}[status]
        assert body["NeutronError"]["type"] == kind, body
        return body["NeutronError"]["message"]
    assert body["error"]["code"] == status and body["error"]["title"], body
    return body["error"]["message"]


@pytest.mark.parametrize("service", sorted(unimplemented.MOUNTS))
def test_a_reference_route_strato_lacks_answers_501_in_the_service_format(
        http: tuple[httpx.Client, str], table: list[tuple[RefRoute, bool]],
        service: str) -> None:
    client, project_id = http
    ref = _sample(table, service, 501)
    path = _concrete(ref.path.replace("{project_id}", project_id))
    r = client.request(ref.method, path, json={} if ref.method in ("POST", "PUT",
                                                                   "PATCH") else None)
    assert r.status_code == 501, (ref.label, r.status_code, r.text)
    assert "not implemented" in _fault(service, r.json(), 501)
    assert r.headers["X-OpenStack-Request-Id"]


@pytest.mark.parametrize("service,path", [
    ("compute", "/compute/v2.1/no-such-api"),
    ("compute", "/compute/v2.1/servers/{x}/no-such-sub-resource"),
    ("volume", "/volume/v3/{project}/no-such-api"),
    ("image", "/image/v2/no-such-api"),
    ("identity", "/identity/v3/no-such-api"),
    ("networking", "/networking/v2.0/no-such/api/here"),
])
def test_a_path_no_reference_has_stays_404(http: tuple[httpx.Client, str], service: str,
                                           path: str) -> None:
    client, project_id = http
    r = client.get(path.replace("{project}", project_id).replace("{x}", DUMMY))
    assert r.status_code == 404, r.text
    _fault(service, r.json(), 404)


def test_nova_obsolete_api_is_gone_and_neutron_unloaded_extension_is_404(
        http: tuple[httpx.Client, str]) -> None:
    client, _ = http
    r = client.get("/compute/v2.1/os-cells")
    assert r.status_code == 410, r.text
    _fault("compute", r.json(), 410)
    r = client.get(f"/networking/v2.0/qos/policies/{DUMMY}/bandwidth_limit_rules")
    assert r.status_code == 404, r.text
    _fault("networking", r.json(), 404)


def test_an_implemented_get_route_keeps_its_405_for_other_methods(
        http: tuple[httpx.Client, str]) -> None:
    client, _ = http
    r = client.head("/compute/v2.1/flavors/detail")  # served for GET; HEAD is in no reference
    assert r.status_code == 405
    r = client.get("/compute/v2.1/flavors/detail")
    assert r.status_code == 200


def test_server_and_volume_actions_answer_404_501_or_400(
        http: tuple[httpx.Client, str]) -> None:
    """An action the reference lists: 404 for a missing server/volume (Nova and Cinder
    load it first), else 501; a name no reference lists: 400."""
    client, project_id = http
    served = _matrix().action_status()
    server_missing, volume_missing = served["compute"][1], served["volume"][1]
    base = f"/compute/v2.1/servers/{DUMMY}/action"
    if server_missing:
        r = client.post(base, json={server_missing[0]: None})
        assert r.status_code == 404, r.text
        _fault("compute", r.json(), 404)
    r = client.post(base, json={"noSuchAction": {}})
    assert r.status_code == 400, r.text
    assert volume_missing, "every Cinder volume action is served: pick another sample"
    r = client.post(f"/volume/v3/{project_id}/volumes/{DUMMY}/action",
                    json={volume_missing[0]: {}})
    assert r.status_code == 404, r.text
    r = client.post(f"/volume/v3/{project_id}/volumes",
                    json={"volume": {"size": 1, "name": "unimplemented-actions"}})
    assert r.status_code == 202, r.text
    vid = r.json()["volume"]["id"]
    vbase = f"/volume/v3/{project_id}/volumes/{vid}/action"
    try:
        r = client.post(vbase, json={volume_missing[0]: {}})
        assert r.status_code == 501, r.text
        assert volume_missing[0] in _fault("volume", r.json(), 501)
        for name in ("no-such-action", "load", "transition"):  # never a private method
            r = client.post(vbase, json={name: {}})
            assert r.status_code == 400, (name, r.text)
    finally:
        for _ in range(100):
            r = client.delete(f"/volume/v3/{project_id}/volumes/{vid}")
            if r.status_code in (202, 404):
                break
            time.sleep(0.2)


def test_a_sub_route_of_a_missing_resource_is_404_first(
        http: tuple[httpx.Client, str], table: list[tuple[RefRoute, bool]]) -> None:
    """Nova, Cinder and Glance load the resource a route hangs off before anything else."""
    client, project_id = http
    for pattern, _ in unimplemented.PARENTS:
        ref = next((r for r, ok in table if not ok and r.method == "GET"
                    and r.status == 501 and pattern.match(r.path)), None)
        if ref is None:
            continue
        r = client.get(_concrete(ref.path.replace("{project_id}", project_id)))
        assert r.status_code == 404, (ref.label, r.text)
        _fault(ref.service, r.json(), 404)
    ref = next(r for r, ok in table if not ok and r.method == "GET" and r.status == 501
               and r.path.startswith("/image/v2/images/{"))
    image = client.post("/image/v2/images", json={"name": "parent-of-a-missing-route"})
    assert image.status_code == 201, image.text
    path = re.sub(r"\{[^}]*\}", image.json()["id"], ref.path)
    r = client.get(path)  # the image exists: now it is the route that is missing
    assert r.status_code == 501, (path, r.text)
    client.delete(f"/image/v2/images/{image.json()['id']}")


def test_a_nova_proxy_route_strato_lacks_is_404_past_its_last_microversion(
        http: tuple[httpx.Client, str], table: list[tuple[RefRoute, bool]]) -> None:
    """As Nova: the proxy APIs (images, os-volumes, ...) answer 404 from 2.36 on."""
    client, _ = http
    ref = next(r for r, ok in table if not ok and r.method == "GET"
               and r.section in unimplemented.NOVA_LAST_VERSION)
    path = _concrete(ref.path)
    r = client.get(path, headers={"OpenStack-API-Version": "compute 2.35"})
    assert r.status_code == 501, (ref.label, r.text)
    r = client.get(path, headers={"OpenStack-API-Version": "compute 2.36"})
    assert r.status_code == 404, (ref.label, r.text)
    _fault("compute", r.json(), 404)
