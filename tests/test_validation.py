"""The shared metadata / extra-specs check (Nova and Cinder APIs)."""

from __future__ import annotations

from typing import Any

import pytest

from strato.exceptions import BadRequest
from strato.validation import string_map


def test_a_map_of_short_strings_is_taken_as_is() -> None:
    value = {"k": "v", "x" * 255: "y" * 255, "empty": ""}
    assert string_map(value, "metadata") == value


@pytest.mark.parametrize("bad", [
    ["k", "v"], "k=v", None, {"": "v"}, {"x" * 256: "v"}, {"k": "y" * 256}, {"k": 1},
    {"k": None}, {1: "v"}, {"k": {"nested": "v"}},
])
def test_anything_else_is_a_400_naming_the_field(bad: Any) -> None:
    with pytest.raises(BadRequest, match="field/attribute metadata"):
        string_map(bad, "metadata")


def test_extra_specs_may_hold_numbers_kept_as_strings() -> None:
    assert string_map({"hw:cpu_cores": 2, "ratio": 1.5, "on": True, "s": "x"},
                      "extra_specs", numbers=True) == {
        "hw:cpu_cores": "2", "ratio": "1.5", "on": "True", "s": "x"}
    with pytest.raises(BadRequest, match="extra_specs"):
        string_map({"k": None}, "extra_specs", numbers=True)
    with pytest.raises(BadRequest):
        string_map({"k": 10 ** 300}, "extra_specs", numbers=True)
