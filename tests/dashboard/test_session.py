"""The dashboard's session rules over HTTP (the browser tests cover the pages): login
through Keystone, CSRF on every state change, the token never in a URL or page, logout
revokes the token."""

from __future__ import annotations

import re

import httpx

from tests.support import Server


def _login_form(client: httpx.Client) -> str:
    page = client.get("/dashboard/login")
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def _login(server: Server, client: httpx.Client, user: str = "admin",
           password: str | None = None) -> httpx.Response:
    csrf = _login_form(client)
    return client.post("/dashboard/login", data={
        "csrf_token": csrf, "username": user, "password": password or server.password,
        "project": "admin", "domain": "Default"}, headers={"Origin": server.url})


def test_pages_need_a_session(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        answer = client.get("/dashboard/servers")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/login"


def test_wrong_password_is_refused_in_words(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        answer = _login(server, client, password="wrong")
        assert answer.status_code == 401
        assert "password is wrong" in answer.text
        assert "strato_session" not in answer.cookies


def test_login_without_csrf_is_forbidden(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        _login_form(client)
        answer = client.post("/dashboard/login", data={
            "csrf_token": "forged", "username": "admin", "password": server.password})
        assert answer.status_code == 403


def test_session_cookie_holds_the_token_and_logout_revokes_it(server: Server) -> None:
    with httpx.Client(base_url=server.url) as client:
        answer = _login(server, client)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/dashboard/servers"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        session = client.cookies["strato_session"]
        # the cookie is encrypted: the Keystone token is not readable in it
        home = client.get("/dashboard/servers")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)
        # a state change without the CSRF token is refused, and the session stays
        assert client.post("/dashboard/logout", headers={"Origin": server.url}).status_code \
            == 403
        # from another origin, even with the token: refused
        assert client.post("/dashboard/logout", data={"csrf_token": csrf},
                           headers={"Origin": "http://evil.example"}).status_code == 403
        # the token the session holds works until logout (read through the session's
        # own in-process client: find it by logging out and checking Keystone)
        out = client.post("/dashboard/logout", data={"csrf_token": csrf},
                          headers={"Origin": server.url})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
        assert "strato_session" not in client.cookies
        # the old cookie replayed: its token was revoked, so the page ends the session
        replay = httpx.Client(base_url=server.url, cookies={"strato_session": session})
        with replay:
            again = replay.get("/dashboard/servers")
            assert again.status_code == 303
            assert again.headers["location"] == "/dashboard/login"
