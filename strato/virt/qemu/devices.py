"""Where each disk and CD-ROM of a guest sits: bus, controller, PCI slot or unit.

Every placement is recorded in the instance's ``state.json`` (``slots`` for PCI slots
on the root bus, ``ports`` for q35 ``pcie-root-port``s holding hot-plugged disks,
``units`` for positions on a storage controller), so a restarted or restored guest
sees the same devices at the same addresses.

Layout of the root bus (``pci.0`` on ``pc``, ``pcie.0`` on ``q35``): 2 NIC (the
user-mode one, or the first port's), 3 virtio-serial, disks and further NICs from 4
(``nic`` placements, recorded like the disks'); controllers at fixed high slots; on
q35 the root ports sit at 0x10-0x13 and 0x1f is the ICH9 LPC/SATA function.  ``pc``
has PIIX IDE built in (2 buses x 2 units); q35 has no IDE, so ``ide`` and ``sata``
both go to its built-in AHCI (``ide.0``-``ide.5``).  Hot-plug works for virtio (pc: a free slot,
q35: a free root port) and scsi; IDE, SATA and USB disks are cold-plugged only.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import SpawnError, VirtError

if TYPE_CHECKING:
    from .spec import GuestSpec, NicSpec

FIRST_DISK_SLOT = 4
NIC_SLOT = 2  # the first NIC's (never taken by a disk)
LAST_SLOT = 31
SCSI_SLOT, SATA_SLOT, USB_SLOT, RNG_SLOT = 0x1B, 0x1C, 0x1D, 0x1E
ROOT_PORT_SLOTS = (0x10, 0x11, 0x12, 0x13)
_PC_RESERVED = frozenset({SCSI_SLOT, SATA_SLOT, USB_SLOT, RNG_SLOT})
_Q35_RESERVED = _PC_RESERVED | frozenset(ROOT_PORT_SLOTS) | {0x1F}
#: scsi model (``hw_scsi_model``) -> QEMU controller, and how many targets it has
SCSI_CONTROLLERS = {"virtio-scsi": ("virtio-scsi-pci", 256), "lsilogic": ("lsi53c895a", 7)}
_MACHINE_NAME = re.compile(r"^(pc|q35|pc-i440fx-[0-9.]+|pc-q35-[0-9.]+)$")


def is_q35(machine: str) -> bool:
    return machine == "q35" or machine.startswith("pc-q35-")


def root_bus(machine: str) -> str:
    return "pcie.0" if is_q35(machine) else "pci.0"


@functools.cache
def machine_types() -> frozenset[str]:
    """The i440fx and q35 machine types this host's QEMU offers (asked once)."""
    from .process import qemu_binary

    out = subprocess.run([qemu_binary(), "-machine", "help"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    names = (line.split()[0] for line in out.splitlines()[1:] if line.strip())
    return frozenset(n for n in names if _MACHINE_NAME.match(n))


@dataclass(frozen=True)
class Placement:
    """Where one device sits: a root-bus PCI ``slot``, a root ``port`` (q35 hot-plug),
    or a ``unit`` on the controller of its ``bus``."""

    bus: str
    slot: int | None = None
    port: int | None = None
    unit: int | None = None


def _controller(bus: str, machine: str) -> str:
    """Buses that share one controller share its units (q35: ide and sata on AHCI)."""
    if bus in ("ide", "sata"):
        return "ahci" if is_q35(machine) or bus == "sata" else "piix"
    return bus


def _capacity(ctrl: str, scsi_model: str) -> int:
    return {"piix": 4, "ahci": 6, "usb": 8,
            "scsi": SCSI_CONTROLLERS[scsi_model][1]}[ctrl]


def free_slots(machine: str) -> list[int]:
    reserved = _Q35_RESERVED if is_q35(machine) else _PC_RESERVED
    return [s for s in range(FIRST_DISK_SLOT, LAST_SLOT + 1) if s not in reserved]


def _lowest(used: set[int], candidates: list[int] | range, what: str) -> int:
    found = next((c for c in candidates if c not in used), None)
    if found is None:
        raise SpawnError(f"no free {what} for another device")
    used.add(found)
    return found


def assign(state: dict[str, Any], machine: str, scsi_model: str,
           devices: list[tuple[str, str]]) -> dict[str, Placement]:
    """Placements of ``devices`` (id, bus) in order: recorded ones are kept, new ones
    get the lowest free slot/unit; ``state`` is updated (ids not listed are dropped)."""
    ids = {d for d, _ in devices}
    slots = {d: s for d, s in state.get("slots", {}).items() if d in ids}
    ports = {d: p for d, p in state.get("ports", {}).items() if d in ids}
    units = {d: u for d, u in state.get("units", {}).items() if d in ids}
    used_slots = set(slots.values())
    used_units: dict[str, set[int]] = {}
    for d, bus in devices:
        if d in units:
            used_units.setdefault(_controller(bus, machine), set()).add(units[d])
    out: dict[str, Placement] = {}
    for d, bus in devices:
        if bus in ("virtio", "nic"):
            if d in ports:
                out[d] = Placement(bus, port=ports[d])
                continue
            if d not in slots:
                slots[d] = _lowest(used_slots, _slot_candidates(bus, machine), "PCI slot")
            out[d] = Placement(bus, slot=slots[d])
        else:
            ctrl = _controller(bus, machine)
            if d not in units:
                units[d] = _lowest(used_units.setdefault(ctrl, set()),
                                   range(_capacity(ctrl, scsi_model)), f"{bus} unit")
            out[d] = Placement(bus, unit=units[d])
    state["slots"], state["ports"], state["units"] = slots, ports, units
    return out


def _slot_candidates(bus: str, machine: str) -> list[int]:
    return ([NIC_SLOT] if bus == "nic" else []) + free_slots(machine)


def spec_devices(spec: GuestSpec) -> list[tuple[str, str]]:
    """(device id, bus) of every disk and CD-ROM, in boot order, then every NIC (bus
    ``nic``: virtio-net on the root bus or a root port)."""
    return [(d.device_id, d.bus) for d in spec.disks] + [
        (c.device_id, c.bus) for c in spec.cdroms] + [(n.device_id, nic_bus(spec))
                                                       for n in spec.nics]


def nic_bus(spec: GuestSpec) -> str:
    """``nic`` (slot 2 first) unless the user-mode NIC has slot 2: then any virtio slot."""
    return "virtio" if spec.user_nic else "nic"


def hotplug_placement(state: dict[str, Any], machine: str, scsi_model: str, device_id: str,
                      bus: str, buses: dict[str, str]) -> Placement:
    """A place for a disk hot-plugged into a running guest (virtio or scsi), recorded
    in ``state``; ``buses`` are the guest's other devices (id -> bus)."""
    if bus == "scsi":
        if "scsi" not in buses.values():
            raise VirtError("the guest has no SCSI controller to hot-plug a scsi disk into")
        return assign(state, machine, scsi_model, [*buses.items(), (device_id, bus)])[device_id]
    if bus not in ("virtio", "nic"):
        raise VirtError(f"a {bus} disk cannot be hot-plugged (only virtio and scsi)")
    if is_q35(machine):
        port = _lowest(set(state.setdefault("ports", {}).values()),
                       range(len(ROOT_PORT_SLOTS)), "PCIe root port")
        state["ports"][device_id] = port
        return Placement(bus, port=port)
    slots = state.setdefault("slots", {})
    slot = _lowest(set(slots.values()), _slot_candidates(bus, machine), "PCI slot")
    slots[device_id] = slot
    return Placement(bus, slot=slot)


def device(device_id: str, node: str, place: Placement, machine: str, *,
           serial: str | None = None, cdrom: bool = False,
           bootindex: int | None = None) -> list[dict[str, Any]]:
    """qdev properties of the device(s) for one disk or CD-ROM (usb CD-ROMs need a
    usb-bot bridge first); the same dicts go on the command line and to device_add."""
    pre: list[dict[str, Any]] = []
    kind = "cd" if cdrom else "hd"
    u = place.unit or 0
    if place.bus == "virtio":
        dev: dict[str, Any] = {"driver": "virtio-blk-pci", "id": device_id, "drive": node}
        if place.port is not None:
            dev["bus"] = f"rp{place.port}"
        else:
            dev.update(bus=root_bus(machine), addr=f"{place.slot:#x}")
    elif place.bus == "scsi":
        dev = {"driver": f"scsi-{kind}", "id": device_id, "drive": node, "bus": "scsi0.0",
               "scsi-id": u, "lun": 0}
    elif place.bus == "usb":
        if cdrom:
            pre.append({"driver": "usb-bot", "id": f"{device_id}-bot", "bus": "usb0.0",
                        "port": str(u + 1)})
            dev = {"driver": "scsi-cd", "id": device_id, "drive": node,
                   "bus": f"{device_id}-bot.0", "scsi-id": 0, "lun": 0}
        else:
            dev = {"driver": "usb-storage", "id": device_id, "drive": node,
                   "bus": "usb0.0", "port": str(u + 1)}
    elif _controller(place.bus, machine) == "piix":
        dev = {"driver": f"ide-{kind}", "id": device_id, "drive": node,
               "bus": f"ide.{u // 2}", "unit": u % 2}
    else:
        ahci = "ide" if is_q35(machine) else "sata0"
        dev = {"driver": f"ide-{kind}", "id": device_id, "drive": node, "bus": f"{ahci}.{u}"}
    if serial and not cdrom:
        dev["serial"] = serial
    if bootindex is not None:
        dev["bootindex"] = bootindex
    return [*pre, dev]


def nic_device(nic: NicSpec, place: Placement, machine: str) -> dict[str, Any]:
    """qdev properties of a port's virtio-net NIC (command line and device_add)."""
    dev: dict[str, Any] = {"driver": "virtio-net-pci", "id": nic.device_id,
                           "netdev": nic.netdev_id, "mac": nic.mac, "romfile": ""}
    if place.port is not None:
        dev["bus"] = f"rp{place.port}"
    else:
        dev.update(bus=root_bus(machine), addr=f"{place.slot:#x}")
    return dev


def netdev_arg(netdev_id: str, fd: int | str) -> str:
    """``-netdev`` for a tap QEMU is handed open (``fd``: a number, or a ``getfd``
    name over QMP); no vhost here (no vhost-net on these hosts)."""
    return f"tap,id={netdev_id},fd={fd}"


def arg(dev: dict[str, Any]) -> str:
    """A qdev dict as a ``-device`` value."""
    rest = (f"{k}={str(v).replace(',', ',,')}" for k, v in dev.items() if k != "driver")
    return ",".join([dev["driver"], *rest])


def controllers(machine: str, buses: set[str], scsi_model: str) -> list[str]:
    """``-device`` arguments for the controllers the buses in use need, and q35's
    root ports (free places to hot-plug virtio disks)."""
    root = root_bus(machine)
    argv: list[str] = []
    if "scsi" in buses:
        argv += ["-device", f"{SCSI_CONTROLLERS[scsi_model][0]},id=scsi0,bus={root},"
                            f"addr={SCSI_SLOT:#x}"]
    if "sata" in buses and not is_q35(machine):
        argv += ["-device", f"ich9-ahci,id=sata0,bus={root},addr={SATA_SLOT:#x}"]
    if "usb" in buses:
        argv += ["-device", f"qemu-xhci,id=usb0,bus={root},addr={USB_SLOT:#x}"]
    if is_q35(machine):
        for i, slot in enumerate(ROOT_PORT_SLOTS):
            argv += ["-device", f"pcie-root-port,id=rp{i},chassis={i + 1},bus={root},"
                                f"addr={slot:#x}"]
    return argv


def rng_args(rng: str | None, machine: str) -> list[str]:
    """``hw_rng_model=virtio``: entropy from the host's /dev/urandom."""
    if rng != "virtio":
        return []
    return ["-object", "rng-random,id=rng0,filename=/dev/urandom",
            "-device", f"virtio-rng-pci,rng=rng0,bus={root_bus(machine)},addr={RNG_SLOT:#x}"]
