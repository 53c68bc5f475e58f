"""What server create takes for the guest itself: user data, config drive, hostname,
admin password, checked and normalised as Nova does before anything is stored."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Any

from strato.exceptions import BadRequest

_TRUE = ("1", "t", "true", "on", "y", "yes")
_FALSE = ("0", "f", "false", "off", "n", "no")
#: Nova's DEFAULT_PASSWORD_SYMBOLS: no 0/1, I/O or l, which read alike
PASSWORD_SYMBOLS = ("23456789", "ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz")
PASSWORD_LENGTH = 12  # Nova's [DEFAULT] password_length


def check_user_data(value: Any) -> None:
    """Nova's ``format: base64`` check (``base64.decodebytes``: padding must be right,
    characters outside the alphabet are skipped); the message never repeats the value."""
    if value is None:
        return
    if not isinstance(value, str):
        raise BadRequest("Invalid input for field/attribute user_data: expected a "
                         "base64 string.")
    try:
        base64.decodebytes(value.encode("utf-8"))
    except (binascii.Error, ValueError):
        raise BadRequest("Invalid input for field/attribute user_data: it is not "
                         "valid base64.") from None


def decode_user_data(value: str | None) -> bytes | None:
    """The user data's bytes, as the guest gets them (None: there is none)."""
    if value is None:
        return None
    return base64.decodebytes(value.encode("utf-8"))


def config_drive_value(value: Any) -> str:
    """Nova's column value for the requested ``config_drive``: "True" or ""; anything
    but a boolean or a boolean's string is a 400 (``Invalid config_drive provided.``)."""
    if value is None or value is False or value == "":
        return ""
    if value is True:
        return "True"
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return "True"
        if low in _FALSE:
            return ""
    raise BadRequest("Invalid config_drive provided.")


def sanitize_hostname(name: str) -> str:
    """Nova's ``sanitize_hostname``: Latin-1 only, at most 63 characters, spaces,
    ``_`` and ``.`` become ``-``, other non-word characters go, lower case, no leading
    or trailing ``.``/``-``.  May be empty."""
    text = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    text = re.sub(r"[ _\.]", "-", text)
    text = re.sub(r"[^\w.-]+", "", text)
    return text.lower().strip(".-")


def hostname_for(name: str, instance_id: str) -> str:
    """The hostname Nova derives at create when none is asked for."""
    return sanitize_hostname(name) or f"Server-{instance_id}"


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """Nova's ``generate_password``: one symbol of each group, the rest from all."""
    chars = [secrets.choice(group) for group in PASSWORD_SYMBOLS][:length]
    everything = "".join(PASSWORD_SYMBOLS)
    chars += [secrets.choice(everything) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)
