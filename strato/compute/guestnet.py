"""The guest's one NIC: QEMU user-mode networking (slirp), with the metadata service
on it at 169.254.169.254:80.

libslirp only forwards guest connections (``guestfwd``) for addresses inside its
virtual network, so that network is the link-local 169.254.169.0/24 rather than
slirp's default 10.0.2.0/24: the guest gets 169.254.169.15 by DHCP, its gateway (and
the way out, NATed by QEMU) is .2, DNS .3, and 169.254.169.254 is on the link, as an
unmodified cloud image expects it.  Every TCP connection the guest opens to it makes
QEMU run ``socat`` on this instance's own socket (``meta.sock`` in the instance
directory), so which guest is asking is fixed by the QEMU command line.
"""

from __future__ import annotations

import shlex
from pathlib import Path

NETWORK = "169.254.169.0/24"
GATEWAY = "169.254.169.2"
DNS = "169.254.169.3"
GUEST_ADDR = "169.254.169.15"  # slirp's first DHCP lease
METADATA_ADDR = "169.254.169.254"
METADATA_PORT = 80
SOCKET_NAME = "meta.sock"  # no longer than the driver's other sockets' names


def metadata_socket(instance_dir: Path) -> Path:
    """Where the compute agent listens for this instance's metadata requests."""
    return instance_dir / SOCKET_NAME


def _opt(value: str) -> str:
    return value.replace(",", ",,")  # QEMU option values double their commas


def netdev_args(mac: str, instance_dir: Path) -> tuple[str, ...]:
    """``-netdev user`` with the metadata forward, and the virtio NIC on it."""
    cmd = " ".join(shlex.quote(a) for a in (
        "socat", "STDIO", f"UNIX-CONNECT:{metadata_socket(instance_dir)}"))
    netdev = (f"user,id=net0,net={NETWORK},host={GATEWAY},dns={DNS},"
              f"dhcpstart={GUEST_ADDR},"
              f"guestfwd=tcp:{METADATA_ADDR}:{METADATA_PORT}-cmd:{_opt(cmd)}")
    return ("-netdev", netdev,
            "-device", f"virtio-net-pci,netdev=net0,mac={mac},addr=0x2,romfile=")


def smbios_args(instance_id: str) -> tuple[str, ...]:
    """The SMBIOS system Nova's libvirt driver gives: cloud-init's OpenStack datasource
    looks for product "OpenStack Nova" before it asks 169.254.169.254."""
    fields = {"manufacturer": "OpenStack Foundation", "product": "OpenStack Nova",
              "version": "strato", "serial": instance_id, "uuid": instance_id,
              "family": "Virtual Machine"}
    return ("-smbios", "type=1," + ",".join(f"{k}={_opt(v)}" for k, v in fields.items()))
