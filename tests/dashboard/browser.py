"""A real browser for the dashboard's end-to-end tests: Debian's ``chromium`` driven
through ``chromium-driver`` (Selenium), headless, a 1366x768 window, a throwaway
profile, and no network beyond loopback.

Every page a test visits goes through :meth:`Browser.page`, which checks what every
dashboard page must hold — no horizontal scrolling at 1366x768, every control reachable
with the Tab key, the session token in no URL, link, form or page text, no error in the
JS console (CSP violations included) — and saves a screenshot of it to the artifacts
directory (``$STRATO_TEST_ARTIFACTS/dashboard`` or ``<repo>/test-artifacts/dashboard``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1366, 768
WAIT = 30.0  # a page element or text: at most this long (guests' waits pass their own)

T = TypeVar("T")


def artifacts_dir() -> Path:
    """Where the screenshots go (printed by scripts/test.sh at the end of a run)."""
    root = os.environ.get("STRATO_TEST_ARTIFACTS")
    return (Path(root) if root else ROOT / "test-artifacts") / "dashboard"


def poll(what: str, check: Callable[[], T | None], timeout: float = WAIT,
         every: float = 0.1) -> T:
    """``check()`` until it answers something true (bounded); its answer."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            answer = check()
            if answer:
                return answer
        except WebDriverException as exc:  # the page changed under the lookup: again
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f" (last: {last.__class__.__name__}: "
                                    f"{str(last.msg)[:200]})" if last else ""))
        time.sleep(every)


# The page checks run in the page itself (one round trip each).
_OVERFLOW_JS = """
const root = document.documentElement, cw = root.clientWidth;
const clipped = (el) => {  // inside its own scroll box (a console log): not the page's
  for (let p = el.parentElement; p && p !== document.body && p !== root; p = p.parentElement) {
    const ox = getComputedStyle(p).overflowX;
    if (ox !== 'visible') return true;
  }
  return false;
};
const wide = [];
for (const el of document.body.querySelectorAll('*')) {
  const r = el.getBoundingClientRect();
  if (!r.width || r.right <= cw + 1 || clipped(el)) continue;
  const cls = typeof el.className === 'string' && el.className.trim()
    ? '.' + el.className.trim().replace(/\\s+/g, '.') : '';
  wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + cls +
            ' right=' + Math.round(r.right));
  if (wide.length >= 8) break;
}
return {scrollWidth: root.scrollWidth, clientWidth: cw,
        bodyScrollWidth: document.body.scrollWidth, wide: wide};
"""

_INTERACTIVE = ("a[href], area[href], button, input:not([type=hidden]), select, textarea, "
                "summary, [tabindex]:not(main):not([tabindex='-1'])")

# Marks the visible interactive elements and starts recording what gets focus; a first
# focusable element at the very top of the body is the starting point of the Tab walk.
_KEYBOARD_START_JS = """
const sel = arguments[0];
const shown = (el) => el.getClientRects().length > 0 &&
  el.checkVisibility({visibilityProperty: true, contentVisibilityAuto: true}) &&
  !el.closest('[inert]') &&
  !el.disabled && !(el.closest('fieldset') && el.closest('fieldset').disabled);
const els = Array.from(document.querySelectorAll(sel)).filter(shown);
const negative = els.filter((el) => el.getAttribute('tabindex') !== null &&
                                    el.tabIndex < 0).map((el) => el.outerHTML.slice(0, 160));
const state = {els: els, seen: new Set()};
state.unringed = [];
state.listener = (e) => {
  const i = state.els.indexOf(e.target);
  if (i < 0) return;
  state.seen.add(i);
  const cs = getComputedStyle(e.target);  // the focus must show (outline or a ring)
  if (!((cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0) ||
        cs.boxShadow !== 'none')) state.unringed.push(e.target.outerHTML.slice(0, 160));
};
document.addEventListener('focusin', state.listener, true);
const start = document.createElement('span');
start.tabIndex = 0; start.id = 'strato-test-tab-start';
document.body.insertBefore(start, document.body.firstChild);
start.focus();
window.__stratoKeyboard = state;
return {count: els.length, negative: negative};
"""

