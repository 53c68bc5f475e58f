"""Checks of request bodies: the one layer every JSON body passes through.

``strato.api.common.json_body`` parses a body and runs, in this order:

1. :func:`check_json`: limits every body keeps whatever the route (nesting depth,
   integers that fit the widest column, 64-bit);
2. the route's schema, when the router gives one: a schema per request as the
   services' API references describe it (``strato/<service>/schemas.py``), with
   integers bounded to what the database column holds (:data:`INT32_MAX` for an
   ``Integer`` column, :data:`INT64_MAX` for a ``BigInteger``) and strings to the
   column's length.

A schema checks types, bounds and lengths only; what needs the database or the
microversion (does the flavor exist, is the name unique, ...) stays in the
service's ``api.py``. Unknown keys are let through unless a schema says otherwise:
the services decide what an extra key means (Glance's extra properties, Keystone's
extra attributes), as they did before.

Every failure is a :class:`~strato.exceptions.BadRequest` whose message names the
field and the rule, and never repeats a long value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strato.exceptions import BadRequest

MAX_KEY = MAX_VALUE = 255
INT32_MAX = 2**31 - 1  # an Integer column (PostgreSQL's integer)
INT64_MAX = 2**63 - 1  # a BigInteger column
MAX_DEPTH = 32  # no request of any API nests deeper; json.loads recurses per level
_DIGITS = re.compile(r"^\s*[-+]?[0-9]{1,20}\s*$")


def show(value: Any, limit: int = 40) -> str:
    """A value for a message: short, never the whole of a long input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def invalid(path: str, problem: str) -> BadRequest:
    where = path or "body"
    return BadRequest(f"Invalid input for field/attribute {where}: {problem}.")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


# ------------------------------------------------------------------ limits of any body
def check_json(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Limits every body keeps: nesting depth, and integers that fit 64 bits (no
    column holds more; a bigger one would overflow the database driver)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise BadRequest(f"Invalid input: the request body is nested more than "
                                 f"{max_depth} levels deep.")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((v, _join(path, k), depth + 1) for k, v in pairs)
        elif isinstance(item, int) and not isinstance(item, bool) and not (
                -INT64_MAX - 1 <= item <= INT64_MAX):
            raise invalid(path, f"{show(item, 24)} is out of range (64-bit integers only)")


# ------------------------------------------------------------------ schemas
class Schema:
    """A check of one JSON value; ``path`` names it in the message."""

    nullable: bool = False

    def describe(self) -> str:
        raise NotImplementedError

    def check(self, value: Any, path: str) -> None:
        raise NotImplementedError

    def __call__(self, value: Any, path: str = "") -> None:
        if value is None and self.nullable:
            return
        self.check(value, path)

    def wrong_type(self, value: Any, path: str) -> BadRequest:
        return invalid(path, f"expected {self.describe()}, got {kind_of(value)}")

    kinds: tuple[type, ...] = (object,)

    def takes(self, value: Any) -> bool:
        """Is ``value`` of a JSON type this schema is about (whatever its content)?"""
        return isinstance(value, self.kinds) and not (
            isinstance(value, bool) and bool not in self.kinds and int in self.kinds)


@dataclass(frozen=True)
class AnyValue(Schema):
    nullable: bool = True

    def describe(self) -> str:
        return "any value"

    def check(self, value: Any, path: str) -> None:
        return None


ANY = AnyValue()


@dataclass(frozen=True)
class Str(Schema):
    """A string of ``min``-``max`` characters (``max``: the column's length)."""

    max: int = 255
    min: int = 0
    nullable: bool = False
    enum: tuple[str, ...] | None = None
    strip: bool = False  # ``min`` counts characters after stripping whitespace
    kinds = (str,)

    def describe(self) -> str:
        if self.enum:
            return "one of " + ", ".join(self.enum)
        if self.min:
            return f"a string of {self.min}-{self.max} characters"
        return f"a string of at most {self.max} characters"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise self.wrong_type(value, path)
        if self.enum is not None:
            if value not in self.enum:
                raise invalid(path, f"{show(value)} is not one of {', '.join(self.enum)}")
            return
        if len(value) > self.max:
            raise invalid(path, f"at most {self.max} characters are allowed, got "
                                f"{len(value)}")
        if len(value.strip() if self.strip else value) < self.min:
            raise invalid(path, f"at least {self.min} characters are required"
                          + (" (not counting surrounding spaces)" if self.strip else ""))


@dataclass(frozen=True)
class Int(Schema):
    """An integer in [``min``, ``max``]; ``strings`` also takes one written as a string
    (the SDK sends ``boot_index`` and ``volume_size`` so)."""

    min: int = 0
    max: int = INT32_MAX
    nullable: bool = False
    strings: bool = False
    kinds = (int, str)

    def describe(self) -> str:
        what = "an integer" + (" (or a string of one)" if self.strings else "")
        return f"{what} from {self.min} to {self.max}"

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, str) and self.strings:
            if not value.strip():
                if self.nullable:
                    return  # "" means "not given", as Nova's string forms do
                raise self.wrong_type(value, path)
            if not _DIGITS.match(value):
                raise invalid(path, f"{show(value)} is not {self.describe()}")
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise self.wrong_type(value, path)
        if not self.min <= number <= self.max:
            raise invalid(path, f"{show(number, 24)} is out of range: {self.describe()}")


