"""The browser tests' page checks catch what they are there to catch: each bad page
below (served on loopback with the dashboard's own CSP) fails exactly its check, and a
clean page passes them all. A check that cannot fail would prove nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.dashboard.browser import Browser

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'")
SECRET = "gAAAAA-the-token-of-this-session"
HEAD = '<!doctype html><html lang="en"><head><link rel="icon" href="data:,"><title>t</title>'
PAGES = {
    "/clean": "<main><h1>Fine</h1><a href='/clean'>a link</a><label for='x'>x</label>"
              "<input id='x'><button>go</button><select><option>1</option></select>"
              "<details><summary>more</summary><button>hidden until opened</button>"
              "</details><pre class='wide'>" + "w" * 400 + "</pre></main>",
    "/inline-script": "<main><script>document.title = 'x'</script></main>",
    "/inline-style": "<main><p style='color: red'>red</p></main>",
    "/script-error": "<main><script src='/boom.js'></script></main>",
    "/wide": "<main><table><tr><td><img src='data:,' width='1600' height='4' alt=''>"
             "</td></tr></table></main>",
    "/untabbable": "<main><a href='/clean' tabindex='-1'>skip me</a><button>ok</button></main>",
    "/token-in-link": f"<main><a href='/clean?t={SECRET}'>a link</a></main>",
    "/token-in-page": f"<main><p>{SECRET}</p></main>",
    "/no-focus-ring": "<main><link rel='stylesheet' href='/no-ring.css'>"
                      "<a href='/clean'>a link</a></main>",
    "/reloading": "<main><script src='/reload.js'></script><p>working</p>"
                  "<div class='tall'></div></main>",
    "/offsite": "<main><img src='http://192.0.2.1/x.png' alt='x'></main>",
    "/missing": "<main><p id='error-message'>Error: not found</p></main>",
}
SCRIPTS = {"/boom.js": "undefined_function();",
           # a page whose live progress ends again and again: it reloads itself
           "/reload.js": "setTimeout(() => window.location.reload(), 250);"}
STYLE = ("body { margin: 0; overflow-x: hidden; } pre.wide { overflow: auto; } "
         ".tall { height: 3000px; }")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        if path in SCRIPTS:
            body, kind, status = SCRIPTS[path], "text/javascript", 200
        elif path == "/style.css":
            body, kind, status = STYLE, "text/css", 200
        elif path == "/no-ring.css":
            body, kind, status = "a:focus, a:focus-visible { outline: none; }", "text/css", 200
        elif path in PAGES:
            body = HEAD + '<link rel="stylesheet" href="/style.css"></head><body>' \
                + PAGES[path] + "</body></html>"
            kind, status = "text/html", 404 if path == "/missing" else 200
        else:
            body, kind, status = "no", "text/plain", 404
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-security-policy", CSP)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    root: Path = tmp_path_factory.mktemp("checks")
    browser = Browser(f"http://127.0.0.1:{httpd.server_address[1]}", root / "profile",
                      lambda cookie: None, artifacts=root / "shots")
    browser.secrets.add(SECRET)
    try:
        yield browser
    finally:
        browser.quit()
        httpd.shutdown()


def _problems(browser: Browser, path: str, error_page: bool = False) -> str:
    try:
        browser.go(path, path.strip("/"), error_page=error_page)
    except AssertionError as exc:
        return str(exc)
    return ""


def test_a_clean_page_passes(checked: Browser) -> None:
    assert _problems(checked, "/clean") == ""
    assert checked.status() == 200
    assert _problems(checked, "/missing", error_page=True) == ""
    assert checked.status() == 404


@pytest.mark.parametrize(("path", "words"), [
    ("/inline-script", "Content Security Policy"),
    ("/inline-style", "Content Security Policy"),
    ("/script-error", "undefined_function"),
    ("/wide", "wider than the window: table"),
    ("/untabbable", "tabindex=-1 on a control"),
    ("/token-in-link", "session token in a link or form"),
    ("/token-in-page", "session token in the page's HTML"),
    ("/no-focus-ring", "no visible focus: <a href=\"/clean\">"),
    ("/offsite", "a request beyond loopback: http://192.0.2.1/x.png"),
])
def test_each_bad_page_fails_its_check(checked: Browser, path: str, words: str) -> None:
    problems = _problems(checked, path)
    assert words in problems, problems or "no problem found"


def test_a_4xx_page_counts_unless_expected(checked: Browser) -> None:
    assert "status of 404" in _problems(checked, "/missing")


def test_a_page_reloading_itself_under_the_checks_never_hangs_them(checked: Browser) -> None:
    """A screenshot taken while the page reloads itself once hung the browser for good;
    the checks may fail such a page (it never holds still) but must come back.  Five
    rounds (each ~5 checks of a page caught mid-reload; 15 cost CI over 5 minutes)."""
    for _ in range(5):
        start = time.monotonic()
        _problems(checked, "/reloading")
        assert time.monotonic() - start < 60
    checked.driver.get(checked.base + "/clean")
    _problems(checked, "/clean")  # the browser still answers


def test_a_page_loaded_without_the_checks_is_caught(checked: Browser) -> None:
    checked.driver.get(checked.base + "/token-in-page")  # not through go(): unchecked
    problems = _problems(checked, "/clean")
    assert f"a page loaded without the checks: {checked.base}/token-in-page" in problems
    assert _problems(checked, "/clean") == ""  # told once
