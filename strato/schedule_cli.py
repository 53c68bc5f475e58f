"""``strato schedule …``: snapshot schedules through the API, as the user.

Credentials are found the way ``openstack`` finds them (``--os-cloud``/``OS_CLOUD`` in
clouds.yaml, or ``OS_AUTH_URL``, ``OS_USERNAME``, … in the environment): openstacksdk's
config loader and a keystoneauth session, with the compute endpoint from the catalog.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any
from urllib.parse import quote

_AGE = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_COLUMNS = ("id", "name", "schedule", "retention", "quiesce", "enabled", "next_run_at",
            "last_run_at", "last_result")


def age(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h``, ``1d``, ``2w`` as seconds."""
    m = _AGE.match(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 3600, 12h or 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]


class Client:
    """The compute endpoint of the user's cloud, through a keystoneauth session."""

    def __init__(self, cloud: str | None) -> None:
        import openstack.config

        region = openstack.config.OpenStackConfig().get_one(cloud=cloud)
        self.session = region.get_session()
        self.endpoint = region.get_session_endpoint("compute").rstrip("/")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.session.request(self.endpoint + path, method, json=body,
                                 raise_exc=False,
                                 headers={"OpenStack-API-Version": "compute 2.79"})
        if r.status_code >= 400:
            try:
                fault = next(iter(r.json().values()))
                message = fault.get("message", r.text)
            except (ValueError, AttributeError, StopIteration):
                message = r.text
            raise SystemExit(f"strato: {message} (HTTP {r.status_code})")
        return r.json() if r.content else None

    def server_id(self, ref: str) -> str:
        """An id, or the one server of that exact name."""
        r = self.session.request(f"{self.endpoint}/servers/{ref}", "GET", raise_exc=False)
        if r.status_code == 200:
            return ref
        found = [s for s in self.call("GET", f"/servers?name={quote(ref)}")["servers"]
                 if s["name"] == ref]
        if len(found) != 1:
            raise SystemExit(f"strato: {len(found) or 'no'} servers named {ref!r}"
                             + (" (use the id)" if found else ""))
        return str(found[0]["id"])


def _fields(args: argparse.Namespace, create: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.cron is not None:
        out["schedule"] = {"cron": args.cron}
    elif args.interval is not None:
        out["schedule"] = {"interval": args.interval}
    retention = {k: v for k, v in (("count", args.keep), ("max_age", args.max_age))
                 if v is not None}
    if retention:
        out["retention"] = retention
    if args.name is not None:
        out["name"] = args.name
    if args.quiesce is not None:
        out["quiesce"] = args.quiesce
    if args.enabled is not None:
        out["enabled"] = args.enabled
    if create and "schedule" not in out:
        raise SystemExit("strato: give --cron or --interval")
    if create and "retention" not in out:
        raise SystemExit("strato: give --keep, --max-age or both")
    return out


def _show(item: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(item, indent=2))
        return
    for key in ("id", "server_id", *_COLUMNS[1:], "created_at", "updated_at"):
        value = item.get(key)
        print(f"{key:12} {json.dumps(value) if isinstance(value, dict) else value}")


def cmd_schedule(args: argparse.Namespace) -> int:
    from openstack.exceptions import ConfigException

    try:
        client = Client(args.os_cloud)
    except ConfigException as exc:
        raise SystemExit(f"strato: no credentials: {exc}") from None
    server = client.server_id(args.server)
    base = f"/servers/{server}/snapshot-schedules"
    action = args.schedule_command
    if action == "list":
        items = client.call("GET", base)["snapshot_schedules"]
        if args.format == "json":
            print(json.dumps(items, indent=2))
        else:
            for item in items:
                print("  ".join(json.dumps(item[c]) if isinstance(item[c], dict)
                                else str(item[c]) for c in _COLUMNS))
    elif action == "create":
        _show(client.call("POST", base, {"snapshot_schedule": _fields(args, True)})[
            "snapshot_schedule"], args.format)
    elif action == "show":
        _show(client.call("GET", f"{base}/{args.schedule}")["snapshot_schedule"],
              args.format)
    elif action == "set":
        _show(client.call("PUT", f"{base}/{args.schedule}", {
            "snapshot_schedule": _fields(args, False)})["snapshot_schedule"], args.format)
    elif action == "delete":
        client.call("DELETE", f"{base}/{args.schedule}")
    return 0


def add_parser(sub: Any) -> None:
    """``strato schedule`` and its subcommands (called by ``strato.cli.parser``)."""
    p = sub.add_parser("schedule", help="Snapshot schedules of a server (through the API, "
                                        "with the user's credentials).",
                       description="Snapshot schedules of a server: cron or interval, "
                                   "retention by count and age, quiesce policy.")
    p.set_defaults(func=cmd_schedule)
    actions = p.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")

    def action(name: str, help_: str, schedule: bool) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_, description=help_)
        a.add_argument("--os-cloud", default=None,
                       help="cloud in clouds.yaml (default: $OS_CLOUD, or OS_* variables)")
        a.add_argument("-f", "--format", choices=("table", "json"), default="table")
        a.add_argument("server", help="server id or name")
        if schedule:
            a.add_argument("schedule", help="schedule id")
        return a

    def timing(a: argparse.ArgumentParser, create: bool) -> None:
        when = a.add_mutually_exclusive_group()
        when.add_argument("--cron", help="five-field cron line, UTC (e.g. '0 * * * *')")
        when.add_argument("--interval", type=int, help="every N seconds (N >= 1)")
        a.add_argument("--keep", type=int, help="keep the newest N snapshots")
        a.add_argument("--max-age", type=age, help="delete snapshots older than this "
                                                    "(3600, 12h, 1d, 2w)")
        a.add_argument("--quiesce", choices=("required", "preferred", "never"))
        a.add_argument("--name", help="schedule name (snapshots are <name>-<UTC time>)"
                       + ("; default 'scheduled'" if create else ""))
        on = a.add_mutually_exclusive_group()
        on.add_argument("--enable", dest="enabled", action="store_const", const=True)
        on.add_argument("--disable", dest="enabled", action="store_const", const=False)

    timing(action("create", "Create a schedule.", False), True)
    action("list", "List a server's schedules.", False)
    action("show", "Show a schedule.", True)
    timing(action("set", "Change a schedule (timing, retention, enable/disable).", True),
           False)
    action("delete", "Delete a schedule (its snapshots are kept).", True)

