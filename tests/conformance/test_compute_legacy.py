"""Nova's legacy v2.0 endpoint: listed first among the versions, served as the v2.1 API
at microversion 2.1 (headers asking for another are ignored), with or without the
project id in the URL."""

from __future__ import annotations

import httpx

from tests.api_schemas import LINKS, STRING, assert_shape, strict
from tests.support import Server

VERSION = strict({"id": STRING, "status": STRING, "version": STRING, "min_version": STRING,
                  "updated": STRING, "links": LINKS,
                  "media-types": {"type": "array", "items": strict(
                      {"base": STRING, "type": STRING})}})


def test_versions_list_v20_first_and_describe_it(server: Server) -> None:
    with server.client() as c:
        listed = c.get("/compute/").json()["versions"]
        assert [v["id"] for v in listed] == ["v2.0", "v2.1"]
        for doc in listed:
            assert_shape(doc, VERSION)
        v20 = c.get("/compute/v2/")
        assert v20.status_code == 200 and v20.json()["version"]["status"] == "SUPPORTED"
        assert v20.json()["version"]["links"][0]["href"].endswith("/compute/v2/")
        assert "openstack-api-version" not in v20.headers


def test_legacy_requests_are_v21_at_microversion_21(server: Server, admin_token: str) -> None:
    project = httpx.get(f"{server.url}/identity/v3/auth/tokens", headers={
        "X-Auth-Token": admin_token, "X-Subject-Token": admin_token}).json()[
        "token"]["project"]["id"]
    asks = {"OpenStack-API-Version": "compute 2.79"}
    with server.client(admin_token) as c:
        for path in ("/compute/v2/flavors/42", f"/compute/v2/{project}/flavors/42"):
            r = c.get(path, headers=asks)
            assert r.status_code == 200, r.text
            assert "openstack-api-version" not in r.headers
            # 2.1's flavor view: no description (2.55) nor extra_specs (2.61)
            assert "description" not in r.json()["flavor"]
        modern = c.get("/compute/v2.1/flavors/42", headers=asks)
        assert "description" in modern.json()["flavor"]
        other = "0" * 32
        r = c.get(f"/compute/v2/{other}/flavors/42")
        assert r.status_code == 400 and "doesn't match" in r.json()["badRequest"]["message"]
        assert c.get("/compute/v2/no-such-thing").status_code == 404
    assert httpx.get(f"{server.url}/compute/v2/flavors").status_code == 401