@dataclass(frozen=True)
class Num(Schema):
    """A finite number in [``min``, ``max``] (a float column)."""

    min: float = 0.0
    max: float = 3.4e38
    nullable: bool = False
    strings: bool = False
    kinds = (int, float, str)

    def describe(self) -> str:
        return f"a number from {self.min:g} to {self.max:g}"

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, str) and self.strings and len(value) < 64:
            try:
                value = float(value)
            except ValueError:
                raise self.wrong_type(value, path) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong_type(value, path)
        if not self.min <= float(value) <= self.max:  # NaN compares false: refused too
            raise invalid(path, f"{show(value, 24)} is out of range: {self.describe()}")


_TRUE = ("true", "1", "yes", "on", "t", "y")
_FALSE = ("false", "0", "no", "off", "f", "n")


@dataclass(frozen=True)
class Bool(Schema):
    """A boolean; ``strings`` also takes "true"/"false" and the like (Cinder's
    ``is_public``, ``force``)."""

    nullable: bool = False
    strings: bool = False
    kinds = (bool, str)

    def describe(self) -> str:
        return "a boolean" + (" (or a string of one)" if self.strings else "")

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool):
            return
        if self.strings and isinstance(value, str) and value.strip().lower() in (
                _TRUE + _FALSE):
            return
        raise self.wrong_type(value, path)


@dataclass(frozen=True)
class Arr(Schema):
    items: Schema = ANY
    max_items: int = 1000
    nullable: bool = False
    kinds = (list,)

    def describe(self) -> str:
        return "a list"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise self.wrong_type(value, path)
        if len(value) > self.max_items:
            raise invalid(path, f"at most {self.max_items} items are allowed, got "
                                f"{len(value)}")
        for n, item in enumerate(value):
            self.items(item, _join(path, n))


@dataclass(frozen=True)
class Obj(Schema):
    """An object: ``props`` checks the keys it names; others are checked by ``extra``
    (``None``: not allowed). ``required`` keys must be present."""

    props: dict[str, Schema] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    extra: Schema | None = ANY
    nullable: bool = False
    max_key: int = MAX_KEY
    max_props: int = 1000
    kinds = (dict,)

    def describe(self) -> str:
        return "an object"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise self.wrong_type(value, path)
        if len(value) > self.max_props:
            raise invalid(path, f"at most {self.max_props} keys are allowed")
        for key in self.required:
            if key not in value:
                raise invalid(path, f"'{key}' is a required property")
        for key, item in value.items():
            schema = self.props.get(key)
            if schema is None:
                if self.extra is None:
                    raise invalid(path, f"additional properties are not allowed "
                                        f"({show(key)} was unexpected)")
                if len(key) > self.max_key:
                    raise invalid(path, f"keys are at most {self.max_key} characters, got "
                                        f"one of {len(key)}")
                schema = self.extra
            schema(item, _join(path, key))


