"""The documents a guest reads (Nova's metadata layout) and the config drive ISO, at
the function level: no server, real genisoimage/isoinfo."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from strato.compute import guestinfo, guestnet
from strato.compute.configdrive import build_iso
from strato.compute.instance_metadata import (
    OPENSTACK_VERSIONS,
    InstanceMetadata,
    NotFoundPath,
    Password,
    render,
)
from strato.compute.models import BlockDevice, Instance
from strato.exceptions import BadRequest

UUID = "4f1b2c3d-1111-4222-8333-444455556666"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyForTests user@host"
SCRIPT = b"#!/bin/sh\necho hello from user data\n"


def _inst(**kw: object) -> Instance:
    values: dict = dict(
        id=UUID, name="Web Server_1.example", project_id="p-1", user_id="u-1",
        image_ref="a1b2c3d4-0000-4000-8000-000000000000", kernel_id="", ramdisk_id="",
        flavor={"name": "m1.tiny"}, metadata_={"role": "web"}, availability_zone="nova",
        mac="fa:16:3e:4f:1b:2c", reservation_id="r-abcdef12", launch_index=0,
        hostname="web-server-1-example", key_name="mykey", key_data=KEY, key_type="ssh",
        user_data=base64.b64encode(SCRIPT).decode(), guest_password=None, config_drive="True")
    values.update(kw)
    return Instance(**values)


def _json(md: InstanceMetadata, path: str) -> dict:
    data, mime = md.lookup(path)
    assert mime in ("application/json", "text/plain")
    return json.loads(data)


def test_meta_data_keys_per_version() -> None:
    md = InstanceMetadata(_inst())
    base = {"uuid", "meta", "public_keys", "keys", "hostname", "name", "launch_index",
            "availability_zone"}
    assert set(_json(md, "/openstack/2012-08-10/meta_data.json")) == base
    assert set(_json(md, "/openstack/2013-04-04/meta_data.json")) == base | {"random_seed"}
    assert set(_json(md, "/openstack/2015-10-15/meta_data.json")) == base | {
        "random_seed", "project_id"}
    latest = _json(md, "/openstack/latest/meta_data.json")
    assert set(latest) == base | {"random_seed", "project_id", "devices", "dedicated_cpus"}
    assert latest["uuid"] == UUID and latest["name"] == "Web Server_1.example"
    assert latest["hostname"] == "web-server-1-example"
    assert latest["meta"] == {"role": "web"}
    assert latest["public_keys"] == {"mykey": KEY}
    assert latest["keys"] == [{"name": "mykey", "type": "ssh", "data": KEY}]
    assert latest["project_id"] == "p-1" and latest["launch_index"] == 0
    assert len(base64.b64decode(latest["random_seed"])) == 512
    assert latest["devices"] == [] and latest["dedicated_cpus"] == []
    assert md.lookup("/openstack/latest/meta_data.json")[1] == "application/json"


def test_no_meta_no_key_no_user_data() -> None:
    md = InstanceMetadata(_inst(metadata_={}, key_name=None, key_data=None, user_data=None))
    latest = _json(md, "/openstack/latest/meta_data.json")
    assert "meta" not in latest and "public_keys" not in latest and "keys" not in latest
    listing = render(md.lookup("/openstack/latest")[0]).decode().split("\n")
    assert listing == ["meta_data.json", "password", "vendor_data.json",
                       "network_data.json", "vendor_data2.json"]
    with pytest.raises(NotFoundPath):
        md.lookup("/openstack/latest/user_data")
    with pytest.raises(NotFoundPath):
        md.lookup("/latest/user-data")
    assert "public-keys" not in render(md.lookup("/latest/meta-data/")[0]).decode()


def test_listings_and_unknown_paths() -> None:
    md = InstanceMetadata(_inst())
    assert render(md.lookup("/openstack")[0]).decode().split("\n") == [
        *OPENSTACK_VERSIONS, "latest"]
    assert render(md.lookup("/")[0]).decode().split("\n")[-2:] == ["2009-04-04", "latest"]
    assert render(md.lookup("/openstack/2012-08-10")[0]).decode().split("\n") == [
        "meta_data.json", "user_data"]
    for bad in ("/openstack/2011-01-01/meta_data.json", "/openstack/latest/nope",
                "/latest/meta-data/nope", "/1999-01-01/meta-data/", "/openstack/latest/a/b",
                "/openstack/2012-08-10/network_data.json"):
        with pytest.raises(NotFoundPath):
            md.lookup(bad)
    assert md.lookup("/openstack/latest/user_data")[0] == SCRIPT
    assert md.lookup("/latest/user-data")[0] == SCRIPT
    assert isinstance(md.lookup("/openstack/latest/password")[0], Password)
    with pytest.raises(NotFoundPath):
        md.lookup("/openstack/2012-08-10/password")  # from Grizzly on


def test_admin_pass_only_on_the_config_drive() -> None:
    served = InstanceMetadata(_inst())
    assert "admin_pass" not in _json(served, "/openstack/latest/meta_data.json")
    drive = dict(InstanceMetadata(_inst(), admin_pass="s3cret").config_drive_files())
    for version in (*OPENSTACK_VERSIONS, "latest"):
        assert json.loads(drive[f"openstack/{version}/meta_data.json"])["admin_pass"] == \
            "s3cret"


def test_ec2_tree() -> None:
    md = InstanceMetadata(_inst())
    top = render(md.lookup("/latest/meta-data/")[0]).decode().split("\n")
    assert top == sorted(top)
    assert {"ami-id", "ami-launch-index", "ami-manifest-path", "block-device-mapping/",
            "hostname", "instance-action", "instance-id", "instance-type", "local-hostname",
            "local-ipv4", "placement/", "public-hostname", "public-ipv4", "public-keys/",
            "reservation-id", "security-groups"} == set(top)
    assert md.lookup("/latest/meta-data/instance-id")[0] == "i-4f1b2c3d"
    assert md.lookup("/latest/meta-data/ami-id")[0] == "ami-a1b2c3d4"
    assert md.lookup("/2009-04-04/meta-data/reservation-id")[0] == "r-abcdef12"
    assert render(md.lookup("/latest/meta-data/public-keys")[0]) == b"0=mykey"
    assert render(md.lookup("/latest/meta-data/public-keys/0/")[0]) == b"openssh-key"
    assert md.lookup("/latest/meta-data/public-keys/0/openssh-key")[0] == KEY
    assert md.lookup("/latest/meta-data/placement/availability-zone")[0] == "nova"
    assert render(md.lookup("/latest/meta-data/local-ipv4")[0]) == guestnet.GUEST_ADDR.encode()
    assert render(md.lookup("/latest/meta-data/security-groups")[0]) == b"default"
    assert render(md.lookup("/latest/meta-data/ami-launch-index")[0]) == b"0"
    # the oldest version has none of the later keys
    old = render(md.lookup("/1.0/meta-data/")[0]).decode().split("\n")
    assert "local-hostname" not in old and "placement/" not in old and "hostname" in old


def test_network_data_is_one_dhcp_nic() -> None:
    md = InstanceMetadata(_inst())
    nd = _json(md, "/openstack/latest/network_data.json")
    (link,) = nd["links"]
    assert link["ethernet_mac_address"] == "fa:16:3e:4f:1b:2c"
    assert set(link) == {"id", "vif_id", "type", "mtu", "ethernet_mac_address"}
    assert nd["networks"] == [{"id": "network0", "type": "ipv4_dhcp", "link": link["id"],
                               "network_id": nd["networks"][0]["network_id"]}]
    assert nd["services"] == [{"type": "dns", "address": guestnet.DNS}]
    assert _json(InstanceMetadata(_inst(mac="")), "/openstack/latest/network_data.json") == {}


def test_tagged_volume_is_a_device() -> None:
    bdm = BlockDevice(instance_uuid=UUID, device_name="vdb", source_type="volume",
                      destination_type="volume", volume_id="v-1", tag="data", boot_index=None)
    md = InstanceMetadata(_inst(), [bdm])
    assert _json(md, "/openstack/latest/meta_data.json")["devices"] == [
        {"type": "disk", "bus": "pci", "address": "none", "serial": "v-1",
         "path": "/dev/vdb", "tags": ["data"]}]
    assert md.lookup("/latest/meta-data/block-device-mapping/ebs0")[0] == "/dev/vdb"


def test_config_drive_iso(tmp_path: Path) -> None:
    """genisoimage as Nova runs it: label config-2, Rock Ridge names readable back."""
    md = InstanceMetadata(_inst(), admin_pass="pw-1")
    files = list(md.config_drive_files())
    names = {p for p, _ in files}
    assert "ec2/2009-04-04/meta-data.json" in names and "ec2/latest/user-data" in names
    assert {f"openstack/{v}/meta_data.json" for v in (*OPENSTACK_VERSIONS, "latest")} <= names
    assert "openstack/2012-08-10/network_data.json" not in names
    assert "openstack/latest/vendor_data2.json" in names
    iso = tmp_path / "disk.config"
    build_iso(files, iso)
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True,
                          text=True, check=True).stdout
    assert "Volume id: config-2" in info

    def read(p: str) -> bytes:
        return subprocess.run(["isoinfo", "-R", "-i", str(iso), "-x", p],
                              capture_output=True, check=True).stdout

    meta = json.loads(read("/openstack/latest/meta_data.json"))
    assert meta["uuid"] == UUID and meta["admin_pass"] == "pw-1"
    assert read("/openstack/latest/user_data") == SCRIPT
    ec2 = json.loads(read("/ec2/latest/meta-data.json"))
    assert ec2["public-keys"] == {"0": {"openssh-key": KEY}}  # no _name on the drive
    assert ec2["instance-id"] == "i-4f1b2c3d"
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(iso)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert "/openstack/latest/network_data.json" in listing
    assert iso.stat().st_mode & 0o077 == 0  # it holds the admin password


def test_create_input_checks() -> None:
    assert guestinfo.sanitize_hostname("Web Server_1.example") == "web-server-1-example"
    assert guestinfo.sanitize_hostname("..--Ünïcode☃ host--..") == "ünïcode-host"
    assert guestinfo.sanitize_hostname("x" * 80) == "x" * 63
    assert guestinfo.hostname_for("☃☃", UUID) == f"Server-{UUID}"
    for value, want in ((True, "True"), ("true", "True"), ("1", "True"), ("yes", "True"),
                        (False, ""), ("false", ""), (None, ""), ("0", ""), ("off", "")):
        assert guestinfo.config_drive_value(value) == want, value
    for bad in ("maybe", 2, [], "True!"):
        with pytest.raises(BadRequest, match="Invalid config_drive provided"):
            guestinfo.config_drive_value(bad)
    guestinfo.check_user_data(base64.b64encode(b"hi").decode())
    for bad in ("abc", "abcde", 5):  # wrong padding (Nova skips stray characters)
        with pytest.raises(BadRequest, match="user_data"):
            guestinfo.check_user_data(bad)
    pw = guestinfo.generate_password()
    assert len(pw) == 12 and not set(pw) & set("01IOl")
    assert any(c.isdigit() for c in pw) and any(c.isupper() for c in pw) and \
        any(c.islower() for c in pw)


def test_netdev_args_are_quoted_for_qemu(tmp_path: Path) -> None:
    d = tmp_path / "a,b dir"
    args = guestnet.netdev_args("fa:16:3e:00:00:01", d)
    netdev = args[1]
    assert "guestfwd=tcp:169.254.169.254:80-cmd:" in netdev
    assert "a,,b dir" in netdev and "'" in netdev  # commas doubled, the path shell-quoted
