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


# ------------------------------------------------------------------ the schema layer
from strato.api.common import parse_json  # noqa: E402
from strato.compute import schemas as compute  # noqa: E402
from strato.identity import schemas as identity  # noqa: E402
from strato.image import schemas as image  # noqa: E402
from strato.validation import INT32_MAX, validate  # noqa: E402
from strato.volume import schemas as volume  # noqa: E402


def _refused(schema: Any, body: Any, *needles: str) -> str:
    with pytest.raises(BadRequest) as info:
        validate(schema, body)
    for needle in needles:
        assert needle in info.value.message, info.value.message
    return info.value.message


def test_what_the_real_clients_send_passes() -> None:
    """CLIENTS.md: strings for boot_index/volume_size, explicit nulls on volume create,
    string image properties, ``networks: "none"``."""
    validate(compute.CREATE_SERVER, {"server": {
        "name": "s", "imageRef": "", "flavorRef": "1", "networks": "none",
        "block_device_mapping_v2": [{"uuid": "i", "boot_index": "0", "source_type": "image",
                                     "destination_type": "volume", "volume_size": "1",
                                     "delete_on_termination": True}]}})
    validate(volume.CREATE_VOLUME, {"volume": {k: None for k in (
        "snapshot_id", "source_volid", "imageRef", "volume_type", "availability_zone",
        "metadata", "backup_id", "consistencygroup_id", "description")} | {"size": 1,
                                                                          "name": "v"}})
    validate(image.CREATE_IMAGE, {"name": "i", "disk_format": "raw",
                                  "container_format": "bare",
                                  "owner_specified.openstack.md5": "x"})
    validate(compute.SERVER_ACTION, {"os-stop": None})
    validate(volume.CREATE_SNAPSHOT, {"snapshot": {"volume_id": "v", "force": "True"}})


def test_a_long_value_is_named_with_its_limit_and_never_echoed() -> None:
    message = _refused(compute.CREATE_SERVER, {"server": {"name": "n" * 10_000}},
                       "server.name", "255", "10000")
    assert "nnnnnnnnnn" not in message and len(message) < 200


@pytest.mark.parametrize("schema,body,field", [
    (compute.CREATE_SERVER, {"server": {"name": "s", "user_data": ["x"]}},
     "server.user_data"),
    (compute.CREATE_SERVER, {"server": {"name": "s", "block_device_mapping_v2": [
        {"uuid": {"a": 1}}]}}, "block_device_mapping_v2[0].uuid"),
    (compute.CREATE_SERVER, {"server": {"name": "s", "block_device_mapping_v2": [
        {"uuid": "u", "volume_size": 2**63}]}}, "volume_size"),
    (compute.CREATE_SERVER, {"server": {"name": "s", "block_device_mapping_v2": [
        {"uuid": "u", "boot_index": str(2**63)}]}}, "boot_index"),
    (compute.UPDATE_QUOTA, {"quota_set": {"ram": INT32_MAX + 1}}, "quota_set.ram"),
    (compute.UPDATE_FLAVOR, {"flavor": {"description": ["x"]}}, "flavor.description"),
    (volume.CREATE_VOLUME, {"volume": {"size": 1, "imageRef": ["x"]}}, "volume.imageRef"),
    (volume.CREATE_VOLUME, {"volume": {"size": 1, "volume_type": {"a": 1}}},
     "volume.volume_type"),
    (volume.UPDATE_QUOTA, {"quota_set": {"gigabytes": 2**62}}, "quota_set.gigabytes"),
    (image.CREATE_IMAGE, {"min_disk": 2**62}, "min_disk"),
    (image.UPDATE_IMAGE, [{"op": "replace", "path": "/min_ram", "value": 2**62}],
     "min_ram"),
    (identity.CREATE_USER, {"user": {"name": "u", "default_project_id": ["p"]}},
     "user.default_project_id"),
    (identity.CREATE_PROJECT, {"project": {"name": "p", "domain_id": {"id": "x"}}},
     "project.domain_id"),
    (identity.AUTH, {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": ["x"], "password": "p"}}}}}, "user.name"),
])
def test_wrong_types_and_numbers_no_column_holds_are_refused(schema: Any, body: Any,
                                                             field: str) -> None:
    _refused(schema, body, field)


@pytest.mark.parametrize("raw", [b"[" * 5000 + b"]" * 5000, b'{"a":' * 40 + b"1" + b"}" * 40,
                                 b"NaN", b'{"a": Infinity}', b"\xff", b'{"n": ' +
                                 str(2**64).encode() + b"}"])
def test_any_body_keeps_the_limits_of_every_body(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_json(raw)