@dataclass(frozen=True)
class Map(Schema):
    """Metadata or extra specs: string keys of 1-255 characters, string values of at
    most 255 (``numbers``: numbers too, as Nova's flavor extra specs take)."""

    numbers: bool = False
    nullable: bool = False
    max_items: int = 1000
    kinds = (dict,)

    def describe(self) -> str:
        return (f"an object of string keys (1-{MAX_KEY} characters) and "
                f"{'string or number' if self.numbers else 'string'} values "
                f"(at most {MAX_VALUE} characters)")

    def check(self, value: Any, path: str) -> None:
        string_map(value, path or "body", numbers=self.numbers)
        if len(value) > self.max_items:
            raise invalid(path, f"at most {self.max_items} items are allowed")


@dataclass(frozen=True)
class OneOf(Schema):
    options: tuple[Schema, ...] = ()
    nullable: bool = False

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)

    def check(self, value: Any, path: str) -> None:
        errors = []
        for option in self.options:
            try:
                option(value, path)
                return
            except BadRequest as exc:
                errors.append(exc)
        # the option for the value's own type says best what is wrong; else list them
        typed = [e for o, e in zip(self.options, errors, strict=True) if o.takes(value)]
        raise typed[0] if len(typed) == 1 else self.wrong_type(value, path)


def one_of(*options: Schema, nullable: bool = False) -> OneOf:
    return OneOf(options, nullable)


@dataclass(frozen=True)
class Action(Schema):
    """An action body: an object of exactly one key, the action, whose value the
    action's schema checks. An unknown action is the service's to refuse."""

    actions: dict[str, Schema] = field(default_factory=dict)

    def describe(self) -> str:
        return "an object holding exactly one action"

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict) or len(value) != 1:
            raise BadRequest("The action body must hold exactly one action.")
        (name, args), = value.items()
        schema = self.actions.get(name)
        if schema is not None:
            schema(args, _join(path, name))


@dataclass(frozen=True)
class Custom(Schema):
    """A check written as a function, for the odd shape (Glance's JSON patch)."""

    fn: Callable[[Any, str], None] = lambda value, path: None
    nullable: bool = False

    def describe(self) -> str:
        return "a valid value"

    def check(self, value: Any, path: str) -> None:
        self.fn(value, path)


def validate(schema: Schema | None, value: Any) -> Any:
    """``value`` if it keeps ``schema`` and the limits of any body; 400 otherwise. The
    schema goes first, so its message names the field; it recurses only as deep as the
    schema itself, never as deep as the value."""
    if schema is not None:
        schema(value, "")
    check_json(value)
    return value


# ------------------------------------------------------------------ helpers services use
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


def query_int(key: str, value: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """An integer query parameter (``limit``, ``size_min``, ``minRam``...): ASCII digits
    in [``minimum``, ``maximum``], else 400 naming the parameter."""
    if not _DIGITS.match(value) or not minimum <= int(value) <= maximum:
        raise BadRequest(f"Invalid value {show(value)} for query parameter {key}: an "
                         f"integer from {minimum} to {maximum} is required.")
    return int(value)


def text(value: Any, field: str, *, maximum: int = 255, required: bool = False) -> str | None:
    """A string field a service reads itself: ``None`` when absent (unless
    ``required``), else a string of at most ``maximum`` characters."""
    if value is None:
        if required:
            raise invalid(field, "a value is required")
        return None
    Str(max=maximum, min=1 if required else 0, strip=required)(value, field)
    return value
