"""The dashboard's session: the user's Keystone token in an encrypted, HttpOnly cookie.

No second user store and no server-side session table: the cookie carries the token the
user got from Keystone (Fernet-encrypted with the dashboard's own keys, so it can be
neither read nor forged), the CSRF secret of this session and who is logged in. The
token never appears in a URL or in a page; logging out revokes it in Keystone, so a
copied cookie is worthless afterwards. The session ends when the token expires.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.fernet import InvalidToken, MultiFernet
from starlette.requests import Request
from starlette.responses import Response

from strato.identity.tokens import load_keys

COOKIE = "strato_session"
LOGIN_CSRF_COOKIE = "strato_login_csrf"
FLASH_COOKIE = "strato_flash"
PATH = "/dashboard"


@dataclass
class Session:
    token: str
    csrf: str
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: list[str]
    expires: float  # epoch seconds: the token's own expiry

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class Sessions:
    """Encrypts and reads session cookies with the keys of ``[dashboard]
    key_repository``."""

    def __init__(self, key_repository: Path) -> None:
        self.keys: MultiFernet = load_keys(Path(key_repository))

    def read(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = json.loads(self.keys.decrypt(raw.encode()))
            session = Session(**data)
        except (InvalidToken, ValueError, TypeError):
            return None
        if session.expires <= time.time():
            return None
        return session

    def write(self, response: Response, session: Session, secure: bool) -> None:
        value = self.keys.encrypt(json.dumps(asdict(session)).encode()).decode()
        response.set_cookie(COOKIE, value, max_age=max(0, int(session.expires - time.time())),
                            path=PATH, httponly=True, samesite="strict", secure=secure)

    @staticmethod
    def clear(response: Response) -> None:
        response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")

    # A flash message survives one redirect (POST → redirect → GET), encrypted too: the
    # text may quote a name the user typed.
    def flash(self, response: Response, kind: str, text: str, secure: bool) -> None:
        value = self.keys.encrypt(json.dumps([kind, text[:500]]).encode()).decode()
        response.set_cookie(FLASH_COOKIE, value, max_age=60, path=PATH, httponly=True,
                            samesite="strict", secure=secure)

    def take_flash(self, request: Request, response: Response) -> tuple[str, str] | None:
        raw = request.cookies.get(FLASH_COOKIE)
        if not raw:
            return None
        response.delete_cookie(FLASH_COOKIE, path=PATH)
        try:
            kind, text = json.loads(self.keys.decrypt(raw.encode(), ttl=120))
        except (InvalidToken, ValueError, TypeError):
            return None
        return str(kind), str(text)


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
