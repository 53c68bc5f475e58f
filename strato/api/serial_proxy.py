"""The serial console websocket (Nova's nova-serialproxy, on the API's own listener).

``GET /compute/console/serial?token=...`` upgrades to a websocket once the token is
valid (:meth:`strato.compute.consoles.Consoles.authorize`) and pipes bytes between it
and the guest's serial socket (``<instance>/serial.sock``, a QEMU socket chardev).
Frames are binary; a client that asks for the ``base64`` subprotocol (old websockify
clients) gets base64 text frames, one that asks for ``binary`` (Nova's, noVNC's) gets
it echoed.  Text frames from a client in binary mode are taken as UTF-8.

A refusal is an HTTP answer to the upgrade in compute's fault format (the websocket
Denial Response extension, which uvicorn speaks): 401 for a bad or expired token, 409
when the console is in use (QEMU's socket takes one client at a time) or the guest is
not running.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from strato.api.faults import fault_response
from strato.compute.consoles import Consoles, ConsoleTarget
from strato.exceptions import Conflict, StratoError
from strato.virt.qemu import QemuDriver, VirtError

LOG = logging.getLogger("strato.console")

SUBPROTOCOLS = ("binary", "base64")
CONNECT_TIMEOUT = 5.0
IN_USE = "The serial console is in use by another client."
CHUNK = 65536
#: instances whose console this process is serving (one client each)
_busy: set[str] = set()


async def serve(websocket: WebSocket) -> None:
    services: Any = websocket.app.state.services
    token = websocket.query_params.get("token", "")
    try:
        target: ConsoleTarget = await run_in_threadpool(
            Consoles(services.compute).authorize, token)
    except StratoError as exc:
        await _deny(websocket, exc.status, exc.message)
        return
    uuid = target.instance_uuid
    if uuid in _busy:
        await _deny(websocket, 409, IN_USE)
        return
    _busy.add(uuid)
    try:
        try:
            sock = await run_in_threadpool(_connect, services.virt, uuid)
        except Conflict as exc:
            await _deny(websocket, 409, exc.message)
            return
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        offered = [p.strip() for h in websocket.headers.getlist("sec-websocket-protocol")
                   for p in h.split(",")]
        chosen = next((p for p in SUBPROTOCOLS if p in offered), None)
        await websocket.accept(subprotocol=chosen)
        LOG.info("serial console of %s opened (%s)", uuid, chosen or "no subprotocol")
        try:
            reason = await _pipe(websocket, reader, writer, chosen == "base64")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        LOG.info("serial console of %s closed: %s", uuid, reason)
    finally:
        _busy.discard(uuid)


def _connect(virt: QemuDriver, uuid: str) -> socket.socket:
    """The guest's serial socket, connected.  QEMU would leave a second client waiting
    in its backlog, silent, while another is connected (another API process's, say):
    QMP says whether one is, so that one gets a clear 409 instead."""
    try:
        chardevs = virt.qmp(uuid, "query-chardev", timeout=CONNECT_TIMEOUT)
    except (VirtError, OSError, TimeoutError) as exc:
        raise Conflict(f"The guest's serial console is not there (is it running?): "
                       f"{exc}") from None
    filename = next((str(c.get("filename", "")) for c in chardevs
                     if c.get("label") == "serial0"), "")
    if "unix:" not in filename:  # a guest started before serial ports were sockets
        raise Conflict("The guest's serial port is not a socket yet: a hard reboot "
                       "makes it one.")
    if not filename.startswith("disconnected:"):
        raise Conflict(IN_USE)
    return _open(virt.paths(uuid).serial)


def _open(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(str(path))
    except TimeoutError:
        sock.close()
        raise Conflict(IN_USE) from None
    except OSError as exc:
        sock.close()
        raise Conflict(f"The guest's serial console is not there (is it running?): "
                       f"{exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


async def _pipe(websocket: WebSocket, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter, b64: bool) -> str:
    """Copy both ways until one side ends; why it ended."""

    async def guest_to_client() -> str:
        while data := await reader.read(CHUNK):
            if b64:
                await websocket.send_text(base64.b64encode(data).decode())
            else:
                await websocket.send_bytes(data)
        return "the guest's serial port closed"

    async def client_to_guest() -> str:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return "the client left"
            if message.get("bytes") is not None:
                data = message["bytes"]
            else:
                text = message.get("text") or ""
                try:
                    data = base64.b64decode(text, validate=True) if b64 else text.encode()
                except binascii.Error:
                    await websocket.close(1007, "base64 frames expected")
                    return "the client sent a frame that is not base64"
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.ensure_future(guest_to_client()), asyncio.ensure_future(client_to_guest())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        try:
            reason = first.result()
        except (WebSocketDisconnect, ConnectionError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if websocket.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await websocket.close(1000, reason[:120])
    return reason


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the upgrade with an HTTP answer (a close frame if the server cannot)."""
    LOG.info("serial console refused (%s): %s", status, message)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            fault_response(websocket.url.path, status, message))
    else:
        await websocket.close(1008, message[:120])
