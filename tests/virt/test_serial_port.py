"""The guest's serial port: a QEMU socket chardev that also writes console.log.

QEMU logs what the guest writes whether or not a client is connected, takes one
client at a time, and accepts the next one after a client leaves; the tiny guest has
a getty on it that root logs in to.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strato.storage import Engine
from strato.virt.guestbuild import READY_MARKER, ROOT_PASSWORD, GuestFiles
from strato.virt.qemu import QemuDriver
from strato.virt.qemu.errors import SpawnError
from strato.virt.qemu.process import SOCKET_PATH_MAX, InstancePaths, build_command
from strato.virt.qemu.spec import GuestSpec
from tests.virt.conftest import boot


@pytest.fixture(scope="module")
def guest_vm(driver: QemuDriver, guest: GuestFiles, store: Engine) -> Iterator[str]:
    uuid = boot(driver, guest, store)
    yield uuid
    if uuid in driver.list_instances():  # not left running for the rest of the run
        driver.destroy(uuid)


class Port:
    """A raw client of the serial socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.seen = b""

    def until(self, needle: bytes, timeout: float = 60.0) -> bytes:
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while needle not in self.seen[start:]:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{needle!r} not seen; got {self.seen[-300:]!r}")
            self.sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if not data:
                raise AssertionError(f"the port closed; got {self.seen[-300:]!r}")
            self.seen += data
        return self.seen[start:]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def test_output_is_logged_with_no_client(driver: QemuDriver, guest_vm: str) -> None:
    """Nobody has connected yet: the boot and getty's prompt are in the log all the same."""
    driver.wait_for_console(guest_vm, "login:", 1, 60)
    log = driver.console_output(guest_vm)
    assert log.index(f"{READY_MARKER} bootcount=1") < log.index("login:")
    assert driver.paths(guest_vm).serial.is_socket()


def test_log_is_a_boot_log(driver: QemuDriver, guest_vm: str) -> None:
    """The kernel's boot messages are on the console (not ``quiet``), so a server's
    console log has the many lines clients ask the tail of (Nova's ``length``)."""
    driver.wait_for_console(guest_vm, "login:", 1, 60)
    log = driver.console_output(guest_vm)
    assert "Linux version" in log and "Command line: console=ttyS0" in log
    assert len(log.splitlines()) > 50
    from strato.compute.extras import nova_console_text

    for n in (1, 3, 10):
        assert len(nova_console_text(driver.console_output(guest_vm, n + 1), n)
                   .split("\n")) == n


def test_log_in_leave_and_come_back(driver: QemuDriver, guest_vm: str) -> None:
    path = driver.paths(guest_vm).serial
    port = Port(path)
    try:
        port.send(b"\r")
        port.until(b"login:")
        port.send(b"root\r")
        port.until(b"assword:")
        port.send(ROOT_PASSWORD.encode() + b"\r")
        port.until(b"# ")
        port.send(b"echo answer-$((6 * 7))\r")
        port.until(b"answer-42")
    finally:
        port.close()  # gone without logging out: the shell stays, as on a real port
    again = Port(path)
    try:
        again.send(b"echo back-$((7 * 6)); exit\r")
        again.until(b"back-42")
        again.until(b"login:")  # logged out: getty is back
    finally:
        again.close()
    log = driver.console_output(guest_vm)
    # typed while connected, echoed by the guest: in the log as well
    assert "answer-42" in log and "back-42" in log
    assert "root login on 'ttyS0'" in log


def test_serial_socket_path_is_checked_for_length(tmp_path: Path) -> None:
    """serial.sock is the longest socket name: a directory that fits qmp.sock but not
    it is refused before QEMU is run."""
    depth = SOCKET_PATH_MAX - len("/serial.sock") + 1
    inst = Path("/" + "d" * (depth - 1))
    paths = InstancePaths(inst)
    assert len(str(paths.qmp)) <= SOCKET_PATH_MAX < len(str(paths.serial))
    with pytest.raises(SpawnError, match="serial.sock"):
        build_command(GuestSpec("x", "x", 128, 1, None, None, ""), paths, {})
