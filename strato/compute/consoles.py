"""Serial consoles: Nova's remote-consoles API, os-getSerialConsole and console tokens.

A console URL carries a token; as in Nova, only the token's SHA-256 is stored, with
the instance, the console type, the host whose guest it opens and an expiry
(``[consoleauth] token_ttl``).  A token opens one instance's serial console and no
other; it dies when it expires or when its instance is deleted.  The websocket that
redeems it is :mod:`strato.api.serial_proxy`.

Only the serial console exists here (guests run with ``-display none``): VNC, SPICE,
WebMKS and RDP get Nova's answer for a console that is not enabled, 400 "Unavailable
console type ...".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from strato.compute import console_tokens, schemas, states
from strato.compute.api import ComputeAPI, P
from strato.compute.models import Instance
from strato.compute.views import Version
from strato.config import Config
from strato.context import RequestContext
from strato.exceptions import BadRequest, Conflict, NotFound, Unauthorized
from strato.validation import validate

RULE = P + "os-remote-consoles"
#: the websocket's path under the public endpoint (strato.api.compute serves it)
PROXY_PATH = "/compute/console/serial"
SERIAL = "serial"
#: pre-2.6 actions -> the protocol they ask for
ACTIONS = {"os-getSerialConsole": "serial", "os-getVNCConsole": "vnc",
           "os-getSPICEConsole": "spice", "os-getRDPConsole": "rdp"}
INVALID_TOKEN = "The token is invalid or has expired."


def base_url(conf: Config) -> str:
    """``[serial_console] base_url``, else the public endpoint as a websocket URL."""
    if conf.serial_console.base_url:
        return conf.serial_console.base_url
    parts = urlsplit(conf.public_endpoint)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + PROXY_PATH, "", ""))


@dataclass(frozen=True)
class ConsoleTarget:
    """What a valid token opens."""

    instance_uuid: str
    console_type: str
    host: str


class Consoles:
    def __init__(self, api: ComputeAPI) -> None:
        self.api = api
        self.db = api.db
        self.conf = api.conf

    # ------------------------------------------------------------ API
    def remote_console(self, ctx: RequestContext, server_id: str, body: Any,
                       version: Version) -> dict[str, Any]:
        """``POST /servers/{id}/remote-consoles`` (2.6+)."""
        if version < (2, 6):
            raise NotFound("The resource could not be found.")
        schema = schemas.REMOTE_CONSOLE_V28 if version >= (2, 8) else schemas.REMOTE_CONSOLE
        ref = validate(schema, body)["remote_console"]
        protocol, console_type = ref["protocol"], ref["type"]
        url = self._url(ctx, server_id, protocol, console_type)
        return {"remote_console": {"protocol": protocol, "type": console_type, "url": url}}

    def action(self, ctx: RequestContext, server_id: str, name: str, args: Any,
               version: Version) -> dict[str, Any]:
        """The pre-2.6 actions ``os-getSerialConsole`` (and VNC, SPICE, RDP)."""
        if version >= (2, 6):
            raise NotFound("The resource could not be found.")
        if name == "os-getRDPConsole":  # removed from Nova with Hyper-V
            raise BadRequest("Unavailable console type rdp.")
        console_type = validate(schemas.CONSOLE_ACTIONS[name], {name: args})[name]["type"]
        url = self._url(ctx, server_id, ACTIONS[name], console_type)
        return {"console": {"type": console_type, "url": url}}

    def _url(self, ctx: RequestContext, server_id: str, protocol: str,
             console_type: str) -> str:
        with self.db.session() as session:
            inst = self.api.get_row(session, ctx, server_id, RULE)
            if protocol == "rdp":
                raise BadRequest("Unavailable console type rdp.")
            self._check_state(inst)
            if protocol != SERIAL or not self.conf.serial_console.enabled:
                raise BadRequest(f"Unavailable console type {console_type}.")
            if console_type != SERIAL:
                raise BadRequest(f"Invalid console type {console_type}")
            if inst.host != self.conf.DEFAULT.host:
                raise Conflict(f"Instance {inst.id} is not ready: its console is served "
                               "by the API of its own host")
            if inst.vm_state != states.ACTIVE:
                raise Conflict(f"Cannot 'get_serial_console' instance {inst.id} while it "
                               f"is in vm_state {inst.vm_state}")
            token = console_tokens.issue(session, inst.id, console_type, inst.host or "",
                                         self.conf.consoleauth.token_ttl)
        base = base_url(self.conf)
        return f"{base}{'&' if '?' in base else '?'}token={token}"

    def _check_state(self, inst: Instance) -> None:
        """Nova's check_instance_host and reject_instance_state (409 here)."""
        if inst.vm_state == states.BUILDING or not inst.host:
            raise Conflict(f"Instance {inst.id} is not ready")
        if inst.task_state == states.DELETING:
            raise Conflict(f"Cannot 'get_serial_console' instance {inst.id} while it is "
                           f"in task_state {inst.task_state}")

    # ------------------------------------------------------------ the proxy's side
    def authorize(self, token: str) -> ConsoleTarget:
        """What ``token`` opens; 401 when it is unknown or expired or its instance is
        gone, 409 when the instance is not running here."""
        if not token:
            raise Unauthorized(INVALID_TOKEN)
        with self.db.session(readonly=True) as session:
            row = console_tokens.find(session, token)
            if row is None or row.console_type != SERIAL:  # the proxy is serial only
                raise Unauthorized(INVALID_TOKEN)
            inst = session.get(Instance, row.instance_uuid)
            if inst is None or inst.deleted or inst.task_state == states.DELETING:
                raise Unauthorized(INVALID_TOKEN)
            if row.host != self.conf.DEFAULT.host:
                raise Conflict(f"The console of instance {inst.id} is served by the API "
                               "of its own host.")
            if inst.vm_state != states.ACTIVE:
                raise Conflict(f"Instance {inst.id} is not running (vm_state "
                               f"{inst.vm_state}).")
            return ConsoleTarget(inst.id, row.console_type, row.host)