_KEYBOARD_END_JS = """
const state = window.__stratoKeyboard;
document.removeEventListener('focusin', state.listener, true);
const start = document.getElementById('strato-test-tab-start');
if (start) start.remove();
if (document.activeElement) document.activeElement.blur();
window.scrollTo(0, 0);
const missed = [];
const radios = new Set();
state.els.forEach((el, i) => {
  if (el.type === 'radio' && el.name) {  // a radio group is one Tab stop
    if (state.seen.has(i)) radios.add(el.name);
  }
});
state.els.forEach((el, i) => {
  if (state.seen.has(i)) return;
  if (el.type === 'radio' && radios.has(el.name)) return;
  missed.push(el.outerHTML.slice(0, 160));
});
delete window.__stratoKeyboard;
return {missed: missed, unringed: state.unringed};
"""

_LINKS_JS = """
const out = [];
for (const el of document.querySelectorAll('[href], [action], [src], [formaction], [data-poll]')) {
  for (const name of ['href', 'action', 'src', 'formaction', 'data-poll']) {
    const v = el.getAttribute(name);
    if (v) out.push(v);
  }
}
return out;
"""


class Browser:
    """One headless chromium for a test module; ``session_token(cookie)`` turns the
    dashboard's session cookie into the Keystone token it carries (the secret no URL or
    page may hold)."""

    def __init__(self, base_url: str, profile: Path,
                 session_token: Callable[[str], str | None],
                 artifacts: Path | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.session_token = session_token
        self.artifacts = artifacts or artifacts_dir()
        if self.artifacts.exists():  # this run's pictures only
            shutil.rmtree(self.artifacts)
        self.artifacts.mkdir(parents=True)
        self.shots = 0
        self.secrets: set[str] = set()  # every session token seen (and its cookie)
        self.visited: list[str] = []  # every URL the browser requested
        self._seen = 0  # how many of them the checks have looked at
        self.documents: list[str] = []  # every page (document) the browser asked for
        self._pages_seen = 0
        self.statuses: dict[str, int] = {}  # the HTTP status of every page loaded
        self.checked: list[str] = []  # the pages checked, by name
        for tool in (CHROMIUM, CHROMEDRIVER):
            assert Path(tool).exists(), f"{tool} is missing: run scripts/setup.sh --test"
        profile.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new", f"--window-size={WIDTH},{HEIGHT}",
            f"--user-data-dir={profile / 'chromium'}",
            "--disable-dev-shm-usage", "--disable-gpu",
            # loopback only: every other name resolves to nothing, no proxy is asked
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--no-proxy-server", "--proxy-bypass-list=*",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-default-apps", "--disable-extensions",
            "--disable-domain-reliability", "--disable-client-side-phishing-detection",
            "--no-first-run", "--no-default-browser-check", "--metrics-recording-only",
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            "--password-store=basic", "--lang=en-US",
        ):
            options.add_argument(arg)
        if os.geteuid() == 0:  # chromium's sandbox refuses to run as root
            options.add_argument("--no-sandbox")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        options.set_capability("unhandledPromptBehavior", "ignore")
        service = Service(CHROMEDRIVER, log_output=str(profile / "chromedriver.log"))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(60)
        # a stuck browser fails its command in 90 s, not Selenium's 120 (its log, in the
        # artifacts, says which command)
        self.driver.command_executor._client_config.timeout = 90

    def quit(self) -> None:
        try:
            self.driver.quit()
        except WebDriverException:
            pass

    # ------------------------------------------------------------ finding
    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, css: str, timeout: float = WAIT) -> WebElement:
        """The visible element ``css`` (polled, bounded)."""
        def shown() -> WebElement | None:
            for el in self.find_all(css):
                if el.is_displayed():
                    return el
            return None
        return poll(f"{css} on {self.path}", shown, timeout)

    def wait_text(self, css: str, text: str, timeout: float = WAIT) -> str:
        """Until ``css``'s text holds ``text`` (case-insensitive); that text. The page
        may reload meanwhile (live progress does): the element is looked up anew."""
        def has() -> str | None:
            found = self.find_all(css)
            value = found[0].text if found else ""
            return value if text.lower() in value.lower() else None
        return poll(f"{text!r} in {css} on {self.path}", has, timeout)

    @property
    def path(self) -> str:
        url = self.driver.current_url
        return url[len(self.base):] if url.startswith(self.base) else url

    @property
    def html(self) -> str:
        return self.driver.page_source

    # ------------------------------------------------------------ acting
    def go(self, path: str, name: str, *, error_page: bool = False) -> None:
        """Open ``path`` and check the page."""
        self.driver.get(self.base + path)
        self.page(name, error_page=error_page)

    def fill(self, css: str, value: str) -> None:
        el = self.wait_for(css)
        el.clear()
        el.send_keys(value)

    def choose(self, css: str, value: str | None = None, text: str | None = None) -> None:
        """Pick an option of the select ``css`` by its value or by words in its label."""
        select = Select(self.wait_for(css))
        if value is not None and any(o.get_attribute("value") == value
                                     for o in select.options):
            select.select_by_value(value)
            return
        for option in select.options:
            if text is not None and text in option.text:
                option.click()
                return
        labels = [(o.get_attribute("value"), o.text) for o in select.options]
        raise AssertionError(f"{css} has no option {value or text!r}: {labels}")

    def submit(self, target: str | WebElement, name: str, *, confirm: bool = False,
               error_page: bool = False) -> None:
        """Click the button or link ``target`` (a CSS selector or the element), wait for
        the next page (``confirm``: accept the page's "are you sure" dialog first) and
        check it."""
        old = self.find("html")
        element = self.wait_for(target) if isinstance(target, str) else target
        element.click()
        if confirm:
            alert = poll("the confirmation dialog", self._alert, 10)
            alert.accept()
        def replaced() -> bool:
            try:
                old.tag_name  # noqa: B018 - raises once the old document is gone
                return False
            except WebDriverException:
                return True  # its node left the document
        poll(f"the page after clicking {target}", replaced)
        self.page(name, error_page=error_page)

    def _alert(self) -> Any:
        try:
            return self.driver.switch_to.alert
        except NoAlertPresentException:
            return None

    def cookie(self, name: str) -> str | None:
        """A cookie's value (HttpOnly ones too: WebDriver sees them)."""
        found = self.driver.get_cookie(name)
        return found["value"] if found else None

    def login(self, user: str, password: str, project: str, domain: str = "Default") -> None:
        """Through the login form, as a person would."""
        self.go("/dashboard/login", f"login-{user}")
        self.fill("#username", user)
        self.fill("#password", password)
        self.fill("#project", project)
        self.fill("#domain", domain)
        self.submit("#login-submit", f"after-login-{user}")

    # ------------------------------------------------------------ checks
    def page(self, name: str, *, error_page: bool = False) -> None:
        """The checks every page must pass, and its screenshot (taken first, so a failing
        page is still pictured). ``error_page``: the page is answered with a 4xx on
        purpose (the browser logs that status; nothing else may be logged). A page that
        reloads itself meanwhile (live progress reaching its end) is checked again."""
        self.checked.append(name)
        problems: list[str] = ["the page never held still for its checks"]
        shot = None
        for attempt in range(5):
            try:
                poll(f"{name} to load", lambda: self.driver.execute_script(
                    "return document.readyState === 'complete'"))
                self.driver.execute_script("window.__stratoPage = true")
                self.remember_session()
                shot = self.screenshot(name, again=attempt > 0)
                found = self._console_errors(error_page) + self._overflow() \
                    + self._keyboard() + self._secrets_shown()
            except WebDriverException:
                if self._same_document():
                    raise
                continue  # the page reloaded itself under the checks: once more
            if self._same_document():
                problems = found
                break
        problems += self._unchecked_pages()
        assert not problems, (f"page {name} ({self.path}, {shot.name if shot else '-'}):\n  "
                              + "\n  ".join(problems))

    def _unchecked_pages(self) -> list[str]:
        """Every page the browser loaded since the last check is this one (or this one
        again: a page reloading itself while its operation ran): no page escapes the
        checks."""
        self._drain_requests()
        here = self.driver.current_url.split("#")[0]
        new, self._pages_seen = self.documents[self._pages_seen:], len(self.documents)
        return [f"a page loaded without the checks: {url[:200]}" for url in new
                if url.split("#")[0] != here and url.startswith(("http:", "https:"))]

    def _same_document(self) -> bool:
        try:
            return bool(self.driver.execute_script("return window.__stratoPage === true"))
        except WebDriverException:
            return False

    def status(self, url: str | None = None) -> int | None:
        """The HTTP status the browser got for a page (the current one by default)."""
        self._drain_requests()
        return self.statuses.get(url or self.driver.current_url)

    def remember_session(self) -> None:
        raw = self.cookie("strato_session")
        if raw:
            self.secrets.add(raw)
            token = self.session_token(raw)
            if token:
                self.secrets.add(token)

    def screenshot(self, name: str, again: bool = False) -> Path:
        """The whole page (not only the window), as PNG (``again``: in place of the
        last one): the window grown to the page's height for the picture. WebDriver's
        own screenshot only: DevTools' captureScreenshot beyond the viewport hangs the
        browser for good when the page reloads itself meanwhile."""
        if not again:
            self.shots += 1
        path = self.artifacts / f"{self.shots:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
        grow = self.driver.execute_script(
            "return document.documentElement.scrollHeight - window.innerHeight")
        try:
            if grow > 0:
                self.driver.set_window_size(WIDTH, HEIGHT + min(int(grow), 5000))
            self.driver.save_screenshot(str(path))
        finally:
            if grow > 0:
                self.driver.set_window_size(WIDTH, HEIGHT)
        return path

    def _console_errors(self, error_page: bool) -> list[str]:
        """Every error the page's console got: scripts, failed loads, CSP refusals."""
        problems = []
        here = self.driver.current_url
        for entry in self.driver.get_log("browser"):
            if entry["level"] not in ("SEVERE", "ERROR"):
                continue
            text = entry["message"]
            if error_page and text.startswith(here) and re.search(
                    r"Failed to load resource: the server responded with a status of 4\d\d",
                    text):
                continue
            problems.append(f"console: {text}")
        return problems

    def _overflow(self) -> list[str]:
        """No horizontal scrolling, and nothing cut off at the right edge either (the
        stylesheet hides the body's horizontal overflow, which would mask a too-wide
        element)."""
        got = self.driver.execute_script(_OVERFLOW_JS)
        problems = []
        if got["scrollWidth"] > got["clientWidth"] or got["bodyScrollWidth"] > got["clientWidth"]:
            problems.append(f"scrolls horizontally: scrollWidth {got['scrollWidth']}/"
                            f"{got['bodyScrollWidth']} > clientWidth {got['clientWidth']}")
        if got["wide"]:
            problems.append("wider than the window: " + ", ".join(got["wide"]))
        return problems

    def _keyboard(self) -> list[str]:
        """The Tab key walks through every visible control, each showing that it has the
        focus; none is taken out of the tab order."""
        started = self.driver.execute_script(_KEYBOARD_START_JS, _INTERACTIVE)
        try:
            presses = started["count"] + 3
            ActionChains(self.driver).send_keys(Keys.TAB * presses).perform()
        finally:
            missed = self.driver.execute_script(_KEYBOARD_END_JS)
        problems = [f"tabindex=-1 on a control: {html}" for html in started["negative"]]
        problems += [f"not reached with Tab: {html}" for html in missed["missed"]]
        problems += [f"no visible focus: {html}" for html in missed["unringed"]]
        return problems

    def _secrets_shown(self) -> list[str]:
        """The session token (or its cookie) in no URL the browser requested, no link,
        form action or poll URL, and nowhere in the page; and no request left loopback."""
        self._drain_requests()
        new, self._seen = self.visited[self._seen:], len(self.visited)  # each told once
        problems = [f"a request beyond loopback: {url[:200]}" for url in new
                    if urlsplit(url).scheme not in ("data", "about", "chrome", "blob")
                    and urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1")]
        links = self.driver.execute_script(_LINKS_JS)
        source = self.html
        for secret in self.secrets:
            for url in new:
                if secret in url:
                    problems.append(f"session token in a requested URL: {url[:200]}")
            for link in links:
                if secret in link:
                    problems.append(f"session token in a link or form: {link[:200]}")
            if secret in source:
                problems.append("session token in the page's HTML")
        return problems

    def _drain_requests(self) -> None:
        for entry in self.driver.get_log("performance"):
            try:
                message = json.loads(entry["message"])["message"]
            except (KeyError, ValueError):
                continue
            if message.get("method") == "Network.requestWillBeSent":
                self.visited.append(message["params"]["request"]["url"])
            elif message.get("method") == "Network.responseReceived":
                response = message["params"]["response"]
                if message["params"].get("type") == "Document":  # a page (after redirects)
                    self.statuses[response["url"]] = int(response["status"])
                    self.documents.append(response["url"])
            elif message.get("method") == "Page.frameNavigated":
                self.visited.append(message["params"]["frame"]["url"])
