"""The metadata service of one host's guests, served per guest.

Each instance has its own listening socket, ``meta.sock`` in its directory
(``strato.compute.guestnet``); its QEMU forwards every guest connection to
169.254.169.254:80 there, so a request on that socket is from that guest and it is
answered from that instance's documents only.  The compute agent runs this server;
after a restart it listens on the same paths again, which is all the guests already
running need (their QEMU command line cannot change).

HTTP as Nova's metadata API answers it: GET (and HEAD) of the EC2 and OpenStack trees,
404 for what is not there (user_data of a server without any), POST only to
``openstack/<version>/password`` (once: 409 after; at most 1020 bytes), 405 else.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import select, update

from strato.compute import guestnet, ports
from strato.compute.instance_metadata import (
    PASSWORD_MAX,
    InstanceMetadata,
    NotFoundPath,
    Password,
    render,
)
from strato.compute.models import BlockDevice, Instance

LOG = logging.getLogger(__name__)
REQUEST_TIMEOUT = 30.0  # seconds a guest connection may stay idle
WORKERS = 4


class MetadataServer:
    """Listeners for every instance directory of this host, one thread accepting,
    a few answering."""

    def __init__(self, services: Any, rescan_interval: float = 2.0) -> None:
        self.services = services
        self.root = Path(services.virt.state_dir)
        self.rescan_interval = rescan_interval
        self._listeners: dict[str, socket.socket] = {}
        #: network id -> its 169.254.169.254:80 socket (from the network service)
        self._net_listeners: dict[str, socket.socket] = {}
        self._new: queue.SimpleQueue[tuple[Any, socket.socket]] = queue.SimpleQueue()
        self._guard = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="metadata")
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifetime
    def start(self) -> None:
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.rescan()
        self._thread = threading.Thread(target=self._loop, name="metadata-server",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        with self._guard:
            for sock in [*self._listeners.values(), *self._net_listeners.values()]:
                sock.close()
            self._listeners.clear()
            self._net_listeners.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------ listeners
    def watch(self, instance_id: str) -> None:
        """Listen for this instance's guest (before its QEMU starts: connections wait
        in the backlog until the loop takes them).  Idempotent."""
        with self._guard:
            if instance_id in self._listeners:
                return
            inst_dir = self.root / instance_id
            inst_dir.mkdir(parents=True, exist_ok=True)
            path = guestnet.metadata_socket(inst_dir)
            path.unlink(missing_ok=True)  # left by the agent's previous life
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(str(path))
                os.chmod(path, 0o600)
                sock.listen(16)
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            self._listeners[instance_id] = sock
        self._new.put((instance_id, sock))
        with suppress(OSError):
            self._wake_w.send(b"x")

    def rescan(self) -> None:
        """Listen for every instance directory with a guest spec; let go of the ones
        whose directory is gone (a deleted instance)."""
        try:
            present = {p.name for p in self.root.iterdir() if (p / "spec.json").exists()}
        except FileNotFoundError:
            present = set()
        with self._guard:
            known = set(self._listeners)
        for instance_id in sorted(present - known):
            try:
                self.watch(instance_id)
            except OSError as exc:
                LOG.warning("instance %s: no metadata listener: %s", instance_id, exc)
        with self._guard:
            gone = [i for i in self._listeners if not (self.root / i).is_dir()]
            for instance_id in gone:
                sock = self._listeners.pop(instance_id)
                with suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
                sock.close()
        self._rescan_networks()

    def _rescan_networks(self) -> None:
        """One listener per network with guests of this host (the network service
        gives a socket bound to 169.254.169.254:80 in that network's namespace)."""
        net = ports.network_of(self.services)
        wanted = set(net.metadata_networks()) if net is not None else set()
        with self._guard:
            known = set(self._net_listeners)
        for network_id in sorted(wanted - known):
            assert net is not None
            try:
                sock = net.metadata_listener(network_id)
            except Exception as exc:  # noqa: BLE001 - the next rescan tries again
                LOG.warning("network %s: no metadata listener: %s", network_id, exc)
                continue
            sock.setblocking(False)
            with self._guard:
                self._net_listeners[network_id] = sock
            self._new.put((("net", network_id), sock))
        with self._guard:
            for network_id in [n for n in self._net_listeners if n not in wanted]:
                sock = self._net_listeners.pop(network_id)
                with suppress(KeyError, ValueError):
                    self._sel.unregister(sock)
                sock.close()
        if wanted - known:
            with suppress(OSError):
                self._wake_w.send(b"x")

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            while not self._new.empty():
                instance_id, sock = self._new.get()
                if sock.fileno() >= 0:
                    with suppress(KeyError, ValueError):
                        self._sel.register(sock, selectors.EVENT_READ, instance_id)
            for key, _ in self._sel.select(timeout=self.rescan_interval):
                if key.data is None:
                    with suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                try:
                    conn, peer = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                if isinstance(key.data, tuple):  # a network's: the guest is its address
                    self._pool.submit(self._serve_network, conn, key.data[1], peer)
                else:
                    self._pool.submit(self._serve, conn, str(key.data))
            if time.monotonic() - last >= self.rescan_interval:
                last = time.monotonic()
                try:
                    self.rescan()
                except Exception:  # noqa: BLE001 - the next round tries again
                    LOG.exception("metadata listener rescan failed")

    # ------------------------------------------------------------ requests
    def _serve_network(self, conn: socket.socket, network_id: str, peer: Any) -> None:
        """A guest on a network: which instance asks is the one whose port has the
        source address on that network (an unknown address gets 404s)."""
        instance_id = None
        net = ports.network_of(self.services)
        try:
            if net is not None and isinstance(peer, tuple):
                instance_id = net.instance_for_address(network_id, str(peer[0]))
        except Exception:  # noqa: BLE001 - answered as unknown
            LOG.exception("network %s: who is %s?", network_id, peer)
        self._serve(conn, instance_id)

    def _serve(self, conn: socket.socket, instance_id: str | None) -> None:
        conn.setblocking(True)
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            _Handler(conn, ("guest", 0), _Origin(self, instance_id))
        except Exception:  # noqa: BLE001 - one bad connection must not stop the service
            LOG.exception("instance %s: metadata request failed", instance_id)
        finally:
            with suppress(OSError):
                conn.close()

    def documents(self, instance_id: str | None) -> InstanceMetadata | None:
        """The instance's documents as they are now (None: no such instance)."""
        if instance_id is None:
            return None
        with self.services.db.session(readonly=True) as session:
            inst = session.get(Instance, instance_id)
            if inst is None or inst.deleted:
                return None
            bdms = list(session.scalars(select(BlockDevice).where(
                BlockDevice.instance_uuid == instance_id).order_by(BlockDevice.device_name)))
            session.expunge_all()
        return InstanceMetadata(inst, bdms,
                                ports_data=ports.network_data(self.services, instance_id))

    def set_password(self, instance_id: str, value: str) -> bool:
        """Store what the guest posted, once; False if there already is one."""
        with self.services.db.session() as session:
            return session.execute(update(Instance).where(
                Instance.id == instance_id, Instance.guest_password.is_(None)).values(
                guest_password=value)).rowcount == 1


class _Origin:
    """What the request handler knows of its connection: the server and the guest."""

    def __init__(self, server: MetadataServer, instance_id: str | None) -> None:
        self.server = server
        self.instance_id = instance_id


class _Handler(BaseHTTPRequestHandler):
    server_version = "strato-metadata"
    sys_version = ""
    protocol_version = "HTTP/1.0"
    server: _Origin  # type: ignore[assignment]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        LOG.debug("metadata %s: " + format, self.server.instance_id, *args)

    def _send(self, code: int, body: bytes = b"", content_type: str = "text/plain",
              head: bool = False, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", f"{content_type}; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, code: int, title: str, text: str, **headers: str) -> None:
        self._send(code, f"{code} {title}\n\n{text}\n".encode(), **headers)

    def _lookup(self) -> tuple[Any, str] | None:
        md = self.server.server.documents(self.server.instance_id)
        if md is None:
            self._error(404, "Not Found", "The resource could not be found.")
            return None
        try:
            return md.lookup(unquote(urlsplit(self.path).path))
        except NotFoundPath:
            self._error(404, "Not Found", "The resource could not be found.")
            return None

    def do_GET(self, head: bool = False) -> None:  # noqa: N802 - http.server's names
        found = self._lookup()
        if found is None:
            return
        data, mime = found
        if isinstance(data, Password):
            data = data.value or ""
        self._send(200, render(data), mime, head=head)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET(head=True)

    def do_POST(self) -> None:  # noqa: N802
        found = self._lookup()
        if found is None:
            return
        if not isinstance(found[0], Password):
            self._not_allowed()
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > PASSWORD_MAX:
            self._error(400, "Bad Request", "Request is too large.")
            return
        body = self.rfile.read(length) if length else b""
        if found[0].value:
            self._error(409, "Conflict", "There is a password already.")
            return
        if not self.server.server.set_password(self.server.instance_id,
                                               body.decode("utf-8", "replace")):
            self._error(409, "Conflict", "There is a password already.")
            return
        self._send(200)

    def _not_allowed(self) -> None:
        self._error(405, "Method Not Allowed", "The method is not allowed here.",
                    Allow="GET, HEAD")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815
