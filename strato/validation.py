"""Checks of request bodies that more than one service makes."""

from __future__ import annotations

from typing import Any

from strato.exceptions import BadRequest

MAX_KEY = MAX_VALUE = 255


def string_map(value: Any, field: str, *, numbers: bool = False) -> dict[str, str]:
    """A JSON object of string keys (1-255 characters) and string values (at most 255),
    as Nova and Cinder require of metadata and extra specs; 400 naming ``field`` if not.

    ``numbers`` also takes numbers (and booleans) as values, kept as strings, as Nova's
    flavor extra specs do.
    """
    kinds: tuple[type, ...] = (str, int, float) if numbers else (str,)
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and 0 < len(k) <= MAX_KEY and isinstance(v, kinds)
            and len(str(v)) <= MAX_VALUE
            for k, v in value.items()):
        raise BadRequest(f"Invalid input for field/attribute {field}: string keys "
                         f"(1-{MAX_KEY} characters) and "
                         f"{'string or number' if numbers else 'string'} values "
                         f"(at most {MAX_VALUE}).")
    return {k: str(v) for k, v in value.items()}
